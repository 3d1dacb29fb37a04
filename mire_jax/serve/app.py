"""The HTTP routes: search, explanations, passages, health and the page.

| route | input | output |
|---|---|---|
| POST /search | multipart: image (file), question (text), k (default 10) | {"results": [{rank, id, score, text}], ...} |
| POST /explain | multipart: image, question, passage_ids (comma-separated), format (json or png) | heatmaps as PNG |
| GET /passages/{id} | | {"id", "text", "image" (the URL of its image, when it carries one)} |
| GET /passage-image/{id} | | the passage's image file (404 when it has none) |
| GET /healthz | | model, index size, device, batching, compilations since start-up, the index's audit |
| GET / | | the page |

Every error is JSON {"error": "<one line>"} with a 4xx status (503 when the queue is full); an unexpected failure
is a 500 with no details, logged with its stack trace on the server only.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import mimetypes
import os
import time
import urllib.parse

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from mire_jax.serve import heatmap_png
from mire_jax.serve.batcher import Busy, MicroBatcher
from mire_jax.serve.body_limit import BodySizeLimit
from mire_jax.serve.engine import BatchOutcome, Engine
from mire_jax.serve.inputs import (
    InputError,
    Limits,
    check_question,
    decode_opened,
    decode_upload,
    open_upload,
    parse_k,
    parse_question,
)

log = logging.getLogger("mire_jax.serve")

PAGE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "page")
DEFAULT_K = 10
MAX_EXPLAIN_WAITING = 8  # explanations are heavier than searches and run one at a time
# An image whose decoding and preprocessing take a fraction of a millisecond (at most this many pixels, both the
# upload and the model's input) is prepared in the event loop: the hop to a worker thread and back costs more, and
# at 16 clients took 5% of the throughput. A larger one goes to a worker thread so as not to hold up other requests.
INLINE_PREPARE_PIXELS = 128 * 128


def _error(status: int, reason: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(reason).split())}, status_code=status, headers=headers)


def _ms(seconds: float) -> float:
    return round(1000 * seconds, 2)


def passage_image_url(passage_id: str) -> str:
    """The route serving a passage's image."""
    return "/passage-image/" + urllib.parse.quote(str(passage_id), safe="")


def _split(outcome: BatchOutcome, i: int):
    return outcome.ids[i], outcome.scores[i], outcome.encode_s, outcome.search_s


