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


@dataclasses.dataclass
class ImagePassagesRun:
    """A corpus whose passages carry images (image-only, image+text) beside text ones, encoded with
    eval/encode_corpus.py and served."""
    server: RunningServer
    passages: dict          # id -> {"text", "image" (absolute path) or None}


def write_image_passages(folder: pathlib.Path) -> dict:
    """passages.jsonl with images under images/ (paths relative to an image root given apart): 2 image-only, 2
    image+text and 2 text passages, each image a different colour and shape."""
    import json

    from PIL import Image, ImageDraw
    images = folder / "pictures" / "images"
    images.mkdir(parents=True)
    rows, passages = [], {}
    kinds = [("img-only-a", None), ("img-only-b", None), ("img-text-a", "A red circle on a white card."),
             ("img-text-b", "A blue disc drawn on grey paper."), ("text-a", "Paris is the capital of France."),
             ("text-b", "The Seine flows through Paris.")]
    for i, (pid, text) in enumerate(kinds):
        row = {"id": pid}
        path = None
        if pid.startswith("img"):
            image = Image.new("RGB", (48, 40), [(250, 250, 250), (90, 90, 90), (255, 255, 255), (160, 160, 160)][i])
            ImageDraw.Draw(image).ellipse([8, 6, 38, 34], fill=[(20, 160, 40), (220, 200, 30), (200, 20, 20),
                                                                (30, 40, 200)][i])
            path = images / f"{pid}.png"
            image.save(path)
            row["image"] = f"images/{pid}.png"
        if text is not None:
            row["text"] = text
        rows.append(json.dumps(row))
        passages[pid] = {"text": text or "", "image": path}
    (folder / "passages.jsonl").write_text("\n".join(rows) + "\n")
    return passages


@pytest.fixture(scope="session")
def image_passages_run(tiny_model_dir, tmp_path_factory) -> ImagePassagesRun:
    folder = tmp_path_factory.mktemp("image_passages")
    passages = write_image_passages(folder)
    encode = [sys.executable, str(ROOT / "eval" / "encode_corpus.py"), "--passages", str(folder / "passages.jsonl"),
              "--image-root", str(folder / "pictures"), "--model", str(tiny_model_dir), "--out",
              str(folder / "shards"), "--index", str(folder / "index"), "--doc-maxlen", "24", "--query-maxlen", "16",
              "--batch-size", "4", "--shard-size", "4", "--no-progress"]
    done = subprocess.run(encode, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    running = start_server(["--model", str(tiny_model_dir), "--index", str(folder / "index"), "--passages",
                            str(folder / "passages.jsonl"), "--image-root", str(folder / "pictures"),
                            "--host", "127.0.0.1", "--port", "0", "--batch-sizes", "1", "--log-level", "warning"],
                           folder / "server.log")
    yield ImagePassagesRun(running, passages)
    stop_server(running)
