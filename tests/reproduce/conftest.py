"""Fixtures of the reproduction's tests (helpers in reproduce_helpers.py)."""
import pathlib

import pytest
from reproduce_helpers import make_data_root


@pytest.fixture(scope="session")
def data_root(tmp_path_factory, tiny_model_dir) -> pathlib.Path:
    """The fixtures as a data root, the tiny random model as its starting model (models/mire_base_init)."""
    return make_data_root(tmp_path_factory.mktemp("reproduce_data") / "D", tiny_model_dir)
