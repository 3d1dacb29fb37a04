import os
import pathlib
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Many tests compile the same programs in several processes (training resumes, multi-device workers): a
# persistent compilation cache, inherited by the subprocesses through the environment, compiles each once.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "mire_jax_test_jit_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # tests/torch_oracle.py and helpers

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
