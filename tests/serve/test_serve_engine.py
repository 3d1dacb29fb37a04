"""The engine in-process, over the quick demo's model and index: questions encoded cut to the shortest compiled text
length that holds them give the evaluation's full-length query embeddings, in batches mixing lengths and kinds; after
the warm-up, batches of every size and mix compile nothing."""
import jax
import numpy as np
from PIL import Image

import mire_jax
from mire_jax.retrieval.searcher import Searcher
from mire_jax.serve.engine import Engine


def test_cut_queries_encode_as_full_length_queries(quick_demo):
    searcher = Searcher.from_run(quick_demo.out)
    engine = Engine(searcher, batch_sizes=(1, 4))
    maxlen = searcher.settings.query_maxlen
    lengths = engine.text_lengths()
    assert lengths[-1] == maxlen and len(lengths) > 1
    size = engine.image_size
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    questions = ["who", "what is shown in this picture and who made it", " ".join(["word"] * (maxlen + 5))]
    for batch in ([(questions[0], image)], [(questions[0], image), (questions[1], None), (questions[2], image)],
                  [(questions[1], None)]):
        queries = [engine.prepare(q, im) for q, im in batch]
        embs, mask = engine.encode(queries)
        length = embs.shape[1] - engine.num_visual
        assert length in lengths
        ids, text_mask = searcher.tokenizer.encode_queries([q for q, _ in batch], max_len=maxlen,
                                                           attend_to_mask_tokens=False)
        assert length == searcher.text_length(int(np.asarray(text_mask).sum(1).max()))
        for row, (question, im) in enumerate(batch):
            pixels = None if im is None else engine.prepare(question, im).pixels[None]
            full = np.asarray(mire_jax.encode_query(searcher.config, searcher.params, np.asarray(ids)[row:row + 1],
                                                    np.asarray(text_mask)[row:row + 1], pixels))[0]
            if im is None:  # searched after masked zero rows in place of the visual tokens
                assert not mask[row, :engine.num_visual].any() and not embs[row, :engine.num_visual].any()
                full = np.concatenate([np.zeros((engine.num_visual, full.shape[1]), np.float32), full])
            np.testing.assert_allclose(embs[row], full[:embs.shape[1]], atol=2e-5)
            assert mask[row, engine.num_visual:].sum() == np.asarray(text_mask)[row].sum()
            assert not full[embs.shape[1]:].any() or length == maxlen  # what was cut scores nothing (masked)
    jax.clear_caches()


def test_batches_of_every_size_compile_nothing_after_the_warm_up(quick_demo):
    engine = Engine(Searcher.from_run(quick_demo.out), batch_sizes=(1, 3, 5), max_k=7)
    engine.warm_up()
    rng = np.random.default_rng(1)
    size = engine.image_size
    image = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    alone = {}
    for n in range(1, engine.max_batch + 1):
        queries = [engine.prepare(f"question number {i}", image if i % 2 else None) for i in range(n)]
        outcome = engine.run_batch(queries)
        assert len(outcome.ids) == n and all(len(ids) == 7 for ids in outcome.ids)
        for i, ids in enumerate(outcome.ids):  # the same answer whatever the batch it is in
            assert alone.setdefault(i, ids) == ids
    assert engine.compiles.since_warm_up == 0
    jax.clear_caches()
