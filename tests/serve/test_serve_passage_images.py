"""A served corpus whose passages carry images: encoded by eval/encode_corpus.py (image-only, image+text and text
passages), searched through the server, each image passage's image sent by GET /passage-image/{id} and named in
/passages/{id} and in the search results."""
import pytest

from mire_jax.serve.client import ApiError, Client


@pytest.fixture
def image_client(image_passages_run):
    c = Client(image_passages_run.server.url)
    yield c
    c.close()


def test_the_server_returns_a_passages_image(image_client, image_passages_run):
    passages = image_passages_run.passages
    health = image_client.health()
    assert health["index"]["passages"] == 6 and health["index"]["passages_with_images"] == 4
    for pid, passage in passages.items():
        answer = image_client.passage(pid)
        assert answer["text"] == passage["text"]
        if passage["image"] is None:
            assert "image" not in answer
            with pytest.raises(ApiError) as error:
                image_client.passage_image(pid)
            assert error.value.status == 404 and "has no image" in str(error.value)
        else:
            assert answer["image"] == f"/passage-image/{pid}"
            data, content_type = image_client.passage_image(pid)
            assert data == passage["image"].read_bytes() and content_type == "image/png"
    with pytest.raises(ApiError) as error:
        image_client.passage_image("no-such-passage")
    assert error.value.status == 404 and "no passage with id" in str(error.value)


def test_search_results_name_the_images(image_client, image_passages_run):
    passages = image_passages_run.passages
    picture = passages["img-only-a"]["image"].read_bytes()
    for answer in (image_client.search(image=picture, k=6), image_client.search(question="a red circle", k=6)):
        results = answer["results"]
        assert {r["id"] for r in results} == set(passages)
        for r in results:
            assert r.get("image") == (None if passages[r["id"]]["image"] is None else f"/passage-image/{r['id']}")
            assert r["text"] == passages[r["id"]]["text"]
