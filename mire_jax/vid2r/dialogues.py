"""LLaVA-style visual-instruction dialogues (docs/data_formats.md) -> (image, question, response) triples.

A dialogue file is one JSON array (`.json`) or JSON Lines (`.jsonl`, optionally `.gz`) of records
`{"id", "image" (absent on text-only records), "conversations": [{"from": "human"|"gpt", "value"}, ...]}`.

Splitting follows MIRe's `runs/data_filtering.py`: turn pairs (t, t+1) are walked for even t while the
roles are human -> gpt, stopping at the first pair that is not; a trailing unpaired turn is ignored. The
question is the human value with every `<image>` tag removed, stripped; the response is the gpt value as
it is (the filter cleans it). A record without `id` gets its 0-based position in the concatenation of all
input files, as the published script does.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterator, Sequence

from tqdm.auto import tqdm

from mire_jax.files import iter_json_lines, read_json_array

IMAGE_TAG = "<image>"
HUMAN, GPT = "human", "gpt"


class DialogueFormatError(ValueError):
    """A dialogue file or record is malformed; the message names the file and the record (or line)."""


@dataclasses.dataclass(frozen=True)
class Triple:
    """One question/response turn pair of a dialogue.

    Attributes:
        record_id: the dialogue's `id` as a str (or its position among all records when it has none).
        turn: index of the human turn in `conversations` (0, 2, 4, ...).
        image: the record's image path, or None for a text-only record.
        question: the human turn without `<image>` tags, stripped.
        response: the gpt turn, unchanged.
    """

    record_id: str
    turn: int
    image: str | None
    question: str
    response: str

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "Triple":
        return cls(**d)


@dataclasses.dataclass
class SplitCounts:
    """What happened to the records while splitting."""

    records: int = 0
    malformed_skipped: int = 0
    text_only_records: int = 0
    triples: int = 0
    dialogues_cut_at_role_mismatch: int = 0
    turns_after_role_mismatch: int = 0
    unpaired_trailing_turns: int = 0
    malformed_examples: list = dataclasses.field(default_factory=list)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _is_jsonl(path: str) -> bool:
    return path.removesuffix(".gz").endswith(".jsonl")


def iter_raw_records(path: str | os.PathLike) -> Iterator[tuple[str, Any]]:
    """Yield `(where, record)` for each record of one dialogue file, `where` naming file and record/line.

    Raises:
        DialogueFormatError: the file is not valid JSON / JSON Lines, or a JSON file is not an array.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"dialogue file not found: {path}")
    if _is_jsonl(path):
        for _, where, record in iter_json_lines(path, error=DialogueFormatError, objects_only=False):
            yield where, record
        return
    data = read_json_array(path, error=DialogueFormatError, what="dialogue records")
    for index, record in enumerate(data):
        yield f"{path}: record {index}", record


def _record_id(record: dict, position: int, where: str) -> str:
    if "id" not in record or record["id"] is None:
        return str(position)
    value = record["id"]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DialogueFormatError(f"{where}: field 'id' must be a string or an integer, found {type(value).__name__}")
    return str(value)


def _validated_turns(record: Any, where: str) -> list[tuple[str, str]]:
    if not isinstance(record, dict):
        raise DialogueFormatError(f"{where}: expected a JSON object, found {type(record).__name__}")
    image = record.get("image")
    if image is not None and not isinstance(image, str):
        raise DialogueFormatError(f"{where}: field 'image' must be a string path, found {type(image).__name__}")
    conversations = record.get("conversations")
    if not isinstance(conversations, list):
        found = "nothing" if conversations is None else type(conversations).__name__
        raise DialogueFormatError(f"{where}: field 'conversations' must be a list of turns, found {found}")
    turns = []
    for i, turn in enumerate(conversations):
        if not isinstance(turn, dict):
            raise DialogueFormatError(f"{where}: conversations[{i}] must be an object, found {type(turn).__name__}")
        for key in ("from", "value"):
            if not isinstance(turn.get(key), str):
                found = "nothing" if turn.get(key) is None else type(turn.get(key)).__name__
                raise DialogueFormatError(f"{where}: conversations[{i}].{key} must be a string, found {found}")
        turns.append((turn["from"], turn["value"]))
    return turns


def split_record(record: Any, position: int, where: str, counts: SplitCounts | None = None) -> list[Triple]:
    """The (image, question, response) triples of one dialogue record.

    Args:
        record: the parsed record.
        position: its 0-based position among all records read (the id of a record without one).
        where: file and record/line, for error messages.
        counts: updated in place when given.

    Raises:
        DialogueFormatError: the record is not an object, `image` is not a string, or `conversations` is not a
            list of `{"from": str, "value": str}` objects.
    """
    counts = counts if counts is not None else SplitCounts()
    turns = _validated_turns(record, where)
    record_id = _record_id(record, position, where)
    image = record.get("image")
    triples = []
    t = 0
    for t in range(0, len(turns) - 1, 2):
        if turns[t][0] != HUMAN or turns[t + 1][0] != GPT:
            counts.dialogues_cut_at_role_mismatch += 1
            counts.turns_after_role_mismatch += len(turns) - t
            break
        question = turns[t][1].replace(IMAGE_TAG, "").strip()
        triples.append(Triple(record_id, t, image, question, turns[t + 1][1]))
    else:
        if len(turns) % 2 == 1:
            counts.unpaired_trailing_turns += 1
    counts.triples += len(triples)
    return triples


def read_triples(paths: Sequence[str | os.PathLike], on_error: str = "raise",
                 counts: SplitCounts | None = None, progress: bool = True) -> Iterator[Triple]:
    """Triples of every record of `paths`, in file and record order.

    Args:
        paths: dialogue files (`.json` arrays or `.jsonl`, optionally gzipped).
        on_error: "raise" (a malformed record raises `DialogueFormatError` naming file and record) or "skip"
            (it is counted under `malformed_skipped`; the first 20 messages are kept in `malformed_examples`).
            A file that is not valid JSON always raises.
        counts: a `SplitCounts` updated in place.
        progress: show a progress bar per file.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    counts = counts if counts is not None else SplitCounts()
    position = 0
    for path in paths:
        records = iter_raw_records(path)
        for where, record in tqdm(records, desc=f"dialogues {os.path.basename(os.fspath(path))}", unit="rec",
                                  disable=not progress):
            counts.records += 1
            try:
                triples = split_record(record, position, where, counts)
            except DialogueFormatError as e:
                if on_error == "raise":
                    raise
                counts.malformed_skipped += 1
                if len(counts.malformed_examples) < 20:
                    counts.malformed_examples.append(str(e))
                triples = []
            else:
                if record.get("image") is None:
                    counts.text_only_records += 1
            position += 1
            yield from triples
