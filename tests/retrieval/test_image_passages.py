"""Passages that carry an image, through the whole path: passages files naming images, the Searcher's passage
encoder (equal to the functional API), and benchmarks with image candidates encoded, indexed, searched and scored
(equal to MaxSim computed directly from the API's embeddings)."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

import mire_jax
from mire_jax.eval import runner
from mire_jax.eval.benchmarks import load_benchmark
from mire_jax.retrieval import passages as passage_files
from mire_jax.retrieval.images import ImageError, preprocess
from mire_jax.retrieval.searcher import Searcher

SIZES = dict(query_maxlen=16, doc_maxlen=24)


def _png(path, seed):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (20 + seed, 28, 3), dtype=np.uint8)).save(path)
    return path


def test_passage_files_name_images(tmp_path):
    for i in range(3):
        _png(tmp_path / "imgs" / f"{i}.png", i)
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in [
        {"id": "t", "text": "only text"}, {"id": 1, "image": "imgs/0.png"},
        {"id": "it", "text": "a caption", "image": "imgs/1.png"}, {"id": "n", "text": None, "image": "imgs/2.png"},
        {"id": "abs", "text": "", "image": str(tmp_path / "imgs" / "2.png")}]) + "\n")
    got = list(passage_files.iter_passages(jsonl))
    assert got == [("t", "only text"), ("1", "", str(tmp_path / "imgs/0.png")),
                   ("it", "a caption", str(tmp_path / "imgs/1.png")), ("n", "", str(tmp_path / "imgs/2.png")),
                   ("abs", "", str(tmp_path / "imgs/2.png"))]
    texts, images = passage_files.read_passages(jsonl, image_root="/elsewhere")
    assert texts["t"] == "only text" and "t" not in images and images["it"] == "/elsewhere/imgs/1.png"
    assert images["abs"] == str(tmp_path / "imgs/2.png")  # an absolute path stays as it is
    assert passage_files.load_passages(jsonl) == texts

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "image": "a.png"}\n{"id": 2, "image": 7}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl: line 2: field 'image' should be an image path"):
        list(passage_files.iter_passages(bad))
    bad.write_text('{"id": 1, "image": ""}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl: line 1: needs the fields 'id' and 'text' \(or an 'image'\)"):
        list(passage_files.iter_passages(bad))

    parquet = tmp_path / "p.parquet"
    pq.write_table(pa.table({"passage_id": ["a", "b", "c"], "passage_content": ["x", None, "z"],
                             "image": [None, "imgs/0.png", "imgs/1.png"]}), parquet)
    assert list(passage_files.iter_passages(parquet)) == [
        ("a", "x"), ("b", "", str(tmp_path / "imgs/0.png")), ("c", "z", str(tmp_path / "imgs/1.png"))]
    pq.write_table(pa.table({"passage_id": ["a", "b"], "passage_content": ["x", None],
                             "image": [None, None]}), parquet)
    with pytest.raises(ValueError, match=r"p.parquet: row 1: null passage_content and no image"):
        list(passage_files.iter_passages(parquet))
    pq.write_table(pa.table({"passage_id": ["a"], "passage_content": ["x"], "image": [b"\x89PNG"]}), parquet)
    with pytest.raises(ValueError, match=r"column 'image' holds binary, expected image paths"):
        list(passage_files.iter_passages(parquet))


@pytest.fixture(scope="module")
def searcher(tiny_model_dir):
    return Searcher.load(tiny_model_dir, settings=SIZES, batch_size=4)


def test_searcher_encodes_each_kind_as_the_api(searcher, tmp_path):
    """Text, image-only and image+text passages, mixed in one call, each equal to `mire_jax.encode_doc` on its own;
    the image passages read from files, bytes, PIL images and pixels alike."""
    paths = [_png(tmp_path / f"{i}.png", i) for i in range(4)]
    texts = ["a text passage about birds.", "", "a caption for the second image", "", "another text one"]
    images = [None, paths[0], Image.open(paths[1]), paths[2].read_bytes(), None]
    got = searcher.encode_passages(texts, images=images)
    config, params, tok = searcher.config, searcher.params, searcher.tokenizer
    n_visual = config.head.num_tokens + config.head.num_heads
    pixels = np.stack([preprocess(Image.open(p).convert("RGB"), searcher.settings.image) for p in paths[:3]])
    prompt = tok.encode_image_prompt()

    def rows(values, n=4):  # the API called at the searcher's batch size (its compiled shapes)
        return np.concatenate([values, np.repeat(values[-1:], n - len(values), axis=0)])

    ids, mask, keep = (rows(a) for a in tok.encode_docs([texts[0], texts[4], texts[2]],
                                                         max_len=SIZES["doc_maxlen"], keep_policy="padding_only"))
    text_docs, text_keep = mire_jax.encode_doc(config, params, ids, mask, keep)
    with_text, with_text_keep = mire_jax.encode_doc(config, params, rows(ids[2:3]), rows(mask[2:3]),
                                                    rows(keep[2:3]), pixel_values=rows(pixels[1:2]),
                                                    prompt_ids=prompt)
    alone, alone_keep = mire_jax.encode_doc(config, params, pixel_values=rows(pixels[[0, 2]]), prompt_ids=prompt)
    expected = {0: (text_docs, text_keep, 0), 4: (text_docs, text_keep, 1), 2: (with_text, with_text_keep, 0),
                1: (alone, alone_keep, 0), 3: (alone, alone_keep, 1)}
    for i, (docs, kept, row) in expected.items():
        want = np.asarray(docs)[row][np.asarray(kept)[row]]
        assert got[i].shape == want.shape and got[i].dtype == np.float16
        np.testing.assert_allclose(got[i].astype(np.float32), want, atol=2e-3)
    assert got[1].shape[0] == got[3].shape[0] == n_visual and got[2].shape[0] == n_visual + int(keep[2].sum())
    with pytest.raises(ImageError, match="missing.png"):
        searcher.encode_passages(["x"], images=[tmp_path / "missing.png"])


def _brute_force(bench, searcher, settings):
    """{qid: {pid: MaxSim}} from the API's own embeddings of every query and passage (no index)."""
    config, params, tok = searcher.config, searcher.params, searcher.tokenizer
    image = searcher.settings.image
    docs = []
    for item in bench.corpus.items():
        text, source = item[1], (item[2] if len(item) > 2 else None)
        if source is None:
            ids, mask, keep = tok.encode_docs([text], max_len=settings.doc_maxlen, keep_policy=settings.passage_keep)
            d, k = mire_jax.encode_doc(config, params, ids, mask, keep)
        else:
            pixels = preprocess(source.load(), image)[None]
            if text:
                ids, mask, keep = tok.encode_docs([text], max_len=settings.doc_maxlen,
                                                  keep_policy=settings.passage_keep)
                d, k = mire_jax.encode_doc(config, params, ids, mask, keep, pixel_values=pixels,
                                           prompt_ids=tok.encode_image_prompt())
            else:
                d, k = mire_jax.encode_doc(config, params, pixel_values=pixels, prompt_ids=tok.encode_image_prompt())
        docs.append((item[0], np.asarray(d)[0][np.asarray(k)[0]]))
    scores = {}
    for q in bench.queries:
        ids, mask = tok.encode_queries([q.question], max_len=settings.query_maxlen, attend_to_mask_tokens=False)
        pixels = None if q.image is None else preprocess(q.image.load(), image)[None]
        rows = np.asarray(mire_jax.encode_query(config, params, ids, mask, pixels))[0]  # padding rows are zeros
        scores[q.qid] = {pid: float((rows @ d.astype(np.float16).astype(np.float32).T).max(1).sum())
                         for pid, d in docs}
    return scores


