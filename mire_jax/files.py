"""Files in and out, the project's one place for JSON. Writing: so that no reader, and no crash, ever sees half of
one, each file is written under a temporary name beside its target, then renamed over it (atomic on POSIX
filesystems). Reading: JSON, a JSON array and JSON Lines (plain or .gz), with errors that name the file and the
line (or record)."""
from __future__ import annotations

import contextlib
import gzip
import json
import os
import secrets
from typing import Any, Iterable, Iterator

TEMPORARY_SUFFIX = ".partial"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = False) -> Iterator[str]:
    """A temporary path beside `path` to write to; renamed over `path` when the block ends normally (after an
    fsync of the data with `fsync`), removed when it raises. The folder is created if needed; the file gets the
    usual permissions (0666 less the umask)."""
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    while True:
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(6)}{TEMPORARY_SUFFIX}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", *, fsync: bool = False, **kwargs) -> Iterator[Any]:
    """`open(path, mode)` that replaces `path` only once the block has written all of it."""
    with atomic_path(path, fsync=fsync) as tmp:
        with open(tmp, mode, **kwargs) as f:
            yield f


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 1, fsync: bool = False,
               **dump_kwargs) -> None:
    """Atomically write `obj` as UTF-8 JSON (non-ASCII characters kept); with `fsync`, synced before the rename, so
    a file that exists is whole even after a power loss (manifests)."""
    dump_kwargs.setdefault("ensure_ascii", False)
    with atomic_open(path, encoding="utf-8", fsync=fsync) as f:
        json.dump(obj, f, indent=indent, **dump_kwargs)


def write_json_lines(path: str | os.PathLike, rows: Iterable[Any]) -> None:
    """Atomically write one JSON value per line."""
    with atomic_open(path, encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike, *, error: type[Exception] = ValueError) -> Any:
    """The JSON value of a file (plain or .gz). A missing file raises FileNotFoundError naming it; invalid JSON or
    text that is not UTF-8 raises `error` naming the file, line and column."""
    path = os.fspath(path)
    try:
        with open_text(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise error(f"{path}: line {e.lineno} column {e.colno}: invalid JSON: {e.msg}") from e
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text ({e})") from e


def read_json_array(path: str | os.PathLike, *, error: type[Exception] = ValueError, what: str = "records") -> list:
    """A file holding one JSON array (of `what`, for the message); `error` naming the file otherwise."""
    data = read_json(path, error=error)
    if not isinstance(data, list):
        raise error(f"{os.fspath(path)}: expected a JSON array of {what}, found {type(data).__name__}")
    return data


def is_temporary(name: str) -> bool:
    """Whether a file name is one of `atomic_path`'s temporaries (left behind only by a killed process)."""
    return name.startswith(".") and name.endswith(TEMPORARY_SUFFIX)


def open_text(path: str | os.PathLike):
    """A UTF-8 text reader of the file, gunzipped when the name ends in .gz."""
    path = os.fspath(path)
    return gzip.open(path, "rt", encoding="utf-8") if path.endswith(".gz") else open(path, encoding="utf-8")


def iter_json_lines(path: str | os.PathLike, *, error: type[Exception] = ValueError, objects_only: bool = True,
                    skip_blank: bool = True) -> Iterator[tuple[int, str, Any]]:
    """(line number, "PATH: line N", record) per line of a JSON Lines file.

    Raises `error` naming the file and line for invalid JSON, text that is not UTF-8, a record that is not a
    JSON object (with `objects_only`), or a blank line (without `skip_blank`).
    """
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:  # bytes, decoded per line, so a bad byte is reported on its own line
        for line_no, raw in enumerate(f, start=1):
            where = f"{path}: line {line_no}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise error(f"{where}: not UTF-8 text ({e})") from e
            if skip_blank and not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise error(f"{where}: invalid JSON: {e.msg}") from e
            if objects_only and not isinstance(record, dict):
                raise error(f"{where}: expected a JSON object, got {type(record).__name__}")
            yield line_no, where, record
