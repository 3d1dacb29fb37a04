"""configs/tiny.py for the training tests, with overrides."""
import importlib.util
import pathlib

TINY = pathlib.Path(__file__).resolve().parents[2] / "configs" / "tiny.py"


def tiny_config(world: str, **overrides):
    """configs/tiny.py on `world`, with dotted overrides (`tiny_config(w, **{"data.doc_maxlen": 40})`)."""
    spec = importlib.util.spec_from_file_location("tiny", TINY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = module.get_config(world)
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg
