"""A bounded load test on loopback: a fixed number of clients and requests, no errors, the same answers as one
client alone, batches actually shared, and nothing compiled while serving."""
import threading
import time

import pytest

from mire_jax.serve.client import Client, multipart, query_fields

CLIENTS = 8
REQUESTS_PER_CLIENT = 6
DEADLINE_S = 300


def _requests(quick_demo):
    """CLIENTS x REQUESTS_PER_CLIENT prepared bodies: image + question, and every third one text only."""
    bodies = []
    for i in range(CLIENTS * REQUESTS_PER_CLIENT):
        q = quick_demo.queries[i % len(quick_demo.queries)]
        image = None if i % 3 == 2 else quick_demo.image_bytes(q)
        bodies.append(multipart(query_fields(image, q["question"], k=5)))
    return bodies


def _ranking(answer):
    return [r["id"] for r in answer["results"]], [r["score"] for r in answer["results"]]


def test_concurrent_clients_get_the_answers_of_one_client(server, quick_demo):
    bodies = _requests(quick_demo)
    alone = Client(server.url)
    expected = [_ranking(alone.post("/search", *body)) for body in bodies]
    alone.close()

    answers, errors = [None] * len(bodies), []
    start = threading.Barrier(CLIENTS)

    def run(client_index):
        client = Client(server.url, timeout=60)
        try:
            start.wait(timeout=60)
            for j in range(REQUESTS_PER_CLIENT):
                i = client_index * REQUESTS_PER_CLIENT + j
                answers[i] = client.post("/search", *bodies[i])
        except Exception as e:  # collected: the test reports every failure, not only the first
            errors.append(f"client {client_index}: {type(e).__name__}: {e}")
        finally:
            client.close()

    threads = [threading.Thread(target=run, args=(c,), daemon=True) for c in range(CLIENTS)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1.0, DEADLINE_S - (time.monotonic() - t0)))
    assert not any(t.is_alive() for t in threads), f"load did not finish in {DEADLINE_S} s"
    assert not errors, errors
    for i, (answer, (ids, scores)) in enumerate(zip(answers, expected)):
        got_ids, got_scores = _ranking(answer)
        assert got_ids == ids, f"request {i}: {got_ids} != {ids}"
        assert got_scores == pytest.approx(scores, abs=1e-4), f"request {i}"

    health = Client(server.url).health()
    shared = {int(size): n for size, n in health["batching"]["batches_run"].items() if int(size) > 1}
    assert shared, f"no batch held more than one query: {health['batching']}"
    assert max(a["timings"]["batch_size"] for a in answers) > 1
    assert health["compilations_since_warm_up"] == 0
