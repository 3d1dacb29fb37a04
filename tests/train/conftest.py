"""The training tests' world: the tiny config's generated data, written once per session as a user would with
`python -m mire_jax.demo.world --preset tiny`."""
import pytest


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> str:
    from mire_jax.demo.world import SyntheticSizes, generate
    out = tmp_path_factory.mktemp("tiny") / "data"
    generate(out, sizes=SyntheticSizes.tiny(), progress=False)
    return str(out)
