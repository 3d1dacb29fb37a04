"""Searcher.build_index on a folder that already holds an index: a finished one is opened as it is; one of an older
format (an earlier mire-jax wrote it: evaluation caches outlive upgrades) is built again from the encoded corpus, with
a warning, and searches as a fresh one does; a damaged one is still refused by name."""
import json
import warnings

import pytest

from mire_jax.index import IndexFileError
from mire_jax.retrieval.searcher import Searcher

PASSAGES = [(f"p{i}", f"passage {i} about {topic} and {i % 3} other things")
            for i, topic in enumerate(["birds", "rivers", "towers", "ships", "bridges", "owls", "lakes", "trains"])]
QUESTIONS = ["which bird is this?", "what river flows here?", "how old is this tower?"]


@pytest.fixture(scope="module")
def searcher(tiny_model_dir):
    return Searcher.load(tiny_model_dir, settings=dict(query_maxlen=16, doc_maxlen=24), batch_size=4)


def _build(searcher, folder):
    searcher.build_index(PASSAGES, folder, shard_size=3, progress=False)
    ids, scores = searcher.search(QUESTIONS, k=5)
    return ids, [x for s in scores for x in s.tolist()]


def test_an_index_of_an_older_format_is_built_again(searcher, tmp_path):
    folder = tmp_path / "corpus"
    fresh = _build(searcher, folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a finished index of this format is opened without a word
        assert _build(searcher, folder) == fresh

    manifest_path = folder / "index" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    version = manifest["version"]
    manifest_path.write_text(json.dumps({**manifest, "version": version - 1}))
    with pytest.warns(UserWarning, match=rf"version {version - 1}.*building it again now, from the encoded corpus"):
        again = _build(searcher, folder)
    assert again[0] == fresh[0] and again[1] == pytest.approx(fresh[1])
    assert json.loads(manifest_path.read_text())["version"] == version

    # Damage is not a format change: it is refused, naming the file, and nothing is removed.
    (folder / "index" / "index.json").write_text("{}")
    with pytest.raises(IndexFileError, match="index.json"):
        _build(searcher, folder)
    assert manifest_path.exists()
