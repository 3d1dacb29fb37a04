"""The training loop on the tiny config: exact resume, kill -9, SIGTERM, NaN, bad config, logs."""
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
from tiny_setup import TINY, tiny_config

from mire_jax.train.loop import TrainingDiverged, train

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def synthetic_dir(tiny_world):
    return tiny_world


def _config(synthetic_dir, **overrides):
    return tiny_config(synthetic_dir, **{"log_every": 1, "batch_size": 8, **overrides})


def _metrics(workdir, validation=False):
    """The training rows of metrics.jsonl (or, with `validation`, every row)."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return rows if validation else [r for r in rows if "loss" in r]


def test_resume_gives_bit_identical_losses(synthetic_dir, tmp_path):
    whole, halves = str(tmp_path / "whole"), str(tmp_path / "halves")
    train(_config(synthetic_dir, total_steps=6, checkpoint_every=3), whole)
    train(_config(synthetic_dir, total_steps=3, checkpoint_every=3), halves)
    train(_config(synthetic_dir, total_steps=6, checkpoint_every=3), halves)  # the same command, resumed
    a, b = _metrics(whole), _metrics(halves)
    assert [r["step"] for r in b] == list(range(1, 7))
    assert [(r["loss"], r["accuracy"], r["grad_norm"]) for r in a] == \
           [(r["loss"], r["accuracy"], r["grad_norm"]) for r in b]
    for key in ("step", "loss", "accuracy", "lr", "samples_per_s"):
        assert key in a[0]
    assert list((tmp_path / "whole" / "tensorboard").glob("events.out.tfevents.*"))
    assert (tmp_path / "whole" / "model" / "params.safetensors").exists()
    from mire_jax.retrieval.model_folder import load_encoding
    cfg = _config(synthetic_dir)
    trained = load_encoding(tmp_path / "whole" / "model")  # what the model folder says it was trained with
    assert (trained.query_maxlen, trained.doc_maxlen, trained.attend_to_mask_tokens, trained.passage_keep) == (
        cfg.data.query_maxlen, cfg.data.doc_maxlen, cfg.data.attend_to_mask_tokens, "punctuation_and_padding")
    from mire_jax.train.plot import plot
    assert os.path.getsize(plot(whole)) > 1000


def test_nan_loss_stops_with_the_step_number(synthetic_dir, tmp_path):
    with pytest.raises(TrainingDiverged, match=r"at step \d+"):
        train(_config(synthetic_dir, total_steps=8, lr=1e30, warmup_steps=0), str(tmp_path / "nan"))
    # nothing written after the divergence: no checkpoint holds non-finite params
    assert not list((tmp_path / "nan" / "checkpoints").glob("[0-9]*"))


def _launch(workdir, synthetic_dir, *overrides, devices=None):
    cmd = [sys.executable, str(ROOT / "train" / "train.py"), "--config", f"{TINY}:{synthetic_dir}",
           "--workdir", workdir, "--config.log_every=1", "--config.batch_size=8", *overrides]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if devices:
        env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_step(workdir, step, proc, timeout=300):
    path = os.path.join(workdir, "metrics.jsonl")
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        if os.path.exists(path) and sum(1 for _ in open(path)) >= step:
            return
        time.sleep(0.2)
    raise TimeoutError(f"no step {step} in {timeout}s")


def test_kill_9_loses_at_most_the_steps_since_the_last_checkpoint(synthetic_dir, tmp_path):
    workdir = str(tmp_path / "killed")
    proc = _launch(workdir, synthetic_dir, "--config.total_steps=400", "--config.checkpoint_every=4")
    _wait_for_step(workdir, 10, proc)
    proc.kill()
    proc.wait()
    killed_at = len(_metrics(workdir))
    from mire_jax.train.checkpoint import Checkpointer
    latest = Checkpointer(os.path.join(workdir, "checkpoints")).latest_step()
    # saves are asynchronous: the newest committed step is at most one interval (plus the save in flight) old
    assert latest is not None and killed_at - 2 * 4 - 1 <= latest <= killed_at
    proc = _launch(workdir, synthetic_dir, f"--config.total_steps={latest + 2}", "--config.checkpoint_every=4")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert [r["step"] for r in _metrics(workdir)] == list(range(1, latest + 3))


def test_sigterm_saves_a_checkpoint_and_exits_0(synthetic_dir, tmp_path):
    workdir = str(tmp_path / "term")
    proc = _launch(workdir, synthetic_dir, "--config.total_steps=400", "--config.checkpoint_every=1000")
    _wait_for_step(workdir, 3, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    steps = sorted(int(p.name) for p in (tmp_path / "term" / "checkpoints").iterdir() if p.name.isdigit())
    assert steps and steps[-1] >= 3


def test_a_short_run_learns_and_validates_after_every_epoch(synthetic_dir, tmp_path):
    """Dropout on, groups of 8 in batches of 16, 80 training records: 8 epochs are 40 steps. The training loss
    falls and the in-batch accuracy rises well above chance (1/8); validation runs after each epoch on the 16
    validation records (two groups) and its loss falls too. A broken gradient fails this."""
    workdir = str(tmp_path / "learn")
    train(_config(synthetic_dir, epochs=8, batch_size=16), workdir)
    rows = _metrics(workdir, validation=True)
    steps = [r for r in rows if "loss" in r]
    checks = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 41))
    mean = lambda rs, key: sum(r[key] for r in rs) / len(rs)
    assert mean(steps[-5:], "loss") < mean(steps[:5], "loss") - 0.2
    assert mean(steps[-5:], "accuracy") > mean(steps[:5], "accuracy") + 0.2
    assert [r["step"] for r in checks] == list(range(5, 41, 5)) and all(r["val_examples"] == 16 for r in checks)
    assert checks[-1]["val_loss"] < checks[0]["val_loss"] - 0.1


def test_two_processes_from_the_command_line_equal_one_and_stop_together_when_preempted(synthetic_dir, tmp_path):
    """`train.py` on 2 processes x 2 devices (jax.distributed on loopback, one shared workdir), as a user types
    it, gives the losses of 1 process on 4 devices with dropout on. SIGTERM to ONE process: JAX's preemption
    sync point stops both at the same step, which is saved as one checkpoint; both exit 0."""
    single = str(tmp_path / "single")
    proc = _launch(single, synthetic_dir, "--config.total_steps=6", devices=4)
    assert proc.wait(timeout=600) == 0, proc.communicate()[1][-2000:]

    pair = str(tmp_path / "pair")
    port = _free_port()
    procs = [_launch(pair, synthetic_dir, "--config.total_steps=400", "--config.checkpoint_every=1000",
                     f"--config.distributed.coordinator=127.0.0.1:{port}", "--config.distributed.num_processes=2",
                     f"--config.distributed.process_id={p}", devices=2) for p in (0, 1)]
    _wait_for_step(pair, 6, procs[0], timeout=600)
    procs[1].send_signal(signal.SIGTERM)
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors[0][-2000:] + errors[1][-2000:]
    stops = [re.findall(r"preempted at step (\d+)", e) for e in errors]
    assert stops[0] and stops[0] == stops[1]
    stop = int(stops[0][0])
    saved = sorted(int(p.name) for p in (tmp_path / "pair" / "checkpoints").iterdir() if p.name.isdigit())
    assert saved == [stop] and 6 <= stop < 400
    one, two = (_metrics(w)[:6] for w in (single, pair))
    for a, b in zip(one, two, strict=True):
        assert a["step"] == b["step"] and abs(a["loss"] - b["loss"]) <= 1e-5 * max(1.0, abs(a["loss"])), (a, b)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unknown_config_key_is_refused_by_name(synthetic_dir, tmp_path):
    proc = _launch(str(tmp_path / "bad"), synthetic_dir, "--config.no_such_key=1")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "no_such_key" in err
