"""Writes the generated benchmark to disk in the formats the rest of mire-jax reads.

Layout under `out_dir` (all image paths in the files are relative to `out_dir/images`):

    manifest.json                   what was generated: seed, sizes, attribute values, files with counts/sha256
    images/{train,caption,zeroshot,seen}/*.png
    llava/synthetic_dialogues.json  LLaVA visual-instruction dialogues about training pictures (docs/data_formats.md)
    kb/Wiki6M_synthetic.jsonl       knowledge base like Wiki6M (docs/data_formats.md): training entities + designers + towns
    zeroshot/test.jsonl             generic JSONL queries on unseen attribute combinations
    corpora/zeroshot.jsonl          {"id", "text"}: the zero-shot entities' passages plus distractors
    finetune/train.jsonl            generic JSONL queries on the training pictures (gold passage = KB article)
    finetune/validation.jsonl       the same on new pictures of training entities (seen combinations)
    vocab.txt                       a small WordPiece vocabulary of the world's texts (for tiny random towers)
    corpora/seen.jsonl              {"id", "text"}: the training entities' passages (corpus of validation.jsonl)
    warmup/captions.jsonl           {"image", "caption"} for image-text warm-up of a vision tower
    warmup/text_pairs.jsonl         {"query", "positive"} for text-side warm-up
    meta/entities.jsonl, meta/images.jsonl   ground truth: attributes, facts, render parameters

With `questions="trap"` (see `text.QUESTION_STYLES`) the dialogues name the entity's kind and each zero-shot query
is a trap (its record adds "trap": specific | generic | misleading, and "named": the noun its question uses); the
pictures, passages and knowledge base are those of the generic world of the same seed and sizes.
`object_masks(out_dir)` gives each picture's object mask, replayed from the manifest (the pictures unchanged).

Each folder of query files holds only `<split>.jsonl` files, so it can serve as the manual dir of the
`image_question_jsonl` dataset builder (with `image_root` = `out_dir/images`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import pathlib
import shutil
from typing import Any, Iterable

import numpy as np
from PIL import Image
from tqdm import tqdm

from mire_jax.demo.world import rendering, text
from mire_jax.demo.world.attributes import Appearance
from mire_jax.demo.world.vocab import wordpiece_vocabulary
from mire_jax.demo.world.world import (
    SPLIT_DISTRACTOR,
    SPLIT_TRAIN,
    SPLIT_ZEROSHOT,
    STREAM_IMAGES,
    STREAM_TEXT,
    SyntheticSizes,
    World,
    build_world,
    rng_for,
)
from mire_jax.files import iter_json_lines

GENERATOR_NAME = "mire_jax.demo.world"
FORMAT_VERSION = 1
IMAGE_ROOT = "images"
_IMAGE_SPLIT_CODES = {"train": 0, "caption": 1, "zeroshot": 2, "seen": 3}
# Text streams are offset so that each output file draws from its own generator.
_TEXT_DIALOGUES, _TEXT_ZEROSHOT, _TEXT_SEEN, _TEXT_FINETUNE, _TEXT_CAPTIONS, _TEXT_PAIRS, _TEXT_ORDER = range(1, 8)
_TEXT_TRAPS = 8


@dataclasses.dataclass
class _Picture:
    relpath: str  # relative to the image root
    split: str
    appearance: Appearance
    entity_id: str | None
    key: tuple[int, ...]  # random key of this picture's view and noise


class _Output:
    """Collects files under a directory and records their counts and checksums."""

    def __init__(self, root: pathlib.Path):
        self.root = root
        self.files: dict[str, dict[str, Any]] = {}

    def _write(self, relpath: str, data: bytes) -> str:
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return hashlib.sha256(data).hexdigest()

    def jsonl(self, name: str, relpath: str, file_format: str, records: list[dict]) -> None:
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
        self.files[name] = {"path": relpath, "format": file_format, "count": len(records),
                            "sha256": self._write(relpath, data)}

    def json_array(self, name: str, relpath: str, file_format: str, records: list[dict]) -> None:
        data = (json.dumps(records, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
        self.files[name] = {"path": relpath, "format": file_format, "count": len(records),
                            "sha256": self._write(relpath, data)}

    def lines(self, name: str, relpath: str, file_format: str, lines: list[str]) -> None:
        data = "".join(line + "\n" for line in lines).encode("utf-8")
        self.files[name] = {"path": relpath, "format": file_format, "count": len(lines),
                            "sha256": self._write(relpath, data)}

    def png(self, relpath: str, pixels: np.ndarray) -> str:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG", compress_level=6)
        return self._write(relpath, buffer.getvalue())


def _code_fingerprint() -> str:
    """Digest of this package's source: an output made by other generator code is not reused."""
    digest = hashlib.sha256()
    for path in sorted(pathlib.Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode("utf-8") + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _images_digest(checksums: dict[str, str]) -> str:
    lines = "".join(f"{path}\t{checksums[path]}\n" for path in sorted(checksums))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def _plan_pictures(world: World, sizes: SyntheticSizes, seed: int) -> dict[str, list[_Picture]]:
    """Decides every picture (which appearance, which file) before rendering."""
    train = world.by_split(SPLIT_TRAIN)
    zeroshot = world.by_split(SPLIT_ZEROSHOT)
    code = _IMAGE_SPLIT_CODES
    plan: dict[str, list[_Picture]] = {"train": [], "caption": [], "zeroshot": [], "seen": []}
    for i, entity in enumerate(train):
        for view in range(sizes.views_per_train_entity):
            plan["train"].append(_Picture(f"train/{entity.entity_id}_v{view}.png", "train", entity.appearance,
                                          entity.entity_id, (code["train"], i, view)))
    # Extra caption pictures use any combination that is not held out: never a zero-shot look.
    allowed = [e.appearance for e in train] + list(world.unused_combinations)
    picks = rng_for(seed, STREAM_IMAGES, code["caption"]).integers(len(allowed), size=sizes.n_extra_caption_images)
    for i, pick in enumerate(picks):
        plan["caption"].append(_Picture(f"caption/c{i:06d}.png", "caption", allowed[pick], None,
                                        (code["caption"], i)))
    # Query pictures get opaque names in a shuffled order, so neither name nor order points to the entity.
    n_zs = len(zeroshot) * sizes.queries_per_zeroshot_entity
    zs_order = rng_for(seed, STREAM_IMAGES, code["zeroshot"]).permutation(n_zs)
    for slot, flat in enumerate(zs_order):
        entity = zeroshot[flat // sizes.queries_per_zeroshot_entity]
        plan["zeroshot"].append(_Picture(f"zeroshot/zs{slot:06d}.png", "zeroshot", entity.appearance,
                                         entity.entity_id, (code["zeroshot"], slot)))
    seen_rng = rng_for(seed, STREAM_IMAGES, code["seen"])
    # Every training entity once (in a random order) before any repeats.
    rounds = -(-sizes.n_seen_queries // len(train))
    seen_entities = [int(i) for _ in range(rounds) for i in seen_rng.permutation(len(train))]
    for slot in range(sizes.n_seen_queries):
        entity = train[seen_entities[slot]]
        plan["seen"].append(_Picture(f"seen/seen{slot:06d}.png", "seen", entity.appearance, entity.entity_id,
                                     (code["seen"], slot)))
    return plan


def _render_all(out: _Output, plan: dict[str, list[_Picture]], seed: int, size: int, progress: bool
                ) -> tuple[dict[str, str], list[dict]]:
    pictures = [p for split in ("train", "caption", "zeroshot", "seen") for p in plan[split]]
    checksums, records = {}, []
    for picture in tqdm(pictures, desc="rendering pictures", unit="img", disable=not progress):
        rng = rng_for(seed, STREAM_IMAGES, 100, *picture.key)
        view = rendering.sample_view(rng)
        pixels = rendering.render(picture.appearance, view, size, rng)
        checksums[picture.relpath] = out.png(f"{IMAGE_ROOT}/{picture.relpath}", pixels)
        records.append({"image": picture.relpath, "split": picture.split, "entity_id": picture.entity_id,
                        "appearance": picture.appearance.as_dict(), "view": view.as_dict()})
    return checksums, records


def _dialogues(world: World, plan: dict[str, list[_Picture]], sizes: SyntheticSizes, seed: int,
               name_kind: bool = False) -> list[dict]:
    by_id = {e.entity_id: e for e in world.entities}
    rng = rng_for(seed, STREAM_TEXT, _TEXT_DIALOGUES)
    records = []
    for picture in plan["train"]:
        entity = by_id[picture.entity_id]
        conversations = []
        for turn, (question, response) in enumerate(
            text.dialogue_turns(entity.facts, entity.appearance, rng, sizes.turns_per_dialogue, name_kind)
        ):
            conversations.append({"from": "human", "value": ("<image>\n" if turn == 0 else "") + question})
            conversations.append({"from": "gpt", "value": response})
        record_id = picture.relpath.split("/")[-1].removesuffix(".png")
        records.append({"id": record_id, "image": picture.relpath, "conversations": conversations})
    return records


def _queries(world: World, pictures: list[_Picture], rng: np.random.Generator, prefix: str,
             trap_rng: np.random.Generator | None = None) -> list[dict]:
    """Generic JSONL queries: a generic question per picture, gold = the pictured entity's passage. With `trap_rng`
    each question is made a trap (`text.trap_question`), the trap types in equal shares in a random order, drawn
    from that generator alone, so the questions' fields and answers are those of the generic world."""
    by_id = {e.entity_id: e for e in world.entities}
    traps = []
    if trap_rng is not None:
        traps = [text.TRAP_TYPES[i % len(text.TRAP_TYPES)] for i in trap_rng.permutation(len(pictures))]
    records = []
    for slot, picture in enumerate(pictures):
        entity = by_id[picture.entity_id]
        field, question = text.zeroshot_question(rng)
        trap = {}
        if trap_rng is not None:
            trap["trap"] = traps[slot]
            question, trap["named"] = text.trap_question(question, entity.facts.kind, traps[slot], trap_rng)
        records.append({"id": f"{prefix}{slot:06d}", "question": question, "image": picture.relpath,
                        "document": entity.passage, "document_id": entity.entity_id,
                        "answer": entity.facts.answer(field), **trap})
    return records


def _corpus(entities: Iterable, rng: np.random.Generator) -> list[dict]:
    entities = list(entities)
    return [{"id": entities[i].entity_id, "text": entities[i].passage} for i in rng.permutation(len(entities))]


def _knowledge_base(world: World, rng: np.random.Generator) -> list[dict]:
    rows = [{"wikidata_id": e.entity_id, "wikipedia_title": e.facts.name, "wikipedia_content": e.passage}
            for e in world.by_split(SPLIT_TRAIN)]
    rows += [{"wikidata_id": a.entity_id, "wikipedia_title": a.title, "wikipedia_content": a.content}
             for a in world.articles]
    return [rows[i] for i in rng.permutation(len(rows))]


def _write_all(root: pathlib.Path, seed: int, sizes: SyntheticSizes, progress: bool, questions: str) -> dict:
    world = build_world(seed, sizes)
    plan = _plan_pictures(world, sizes, seed)
    out = _Output(root)
    checksums, image_records = _render_all(out, plan, seed, sizes.image_size, progress)

    train = world.by_split(SPLIT_TRAIN)
    zeroshot_corpus_entities = world.by_split(SPLIT_ZEROSHOT) + world.by_split(SPLIT_DISTRACTOR)
    order_rng = rng_for(seed, STREAM_TEXT, _TEXT_ORDER)

    trap = questions == "trap"
    out.json_array("dialogues", "llava/synthetic_dialogues.json", "llava_json",
                   _dialogues(world, plan, sizes, seed, name_kind=trap))
    out.jsonl("knowledge_base", "kb/Wiki6M_synthetic.jsonl", "wiki6m_jsonl", _knowledge_base(world, order_rng))
    out.jsonl("zeroshot_queries", "zeroshot/test.jsonl", "generic_queries_jsonl",
              _queries(world, plan["zeroshot"], rng_for(seed, STREAM_TEXT, _TEXT_ZEROSHOT), "zs",
                       rng_for(seed, STREAM_TEXT, _TEXT_TRAPS) if trap else None))
    out.jsonl("zeroshot_corpus", "corpora/zeroshot.jsonl", "corpus_jsonl",
              _corpus(zeroshot_corpus_entities, order_rng))
    out.jsonl("seen_queries", "finetune/validation.jsonl", "generic_queries_jsonl",
              _queries(world, plan["seen"], rng_for(seed, STREAM_TEXT, _TEXT_SEEN), "seen"))
    out.jsonl("seen_corpus", "corpora/seen.jsonl", "corpus_jsonl", _corpus(train, order_rng))
    finetune = _queries(world, plan["train"], rng_for(seed, STREAM_TEXT, _TEXT_FINETUNE), "ft")
    out.jsonl("finetune_queries", "finetune/train.jsonl", "generic_queries_jsonl", finetune)
    kb_texts = [a.content for a in world.articles] + [e.passage for e in world.entities]
    query_texts = [q["question"] + " " + q["document"] for q in finetune]
    out.lines("vocabulary", "vocab.txt", "wordpiece_vocab", wordpiece_vocabulary(kb_texts + query_texts))

    caption_rng = rng_for(seed, STREAM_TEXT, _TEXT_CAPTIONS)
    captions = [{"image": p.relpath, "caption": text.caption(p.appearance, caption_rng)}
                for p in plan["train"] + plan["caption"]]
    out.jsonl("captions", "warmup/captions.jsonl", "captions_jsonl", captions)
    pair_rng = rng_for(seed, STREAM_TEXT, _TEXT_PAIRS)
    pairs = [{"query": query, "positive": e.passage}
             for e in train for query in text.text_pairs(e.facts, e.appearance, e.passage, pair_rng,
                                                          sizes.text_pairs_per_entity)]
    out.jsonl("text_pairs", "warmup/text_pairs.jsonl", "text_pairs_jsonl", pairs)
    out.jsonl("entities", "meta/entities.jsonl", "entities_jsonl", [e.as_dict() for e in world.entities])
    out.jsonl("images_meta", "meta/images.jsonl", "images_jsonl", image_records)

    n_corpus = len(zeroshot_corpus_entities)
    manifest = {
        "generator": GENERATOR_NAME,
        "format_version": FORMAT_VERSION,
        "code_fingerprint": _code_fingerprint(),
        "seed": seed,
        "sizes": dataclasses.asdict(sizes),
        **({"questions": questions} if trap else {}),  # absent in the generic world, whose manifest is unchanged
        "attributes": world.space.as_dict(),
        "image_root": IMAGE_ROOT,
        "image_size": sizes.image_size,
        "images": {"count": len(checksums), "sha256": _images_digest(checksums),
                   "by_split": {split: len(pictures) for split, pictures in plan.items()}},
        "entities": {split: len(world.by_split(split)) for split in (SPLIT_TRAIN, SPLIT_ZEROSHOT, SPLIT_DISTRACTOR)},
        "kb_articles_without_picture": len(world.articles),
        "zeroshot_chance_recall_at_5": min(1.0, 5 / n_corpus),
        # Which query file is evaluated against which corpus (gold: a query's document_id).
        "evaluation": {
            "zeroshot": {"queries": out.files["zeroshot_queries"]["path"],
                         "corpus": out.files["zeroshot_corpus"]["path"]},
            "seen": {"queries": out.files["seen_queries"]["path"], "corpus": out.files["seen_corpus"]["path"]},
        },
        "files": out.files,
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def verify(out_dir: str | os.PathLike) -> dict:
    """Checks a generated directory against its manifest.

    Returns:
        The manifest.

    Raises:
        FileNotFoundError: if the manifest or a listed file is missing (naming it).
        ValueError: if a file's checksum or record count differs from the manifest (naming the file).
    """
    root = pathlib.Path(out_dir)
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path}: no manifest (not a generated synthetic benchmark)")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if manifest.get("generator") != GENERATOR_NAME:
        raise ValueError(f"{manifest_path}: not written by {GENERATOR_NAME}")
    for name, entry in manifest["files"].items():
        path = root / entry["path"]
        if not path.is_file():
            raise FileNotFoundError(f"{path}: listed in the manifest as {name!r} but missing")
        if hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
            raise ValueError(f"{path}: checksum differs from the manifest (file changed since generation)")
    image_meta = root / manifest["files"]["images_meta"]["path"]
    checksums = {}
    for _, where, record in iter_json_lines(image_meta):
        relpath = record["image"]
        path = root / manifest["image_root"] / relpath
        if not path.is_file():
            raise FileNotFoundError(f"{path}: listed at {where} but missing")
        checksums[relpath] = hashlib.sha256(path.read_bytes()).hexdigest()
    if len(checksums) != manifest["images"]["count"] or _images_digest(checksums) != manifest["images"]["sha256"]:
        raise ValueError(f"{root / manifest['image_root']}: images differ from the manifest (changed since generation)")
    return manifest


def _is_current(root: pathlib.Path, seed: int, sizes: SyntheticSizes, questions: str) -> bool:
    try:
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    identity = ("generator", "format_version", "code_fingerprint", "seed", "sizes")
    if tuple(manifest.get(key) for key in identity) != (
        GENERATOR_NAME, FORMAT_VERSION, _code_fingerprint(), seed, dataclasses.asdict(sizes)
    ) or manifest.get("questions", "generic") != questions:
        return False
    try:
        verify(root)
    except (OSError, ValueError, KeyError):
        return False
    return True


def generate(out_dir: str | os.PathLike, seed: int = 0, sizes: SyntheticSizes | None = None, *,
             force: bool = False, progress: bool = True, questions: str = "generic", **size_overrides: int) -> dict:
    """Generates the synthetic multimodal benchmark into `out_dir` (see the module docstring for the layout).

    The same seed and sizes always give byte-identical files. If `out_dir` already holds a verified output of
    the same seed and sizes it is kept as is (unless `force`). Otherwise everything is written to a temporary
    sibling directory that then replaces `out_dir`, so an interrupted run never leaves a half-written benchmark.

    Args:
        out_dir: destination directory; must be absent, empty, or a previous output of this generator.
        seed: the random seed.
        sizes: counts and attribute-space sizes (default `SyntheticSizes()`, the demo benchmark).
        force: regenerate even when `out_dir` is already current.
        progress: show a progress bar while rendering pictures.
        questions: "generic" (the demo's) or "trap" (see the module docstring).
        **size_overrides: fields of `SyntheticSizes` to override, e.g. `n_train_entities=100`.

    Returns:
        The manifest (also written to `out_dir/manifest.json`).

    Raises:
        FileExistsError: if `out_dir` holds something other than a previous output of this generator.
        ValueError / TypeError: for sizes that do not fit the attribute space, or an unknown size field.
    """
    sizes = sizes or SyntheticSizes()
    if size_overrides:
        known = {f.name for f in dataclasses.fields(SyntheticSizes)}
        unknown = sorted(set(size_overrides) - known)
        if unknown:
            raise TypeError(f"unknown size field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        sizes = dataclasses.replace(sizes, **size_overrides)
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if questions not in text.QUESTION_STYLES:
        raise ValueError(f"questions must be one of {text.QUESTION_STYLES}, got {questions!r}")

    root = pathlib.Path(out_dir)
    if root.exists() and not force and _is_current(root, seed, sizes, questions):
        return json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    if root.exists() and any(root.iterdir()):
        try:
            previous = json.loads((root / "manifest.json").read_text(encoding="utf-8")).get("generator")
        except (OSError, ValueError):
            previous = None
        if previous != GENERATOR_NAME:
            raise FileExistsError(f"{root}: exists, is not empty and holds no {GENERATOR_NAME} manifest; "
                                  "refusing to replace it")

    root.parent.mkdir(parents=True, exist_ok=True)
    staging = root.parent / f".{root.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        manifest = _write_all(staging, seed, sizes, progress, questions)
        if root.exists():
            shutil.rmtree(root)
        os.replace(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def object_masks(out_dir: str | os.PathLike, images: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Where the object is in each picture of a generated folder: image path (relative to the image root, as the
    query files name it) -> float32 [size, size], the share of each pixel the object covers.

    Replayed from the manifest's seed and sizes (each picture's view drawn again, nothing rendered), and checked
    against the view `meta/images.jsonl` recorded, so a folder written by other generator code is refused.

    Args:
        out_dir: the folder `generate` wrote.
        images: the pictures wanted (default: every picture).

    Raises:
        FileNotFoundError: no manifest. KeyError: a wanted picture the folder does not hold (named).
        ValueError: a replayed view that differs from the recorded one (the picture named).
    """
    root = pathlib.Path(out_dir)
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path}: no manifest (not a generated world)")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    sizes = SyntheticSizes(**manifest["sizes"])
    seed = manifest["seed"]
    plan = _plan_pictures(build_world(seed, sizes), sizes, seed)
    pictures = {p.relpath: p for split in plan.values() for p in split}
    wanted = list(pictures) if images is None else list(images)
    unknown = [path for path in wanted if path not in pictures]
    if unknown:
        raise KeyError(f"{root}: no picture {unknown[0]!r} ({len(unknown)} unknown)")
    recorded = {r["image"]: r["view"] for _, _, r in iter_json_lines(root / manifest["files"]["images_meta"]["path"])}
    masks = {}
    for path in wanted:
        picture = pictures[path]
        view = rendering.sample_view(rng_for(seed, STREAM_IMAGES, 100, *picture.key))
        if view.as_dict() != recorded.get(path):
            raise ValueError(f"{root / IMAGE_ROOT / path}: its recorded view differs from the replayed one (written "
                             "by other generator code?): regenerate the folder")
        masks[path] = rendering.object_mask(picture.appearance, view, sizes.image_size)
    return masks
