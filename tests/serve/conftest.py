"""The serving tests' server: one over the quick demo's model, saved index and passages (the `quick_demo` fixture of
tests/conftest.py), started with the command the demo prints, on a free loopback port."""
import dataclasses
import pathlib
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
# Small batch shapes compile fast at start-up; a small image limit keeps the oversized uploads of the tests small.
TEST_SERVER_FLAGS = ["--host", "127.0.0.1", "--port", "0", "--batch-sizes", "1,4", "--window-ms", "5",
                     "--max-image-bytes", str(256 * 1024), "--log-level", "warning"]


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