@pytest.mark.parametrize("name", ["fashioniq_dress", "webqa"])
def test_image_candidates_encode_index_search_and_score(name, searcher, fixtures_dir, tmp_path):
    """FashionIQ (image-only candidates, image queries) and WebQA (image+caption and text candidates, text
    queries): the index built from the corpus returns every passage with the score MaxSim gives the API's own
    embeddings, the published and textbook metrics follow, and a second run reuses the encoded corpus."""
    bench = load_benchmark(name, fixtures_dir / name.split("_")[0])
    settings = runner.EvalSettings(batch_size=4, shard_size=3, k=100, recall_sample=4, **SIZES)
    evaluation = runner.make_searcher(searcher.config, searcher._host_params, searcher.tokenizer, settings)
    run, report = runner.retrieve_with_index_report(bench, evaluation, str(tmp_path), settings)
    assert report["search"] == "exact"
    want = _brute_force(bench, evaluation, settings)
    assert set(run) == set(want)
    for qid, ranking in run.items():
        assert set(ranking) == set(want[qid]) == {item[0] for item in bench.corpus.items()}
        for pid, score in ranking.items():  # the index scores its int8-stored tokens: within 0.2% of float32
            assert score == pytest.approx(want[qid][pid], rel=2e-3, abs=5e-3), (qid, pid)
    index = evaluation.index
    lengths = np.diff(index.offsets)
    n_visual = evaluation.num_visual
    for position, item in enumerate(bench.corpus.items()):
        if len(item) > 2:  # image rows always kept, then the caption's kept tokens
            assert lengths[position] == n_visual + (len(evaluation.tokenizer.wordpieces([item[1]])[0]) + 3
                                                    if item[1] else 0)
    scores = runner.score(bench, run)
    assert scores["published"]["num_queries"] == len(bench.queries) and "textbook" in scores
    assert 0.0 <= scores["published"]["MRR@5"] <= 1.0
    again, _ = runner.retrieve_with_index_report(bench, evaluation, str(tmp_path), settings)
    assert again == run


def test_image_ablations_of_text_queries_are_refused(searcher, fixtures_dir, tmp_path):
    bench = load_benchmark("webqa", fixtures_dir / "webqa")
    settings = runner.EvalSettings(image_ablation="shuffle", batch_size=4, **SIZES)
    with pytest.raises(ValueError, match="the queries have no images"):
        runner.encode_queries(bench.queries, searcher, settings)
