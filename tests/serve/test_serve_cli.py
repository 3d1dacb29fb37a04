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
    args = quick_demo.explicit_args()
    partial = tmp_path / "partial.jsonl"
    lines = pathlib.Path(_arg(args, "--passages")).read_text().splitlines()
    partial.write_text("\n".join(lines[: len(lines) // 2]) + "\n")
    args[args.index("--passages") + 1] = str(partial)
    proc = _serve(*args)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("mire_jax.serve: the passages have no text for") and "Traceback" not in proc.stderr


def test_missing_model_and_index_folders_are_refused(quick_demo, tmp_path):
    args = quick_demo.explicit_args()
    for flag in ("--model", "--index"):
        wrong = list(args)
        wrong[wrong.index(flag) + 1] = str(tmp_path / "nothing")
        proc = _serve(*wrong)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("mire_jax.serve: "), proc.stderr[-500:]


def _refusal(proc) -> str:
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-1000:]
    return proc.stderr.strip().splitlines()[-1]


def test_the_demo_folder_is_all_the_server_needs(quick_demo):
    """`make demo` prints `python -m mire_jax.serve <folder>`; its serve.json names the model, index and passages."""
    assert quick_demo.serve_args == [str(quick_demo.out)]
    assert [quick_demo.paths[k].startswith(str(quick_demo.out)) for k in ("model", "index", "passages")] == [True] * 3
    proc = _serve(str(quick_demo.out / "nowhere"))
    assert _refusal(proc).startswith("mire_jax.serve: ") and "serve.json" in proc.stderr


def test_a_contradicting_query_maxlen_is_refused_in_one_line(quick_demo):
    from mire_jax.index import LateInteractionIndex
    recorded = LateInteractionIndex.load(quick_demo.paths["index"], verify=False).encoding["settings"]["query_maxlen"]
    last = _refusal(_serve(str(quick_demo.out), "--query-maxlen", str(recorded * 2)))
    assert last == (f"mire_jax.serve: --query-maxlen {recorded * 2} contradicts the index's query_maxlen {recorded} "
                    f"({quick_demo.paths['index']}): leave it out, or add --force-settings to encode queries "
                    "otherwise")


def test_a_model_the_index_was_not_encoded_with_is_refused_in_one_line(quick_demo):
    args = quick_demo.explicit_args()
    other = quick_demo.out / "models" / "init"  # the demo's model before pre-training: same shapes, other weights
    args[args.index("--model") + 1] = str(other)
    last = _refusal(_serve(*args))
    assert last.startswith(f"mire_jax.serve: the index {quick_demo.paths['index']} was encoded with model ")
    assert str(other) in last and "build the index with this model" in last

