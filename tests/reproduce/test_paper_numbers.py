"""The paper's numbers (mire_jax/reproduce/paper_numbers.json): the file loads, every entry has the fields the
reproduction report reads, values are numbers or null, and no (table, benchmark, row, model, metric) repeats."""
import json
import math
import pathlib

import pytest

PATH = pathlib.Path(__file__).resolve().parents[2] / "mire_jax" / "reproduce" / "paper_numbers.json"
REQUIRED = ("table", "row", "benchmark", "metric", "source")
SETTINGS = {"zero-shot", "fine-tuned", "ablation", "analysis"}
MODELS = {"base", "large", None}


@pytest.fixture(scope="module")
def doc():
    with open(PATH, encoding="utf-8") as f:
        return json.load(f)


def test_header(doc):
    assert doc["paper"] == "arXiv 2411.08334"
    assert isinstance(doc["version"], str) and doc["version"]
    assert isinstance(doc["entries"], list) and doc["entries"]


def test_entries_have_required_fields(doc):
    for i, entry in enumerate(doc["entries"]):
        for key in REQUIRED:
            assert isinstance(entry.get(key), str) and entry[key].strip(), (i, key, entry)
        assert entry["source"].startswith("https://"), (i, entry)
        assert entry.get("setting") in SETTINGS, (i, entry)
        assert entry.get("model", None) in MODELS, (i, entry)
        for key in ("note", "caption", "cross_check"):
            assert key not in entry or isinstance(entry[key], str), (i, key, entry)


def test_values_are_numbers_or_null(doc):
    for i, entry in enumerate(doc["entries"]):
        assert "value" in entry, (i, entry)
        value = entry["value"]
        if value is None:
            assert entry.get("note"), f"entry {i}: a missing value needs a note saying why"
            continue
        assert isinstance(value, (int, float)) and not isinstance(value, bool), (i, entry)
        assert math.isfinite(value) and 0 <= value <= 100, (i, entry)


def test_no_duplicate_keys(doc):
    seen = {}
    for i, entry in enumerate(doc["entries"]):
        key = (entry["table"], entry["benchmark"], entry["row"], entry.get("model"), entry["metric"])
        assert key not in seen, f"entries {seen[key]} and {i} share {key}"
        seen[key] = i


def test_every_source_is_listed(doc):
    listed = set(doc.get("sources", {}))
    for entry in doc["entries"]:
        assert entry["source"] in listed, entry
        if "cross_check" in entry:
            assert entry["cross_check"] in listed, entry
