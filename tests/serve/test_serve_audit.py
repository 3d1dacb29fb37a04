"""The server audits its index: a share of live queries is searched exactly in a background worker, and the rolling
recall@10/@100 with its standard error is what exact search says of the answers; an exact index has nothing to audit."""
import logging
import time

import jax
import numpy as np
import pytest

from mire_jax.index import LateInteractionIndex
from mire_jax.index.synthetic import SyntheticCorpus, SyntheticSpec
from mire_jax.retrieval.searcher import Searcher
from mire_jax.serve import audit as audit_lib
from mire_jax.serve.audit import Audit
from mire_jax.serve.engine import Engine

ROUGH = {"mode": "scann", "calibrate": False, "num_leaves": 16, "leaves_to_search": 1, "neighbors_per_token": 16,
         "fill_fraction": 0.5, "rerank_passages": 100}


def _wait(audit: Audit, count: int, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = audit.report()
        if report["audited"] + report["dropped"] >= count or report.get("status") == "failed":
            return report
        time.sleep(0.1)
    raise AssertionError(f"the audit did not finish in {timeout} s: {audit.report()}")


def _per_query_recall(found, truth, k):
    return np.array([len(set(f[:k].tolist()) & set(t[:k].tolist())) / k for f, t in zip(found, truth)])


def test_the_audit_measures_what_exact_search_says(tmp_path, caplog):
    spec = SyntheticSpec(num_passages=1200, mean_length=24, vocab_size=5000, num_common=60, num_topics=80,
                         topic_vocab=60)
    corpus = SyntheticCorpus(spec, seed=5)
    LateInteractionIndex.build(corpus.embeddings(), corpus.lengths, list(range(spec.num_passages)), ROUGH,
                               progress=False).save(tmp_path / "index")
    index = LateInteractionIndex.load(tmp_path / "index")
    queries, mask, _ = corpus.queries(40, seed=6)
    found, _ = index.search_positions(queries, mask, 100)
    truth, _ = index.search_positions(queries, mask, 100, exact=True)

    audit = Audit(index, rate=1.0, cpu_share=1.0, max_pending=64, lowest_priority=False)
    assert audit.report()["status"] == "not started"
    with caplog.at_level(logging.INFO, logger="mire_jax.serve.audit"):
        audit.start()
        try:
            for start in range(0, 40, 8):
                audit.offer(queries[start:start + 8], mask[start:start + 8], found[start:start + 8])
            report = _wait(audit, 40)
        finally:
            audit.stop()
    assert report["offered"] == report["sampled"] == report["audited"] == 40 and report["dropped"] == 0
    for k in (10, 100):  # within a tie or two at the k-th score (a tie counts as found)
        expected = _per_query_recall(found, truth, k)
        assert report[f"recall@{k}"]["mean"] == pytest.approx(expected.mean(), abs=2e-3)
        assert report[f"recall@{k}"]["stderr"] == pytest.approx(expected.std(ddof=1) / np.sqrt(40), abs=2e-3)
        assert report[f"recall@{k}"]["queries"] == 40
    assert report["recall@100"]["mean"] < 0.9  # rough settings: far below the index's target of 0.95
    assert report["status"] == "below target" and "recall@100" in report["warning"]
    assert "python -m mire_jax.index calibrate" in report["warning"]
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "index audit" in r.getMessage()]
    assert warned and "below its targets" in warned[-1].getMessage()
    assert report["worker"]["cpu_s"] > 0

    # A share of the queries, at the lowest priority, within its CPU share; a full queue drops samples, never waits.
    sampled = Audit(index, rate=0.25, cpu_share=0.05, max_pending=2, seed=1)
    sampled.start()
    try:
        t0 = time.perf_counter()
        for _ in range(50):
            sampled.offer(queries, mask, found)
        assert time.perf_counter() - t0 < 1.0  # 2000 queries offered: sampling and queueing only
        report = sampled.report()
        assert report["offered"] == 2000 and 400 <= report["sampled"] <= 600
        assert report["dropped"] >= report["sampled"] - 20  # the worker takes one job of at most 8 at a time
    finally:
        sampled.stop()
    assert report["worker"]["priority"] in ("SCHED_IDLE", "nice 19", None)

    off = Audit(index, rate=0.0)
    assert off.report() == {"mode": "scann", "audited": 0, "note": "turned off (audit rate 0)"}


def test_the_engine_audits_its_answers(quick_demo, tmp_path):
    searcher = Searcher.from_run(quick_demo.out)
    demo = searcher.index
    # The demo's own index is exact (nothing to audit); the same tokens under a rough ScaNN index are audited.
    assert Engine(searcher, batch_sizes=(1,)).audit.report() == {"mode": "exact", "audited": 0,
                                                                  "note": audit_lib.EXACT_NOTE}
    LateInteractionIndex.build(np.asarray(demo.embeddings, np.float32), np.diff(demo.offsets), demo.ids,
                               {**ROUGH, "rerank_passages": 20}, progress=False,
                               encoding=demo.encoding).save(tmp_path / "index")
    searcher.index = LateInteractionIndex.load(tmp_path / "index")
    engine = Engine(searcher, batch_sizes=(1, 4), max_k=50, audit_rate=1.0)
    assert engine.audit.rate == 1.0 and engine.audit.report()["status"] == "not started"
    engine.audit = Audit(searcher.index, rate=1.0, cpu_share=1.0, lowest_priority=False)
    questions = [q["question"] for q in quick_demo.queries[:8]]
    engine.audit.start()
    try:
        outcomes = [engine.run_batch([engine.prepare(q, None) for q in questions[i:i + 4]]) for i in (0, 4)]
        report = _wait(engine.audit, 8)
    finally:
        engine.audit.stop()
    assert report["audited"] == 8
    embs, mask = engine.encode([engine.prepare(q, None) for q in questions])
    truth, _ = searcher.index.search_positions(embs, mask, 50, exact=True)
    position = {pid: p for p, pid in enumerate(searcher.index.ids)}
    # A rough index may return fewer than 50 passages for a query: the server's positions are -1 past them.
    found = np.full((len(questions), 50), -1)
    for row, ids in enumerate(ids for outcome in outcomes for ids in outcome.ids):
        found[row, :len(ids)] = [position[pid] for pid in ids]
    assert report["recall@10"]["mean"] == pytest.approx(_per_query_recall(found, truth, 10).mean(), abs=1e-2)
    assert report["recall@100"]["queries"] == 0  # 50 results per query: recall@100 cannot be audited
    jax.clear_caches()


def test_healthz_says_an_exact_index_has_nothing_to_audit(client):
    audit = client.health()["audit"]
    assert audit["mode"] == "exact" and "nothing to audit" in audit["note"]


def test_the_audit_flags(capsys):
    from mire_jax.serve.__main__ import parse_args

    defaults = parse_args(["runs/demo"])
    assert defaults.audit_rate == 0.01 and defaults.audit_cpu == 0.2
    assert parse_args(["runs/demo", "--audit-rate", "0"]).audit_rate == 0.0
    for flags, message in ((["--audit-rate", "1.5"], "--audit-rate is a share of queries in"),
                           (["--audit-cpu", "0"], "--audit-cpu is a fraction of one core")):
        with pytest.raises(SystemExit):
            parse_args(["runs/demo", *flags])
        assert message in capsys.readouterr().err
