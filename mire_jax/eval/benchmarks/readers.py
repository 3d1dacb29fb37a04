"""Record readers for benchmark files; every error names the file and the record, line or row."""
from __future__ import annotations

from typing import Any, Mapping, Sequence


class BenchmarkFormatError(ValueError):
    """A benchmark file is malformed; the message names the file and the line, row or record."""


def get_field(record: Any, name: str, where: str, types: type | tuple[type, ...] | None = None) -> Any:
    """`record[name]`, with an error naming `where` when the record is not an object, lacks it, or has a bad type."""
    if not isinstance(record, Mapping):
        raise BenchmarkFormatError(f"{where}: expected a JSON object, found {type(record).__name__}")
    if name not in record:
        raise BenchmarkFormatError(f"{where}: missing field {name!r}")
    value = record[name]
    if types is not None and (not isinstance(value, types) or isinstance(value, bool) and bool not in _tuple(types)):
        expected = " or ".join(t.__name__ for t in _tuple(types))
        raise BenchmarkFormatError(f"{where}: field {name!r} should be {expected}, found {type(value).__name__}")
    return value


def _tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def str_list(values: Any, name: str, where: str) -> list[str]:
    """A list of strings (ids are str()-ed); error naming `where` otherwise."""
    if not isinstance(values, (list, tuple)):
        raise BenchmarkFormatError(f"{where}: field {name!r} should be a list, found {type(values).__name__}")
    return [str(v) for v in values]


def dedupe(values: Sequence[str]) -> list[str]:
    """Order-preserving deduplication."""
    return list(dict.fromkeys(values))