class Server:
    """The state the routes share, and the routes as methods: each reads on its own.

    Args:
        engine: the model, index and passages (`Engine.warm_up` already called, so nothing compiles while serving).
        limits: what a request may send (`max_k` is capped at the engine's `max_k`).
        window_ms: how long a batch being formed waits for its next request (`MicroBatcher`); batches hold at most
            `engine.max_batch`.
        max_queue: queries allowed to wait for the encoder before requests are refused with 503.
    """

    def __init__(self, engine: Engine, limits: Limits | None, window_ms: float, max_queue: int):
        self.engine = engine
        self.limits = limits or Limits()
        self.max_k = min(self.limits.max_k, engine.max_k)
        self.window_ms = window_ms
        self.batcher = MicroBatcher(engine.run_batch, max_batch=engine.max_batch, window_s=window_ms / 1000.0,
                                    max_queue=max_queue, split=_split)
        self.explainer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="mire-explain")
        self.explains_waiting = 0
        self.started = time.time()

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        self.batcher.start()
        self.engine.audit.start()
        yield
        await self.batcher.stop()
        self.explainer.shutdown(wait=True)
        self.engine.audit.stop()

    # Request parsing --------------------------------------------------------------------------------------------

    async def read_form(self, request: Request):
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            raise InputError(415, "send the fields as multipart/form-data (image, question, k)")
        return await request.form(max_files=1, max_fields=8, max_part_size=64 * 1024)

    async def read_upload(self, form, required: bool) -> tuple[bytes, str] | None:
        """The image field's (bytes, filename), None when absent; not decoded yet."""
        upload = form.get("image")
        if isinstance(upload, str):
            if upload:
                raise InputError(400, "image must be a file upload, not a text field")
            upload = None
        data = await upload.read() if isinstance(upload, UploadFile) else b""
        if isinstance(upload, UploadFile) and not data and not upload.filename:
            upload = None  # a form's file input left empty
        if upload is None:
            if required:
                raise InputError(400, "this route needs an image (a file field named 'image')")
            return None
        return data, upload.filename or ""

    async def read_image(self, form, required: bool):
        upload = await self.read_upload(form, required)
        return None if upload is None else await run_in_threadpool(decode_upload, *upload, self.limits)

    def prepare_query(self, image, filename: str, question: str):
        """Decode (an image from `open_upload`, or None) and preprocess: -> the engine's query."""
        return self.engine.prepare(question, None if image is None else decode_opened(image, filename))

    # Routes -------------------------------------------------------------------------------------------------

    async def search(self, request: Request):
        """Top-k passages for an image, a question, or both (multipart fields `image`, `question`, `k`)."""
        t0 = time.perf_counter()
        with self.batcher.expecting():
            form = await self.read_form(request)
            question = check_question(parse_question(form.get("question")), self.limits)
            k = parse_k(form.get("k"), DEFAULT_K, self.max_k)
            upload = await self.read_upload(form, required=False)
            if upload is None and not question:
                raise InputError(400, "the query is empty: send an image, a question or both")
            image = None if upload is None else open_upload(*upload, self.limits)  # reads the header only
            t1 = time.perf_counter()
            args = (image, "" if upload is None else upload[1], question)
            if image is None or max(image.width * image.height, self.engine.image_size ** 2) <= INLINE_PREPARE_PIXELS:
                query = self.prepare_query(*args)
            else:
                query = await run_in_threadpool(self.prepare_query, *args)
            t2 = time.perf_counter()
        try:
            answer = await self.batcher.submit(query)
        except Busy as busy:
            raise InputError(503, f"the server is busy: {busy}") from None
        ids, scores, encode_s, search_s = answer.result
        passages, images = self.engine.passages, self.engine.passage_images
        results = [{"rank": rank, "id": pid, "score": float(score), "text": passages[str(pid)]}
                   for rank, (pid, score) in enumerate(zip(ids[:k], scores[:k]), start=1)]
        for result in results:
            if str(result["id"]) in images:
                result["image"] = passage_image_url(result["id"])
        # A JSONResponse of plain values: FastAPI would otherwise walk the dict through its encoder first.
        return JSONResponse({
            "results": results, "query": {"question": question, "image": image is not None, "k": k},
            "timings": {"read_ms": _ms(t1 - t0), "preprocess_ms": _ms(t2 - t1), "queue_ms": _ms(answer.queued_s),
                        "encode_ms": _ms(encode_s), "search_ms": _ms(search_s), "batch_size": answer.batch_size,
                        "total_ms": _ms(time.perf_counter() - t0)}})

    async def explain(self, request: Request):
        """The pooling's attention over the image: per head, averaged, and per passage (`passage_ids`)."""
        t0 = time.perf_counter()
        form = await self.read_form(request)
        question = check_question(parse_question(form.get("question")), self.limits)
        passage_ids = self.explained_passages(form)
        fmt = form.get("format") or "json"
        if fmt not in ("json", "png"):
            raise InputError(400, f"format must be json or png, got {str(fmt)[:20]!r}")
        image = await self.read_image(form, required=True)
        if self.explains_waiting >= MAX_EXPLAIN_WAITING:
            raise InputError(503, f"the server is busy: {self.explains_waiting} explanations are waiting")
        self.explains_waiting += 1
        try:
            result = await asyncio.get_running_loop().run_in_executor(
                self.explainer, _render_explanation, self.engine, image, question, passage_ids, fmt)
        finally:
            self.explains_waiting -= 1
        if fmt == "png":
            return Response(result, media_type="image/png")
        result["timings"] = {"total_ms": _ms(time.perf_counter() - t0)}
        return result

    def explained_passages(self, form) -> list[str]:
        """The `passage_ids` field: comma-separated ids the index holds, at most the limit."""
        raw_ids = form.getlist("passage_ids")
        if any(not isinstance(r, str) for r in raw_ids):
            raise InputError(400, "passage_ids must be a text field")
        passage_ids = [p.strip() for r in raw_ids for p in r.split(",") if p.strip()]
        if len(passage_ids) > self.limits.max_explain_passages:
            raise InputError(400, f"{len(passage_ids)} passage ids; the limit is {self.limits.max_explain_passages}")
        unknown = [p for p in passage_ids if p not in self.engine.position]
        if unknown:
            raise InputError(404, f"no passage with id {unknown[0]!r}")
        return passage_ids

    async def passage(self, passage_id: str):
        """One passage's text, and the URL of its image when it carries one."""
        engine = self.engine
        if passage_id not in engine.position:
            raise InputError(404, f"no passage with id {passage_id!r}")
        answer = {"id": engine.index.ids[engine.position[passage_id]], "text": engine.passages[passage_id]}
        if passage_id in engine.passage_images:
            answer["image"] = passage_image_url(passage_id)
        return answer

    async def passage_image(self, passage_id: str):
        """The image file of a passage that carries one (only files the passages file names are ever served)."""
        engine = self.engine
        if passage_id not in engine.position:
            raise InputError(404, f"no passage with id {passage_id!r}")
        path = engine.passage_images.get(passage_id)
        if path is None:
            raise InputError(404, f"passage {passage_id!r} has no image")
        if not os.path.isfile(path):
            log.warning("the image of passage %r is missing: %s", passage_id, path)
            raise InputError(404, f"the image file of passage {passage_id!r} is missing on the server")
        media_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": "max-age=3600"})

    async def healthz(self):
        """Model, index size, device; batching and compilation counters; the index's audit on live queries."""
        engine, limits = self.engine, self.limits
        return {"status": "ok", **engine.describe(), "audit": engine.audit.report(),
                "batching": {"batch_sizes": list(engine.batch_sizes), "window_ms": self.window_ms,
                             "queued": self.batcher.queued,
                             "batches_run": {str(size): n for size, n in sorted(self.batcher.batch_sizes.items())}},
                "compilations_since_warm_up": engine.compiles.since_warm_up,
                "limits": {"max_k": self.max_k, "max_image_bytes": limits.max_image_bytes,
                           "max_image_pixels": limits.max_image_pixels,
                           "max_question_chars": limits.max_question_chars},
                "uptime_s": round(time.time() - self.started, 1)}

    async def page(self):
        return FileResponse(os.path.join(PAGE_DIR, "index.html"), media_type="text/html")


