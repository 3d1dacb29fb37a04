"""The serving tests' world: the quick demo run once (its trained model, saved index and passages), and one server
over it started with the command the demo prints, on a free loopback port."""
import dataclasses
import json
import os
import pathlib
import shlex
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SERVE_PREFIX = "python -m mire_jax.serve"
# Small batch shapes compile fast at start-up; a small image limit keeps the oversized uploads of the tests small.
TEST_SERVER_FLAGS = ["--host", "127.0.0.1", "--port", "0", "--batch-sizes", "1,4", "--window-ms", "5",
                     "--max-image-bytes", str(256 * 1024), "--log-level", "warning"]


@dataclasses.dataclass
class QuickDemo:
    out: pathlib.Path
    serve_args: list[str]          # the arguments of the printed serve command
    queries: list[dict]            # the zero-shot queries: id, question, image, document_id, answer
    passages: dict[str, str]       # id -> text of the served corpus
    results: dict                  # the demo's results.json

    def image_bytes(self, query: dict) -> bytes:
        return (self.out / "data" / "images" / query["image"]).read_bytes()


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory) -> QuickDemo:
    """`python -m mire_jax.demo --quick` once per session (about a minute on 2 cores).

    MIRE_SERVE_TEST_DEMO_DIR names a folder to keep the run in: a finished run there (its stdout saved as
    stdout.txt) is reused instead of running the demo again.
    """
    kept = os.environ.get("MIRE_SERVE_TEST_DEMO_DIR")
    out = pathlib.Path(kept) if kept else tmp_path_factory.mktemp("serve_demo") / "demo"
    stdout_file = out / "stdout.txt"
    if not stdout_file.exists():
        proc = subprocess.run([sys.executable, "-m", "mire_jax.demo", "--quick", "--out", str(out)], cwd=ROOT,
                              capture_output=True, text=True, timeout=1800, check=False)
        assert proc.returncode == 0, proc.stderr[-4000:]
        stdout_file.write_text(proc.stdout)
    stdout = stdout_file.read_text()
    commands = [line for line in stdout.splitlines() if line.startswith(SERVE_PREFIX)]
    assert len(commands) == 1, f"the demo should print one serve command, printed: {stdout[-2000:]}"
    read = lambda path: [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return QuickDemo(out=out, serve_args=shlex.split(commands[0])[len(SERVE_PREFIX.split()):],
                     queries=read(out / "data" / "zeroshot" / "test.jsonl"),
                     passages={str(r["id"]): r["text"] for r in read(out / "data" / "corpora" / "zeroshot.jsonl")},
                     results=json.loads((out / "results.json").read_text()))


@dataclasses.dataclass
class RunningServer:
    url: str
    process: subprocess.Popen
    log: pathlib.Path
    log_handle: object

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(args: list[str], log: pathlib.Path, timeout: float = 600) -> RunningServer:
    """Start `python -m mire_jax.serve ARGS` and wait for its `serving on http://...` line."""
    handle = open(log, "w")  # noqa: SIM115 (the server's output, closed by stop_server)
    process = subprocess.Popen([sys.executable, "-u", "-m", "mire_jax.serve", *args], cwd=ROOT, stdout=handle,
                               stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("serving on http://"):
                return RunningServer(line.split()[-1], process, log, handle)
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        time.sleep(0.2)
    process.kill()
    raise AssertionError(f"the server did not start in {timeout} s:\n{log.read_text()[-4000:]}")


def stop_server(server: RunningServer) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(10)
    server.log_handle.close()


@pytest.fixture(scope="session")
def server(quick_demo, tmp_path_factory) -> RunningServer:
    """One server over the quick demo's model, index and passages, shared by the API, load and page tests."""
    running = start_server(quick_demo.serve_args + TEST_SERVER_FLAGS,
                           tmp_path_factory.mktemp("serve_log") / "server.log")
    yield running
    stop_server(running)


@pytest.fixture
def client(server):
    from mire_jax.serve.client import Client
    c = Client(server.url)
    yield c
    c.close()
