"""The stored tokens of an index shard: quantised codes with a per-token scale, laid out for exact search.

**Codecs** (`CODECS`; `IndexConfig.token_codec`). A token x (a row of `dim` floats) is kept as

- `"int8"`: 8-bit codes c and one float16 scale s: x ~ s * (c - 127), s = max|x_i| / 127 rounded up to float16,
  c = round(x / s) + 127 in 0..254. `dim` + 2 bytes per token (130 at 128-d); the largest error of a coordinate is
  s / 2, 1/254 of the token's largest coordinate.
- `"int4"`: the same with 4-bit codes (c - 7, s = max|x_i| / 7), two codes per byte, low nibble first:
  `ceil(dim / 2)` + 2 bytes per token.
- `"float16"`: the tokens as float16 (no quantisation, no scale): 2 `dim` bytes per token.

**Layout** (`Layout`): exact search scores passages in blocks of equal padded length, so the store keeps them that
way and no gather happens at search. The corpus's passages are split by length into a few groups (`group_lengths`:
at most one per 128k tokens and at most 32, the cut points chosen to pad the fewest rows); a passage takes as many
rows as the longest passage of its group: its tokens, then copies of its first token, which can never change a
maximum. Groups are stored in ascending length, passages within a group in corpus order, so a group (a `Bucket`) is
one contiguous [passages, length, width] array of the store and a passage's own tokens are one contiguous run of
rows. Every shard of an index uses the groups of the whole corpus (one compiled exact-search program per group).
Passages without tokens take no rows. The padding costs 1-5% of the rows on the project's corpora.

Files of a shard folder: `tokens.npy` (codes [rows, width], uint8, or float16 for `"float16"`), `scales.npy`
(float16 [rows], not for `"float16"`); shard.json records the codec and the groups (`Layout.describe`).

"Exact" search over an index means MaxSim over these stored tokens: with `"int8"` it returns 99.6-99.9% of the
float32 top 100 on the benchmark corpora (bench/token_store.py).
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Sequence

import numpy as np

TOKENS = "tokens.npy"
SCALES = "scales.npy"
ENCODE_ROWS = 1 << 18  # rows encoded at once while building a store


@dataclasses.dataclass(frozen=True)
class Codec:
    """How a token row is stored: `bits` per coordinate (16: float16, no scale)."""

    name: str
    bits: int

    @property
    def quantised(self) -> bool:
        return self.bits < 16

    @property
    def levels(self) -> int:
        """The largest code magnitude: codes are stored as c + levels in 0..2 levels."""
        return (1 << (self.bits - 1)) - 1

    @property
    def dtype(self) -> np.dtype:
        """dtype of `tokens.npy`."""
        return np.dtype(np.uint8) if self.quantised else np.dtype(f"float{self.bits}")

    def width(self, dim: int) -> int:
        """Columns of `tokens.npy` for `dim`-d tokens."""
        return -(-dim * self.bits // 8) if self.bits == 4 else dim

    def bytes_per_token(self, dim: int) -> int:
        """Bytes a stored token row takes (codes and scale)."""
        return self.width(dim) * self.dtype.itemsize + (2 if self.quantised else 0)

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Tokens [n, dim] (any float dtype) -> (codes [n, width], float16 scales [n] or None)."""
        x = np.asarray(x, np.float32)
        if not self.quantised:
            return x.astype(self.dtype), None
        scale = (np.abs(x).max(axis=1) / self.levels).astype(np.float16)
        low = scale.astype(np.float32) * self.levels < np.abs(x).max(axis=1)  # rounded down: step up once
        scale[low] = np.nextafter(scale[low], np.float16(np.inf))
        s = scale.astype(np.float32)
        safe = np.where(s > 0, s, 1.0)[:, None]
        codes = (np.clip(np.rint(x / safe), -self.levels, self.levels) + self.levels).astype(np.uint8)
        if self.bits == 4:
            if codes.shape[1] % 2:
                codes = np.pad(codes, ((0, 0), (0, 1)), constant_values=self.levels)
            codes = codes[:, 0::2] | (codes[:, 1::2] << 4)
        return np.ascontiguousarray(codes), scale

    def decode(self, codes: np.ndarray, scales: np.ndarray | None, dim: int) -> np.ndarray:
        """codes [..., width] and scales [...] -> float32 tokens [..., dim] (numpy)."""
        if not self.quantised:
            return np.asarray(codes, np.float32)
        codes = np.asarray(codes)
        if self.bits == 4:
            codes = np.stack([codes & 15, codes >> 4], axis=-1).reshape(*codes.shape[:-1], -1)[..., :dim]
        return (codes.astype(np.float32) - self.levels) * np.asarray(scales, np.float32)[..., None]

    def decode_jax(self, codes, scales, dim: int, dtype=None):
        """`decode` in JAX (traced inside the exact search and the rerank): -> `dtype` (float32) tokens."""
        import jax.numpy as jnp

        dtype = dtype or jnp.float32
        if not self.quantised:
            return codes.astype(dtype)
        if self.bits == 4:
            codes = jnp.stack([codes & 15, codes >> 4], axis=-1).reshape(*codes.shape[:-1], -1)[..., :dim]
        values = codes.astype(jnp.float32) - self.levels
        return (values * scales.astype(jnp.float32)[..., None]).astype(dtype)


