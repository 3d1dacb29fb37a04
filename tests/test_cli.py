"""Every entry point, run as a user types it, reports a bad input in one line naming the file or setting
(`error: ...`), exits non-zero and prints no traceback, unless --debug (or MIRE_DEBUG=1) asks for it.

Each command fails before any model is compiled."""
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from mire_jax import cli, convert

ROOT = pathlib.Path(__file__).resolve().parents[1]
VOCAB = ["[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "a", "passage"]


def _run(*command: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python <command>` from the repository root, as a user types it, on CPU."""
    environment = {key: value for key, value in os.environ.items() if key != "MIRE_DEBUG"}
    environment.update(JAX_PLATFORMS="cpu", **(env or {}))
    return subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True, env=environment,
                          timeout=300, check=False)


def _assert_one_line_error(proc: subprocess.CompletedProcess, *named: str) -> str:
    """Non-zero exit, no traceback, and a last stderr line `error: ...` holding every string of `named`."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), proc.stderr[-3000:]
    for name in named:
        assert name in lines[-1], (name, lines[-1])
    return lines[-1]


def _assert_traceback(proc: subprocess.CompletedProcess, *named: str) -> None:
    assert proc.returncode != 0 and "Traceback (most recent call last)" in proc.stderr, proc.stderr[-3000:]
    for name in named:
        assert name in proc.stderr, (name, proc.stderr[-3000:])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> pathlib.Path:
    """A tiny mire-jax model folder of zero weights (shapes only, nothing compiled) with a small vocabulary."""
    import mire_jax
    from mire_jax.retrieval.model_folder import save_model
    directory = tmp_path_factory.mktemp("model")
    config = mire_jax.MIReConfig.tiny()
    params = jax.tree_util.tree_map(lambda shape: np.zeros(shape, np.float32), convert.param_shapes(config),
                                            is_leaf=lambda x: isinstance(x, tuple))
    save_model(directory, config, params)
    (directory / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return directory


# --- absl entry points: the flags are parsed before main ---------------------------------------------------------

def test_train_missing_config_file_is_one_line(tmp_path):
    proc = _run("train/train.py", "--config", "configs/no_such_config.py", "--workdir", str(tmp_path))
    _assert_one_line_error(proc, "--config", "configs/no_such_config.py")


def test_train_config_typo_is_one_line_and_debug_brings_the_traceback(tmp_path):
    command = ("train/train.py", "--config", "configs/tiny.py", "--workdir", str(tmp_path), "--config.no_such_key=1")
    _assert_one_line_error(_run(*command), "--config.no_such_key", "'no_such_key'")
    _assert_traceback(_run(*command, "--debug"), "no_such_key")
    # a near miss: ml_collections' suggestion, on the same line
    near = ("train/train.py", "--config", "configs/tiny.py", "--workdir", str(tmp_path), "--config.totl_steps=3")
    _assert_one_line_error(_run(*near), "--config.totl_steps", "'totl_steps'", 'did you mean "total_steps"')


def test_train_bad_config_value_and_missing_flag_are_one_line(tmp_path):
    proc = _run("train/train.py", "--config", "configs/tiny.py", "--workdir", str(tmp_path),
                "--config.total_steps=many")
    _assert_one_line_error(proc, "--config.total_steps=many")
    _assert_one_line_error(_run("train/train.py", "--config", "configs/tiny.py"), "--workdir")


def test_train_user_error_in_main_is_one_line(tmp_path):
    """A config that loads but names a world that is not there: main's error, after the flags."""
    missing = tmp_path / "no_world"
    proc = _run("train/train.py", "--config", f"configs/tiny.py:{missing}", "--workdir", str(tmp_path / "w"))
    _assert_one_line_error(proc, str(missing))


def test_evaluate_bad_config_arg_is_one_line_and_mire_debug_brings_the_traceback(tmp_path):
    command = ("eval/evaluate.py", "--config", "configs/eval.py:no_such_benchmark", "--checkpoint", str(tmp_path))
    _assert_one_line_error(_run(*command), "--config=configs/eval.py:no_such_benchmark", "'no_such_benchmark'")
    _assert_traceback(_run(*command, env={"MIRE_DEBUG": "1"}), "no_such_benchmark")


def test_evaluate_missing_model_folder_is_one_line(tmp_path):
    missing = tmp_path / "no_model"
    proc = _run("eval/evaluate.py", "--config", "configs/eval.py:okvqa_gs", "--checkpoint", str(missing),
                "--workdir", str(tmp_path / "eval"))
    _assert_one_line_error(proc, str(missing))


def test_cache_vision_config_errors_are_one_line(tmp_path):
    _assert_one_line_error(_run("train/cache_vision.py", "--config", "configs/no_such_config.py"),
                           "configs/no_such_config.py")
    proc = _run("train/cache_vision.py", "--config", "configs/tiny.py", "--config.data.no_such_key=1")
    _assert_one_line_error(proc, "--config.data.no_such_key")
    proc = _run("train/cache_vision.py", "--config", f"configs/tiny.py:{tmp_path}")  # no vision_cache_dir set
    _assert_one_line_error(proc, "config.data.vision_cache_dir")


# --- argparse entry points ---------------------------------------------------------------------------------------

def test_encode_corpus_malformed_jsonl_line_names_file_and_line(model_dir, tmp_path):
    passages = tmp_path / "passages.jsonl"
    passages.write_text('{"id": "p1", "text": "a passage."}\n{"id": "p2", "text": \n')
    proc = _run("eval/encode_corpus.py", "--passages", str(passages), "--model", str(model_dir),
                "--out", str(tmp_path / "shards"), "--no-progress")
    _assert_one_line_error(proc, f"{passages}: line 2")


def test_encode_corpus_missing_model_folder_is_one_line(tmp_path):
    passages = tmp_path / "passages.jsonl"
    passages.write_text('{"id": "p1", "text": "a passage."}\n')
    proc = _run("eval/encode_corpus.py", "--passages", str(passages), "--model", str(tmp_path / "no_model"),
                "--out", str(tmp_path / "shards"))
    _assert_one_line_error(proc, str(tmp_path / "no_model"))


def test_attention_maps_missing_model_folder_is_one_line(tmp_path):
    proc = _run("eval/attention_maps.py", "--checkpoint", str(tmp_path / "no_model"), "--image", "photo.jpg",
                "--question", "Who?", "--out", str(tmp_path / "maps.png"))
    _assert_one_line_error(proc, str(tmp_path / "no_model"))


def test_plot_missing_workdir_is_one_line(tmp_path):
    _assert_one_line_error(_run("train/plot.py", str(tmp_path / "no_run")), str(tmp_path / "no_run"))


def test_convert_corrupt_safetensors_names_the_file(tmp_path):
    from safetensors.numpy import save_file
    save_file({"model.linear.weight": np.zeros((4, 8), np.float32)}, tmp_path / "whole.safetensors")
    corrupt = tmp_path / "mire.safetensors"
    corrupt.write_bytes((tmp_path / "whole.safetensors").read_bytes()[:-16])  # truncated
    command = ("-m", "mire_jax.convert", "import", str(corrupt), "--out", str(tmp_path / "model"))
    _assert_one_line_error(_run(*command), str(corrupt))
    _assert_traceback(_run(*command, "--debug"), "SafetensorError", str(corrupt))


def test_convert_missing_model_folder_is_one_line(tmp_path):
    proc = _run("-m", "mire_jax.convert", "export", str(tmp_path / "no_model"), "--out", str(tmp_path / "x.pth"))
    _assert_one_line_error(proc, str(tmp_path / "no_model"))


def test_vid2r_missing_input_is_one_line(tmp_path):
    missing = tmp_path / "no_dialogues.json"
    proc = _run("-m", "mire_jax.vid2r", str(missing), "--work-dir", str(tmp_path / "work"), "--no-progress")
    _assert_one_line_error(proc, str(missing))


def test_demo_world_bad_size_is_one_line(tmp_path):
    proc = _run("-m", "mire_jax.demo.world", "--out", str(tmp_path / "world"), "--n-train-entities", "0", "--quiet")
    _assert_one_line_error(proc, "n_train_entities=0")


def test_demo_output_in_the_way_is_one_line(tmp_path):
    in_the_way = tmp_path / "a_file"
    in_the_way.write_text("")
    _assert_one_line_error(_run("-m", "mire_jax.demo", "--out", str(in_the_way), "--quick"), str(in_the_way))


@pytest.mark.parametrize("command", [
    ("train/train.py", "--helpshort"), ("train/cache_vision.py", "--helpshort"), ("eval/evaluate.py", "--helpshort"),
    ("eval/attention_maps.py", "--help"), ("eval/encode_corpus.py", "--help"), ("train/plot.py", "--help"),
    ("-m", "mire_jax.convert", "--help"), ("-m", "mire_jax.convert", "import", "--help"),
    ("-m", "mire_jax.vid2r", "--help"), ("-m", "mire_jax.demo", "--help"), ("-m", "mire_jax.demo.world", "--help"),
], ids=lambda command: " ".join(command))
def test_help_names_the_debug_flag(command):
    proc = _run(*command)
    assert "--debug" in proc.stdout + proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]


# --- in-process: the reading of checkpoints and the one-line form ------------------------------------------------

@pytest.mark.parametrize("name, content", [
    ("empty.safetensors", b""), ("garbage.safetensors", b"not a tensor file at all"),
    ("empty.pth", b""), ("garbage.bin", b"not a pickle"),
])
def test_unreadable_checkpoint_names_the_file(tmp_path, name, content):
    if not name.endswith(".safetensors"):
        pytest.importorskip("torch")
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(convert.CheckpointError, match=f"{path}: not a readable"):
        convert.load_state_dict(path)


def test_describe_is_one_line_naming_the_file():
    assert cli.describe(FileNotFoundError(2, "No such file or directory", "data/x.jsonl")) == \
        "data/x.jsonl: No such file or directory"
    assert cli.describe(KeyError("k")) == "missing key 'k'"
    assert cli.describe(KeyError("runs/hits.jsonl: no hits for 3 records")) == "runs/hits.jsonl: no hits for 3 records"
    assert cli.describe(ValueError("a.jsonl: line 2:\n  invalid JSON")) == "a.jsonl: line 2: invalid JSON"


def test_program_faults_keep_their_traceback():
    with pytest.raises(TypeError), cli.user_errors(debug=False):
        raise TypeError("a bug, not the user's input")
    assert cli.user_error_status(lambda: json.loads("{"), debug=False, status=3) == 3
    with pytest.raises(json.JSONDecodeError):
        cli.user_error_status(lambda: json.loads("{"), debug=True)


def test_a_corrupt_model_folder_is_named(tmp_path):
    import mire_jax
    from mire_jax.retrieval.model_folder import ModelFolderError, load_model, save_model
    config = mire_jax.MIReConfig.tiny()
    save_model(tmp_path, config, {"bert": {"pooler": {"kernel": np.zeros((2, 2), np.float32)}}})
    (tmp_path / "params.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ModelFolderError, match="params.safetensors"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelFolderError, match="config.json"):
        load_model(tmp_path)


def test_distributed_start_lengthens_cpu_collective_timeouts(monkeypatch):
    from mire_jax import hosts

    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_collective_timeout_seconds=60 --xla_force_host_platform_device_count=2")
    hosts._lengthen_cpu_collective_timeouts()
    flags = __import__("os").environ["XLA_FLAGS"].split()
    assert "--xla_cpu_collective_timeout_seconds=60" in flags  # a user's own setting wins
    assert f"--xla_cpu_collective_call_terminate_timeout_seconds={hosts.CPU_COLLECTIVE_TIMEOUT_S}" in flags
    assert "--xla_force_host_platform_device_count=2" in flags and len(flags) == 3
