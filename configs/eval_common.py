"""Defaults of the zero-shot evaluation configs (eval_*.py)."""
import ml_collections


def eval_config(benchmark: str, root: str, split: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.benchmark = benchmark          # a name of mire_jax.data.benchmarks.LOADERS
    c.root = root                    # the download folder, laid out as the original
    c.split = split                  # "" = the split MIRe evaluates
    c.protocol = "published"         # "published" (MIRe's evaluation) | "textbook"; see mire_jax/evaluation.py
    c.k = 100
    c.query_maxlen = 64
    c.doc_maxlen = 384
    c.attend_to_mask_tokens = False  # the published evaluation tokenizer
    c.batch_size = 32
    c.shard_size = 10_000
    c.seed = 0
    c.tokenizer = ""                 # "" = the vocab.txt / tokenizer.json in the checkpoint folder
    c.index = ml_collections.ConfigDict()  # LateInteractionIndex options (mire_jax/index); None = by corpus size
    c.index.mode = "auto"            # "auto" | "scann" | "exact"
    c.index.num_leaves = ml_collections.FieldReference(None, field_type=int)
    c.index.leaves_to_search = ml_collections.FieldReference(None, field_type=int)
    c.index.neighbors_per_token = ml_collections.FieldReference(None, field_type=int)
    c.index.rerank_passages = 400
    return c
