"""ViD2R: MIRe's pre-training data from visual-instruction dialogues (docs/data_formats.md, "Building ViD2R").

split (`dialogues`) -> filter (`filtering`, `nouns`) -> retrieve (`retrieval`, `knowledge_base`) -> compose
(`conversion`), orchestrated with resumable stages by `pipeline` and `python -m mire_jax.vid2r`.
"""
from mire_jax.vid2r.conversion import ConversionConfig, compose, convert_records, cut_passage
from mire_jax.vid2r.dialogues import DialogueFormatError, SplitCounts, Triple, read_triples, split_record
from mire_jax.vid2r.filtering import (
                                           FilterConfig,
                                           PublishedCarryOver,
                                           PublishedScriptCrash,
                                           ResponseFilter,
                                           assign_unique_ids,
                                           attach_negatives,
                                           filter_triples,
)
from mire_jax.vid2r.knowledge_base import KnowledgeBase, KnowledgeBaseError
from mire_jax.vid2r.nouns import heuristic_nouns, make_noun_extractor
from mire_jax.vid2r.pipeline import PipelineOptions, Vid2rPipeline, run

__all__ = ["ConversionConfig", "DialogueFormatError", "FilterConfig", "KnowledgeBase", "KnowledgeBaseError",
           "PipelineOptions", "PublishedCarryOver", "PublishedScriptCrash", "ResponseFilter", "SplitCounts", "Triple",
           "Vid2rPipeline", "assign_unique_ids", "attach_negatives", "compose", "convert_records", "cut_passage",
           "filter_triples", "heuristic_nouns", "make_noun_extractor", "read_triples", "run", "split_record"]
