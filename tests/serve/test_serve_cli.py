"""`python -m mire_jax.serve` refuses what it cannot serve with one line and a non-zero exit, before compiling."""
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _serve(*args):
    return subprocess.run([sys.executable, "-m", "mire_jax.serve", *args, "--port", "0"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)


def _arg(args, name):
    return args[args.index(name) + 1]


def test_a_passages_file_that_does_not_match_the_index_is_refused(quick_demo, tmp_path):
    args = list(quick_demo.serve_args)
    partial = tmp_path / "partial.jsonl"
    lines = pathlib.Path(_arg(args, "--passages")).read_text().splitlines()
    partial.write_text("\n".join(lines[: len(lines) // 2]) + "\n")
    args[args.index("--passages") + 1] = str(partial)
    proc = _serve(*args)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("mire_jax.serve: the passages file has no text for") and "Traceback" not in proc.stderr


def test_missing_model_and_index_folders_are_refused(quick_demo, tmp_path):
    args = list(quick_demo.serve_args)
    for flag in ("--model", "--index"):
        wrong = list(args)
        wrong[wrong.index(flag) + 1] = str(tmp_path / "nothing")
        proc = _serve(*wrong)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("mire_jax.serve: "), proc.stderr[-500:]
