"""A small client of the search API (standard library only), for scripts, the tests and the benchmark.

    client = Client("http://127.0.0.1:8024")
    answer = client.search(image=open("x.png", "rb").read(), question="Who designed this building?", k=5)

One Client keeps one HTTP/1.1 connection open (reopened once if the server closed it); use one per thread.
Request bodies can be encoded once with `multipart` and sent many times with `post`.
"""
from __future__ import annotations

import http.client
import json
import urllib.parse
import uuid


class ApiError(Exception):
    """The server answered with an error status; `status` and `reason` (the server's one line)."""

    def __init__(self, status: int, reason: str):
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


def multipart(fields: dict) -> tuple[bytes, str]:
    """Form fields -> (body, content type). A value is text (str or a number) or a file: (filename, bytes,
    content type); None values are left out."""
    boundary = "mire" + uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        if value is None:
            continue
        if isinstance(value, tuple):
            filename, data, content_type = value
            head = (f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                    f"Content-Type: {content_type}\r\n\r\n")
        else:
            data = str(value).encode()
            head = f'Content-Disposition: form-data; name="{name}"\r\n\r\n'
        parts.append(f"--{boundary}\r\n".encode() + head.encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def query_fields(image: bytes | None = None, question: str | None = None, k: int | None = None,
                 image_name: str = "image.png", image_type: str = "image/png") -> dict:
    """The /search form fields."""
    return {"image": None if image is None else (image_name, image, image_type), "question": question, "k": k}


class Client:
    def __init__(self, base_url: str, timeout: float = 60.0):
        url = urllib.parse.urlsplit(base_url)
        self.host, self.port = url.hostname, url.port or 80
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str | None = None) -> tuple[int, dict, bytes]:
        """-> (status, headers, body). Retries once on a connection the server had closed."""
        headers = {"Content-Type": content_type} if content_type else {}
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self._conn.request(method, path, body=body, headers=headers)
                response = self._conn.getresponse()
                data = response.read()
            except (ConnectionError, http.client.RemoteDisconnected, http.client.CannotSendRequest):
                self.close()
                if attempt:
                    raise
                continue
            if response.getheader("Connection", "").lower() == "close":
                self.close()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data
        raise AssertionError("unreachable")

    def post(self, path: str, body: bytes, content_type: str) -> dict:
        """POST a prepared body; the JSON answer, or ApiError."""
        return self._json(*self.request("POST", path, body, content_type))

    def get(self, path: str) -> dict:
        return self._json(*self.request("GET", path))

    def search(self, image: bytes | None = None, question: str | None = None, k: int | None = None) -> dict:
        return self.post("/search", *multipart(query_fields(image, question, k)))

    def explain(self, image: bytes, question: str | None = None, passage_ids=()) -> dict:
        body, content_type = multipart({**query_fields(image, question),
                                        "passage_ids": ",".join(map(str, passage_ids)) or None})
        return self.post("/explain", body, content_type)

    def passage(self, passage_id) -> dict:
        return self.get("/passages/" + urllib.parse.quote(str(passage_id), safe=""))

    def passage_image(self, passage_id) -> tuple[bytes, str]:
        """(the image file's bytes, its content type) of a passage that carries one; ApiError otherwise."""
        status, headers, data = self.request("GET", "/passage-image/" + urllib.parse.quote(str(passage_id), safe=""))
        if status >= 400:
            self._json(status, headers, data)
        return data, headers.get("content-type", "")

    def health(self) -> dict:
        return self.get("/healthz")

    @staticmethod
    def _json(status: int, headers: dict, data: bytes) -> dict:
        try:
            payload = json.loads(data) if data else {}
        except ValueError:
            payload = {"error": data[:200].decode(errors="replace")}
        if status >= 400:
            raise ApiError(status, payload.get("error", "") if isinstance(payload, dict) else str(payload))
        return payload
