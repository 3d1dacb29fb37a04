"""`Searcher`: a model with its encoding settings, and optionally an index and the passages' texts.

The one path from questions, images and passage texts to embeddings and rankings: evaluation, the server, the
attention heatmaps and ViD2R's text retrieval all encode through it. Its settings (`mire_jax.config.EncodingSettings`)
come from the index when there is one (the index records the model it was encoded with, and the query and passage
settings), else from the caller; a setting that contradicts the index, or an index of another model, is refused by
name unless forced.

Queries (docs/model.md, section 3): with an image `[E_g ; E_m ; T]`, without one `T`. A batch that mixes both is
returned with `num_visual` masked zero rows before a text-only query's tokens, so every query has the same width and
all are searched together; masked rows score 0. The paper's inference ablations keep only some rows of a query
(`QUERY_ROWS`): "visual" `[E_g ; E_m]` (without the text tokens E_t), "text" `T` (without the pooled tokens).
Every jitted program runs on batches of a fixed size (the last one zero-padded), data-parallel over this process's
devices, so one program is compiled per shape.

Passages (docs/model.md, section 3): a text passage is its kept text tokens; one that carries an image is
`[E_g ; E_m ; text]` as the published `MIRe.doc` encodes it, E_m pooled under a fixed prompt, and an image-only
passage `[E_g ; E_m]`. Text, image-only and image+text passages are encoded in fixed-size batches of their own.
"""
from __future__ import annotations

import concurrent.futures
import functools
import os
import shutil
import warnings
from typing import Any, Iterable, Mapping, Sequence

import jax
import numpy as np
from PIL import Image

from mire_jax import api
from mire_jax.config import EncodingSettings, MIReConfig
from mire_jax.files import read_json, write_json
from mire_jax.index import IndexConfig, IndexFormatError, LateInteractionIndex
from mire_jax.index.encode import EncodeFn, encode_to_shards
from mire_jax.index.encoded_corpus import write_manifest
from mire_jax.models.layers import l2_normalize
from mire_jax.models.mire import MIRe
from mire_jax.retrieval.data_parallel import DataParallel
from mire_jax.retrieval.images import preprocess, preprocess_bytes, read_image_file
from mire_jax.retrieval.model_folder import (
    load_model,
    load_tokenizer,
    params_fingerprint,
    resolve_model_dir,
)
from mire_jax.retrieval.passages import read_passages
from mire_jax.tokenization.colbert import ColbertTokenizer

RUN_FILE = "serve.json"  # what a run folder (e.g. `make demo`'s) names for serving: model, index, passages
# The rows of a query an encoding keeps: all of them, the pooled visual tokens [E_g ; E_m] only (the paper's "w/o E_t at
# inference"), or the text tokens T only ("w/o E_g & E_m at inference"; the text still saw no image, fusion-free).
QUERY_ROWS = ("all", "visual", "text")
SETTING_FLAGS = {"query_maxlen": "--query-maxlen", "doc_maxlen": "--doc-maxlen",
                 "attend_to_mask_tokens": "--attend-to-mask-tokens", "passage_keep": "--passage-keep"}


class SettingsError(ValueError):
    """Settings, a model and an index that do not belong together; the message names what differs."""


@functools.partial(jax.jit, static_argnums=0)
def _scored_padding_query(config: MIReConfig, params, input_ids, attention_mask):
    """ColBERTv2's searcher query: BERT attends to the real tokens only, and every position's output is kept."""
    t = api.model(config).apply({"params": params}, input_ids, attention_mask, method=MIRe.text_tokens)
    return l2_normalize(t)


def _image_text_passages(config: MIReConfig, prompt_ids, params, input_ids, attention_mask, keep_mask, pixel_values):
    return api.encode_doc(config, params, input_ids, attention_mask, keep_mask, pixel_values=pixel_values,
                          prompt_ids=prompt_ids)


def _image_passages(config: MIReConfig, prompt_ids, params, pixel_values):
    return api.encode_doc(config, params, pixel_values=pixel_values, prompt_ids=prompt_ids)


