"""The search API over real HTTP on 127.0.0.1: answers equal the demo's evaluation, text-only and image-only queries,
explanations, and every kind of bad input answered with a 4xx and one line, the server answering on."""
import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from mire_jax.serve.client import ApiError, multipart, query_fields


def _hit_rates(answers: list[dict], queries: list[dict], ks=(1, 5, 10)) -> dict:
    return {f"R@{k}": float(np.mean([q["document_id"] in [r["id"] for r in a["results"][:k]]
                                     for a, q in zip(answers, queries)])) for k in ks}


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_health_names_model_index_and_device(client, quick_demo):
    health = client.health()
    assert health["status"] == "ok"
    assert health["index"]["passages"] == len(quick_demo.passages)
    assert health["model"]["dir"].endswith("model") and health["model"]["query_maxlen"] == 32
    assert health["device"]["platform"] in ("cpu", "gpu", "tpu")
    assert health["batching"]["batch_sizes"] == [1, 4]
    assert health["compilations_since_warm_up"] == 0


def test_image_and_question_return_their_own_passage(client, quick_demo):
    """Every zero-shot query of the demo's world: the served rankings give the demo evaluation's hit rates, and
    queries find their own passage in the top k."""
    k = 10
    answers = [client.search(image=quick_demo.image_bytes(q), question=q["question"], k=k) for q in quick_demo.queries]
    for answer in answers:
        assert [r["rank"] for r in answer["results"]] == list(range(1, k + 1))
        scores = [r["score"] for r in answer["results"]]
        assert scores == sorted(scores, reverse=True)
        assert all(r["text"] == quick_demo.passages[str(r["id"])] for r in answer["results"])
        assert answer["query"]["image"] and set(answer["timings"]) >= {"encode_ms", "search_ms", "total_ms"}
    served = _hit_rates(answers, quick_demo.queries)
    evaluated = quick_demo.results["results"]["mire"]
    assert served == pytest.approx({name: evaluated[name] for name in served}, abs=1e-9)
    found = [q["id"] for a, q in zip(answers, quick_demo.queries)
             if q["document_id"] in [r["id"] for r in a["results"]]]
    assert found, "no query found its own passage in the top 10"


def test_text_only_and_image_only_queries(client, quick_demo):
    query = quick_demo.queries[0]
    text_only = client.search(question=query["question"], k=5)
    assert not text_only["query"]["image"] and len(text_only["results"]) == 5
    assert client.search(question=query["question"], k=5)["results"] == text_only["results"]
    image_only = client.search(image=quick_demo.image_bytes(query), k=5)
    assert image_only["query"]["image"] and image_only["query"]["question"] == "" and len(image_only["results"]) == 5
    # an image too large to prepare in the event loop is prepared in a worker thread, to the same result
    large = _png(Image.open(io.BytesIO(quick_demo.image_bytes(query))).resize((300, 300)))
    image_size = client.health()["model"]["image_size"]
    large_answer = client.search(image=large, question=query["question"], k=5)
    in_loop = client.search(image=_png(Image.open(io.BytesIO(large)).resize((image_size, image_size),
                                                                       Image.Resampling.BICUBIC)),
                            question=query["question"], k=5)
    assert [r["id"] for r in large_answer["results"]] == [r["id"] for r in in_loop["results"]]
    # k defaults to 10 (or the corpus size)
    assert len(client.search(question=query["question"])["results"]) == min(10, len(quick_demo.passages))


def test_passages_route(client, quick_demo):
    pid, text = next(iter(quick_demo.passages.items()))
    assert client.passage(pid) == {"id": pid, "text": text}


