import os
import pathlib
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # tests/torch_oracle.py and helpers

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
