"""Serving a trained model: a search API and a web page (image + question -> passages, with where the model looked).

    python -m mire_jax.serve --model DIR --index DIR --passages FILE [--host 127.0.0.1 --port 8024]

Parts: `engine` (the model, its index and the passages, fixed-shape encoding and search), `batcher` (concurrent
requests share one encoder call), `app` (the routes), `inputs` (request checks), `heatmap_png` (the attention maps
as PNG), `page/` (the HTML page), `client` (a small HTTP client for scripts, tests and the benchmark).
"""
from mire_jax.serve.app import create_app
from mire_jax.serve.engine import Engine

__all__ = ["Engine", "create_app"]
