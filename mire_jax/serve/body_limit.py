"""An ASGI middleware that refuses request bodies over a size, before they are buffered or spooled to disk.

Starlette's multipart parser limits the size of text fields but not of files; without this an upload of any size
would be written to a temporary file before the handler could look at it.
"""
from __future__ import annotations

from starlette.exceptions import HTTPException


class BodyTooLarge(HTTPException):
    def __init__(self, reason: str):
        super().__init__(413, reason)


class BodySizeLimit:
    """Counts the body bytes as they arrive (a Content-Length over the limit fails at once) and raises
    BodyTooLarge, a 413, from the handler's read once there are more than `max_bytes`."""

    def __init__(self, app, max_bytes: int, reason: str = ""):
        self.app = app
        self.max_bytes = max_bytes
        self.reason = reason or f"the request body is over {max_bytes} bytes"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_big_from_start = declared is not None and declared.isdigit() and int(declared) > self.max_bytes
        received = 0

        async def limited_receive():
            nonlocal received
            if too_big_from_start:
                raise BodyTooLarge(self.reason)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.reason)
            return message

        await self.app(scope, limited_receive, send)
