"""How every entry point reports a user's mistake: one line naming the file or setting, exit status 2, and the
traceback only when asked for (`--debug` where the entry point has it, or MIRE_DEBUG=1)."""
from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Iterator

# The errors a user causes (a missing or malformed file, a bad setting) rather than a fault of the program.
USER_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, ValueError, KeyError,
               json.JSONDecodeError)


def debugging(argv: list[str] | None = None) -> bool:
    argv = sys.argv if argv is None else argv
    return "--debug" in argv or os.environ.get("MIRE_DEBUG", "") not in ("", "0")


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) if not isinstance(error, KeyError) else f"missing key {error}"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@contextlib.contextmanager
def user_errors(debug: bool | None = None) -> Iterator[None]:
    """Turns a user error raised inside the block into `error: <one line>` on stderr and exit status 2."""
    try:
        yield
    except USER_ERRORS as error:
        if debug if debug is not None else debugging():
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        sys.exit(2)
