"""How every entry point reports a user's mistake: one line, `error: <what>: <why>`, naming the file or setting,
a non-zero exit status, and the traceback only when asked for (`--debug`, or MIRE_DEBUG=1).

A user error is an `OSError` (a missing, unreadable or undecodable file, a full disk) or a `ValueError` /
`KeyError` (a malformed record, a bad setting); the project's readers raise these with the file and line in the
message. Anything else is the program's fault and keeps its traceback.

The ways in:
  user_errors()        a context manager for an entry point that exits on failure (exit status 2);
  user_error_status()  for a `main(argv) -> int` that returns its status (tests call these in-process);
  run_parser_main()    for an argparse `main(argv)` whose parser has no --debug of its own;
  run_absl_app()       absl's `app.run` with the flags (ml_collections configs included) parsed inside the guard.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

DEBUG_HELP = "on an error, show the full Python traceback instead of one line (also: MIRE_DEBUG=1)"
USAGE_STATUS = 2  # what argparse exits with on a bad command line

# The errors a user causes (a missing or malformed file, a bad setting) rather than a fault of the program.
USER_ERRORS = (OSError, ValueError, KeyError)


def debugging(requested: bool | None = None) -> bool:
    """Whether tracebacks are wanted: `requested` (an entry point's parsed --debug), else --debug on the command
    line; or MIRE_DEBUG set to anything but "" or "0"."""
    if requested is None:
        requested = debug_in_argv(sys.argv[1:])
    return bool(requested) or os.environ.get("MIRE_DEBUG", "") not in ("", "0")


def debug_in_argv(args: Sequence[str]) -> bool:
    """--debug among unparsed arguments (also absl's spellings -debug and --debug=true)."""
    return any(a in ("--debug", "-debug") or a.lower() in ("--debug=true", "--debug=1") for a in args)


def describe(error: BaseException) -> str:
    """The error as one line: an OSError as `FILE: reason`, a KeyError by its message (or `missing key 'k'`),
    anything else by its message with line breaks folded."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        text = f"{error.filename}: {error.strerror}"
        if error.filename2 is not None:
            text += f" (and {error.filename2})"
    elif isinstance(error, KeyError) and error.args:
        key = error.args[0]
        text = key if isinstance(key, str) and " " in key else f"missing key {key!r}"
    else:
        text = str(error)
    return " ".join(text.split()) or type(error).__name__


def report(line: str) -> None:
    print(f"error: {' '.join(line.split())}", file=sys.stderr)


@contextlib.contextmanager
def user_errors(debug: bool | None = None, status: int = USAGE_STATUS) -> Iterator[None]:
    """Turns a user error raised inside the block into `error: <one line>` on stderr and exit `status`; re-raises
    it when debugging (see `debugging`)."""
    try:
        yield
    except USER_ERRORS as error:
        if debugging(debug):
            raise
        report(describe(error))
        sys.exit(status)


def user_error_status(call: Callable[[], Any], debug: bool | None = None, status: int = USAGE_STATUS) -> int:
    """0 when `call()` returns; `status` after reporting a user error in one line (re-raised when debugging)."""
    try:
        call()
    except USER_ERRORS as error:
        if debugging(debug):
            raise
        report(describe(error))
        return status
    return 0


def run_parser_main(main: Callable[[list[str]], Any], argv: Sequence[str] | None = None) -> None:
    """Runs `main(argv)`, an argparse entry point whose parser does not know --debug, inside `user_errors`:
    --debug is taken out of argv before `main` sees it, and its line is added after `--help`."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = debug_in_argv(args)
    args = [a for a in args if not debug_in_argv([a])]
    try:
        with user_errors(debug):
            main(args)
    except SystemExit as done:
        if not done.code and ("-h" in args or "--help" in args):
            print(f"\ndebugging:\n  --debug               {DEBUG_HELP}")
        raise


# ---------------------------------------------------------------------------------------------------------------
# absl entry points: flags are parsed before `main`, so their errors are caught in the flags parser.

def run_absl_app(main: Callable[[list[str]], Any], configs: Sequence[Any] = ()) -> None:
    """absl's `app.run(main)` with every user error in one line, the flags' included.

    absl parses the flags before `main`; its own report spans several lines, a config override naming no field
    (`--config.no_such_key=1`) escapes it as a bare AttributeError, and ml_collections defers a config file that
    cannot be read until the config is first used. So the flags are parsed here, inside the guard, and each
    config flag in `configs` (the holders `config_flags.DEFINE_config_file` returns) is loaded before `main`
    runs. `main` then runs inside `user_errors`, debugging when the entry point defines a `--debug` flag and it
    is set.
    """
    from absl import app
    app.run(lambda argv: _guarded_absl_main(main, argv), flags_parser=lambda argv: parse_absl_flags(argv, configs))


def parse_absl_flags(argv: list[str], configs: Sequence[Any] = ()) -> list[str]:
    """absl's FLAGS(argv), a flag error reported in one line (exit 2); then every config of `configs` loaded."""
    from absl import flags
    debug = debugging(debug_in_argv(argv[1:]))
    try:
        remaining = flags.FLAGS(argv)
    except Exception as error:  # only the ones `_flag_error_line` recognises; the rest keep their traceback
        line = _flag_error_line(error, argv)
        if line is None or debug:
            raise
        report(line)
        sys.exit(USAGE_STATUS)
    for holder in configs:
        error = _config_load_error(holder)
        if error is not None:
            if debug:
                raise error
            report(f"--{holder.name}: {_config_load_reason(holder, error)}")
            sys.exit(USAGE_STATUS)
    return remaining


def _guarded_absl_main(main: Callable[[list[str]], Any], argv: list[str]) -> Any:
    from absl import flags
    debug = flags.FLAGS["debug"].value if "debug" in flags.FLAGS else None
    with user_errors(debug):
        return main(argv)


# ml_collections re-raises a TypeError/ValueError of a config's get_config as a ValueError whose message starts
# so and holds the traceback as text; absl wraps that in turn into `flag --config=FILE:ARG: <message>`.
_GET_CONFIG_FAILED = "Error whilst parsing config file"


def _flag_error_line(error: Exception, argv: Sequence[str]) -> str | None:
    """One line for an error of absl's flag parsing, or None when it is not the command line's fault."""
    from absl import flags
    if isinstance(error, flags.Error):
        message = str(error)
        get_config_error = _get_config_error(error)
        if _GET_CONFIG_FAILED in message and get_config_error is not None:
            setting = message.split(f": {_GET_CONFIG_FAILED}", 1)[0]  # "flag --config=FILE:ARG"
            return f"{setting.removeprefix('flag ')}: {describe(get_config_error)}"
        return describe(error).removeprefix("flag ")  # absl's "flag --name=value: reason"
    if isinstance(error, (AttributeError, KeyError)):
        return _unknown_override_line(error, argv)
    return None


def _get_config_error(error: BaseException) -> BaseException | None:
    """The error get_config raised, found behind ml_collections' wrapper in the chain of `error`."""
    while error is not None:
        if str(error).startswith(_GET_CONFIG_FAILED):
            return error.__context__
        error = error.__context__
    return None


def _unknown_override_line(error: AttributeError | KeyError, argv: Sequence[str]) -> str | None:
    """`--config.no_such_key=1` reaches us as ConfigDict's bare `AttributeError("'no_such_key'")` (a KeyError for
    a missing parent): one line naming the override, when one on the command line has that field."""
    from absl import flags
    # ml_collections' message is the quoted field, then on a second line a suggestion ("Did you mean ...?"), held in
    # a KeyError that the AttributeError wraps.
    message = error.args[0] if error.args else ""
    while isinstance(message, BaseException):
        message = message.args[0] if message.args else ""
    first, _, hint = str(message).partition("\n")
    field = first.strip("'\"")
    hint = " ".join(hint.split()).rstrip("?")
    for arg in argv[1:]:
        match = re.match(r"-{1,2}([\w.]+)", arg)
        if not match or "." not in match.group(1):
            continue
        spelled = match.group(1)
        flag_name, *path = spelled.split(".")
        flag_name = flag_name if flag_name in flags.FLAGS else flag_name.removeprefix("no")  # --noconfig.flag
        if field in path and flag_name in flags.FLAGS:
            return (f"--{spelled}: the config of --{flag_name} has no field {field!r}"
                    + (f" ({hint[0].lower() + hint[1:]}?)" if hint else ""))
    return None


def _config_load_error(holder: Any) -> OSError | None:
    """The error that kept a config file from loading: ml_collections stores it and raises it (as an OSError)
    on the config's first use, which happens here."""
    try:
        getattr(holder.value, "lock", None)
    except OSError as error:
        return error
    return None


def _config_load_reason(holder: Any, error: OSError) -> str:
    from absl import flags
    from ml_collections import config_flags
    cause = error.__cause__ if error.__cause__ is not None else error
    if isinstance(cause, OSError) and cause.filename is not None:
        return describe(cause)
    path = config_flags.get_config_filename(flags.FLAGS[holder.name]).split(":", 1)[0]
    if not os.path.exists(path):
        return f"{path}: no such config file"
    return describe(cause)