def test_explain_gives_heatmaps_per_head_mean_and_passage(client, quick_demo, server):
    query = quick_demo.queries[0]
    top = [r["id"] for r in client.search(image=quick_demo.image_bytes(query), question=query["question"],
                                          k=3)["results"]]
    answer = client.explain(quick_demo.image_bytes(query), query["question"], top)
    heads = client.health()["model"]["heads"]
    assert answer["heads"] == heads and len(answer["per_head"]) == heads
    decoded = [Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
               for url in [answer["image"], answer["mean"], *answer["per_head"], *(p["heatmap"] for p in
                                                                                    answer["passages"])]]
    assert all(image.format == "PNG" and image.size == (320, 320) for image in decoded)
    assert [p["id"] for p in answer["passages"]] == top
    assert answer["contrast"]["mean"] >= 1.0 and len(answer["contrast"]["per_head"]) == heads
    for passage in answer["passages"]:
        assert sum(passage["head_weights"]) == pytest.approx(1.0, abs=1e-3) and passage["contrast"] >= 1.0
        assert sum(passage["shares"].values()) == pytest.approx(passage["score"], abs=1e-3)
    attention = np.asarray(answer["attention"])
    assert attention.shape == (heads, *answer["grid"]) and np.allclose(attention.sum((1, 2)), 1.0, atol=1e-3)
    # the library's panel figure
    from mire_jax.serve.client import Client
    body, content_type = multipart({**query_fields(quick_demo.image_bytes(query), query["question"]), "format": "png"})
    status, headers, data = Client(server.url).request("POST", "/explain", body, content_type)
    assert status == 200 and headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(data)).format == "PNG"


def _bad_requests(quick_demo, max_k):
    """(name, method, path, body, content type, expected status) for every kind of bad input."""
    good = quick_demo.image_bytes(quick_demo.queries[0])
    question = quick_demo.queries[0]["question"]
    noise = _png(Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)))
    large = _png(Image.open(io.BytesIO(good)).resize((300, 300)))
    form = lambda **fields: multipart(fields)
    cases = [
        ("not an image", form(image=("notes.png", b"this is not an image at all", "image/png"), question=question),
         400),
        ("truncated image", form(image=("cut.png", good[:len(good) // 2], "image/png"), question=question), 400),
        ("truncated large image (decoded in a worker thread)",
         form(image=("cut.png", large[:len(large) // 2], "image/png"), question=question), 400),
        ("empty image file", form(image=("empty.png", b"", "image/png"), question=question), 400),
        ("image over the byte limit", form(image=("big.png", noise + b"\0" * (270 * 1024), "image/png")), 413),
        ("body over the request limit", form(image=("bigger.png", noise + b"\0" * (900 * 1024), "image/png")), 413),
        ("image over the pixel limit", form(image=("huge.png", _png(Image.new("1", (8000, 8000))), "image/png")), 413),
        ("image as a text field", form(image="not a file", question=question), 400),
        ("empty query", form(question="   "), 400),
        ("no fields", form(), 400),
        ("k zero", form(question=question, k=0), 400),
        ("k above the limit", form(question=question, k=max_k + 1), 400),
        ("k not a number", form(question=question, k="ten"), 400),
        ("question too long", form(question="why " * 800), 400),
        ("JSON instead of a form", (json.dumps({"question": question}).encode(), "application/json"), 415),
        ("broken multipart", (b"--x\r\nnot a part", "multipart/form-data; boundary=x"), 400),
    ]
    requests = [(name, "POST", "/search", body, content_type, status) for name, (body, content_type), status in cases]
    requests += [
        ("explain without an image", "POST", "/explain", *form(question=question), 400),
        ("explain of an unknown passage", "POST", "/explain",
         *form(image=("q.png", good, "image/png"), passage_ids="no-such-passage"), 404),
        ("unknown passage", "GET", "/passages/no-such-passage", None, None, 404),
        ("unknown route", "GET", "/nowhere", None, None, 404),
        ("wrong method", "GET", "/search", None, None, 405),
    ]
    return requests


def test_bad_input_gets_a_4xx_with_one_line_and_the_server_answers_on(client, quick_demo, server):
    from mire_jax.serve.client import Client
    max_k = client.health()["limits"]["max_k"]
    failures = []
    for name, method, path, body, content_type, expected in _bad_requests(quick_demo, max_k):
        raw = Client(server.url)  # a fresh connection: the server may close one after refusing a body
        status, _, data = raw.request(method, path, body, content_type)
        raw.close()
        try:
            reason = json.loads(data)["error"]
        except (ValueError, KeyError):
            reason = None
        if status != expected or not reason or "\n" in reason or "Traceback" in reason:
            failures.append(f"{name}: {status} {data[:200]!r}")
        assert server.process.poll() is None, f"the server died on: {name}"
        assert client.health()["status"] == "ok"
    assert not failures, "\n".join(failures)
    query = quick_demo.queries[0]
    assert client.search(image=quick_demo.image_bytes(query), question=query["question"], k=3)["results"]
    assert "Traceback" not in server.log_text()
    with pytest.raises(ApiError) as error:
        client.search(question="")
    assert error.value.status == 400 and "empty" in error.value.reason