CODECS = {"int8": Codec("int8", 8), "int4": Codec("int4", 4), "float16": Codec("float16", 16)}
DEFAULT_CODEC = "int8"
FLOAT32 = Codec("float32", 32)  # `mire_jax.index.exact.exact_search` of float32 arrays; not an index's codec


def codec_of(name: str) -> Codec:
    """The codec called `name` (one line naming the known ones otherwise)."""
    if name == FLOAT32.name:
        return FLOAT32
    if name not in CODECS:
        raise ValueError(f"unknown token codec {name!r}: one of {sorted(CODECS)}")
    return CODECS[name]


MAX_GROUPS = 32  # group lengths of a corpus: one compiled exact-search program each
TOKENS_PER_GROUP = 1 << 17  # a corpus may take one group per this many tokens...
PADDING_TARGET = 0.1  # ...and as many as padding at most this share of its tokens needs (more below 1M tokens,
PADDING_TOKENS = 1 << 20  # where compiling a program costs more than the padding's compute: 0.1 sqrt(1M / tokens))


def group_lengths(lengths: np.ndarray, max_groups: int | None = None) -> list[int]:
    """The padded lengths of a corpus's groups, chosen to pad the fewest rows (an exact partition of the sorted
    lengths, by dynamic programming). At most `max_groups` groups; None: one per `TOKENS_PER_GROUP` tokens, or as
    many as keep the padding under `PADDING_TARGET` of the tokens (more for small corpora, see `PADDING_TOKENS`) if
    that is more, and at most `MAX_GROUPS`."""
    lengths = np.asarray(lengths, np.int64)
    values, counts = np.unique(lengths[lengths > 0], return_counts=True)
    if not len(values):
        return []
    total = int(lengths.sum())
    by_size = max(1, -(-total // TOKENS_PER_GROUP))
    target = min(1.0, PADDING_TARGET * max(1.0, PADDING_TOKENS / max(total, 1)) ** 0.5)
    limit = min(MAX_GROUPS, len(values)) if max_groups is None else max(1, min(int(max_groups), len(values)))
    count_sum = np.concatenate([[0], np.cumsum(counts)])
    token_sum = np.concatenate([[0], np.cumsum(counts * values)])
    n = len(values)
    best = np.full(n + 1, np.inf)  # best[j]: fewest padded rows of values[:j] in the groups so far
    best[0] = 0.0
    choice = np.zeros((limit + 1, n + 1), np.int64)
    for g in range(1, limit + 1):
        new = np.full(n + 1, np.inf)
        for j in range(1, n + 1):
            i = np.arange(j)
            cost = best[i] + (count_sum[j] - count_sum[i]) * values[j - 1] - (token_sum[j] - token_sum[i])
            choice[g, j] = int(np.argmin(cost))
            new[j] = cost[choice[g, j]]
        best = new
        if best[n] == 0 or (max_groups is None and g >= by_size and best[n] <= target * total):
            break
    cuts, j = [], n
    while j > 0:
        cuts.append(int(values[j - 1]))
        j = int(choice[g, j])
        g -= 1
    return sorted(cuts)


@dataclasses.dataclass(frozen=True)
class Bucket:
    """Passages of one padded length, stored contiguously.

    Attributes:
        length: rows per passage.
        start: index in `Layout.order` of its first passage.
        count: passages.
        row: store row of its first passage.
    """

    length: int
    start: int
    count: int
    row: int

    @property
    def rows(self) -> int:
        return self.length * self.count


class Layout:
    """Where every passage's tokens are in a store (see the module docstring).

    Attributes:
        lengths: [N] tokens per passage, corpus order.
        buckets: the groups, ascending length.
        order: [N] passages in store order (passages without tokens last).
        rows: [N] the store row of every passage's first token (-1 for a passage without tokens).
        num_rows: rows of the store.
    """

    def __init__(self, lengths: np.ndarray, bucket_lengths: Sequence[int]):
        self.lengths = np.asarray(lengths, np.int64)
        bucket_lengths = sorted(int(b) for b in bucket_lengths)
        nonempty = self.lengths > 0
        if nonempty.any() and (not bucket_lengths or self.lengths.max() > bucket_lengths[-1]):
            raise ValueError(f"no group is long enough for a passage of {int(self.lengths.max())} tokens")
        group = np.searchsorted(np.asarray(bucket_lengths, np.int64), self.lengths)  # the first length >= n
        group = np.where(nonempty, group, len(bucket_lengths))
        self.order = np.argsort(group, kind="stable").astype(np.int64)
        counts = np.bincount(group, minlength=len(bucket_lengths) + 1)[:len(bucket_lengths)]
        self.buckets, start, row = [], 0, 0
        self.rows = np.full(len(self.lengths), -1, np.int64)
        for length, count in zip(bucket_lengths, counts.tolist()):
            if count:
                self.buckets.append(Bucket(length, start, count, row))
                self.rows[self.order[start:start + count]] = row + length * np.arange(count)
            start, row = start + count, row + length * count
        self.num_rows = int(row)

    @classmethod
    def of(cls, lengths: np.ndarray, groups: Sequence[int] | None = None) -> "Layout":
        """The layout of a corpus with these passage lengths, in `groups` (padded lengths; None: `group_lengths`
        of these lengths)."""
        lengths = np.asarray(lengths, np.int64)
        return cls(lengths, group_lengths(lengths) if groups is None else groups)

    def describe(self) -> dict:
        """The layout as shard.json records it."""
        return {"order": "passages grouped by padded length (ascending), corpus order within a group; each "
                         "passage's tokens, then copies of its first token up to the group's length",
                "groups": [{"length": b.length, "passages": b.count, "row": b.row} for b in self.buckets],
                "rows": self.num_rows}

    @classmethod
    def from_description(cls, lengths: np.ndarray, description: dict) -> "Layout":
        """The layout a shard.json describes, checked against the passage lengths."""
        layout = cls(lengths, [g["length"] for g in description["groups"]])
        found = [{"length": b.length, "passages": b.count, "row": b.row} for b in layout.buckets]
        if found != description["groups"] or layout.num_rows != description["rows"]:
            raise ValueError("the stored groups do not match the passage lengths")
        return layout

    def source_rows(self, bucket: Bucket, offsets: np.ndarray) -> np.ndarray:
        """[count, length] corpus token rows that fill a bucket (padding repeats a passage's first token)."""
        passages = self.order[bucket.start:bucket.start + bucket.count]
        column = np.arange(bucket.length)[None, :]
        lengths = self.lengths[passages][:, None]
        return np.asarray(offsets, np.int64)[passages][:, None] + np.where(column < lengths, column, 0)


class TokenStore:
    """The tokens of a corpus as stored (see the module docstring), readable as the float32 matrix they encode.

    Indexing (`store[i]`, `store[a:b]`, `store[rows]`) reads tokens in corpus order (passage p owns rows
    offsets[p]:offsets[p + 1]) and decodes them, so a store stands wherever a [tokens, dim] array of the corpus's
    tokens is read (calibration's query drawing, the server's passage heatmaps).

    Attributes:
        codes: [rows, width] stored codes (an array, or a memory map once saved).
        scales: [rows] float16 scales (None for float16).
        layout: where every passage is.
        codec: how rows are coded.
        dim: token size.
        offsets: [N + 1] corpus token offsets.
    """

    def __init__(self, codes, scales, layout: Layout, codec: Codec, dim: int):
        self.codes, self.scales, self.layout, self.codec, self.dim = codes, scales, layout, codec, int(dim)
        self.offsets = np.concatenate([[0], np.cumsum(layout.lengths)]).astype(np.int64)
        if codes.shape != (layout.num_rows, codec.width(dim)):
            raise ValueError(f"stored codes have shape {codes.shape}, the layout needs "
                             f"{(layout.num_rows, codec.width(dim))}")
        self.shape = (int(self.offsets[-1]), self.dim)
        self.dtype = np.dtype(np.float32)
        self.ndim = 2

    # Building and files ------------------------------------------------------------------------------

    @classmethod
    def encode(cls, embeddings, lengths: np.ndarray, codec: Codec | str = DEFAULT_CODEC,
               groups: Sequence[int] | None = None) -> "TokenStore":
        """The store of a corpus given as [tokens, dim] embeddings (any float dtype, may be a memory map) in corpus
        order, held in memory; `groups`: the padded lengths to group passages by (None: `group_lengths`)."""
        codec = codec_of(codec) if isinstance(codec, str) else codec
        lengths = np.asarray(lengths, np.int64)
        layout = Layout.of(lengths, groups)
        dim = int(embeddings.shape[1])
        codes = np.empty((layout.num_rows, codec.width(dim)), codec.dtype)
        scales = np.empty(layout.num_rows, np.float16) if codec.quantised else None
        for row, c, s in _encoded_rows(embeddings, layout, codec):
            codes[row:row + len(c)] = c
            if scales is not None:
                scales[row:row + len(c)] = s
        return cls(codes, scales, layout, codec, dim)

    def describe(self) -> dict:
        """What shard.json says of the stored tokens."""
        return describe(self.codec, self.dim, self.layout)

    def save(self, folder: pathlib.Path) -> list[str]:
        """Write the store's files into `folder` (in chunks: it may be a memory map); -> their names."""
        _write_npy(folder / TOKENS, self.codes)
        if self.scales is None:
            return [TOKENS]
        _write_npy(folder / SCALES, self.scales)
        return [TOKENS, SCALES]

    @staticmethod
    def write(folder: pathlib.Path, embeddings, lengths: np.ndarray, codec: Codec | str,
              groups: Sequence[int] | None = None) -> dict:
        """Encode a corpus straight into `folder`'s files, a bounded number of rows at a time; -> `describe()`."""
        codec = codec_of(codec) if isinstance(codec, str) else codec
        layout = Layout.of(np.asarray(lengths, np.int64), groups)
        dim = int(embeddings.shape[1])
        with open(folder / TOKENS, "wb") as ft, open(folder / SCALES, "wb") if codec.quantised else _null() as fs:
            np.lib.format.write_array_header_1_0(ft, {"descr": codec.dtype.str, "fortran_order": False,
                                                      "shape": (layout.num_rows, codec.width(dim))})
            if fs is not None:
                np.lib.format.write_array_header_1_0(fs, {"descr": np.dtype(np.float16).str,
                                                          "fortran_order": False, "shape": (layout.num_rows,)})
            for _, c, s in _encoded_rows(embeddings, layout, codec):
                ft.write(np.ascontiguousarray(c).tobytes())
                if fs is not None:
                    fs.write(np.ascontiguousarray(s).tobytes())
        return describe(codec, dim, layout)

    @classmethod
    def open(cls, folder: pathlib.Path, lengths: np.ndarray, description: dict) -> "TokenStore":
        """The store saved in `folder`, memory-mapped; `description` is what shard.json recorded."""
        codec = codec_of(description["codec"])
        layout = Layout.from_description(lengths, description["layout"])
        # Plain arrays over the mapped files: slicing a np.memmap costs microseconds (the rerank slices thousands).
        codes = np.load(folder / TOKENS, mmap_mode="r").view(np.ndarray)
        scales = np.load(folder / SCALES, mmap_mode="r").view(np.ndarray) if codec.quantised else None
        if codes.dtype != codec.dtype or (scales is not None and scales.shape != (layout.num_rows,)):
            raise ValueError(f"{folder / TOKENS}: not {codec.name} codes of the recorded layout")
        return cls(codes, scales, layout, codec, description["dim"])

    # Reading -----------------------------------------------------------------------------------------

    @property
    def num_passages(self) -> int:
        return len(self.layout.lengths)

    @property
    def nbytes(self) -> int:
        """Bytes of the stored codes and scales."""
        return int(self.codes.nbytes + (0 if self.scales is None else self.scales.nbytes))

    def __len__(self) -> int:
        return self.shape[0]

    def store_rows(self, token_rows: np.ndarray) -> np.ndarray:
        """Corpus token rows -> rows of the store."""
        token_rows = np.asarray(token_rows, np.int64)
        passage = np.searchsorted(self.offsets, token_rows, side="right") - 1
        return self.layout.rows[passage] + token_rows - self.offsets[passage]

    def decode_rows(self, rows: np.ndarray) -> np.ndarray:
        """Stored rows -> float32 tokens [len(rows), dim]."""
        rows = np.asarray(rows, np.int64)
        order = np.argsort(rows, kind="stable")  # sorted reads of the mapped files
        out = np.empty((len(rows), self.dim), np.float32)
        sorted_rows = rows[order]
        out[order] = self.codec.decode(self.codes[sorted_rows],
                                       None if self.scales is None else self.scales[sorted_rows], self.dim)
        return out

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            index = int(index) + (self.shape[0] if index < 0 else 0)
            if not 0 <= index < self.shape[0]:
                raise IndexError(f"token {index} of {self.shape[0]}")
            return self.decode_rows(self.store_rows(np.array([index])))[0]
        if isinstance(index, slice):
            start, stop, step = index.indices(self.shape[0])
            index = np.arange(start, stop, step)
        rows = np.asarray(index, np.int64)
        if rows.size and (rows.min() < -self.shape[0] or rows.max() >= self.shape[0]):
            raise IndexError(f"token rows out of range for {self.shape[0]} tokens")
        rows = np.where(rows < 0, rows + self.shape[0], rows)
        return self.decode_rows(self.store_rows(rows.reshape(-1))).reshape(*rows.shape, self.dim)

    def __array__(self, dtype=None, copy=None):
        out = self[0:self.shape[0]]
        return out if dtype is None else out.astype(dtype)

    def astype(self, dtype) -> np.ndarray:
        """Every token, decoded, as a `dtype` array."""
        return np.asarray(self, dtype)

    def passage(self, p: int) -> np.ndarray:
        """float32 tokens [length, dim] of passage p."""
        row, n = int(self.layout.rows[p]), int(self.layout.lengths[p])
        if n == 0:
            return np.zeros((0, self.dim), np.float32)
        return self.codec.decode(self.codes[row:row + n], None if self.scales is None else self.scales[row:row + n],
                                 self.dim)

    def bucket_arrays(self, bucket: Bucket) -> tuple[np.ndarray, np.ndarray | None]:
        """A bucket's (codes [count, length, width], scales [count, length] or None): views of the store."""
        rows = slice(bucket.row, bucket.row + bucket.rows)
        codes = self.codes[rows].reshape(bucket.count, bucket.length, -1)
        scales = None if self.scales is None else self.scales[rows].reshape(bucket.count, bucket.length)
        return codes, scales


def describe(codec: Codec, dim: int, layout: Layout) -> dict:
    """What shard.json says of a store: codec, format of a row, files and groups."""
    if codec.quantised:
        note = (f"{codec.bits}-bit codes c, token = scale * (c - {codec.levels}), one float16 scale per token "
                f"= max |coordinate| / {codec.levels}" + (", two codes per byte, low nibble first"
                                                          if codec.bits == 4 else ""))
    else:
        note = f"{codec.name} coordinates"
    return {"codec": codec.name, "bits": codec.bits, "dim": int(dim), "width": codec.width(dim),
            "files": [TOKENS] + ([SCALES] if codec.quantised else []), "format": note,
            "bytes_per_row": codec.bytes_per_token(dim), "layout": layout.describe()}


def _encoded_rows(embeddings, layout: Layout, codec: Codec):
    """(store row, codes, scales) of the whole store in order, `ENCODE_ROWS` rows at a time."""
    offsets = np.concatenate([[0], np.cumsum(layout.lengths)]).astype(np.int64)
    for bucket in layout.buckets:
        per = max(1, ENCODE_ROWS // bucket.length)
        for first in range(0, bucket.count, per):
            part = Bucket(bucket.length, bucket.start + first, min(per, bucket.count - first),
                          bucket.row + first * bucket.length)
            source = layout.source_rows(part, offsets).reshape(-1)
            unique, inverse = np.unique(source, return_inverse=True)  # sorted reads of a memory map
            codes, scales = codec.encode(np.asarray(embeddings[unique], np.float32))
            yield part.row, codes[inverse], None if scales is None else scales[inverse]


def _write_npy(path: pathlib.Path, array) -> None:
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": array.dtype.str, "fortran_order": False,
                                                 "shape": tuple(array.shape)})
        step = max(1, (64 << 20) // max(1, array[:1].nbytes))
        for start in range(0, array.shape[0], step):
            f.write(np.ascontiguousarray(array[start:start + step]).tobytes())


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