# Errors: one line each, never a stack trace ---------------------------------------------------------------------

async def _input_error(request, error: InputError):
    return _error(error.status, error.reason, {"Retry-After": "1"} if error.status == 503 else None)


async def _http_error(request, error: StarletteHTTPException):
    if error.status_code == 404:
        return _error(404, f"no route {request.method} {request.url.path}")
    if error.status_code == 405:
        return _error(405, f"{request.method} is not allowed on {request.url.path}")
    return _error(error.status_code, error.detail)


async def _validation_error(request, error: RequestValidationError):
    first = error.errors()[0] if error.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return _error(400, f"{where}: {first.get('msg', 'invalid request')}")


async def _unexpected(request, error: Exception):
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return _error(500, "internal error (the server log has the details)")


def create_app(engine: Engine, *, limits: Limits | None = None, window_ms: float = 10.0,
               max_queue: int = 512) -> FastAPI:
    """The ASGI app over a warmed-up engine (the arguments: `Server`)."""
    server = Server(engine, limits, window_ms, max_queue)
    app = FastAPI(title="MIRe search", lifespan=server.lifespan,
                  description="Image + question -> passages, with where the model looked (arXiv 2411.08334).")
    app.add_middleware(BodySizeLimit, max_bytes=server.limits.max_body_bytes,
                       reason=f"the request is too large: an image may have at most {server.limits.max_image_bytes} "
                              "bytes")
    app.mount("/page", StaticFiles(directory=PAGE_DIR), name="page")
    for error, handler in ((InputError, _input_error), (StarletteHTTPException, _http_error),
                           (RequestValidationError, _validation_error), (Exception, _unexpected)):
        app.add_exception_handler(error, handler)
    app.post("/search")(server.search)
    app.post("/explain")(server.explain)
    app.get("/passages/{passage_id:path}")(server.passage)
    app.get("/passage-image/{passage_id:path}")(server.passage_image)
    app.get("/healthz")(server.healthz)
    app.get("/", include_in_schema=False)(server.page)
    return app


def _render_explanation(engine: Engine, image, question: str, passage_ids: list[str], fmt: str):
    """Runs in the explanation thread: the maps, then the PNGs (or the library's figure when fmt == "png")."""
    t0 = time.perf_counter()
    explained = engine.explain(image, question, passage_ids)
    maps = explained["maps"]
    resize = engine.searcher.settings.image.resize  # what of the upload the maps cover
    if fmt == "png":
        return heatmap_png.figure_png(image, maps, question, resize)
    t1 = time.perf_counter()
    view = heatmap_png.model_view(image, resize=resize)
    return {
        "grid": list(maps.shape[1:]), "heads": int(maps.shape[0]),
        "image": heatmap_png.data_url(view),
        "mean": heatmap_png.data_url(heatmap_png.overlay(view, maps.mean(0))),
        "per_head": [heatmap_png.data_url(heatmap_png.overlay(view, m)) for m in maps],
        "contrast": {"mean": heatmap_png.contrast(maps.mean(0)),
                     "per_head": [heatmap_png.contrast(m) for m in maps]},
        "passages": [{"id": p["id"], "score": p["score"], "shares": p["shares"],
                      "head_weights": [round(w, 4) for w in p["head_weights"]],
                      "heatmap": heatmap_png.data_url(heatmap_png.overlay(view, p["map"])),
                      "contrast": heatmap_png.contrast(p["map"])}
                     for p in explained["passages"]],
        "attention": np.round(maps, 5).tolist(),
        "stage_ms": {"model": _ms(t1 - t0), "render": _ms(time.perf_counter() - t1)},
    }