@functools.partial(jax.jit, static_argnums=0, static_argnames=("pooling_rows",))
def _image_query(config: MIReConfig, params, input_ids, attention_mask, pixel_values, *, pooling_rows=None):
    return api.encode_query(config, params, input_ids, attention_mask, pixel_values, pooling_rows=pooling_rows)


class Searcher:
    """A model and how it encodes; with an index, a search; with the passages, their texts.

    Args:
        config, params: the model; params are placed on this process's devices once.
        tokenizer: its `ColbertTokenizer`.
        settings: how questions, passages and images become inputs (with an index: the index's).
        index: a `LateInteractionIndex` built from this model's passage embeddings, or None.
        passages: passage id (as a string) -> text ("" for an image-only passage), or None.
        passage_images: passage id -> image file, for the passages that carry one (the server shows them).
        batch_size: rows per encoder call (split over this process's devices).
        model_dir: where the model was loaded from (for messages and `/healthz`).
        index_dir: likewise for the index.
    """

    def __init__(self, config: MIReConfig, params, tokenizer: ColbertTokenizer, settings: EncodingSettings, *,
                 index: LateInteractionIndex | None = None, passages: Mapping[str, str] | None = None,
                 batch_size: int = 32, model_dir: str = "", index_dir: str = "",
                 passage_images: Mapping[str, str] | None = None):
        if settings.image.size != config.vision.image_size:
            raise SettingsError(f"the settings preprocess images to {settings.image.size} px, the model's vision "
                                f"tower takes {config.vision.image_size} px")
        if index is not None and index.dim != config.head.dim:
            raise SettingsError(f"the index {index_dir or ''} holds {index.dim}-d embeddings, the model "
                                f"{model_dir or ''} makes {config.head.dim}-d ones: they do not belong together")
        if index is not None and passages is not None:
            missing = [pid for pid in index.ids if str(pid) not in passages]
            if missing:
                raise ValueError(f"the passages have no text for {len(missing)} of the index's {index.num_passages} "
                                 f"passages (first: {missing[0]!r}): is it the corpus the index was built from?")
        self.config, self.tokenizer, self.settings = config, tokenizer, settings
        self.index, self.passages = index, passages
        self.passage_images = dict(passage_images or {})
        self.batch_size = int(batch_size)
        self.model_dir, self.index_dir = model_dir, index_dir
        self.num_global = config.head.num_tokens
        self.num_visual = config.head.num_tokens + config.head.num_heads
        self._encoders: dict[tuple, DataParallel] = {}
        self._params = None
        self._host_params = params
        self._fingerprint: str | None = None
        self._image_pool: concurrent.futures.ThreadPoolExecutor | None = None

    # Loading -----------------------------------------------------------------------------------------------------

    @classmethod
    def load(cls, model: str | os.PathLike, *, index: str | os.PathLike | None = None,
             passages: str | os.PathLike | Mapping[str, str] | None = None, tokenizer: str = "",
             settings: Mapping[str, Any] | None = None, force_settings: bool = False, verify_index: bool = True,
             batch_size: int = 32, image_root: str | os.PathLike | None = None) -> "Searcher":
        """From a model folder (or training workdir), and optionally a saved index and a passages file (whose image
        paths are relative to `image_root`, default the file's folder).

        `settings`: settings to use (field -> value; None values are ignored). With an index, its recorded settings
        are used and a given one that differs is refused (`SettingsError` naming the flag) unless `force_settings`;
        an index encoded with another model is always refused. Without an index: the published evaluation settings
        (`EncodingSettings()`) with the model's image preprocessing, updated with `settings`.
        """
        model_dir = resolve_model_dir(model)
        config, params = load_model(model_dir)
        index_obj = LateInteractionIndex.load(index, verify_index) if index is not None else None
        resolved = resolve_settings(config, index_obj, settings or {}, force=force_settings,
                                    index_dir=os.fspath(index) if index is not None else "")
        passage_images = None
        if isinstance(passages, (str, os.PathLike)):
            passages, passage_images = read_passages(passages, image_root)
        searcher = cls(config, params, load_tokenizer(model_dir, tokenizer), resolved, index=index_obj,
                       passages=passages, batch_size=batch_size, model_dir=os.path.abspath(model_dir),
                       index_dir=os.path.abspath(index) if index is not None else "", passage_images=passage_images)
        if index_obj is not None:
            searcher.check_index(index_obj)
        return searcher

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, **kwargs) -> "Searcher":
        """From a run folder that names its model, index and passages in `serve.json` (`make demo` writes one)."""
        return cls.load(**run_paths(run_dir), **kwargs)

    @property
    def params(self):
        """The parameters, replicated on this process's devices (placed on first use)."""
        if self._params is None:
            devices = jax.local_devices()
            mesh = jax.sharding.Mesh(np.asarray(devices), ("data",))
            self._params = jax.device_put(self._host_params, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
        return self._params

    @property
    def fingerprint(self) -> str:
        """The model's fingerprint (config and every parameter): what its encoded corpora record."""
        if self._fingerprint is None:
            self._fingerprint = params_fingerprint(self.config, self._host_params)
        return self._fingerprint

    def check_index(self, index: LateInteractionIndex) -> None:
        """Refuses (`SettingsError`) an index whose corpus another model encoded."""
        recorded = index.encoding.get("model")
        if recorded and recorded != self.fingerprint:
            raise SettingsError(f"the index {self.index_dir or ''} was encoded with model {recorded}, not with "
                                f"{self.model_dir or 'this model'} ({self.fingerprint}): build the index with "
                                "this model, or serve the model it was built with")

    # Queries -----------------------------------------------------------------------------------------------------

    def _encoder(self, kind: str, rows: int, **static) -> DataParallel:
        key = (kind, rows, tuple(sorted(static.items())))
        if key not in self._encoders:
            fn = {"text": functools.partial(api.encode_query, self.config),
                  "scored_padding": functools.partial(_scored_padding_query, self.config),
                  "image": functools.partial(_image_query, self.config, **static),
                  "passage": functools.partial(api.encode_doc, self.config),
                  "image_text_passage": functools.partial(_image_text_passages, self.config, self.prompt_ids),
                  "image_passage": functools.partial(_image_passages, self.config, self.prompt_ids)}[kind]
            self._encoders[key] = DataParallel(fn, self.params, rows)
        return self._encoders[key]

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """A PIL image -> the vision tower's pixels [size, size, 3] (the settings' preprocessing)."""
        return preprocess(image, self.settings.image)

    def text_length(self, real_tokens: int) -> int:
        """The shortest of the halvings of `query_maxlen` (down to 16 word pieces) holding `real_tokens`."""
        lengths = [self.settings.query_maxlen >> i for i in range(8) if self.settings.query_maxlen >> i >= 16]
        return min([n for n in lengths if n >= real_tokens] or [self.settings.query_maxlen])

    def tokenize_queries(self, questions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(ids [B, query_maxlen], mask [B, query_maxlen]) under the settings' [MASK] rule."""
        ids, mask = self.tokenizer.encode_queries(list(questions), max_len=self.settings.query_maxlen,
                                                  attend_to_mask_tokens=self.settings.attend_to_mask_tokens)
        return np.asarray(ids, np.int32), np.asarray(mask, np.int32)

    def encode_queries(self, questions: Sequence[str], images: Sequence[Any] | None = None, *,
                       batch_sizes: Sequence[int] | None = None, visual_rows: bool | None = None,
                       cut: bool = False, rows: str = "all") -> tuple[np.ndarray, np.ndarray]:
        """Query embeddings -> (embeddings [B, N, dim] float32, mask [B, N] bool), in question order.

        Args:
            questions: the question texts ("" for none).
            images: per question a PIL image, preprocessed pixels [size, size, 3], or None (text only); None for
                all text only.
            batch_sizes: the rows an encoder call may have (default: the searcher's batch size): queries with and
                without an image are encoded apart, each group in calls padded to the smallest size holding it
                (a server's few compiled sizes).
            visual_rows: return the `num_visual` visual rows (masked zeros for text-only queries); default: when
                some question has an image.
            cut: encode cut to `text_length` of the longest question (the [MASK] padding past it is attended by
                nothing and scored by nothing, so the embeddings are the full query's first tokens): N is then
                `num_visual` + that length. Not with settings that attend to or score the padding.
            rows: which rows to return (`QUERY_ROWS`): "all"; "visual", the `num_visual` pooled tokens [E_g ; E_m]
                alone (every question needs an image); "text", the text tokens T alone (N = the text length; the
                pooling still runs for questions with an image, and T does not depend on it).
        """
        if rows not in QUERY_ROWS:
            raise ValueError(f"rows must be one of {QUERY_ROWS}, got {rows!r}")
        images = list(images) if images is not None else [None] * len(questions)
        if len(images) != len(questions):
            raise ValueError(f"{len(questions)} questions but {len(images)} images")
        if rows == "visual" and any(image is None for image in images):
            raise ValueError("rows='visual' keeps the pooled image tokens only: every question needs an image")
        ids, text_mask = self.tokenize_queries(questions)
        scored_padding = self.settings.score_mask_tokens and not self.settings.attend_to_mask_tokens
        length = ids.shape[1]
        if cut and len(questions) and not (scored_padding or self.settings.attend_to_mask_tokens):
            length = self.text_length(int(text_mask.sum(1).max()))
            ids, text_mask = ids[:, :length], text_mask[:, :length]
        with_image = np.array([image is not None for image in images], bool)
        visual = bool(with_image.any()) if visual_rows is None else visual_rows
        if with_image.any() and not visual:
            raise ValueError("visual_rows=False with queries that have an image")
        offset = self.num_visual if visual else 0
        embs = np.zeros((len(questions), offset + length, self.config.head.dim), np.float32)
        mask = np.zeros(embs.shape[:2], bool)
        sizes = sorted(batch_sizes or [self.batch_size])
        call_rows = lambda n: next((size for size in sizes if size >= n), sizes[-1])
        text_rows = np.flatnonzero(~with_image)
        if len(text_rows):
            kind = "scored_padding" if scored_padding else "text"
            encoder = self._encoder(kind, call_rows(len(text_rows)))
            embs[text_rows, offset:] = encoder(ids[text_rows], text_mask[text_rows])
            mask[text_rows, offset:] = True if scored_padding else text_mask[text_rows].astype(bool)
        image_rows = np.flatnonzero(with_image)
        if len(image_rows):
            pixels = np.stack([self._pixels(images[i]) for i in image_rows])
            pooling_rows = self.settings.query_maxlen if length < self.settings.query_maxlen else None
            encoder = self._encoder("image", call_rows(len(image_rows)), pooling_rows=pooling_rows)
            embs[image_rows] = encoder(ids[image_rows], text_mask[image_rows], pixels)
            mask[image_rows, :self.num_visual] = True
            mask[image_rows, self.num_visual:] = text_mask[image_rows].astype(bool)
        if rows == "visual":
            return embs[:, :offset], mask[:, :offset]
        if rows == "text":
            return embs[:, offset:], mask[:, offset:]
        return embs, mask

    def _pixels(self, image) -> np.ndarray:
        if isinstance(image, Image.Image):
            return self.preprocess(image)
        pixels = np.asarray(image, np.float32)
        size = self.settings.image.size
        if pixels.shape != (size, size, 3):
            raise ValueError(f"pixels must be [{size}, {size}, 3], got {pixels.shape}")
        return pixels

    def pooling_maps(self, image: Image.Image, question: str) -> np.ndarray:
        """Where the pooling looks: [num_heads, grid, grid], each head's attention over the patches averaged over the
        question's real tokens (padded rows attend uniformly by construction and are left out)."""
        pixels = self.preprocess(image)[None]
        ids, mask = self.tokenizer.encode_queries([question], max_len=self.settings.query_maxlen,
                                                  attend_to_mask_tokens=False)
        features = api.encode_vision(self.config, self.params, pixels)
        attn = np.asarray(api.pooling_attention(self.config, self.params, ids, mask, features))[0]  # [H, L, S]
        per_head = attn[:, mask[0].astype(bool)].mean(axis=1)
        grid = self.config.vision.image_size // self.config.vision.patch_size
        return per_head.reshape(per_head.shape[0], grid, grid)

    # Passages ----------------------------------------------------------------------------------------------------

    @functools.cached_property
    def prompt_ids(self) -> np.ndarray:
        """The fixed prompt guiding the pooling of passage images (`ColbertTokenizer.encode_image_prompt`)."""
        return self.tokenizer.encode_image_prompt()

    def passage_encoder(self, length_bucket: int | None = None, batch_size: int | None = None) -> EncodeFn:
        """Passages -> (embeddings [B, W, dim], keep [B, W]): the `EncodeFn` of the index's encoding loop.

        `encode(texts)` encodes text passages (W = the text width); `encode(texts, images)` passages of which some
        carry an image (a path, encoded bytes, a PIL image, an object with `.load()` such as a benchmark's image
        reference, preprocessed pixels, or None): W = num_visual + the text width, the visual rows first; an
        image-only passage (empty text) has only its visual rows kept, a text passage in such a batch only its text
        rows. Each kind runs in its own fixed-size batches.

        `length_bucket`: None encodes every batch at `doc_maxlen`; a number trims each batch's padding to its
        longest passage rounded up to a multiple of it (fewer wasted FLOPs, a few more compiled widths).
        """
        rows = batch_size or self.batch_size
        settings = self.settings

        def tokens(texts: Sequence[str]):
            ids, mask, keep = self.tokenizer.encode_docs(list(texts), max_len=settings.doc_maxlen,
                                                         keep_policy=settings.passage_keep)
            if length_bucket and len(texts):
                width = min(settings.doc_maxlen, -(-int(mask.sum(axis=1).max()) // length_bucket) * length_bucket)
                ids, mask, keep = ids[:, :width], mask[:, :width], keep[:, :width]
            return ids, mask, keep

        def encode(texts: Sequence[str], images: Sequence[Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
            texts = ["" if t is None else t for t in texts]
            if images is None or all(image is None for image in images):
                return self._encoder("passage", rows)(*tokens(texts))
            if len(images) != len(texts):
                raise ValueError(f"{len(texts)} passage texts but {len(images)} images")
            has_image = np.array([image is not None for image in images], bool)
            has_text = np.array([bool(t.strip()) for t in texts], bool)
            groups = {"image_text": np.flatnonzero(has_image & has_text),
                      "image": np.flatnonzero(has_image & ~has_text), "text": np.flatnonzero(~has_image)}
            width = self.num_visual
            if len(groups["image_text"]) or len(groups["text"]):
                ids, mask, keep = tokens([t for t, with_image in zip(texts, has_image) if with_image and t.strip()]
                                         + [t for t, with_image in zip(texts, has_image) if not with_image])
                width += ids.shape[1]
            out = np.zeros((len(texts), width, self.config.head.dim), np.float32)
            kept = np.zeros((len(texts), width), bool)
            pixels = self.passage_pixels([images[i] for i in np.flatnonzero(has_image)])
            pixel_row = {int(i): r for r, i in enumerate(np.flatnonzero(has_image))}
            if len(groups["image"]):
                d, k = self._encoder("image_passage", rows)(pixels[[pixel_row[int(i)] for i in groups["image"]]])
                out[groups["image"], :d.shape[1]], kept[groups["image"], :d.shape[1]] = d, k
            n_image_text = len(groups["image_text"])
            if n_image_text:
                part = slice(0, n_image_text)
                d, k = self._encoder("image_text_passage", rows)(
                    ids[part], mask[part], keep[part], pixels[[pixel_row[int(i)] for i in groups["image_text"]]])
                out[groups["image_text"]], kept[groups["image_text"]] = d, k
            if len(groups["text"]):
                part = slice(n_image_text, None)
                d, k = self._encoder("passage", rows)(ids[part], mask[part], keep[part])
                out[groups["text"], self.num_visual:], kept[groups["text"], self.num_visual:] = d, k
            return out, kept

        return encode

    def passage_pixels(self, images: Sequence[Any]) -> np.ndarray:
        """Passage images -> pixels [n, size, size, 3], read and preprocessed in a few threads; an unreadable image
        raises `ImageError` naming it."""
        if not images:
            size = self.settings.image.size
            return np.zeros((0, size, size, 3), np.float32)
        if self._image_pool is None:
            self._image_pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1),
                                                                     thread_name_prefix="mire-passage-images")
        return np.stack(list(self._image_pool.map(self._passage_image_pixels, images)))

    def _passage_image_pixels(self, image) -> np.ndarray:
        if isinstance(image, (str, os.PathLike)):
            return preprocess_bytes(read_image_file(image), self.settings.image, source=os.fspath(image))
        if isinstance(image, (bytes, bytearray)):
            return preprocess_bytes(bytes(image), self.settings.image)
        if hasattr(image, "load") and not isinstance(image, Image.Image):
            return self.preprocess(image.load())
        return self._pixels(image)

    def encode_passages(self, texts: Sequence[str], length_bucket: int | None = None,
                        images: Sequence[Any] | None = None) -> list[np.ndarray]:
        """The kept-token embeddings of each passage: a list of [n_i, dim] float16 arrays, in order. `images`: per
        passage an image (see `passage_encoder`) or None; each kind is encoded in batches of its own."""
        encode = self.passage_encoder(length_bucket)
        images = list(images) if images is not None else [None] * len(texts)
        if len(images) != len(texts):
            raise ValueError(f"{len(texts)} passage texts but {len(images)} images")
        kinds: dict[tuple[bool, bool], list[int]] = {}
        for i, (text, image) in enumerate(zip(texts, images)):
            kinds.setdefault((image is not None, bool((text or "").strip())), []).append(i)
        out: list[np.ndarray | None] = [None] * len(texts)
        for (with_image, _), positions in kinds.items():
            for start in range(0, len(positions), self.batch_size):
                batch = positions[start:start + self.batch_size]
                args = ([texts[i] for i in batch],) + (([images[i] for i in batch],) if with_image else ())
                embeddings, keep = encode(*args)
                for row, i in enumerate(batch):
                    out[i] = embeddings[row][np.asarray(keep[row], bool)].astype(np.float16)
        return out

    def encoding_record(self) -> dict:
        """What an index built by this searcher records of its encoding: the model and the settings."""
        return {"model": self.fingerprint, "settings": self.settings.to_dict()}

    def build_index(self, passages: Iterable[tuple], folder: str | os.PathLike, *,
                    index_config: IndexConfig | dict | None = None, calibration_queries=None,
                    shard_size: int = 10_000, total: int | None = None, length_bucket: int | None = None,
                    progress: bool = True, extra: Mapping[str, Any] | None = None) -> LateInteractionIndex:
        """Encode `(pid, text)` and `(pid, text, image)` passages into shards (`folder/shards`, resumable) and build
        the index (`folder/index`, resumable), recording the model and the settings; opens it as this searcher's
        index.

        Collective under `jax.distributed`: every process reads the same stream and encodes and indexes its own
        shards. A finished index in `folder/index` is opened as it is; one that an older mire-jax wrote (another
        format version) is removed and built again from the encoded corpus, with a warning.
        """
        shards, index_dir = os.path.join(folder, "shards"), os.path.join(folder, "index")
        layout_index, layout_count = jax.process_index(), jax.process_count()
        index = None
        if os.path.exists(os.path.join(index_dir, "manifest.json")):
            try:
                index = LateInteractionIndex.load(index_dir)
            except IndexFormatError as e:
                warnings.warn(f"{e} (building it again now, from the encoded corpus in {shards})", stacklevel=2)
                _barrier("stale index seen", layout_count)
                if layout_index == 0:
                    shutil.rmtree(index_dir)
                _barrier("stale index removed", layout_count)
        if index is None:
            record = self.encoding_record()
            summary = encode_to_shards(passages, shards, self.passage_encoder(length_bucket), shard_size=shard_size,
                                       batch_size=self.batch_size, process_index=layout_index,
                                       process_count=layout_count, total=total, progress=progress,
                                       settings={"model": record["model"], **self.settings.passage_fields()})
            _barrier("corpus encoded", layout_count)
            if layout_index == 0:
                write_manifest(shards, summary.num_shards, extra=dict(extra or {}))
            _barrier("corpus manifest written", layout_count)
            index = LateInteractionIndex.from_shards(shards, index_config, directory=index_dir, progress=progress,
                                                     calibration_queries=calibration_queries, encoding=record)
        self.index, self.index_dir = index, os.path.abspath(index_dir)
        self.check_index(index)
        return index

    # Search ------------------------------------------------------------------------------------------------------

    def search(self, questions: Sequence[str], images: Sequence[Any] | None = None, k: int = 10,
               exact: bool = False) -> tuple[list[list[str]], list[np.ndarray]]:
        """The top-`k` passages of each query: (ids per query, scores per query), best first."""
        if self.index is None:
            raise ValueError("this searcher has no index: give one to Searcher.load, or build_index first")
        embs, mask = self.encode_queries(questions, images)
        positions, scores = self.index.search_positions(embs, mask, min(k, self.index.num_passages), exact=exact)
        ids = [[self.index.ids[p] for p in row if p >= 0] for row in positions]
        return ids, [s[:len(row)] for s, row in zip(scores, ids)]


def _barrier(name: str, process_count: int) -> None:
    if process_count > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def resolve_settings(config: MIReConfig, index: LateInteractionIndex | None, given: Mapping[str, Any], *,
                     force: bool = False, index_dir: str = "") -> EncodingSettings:
    """The settings to encode with: the index's recorded ones (a given setting that differs is refused, naming its
    flag, unless `force`), else `EncodingSettings()` with the model's image preprocessing and the given ones."""
    given = {k: v for k, v in given.items() if v is not None}
    unknown = sorted(set(given) - set(EncodingSettings.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown encoding settings {unknown}")
    recorded = (index.encoding.get("settings") if index is not None else None)
    if recorded is None:
        return EncodingSettings(image=config.vision.image_processing()).replace(**given)
    settings = EncodingSettings.from_dict(recorded)
    if settings.image != config.vision.image_processing() and not force:
        raise SettingsError(f"the index {index_dir} was encoded with images preprocessed as {settings.image}, the "
                            f"model's vision tower takes {config.vision.image_processing()}")
    for name, value in given.items():
        if getattr(settings, name) != value and not force:
            flag = SETTING_FLAGS.get(name, name)
            raise SettingsError(f"{flag} {value} contradicts the index's {name} {getattr(settings, name)} "
                                f"({index_dir}): leave it out, or add --force-settings to encode queries otherwise")
    return settings.replace(**given)


def run_paths(run_dir: str | os.PathLike) -> dict:
    """{model, index, passages} of a run folder's `serve.json` (paths in it are relative to the folder)."""
    run_dir = os.fspath(run_dir)
    path = os.path.join(run_dir, RUN_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{run_dir} names nothing to serve (no {RUN_FILE}; `make demo` writes one): give "
                                "--model, --index and --passages")
    record = read_json(path)
    missing = [key for key in ("model", "index", "passages") if not record.get(key)]
    if missing:
        raise ValueError(f"{path}: names no {', '.join(missing)}")
    return {key: os.path.join(run_dir, record[key]) for key in ("model", "index", "passages")}


def write_run_paths(run_dir: str | os.PathLike, *, model: str, index: str, passages: str) -> str:
    """Writes `run_dir/serve.json` naming the model, index and passages to serve (stored relative to the folder)."""
    run_dir = os.fspath(run_dir)
    record = {key: os.path.relpath(os.path.abspath(value), os.path.abspath(run_dir))
              for key, value in (("model", model), ("index", index), ("passages", passages))}
    path = os.path.join(run_dir, RUN_FILE)
    write_json(path, record, indent=2)
    return path
