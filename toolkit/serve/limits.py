"""The server's limits and its two guards, as plain ASGI middleware (no per-request overhead
beyond a header lookup): a body-size limit and an optional API key checked in constant time."""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import Any

OPEN_PATHS = ("/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/chat")
"""Paths that need no API key: probes, the API docs and the chat page (which asks for the key itself)."""


@dataclass
class Limits:
    """``max_body_bytes``: request body; ``max_records``: records per request; ``max_queue``: records
    one model holds at once (more: 503 with Retry-After); ``timeout_s``: per request (504 after);
    ``max_wait_ms``: how long a batch waits for more requests while others are arriving;
    ``session_ttl_s``: idle time after which server-side state (a conversation) is dropped."""

    max_body_bytes: int = 16 * 1024 * 1024
    max_records: int = 1024
    max_queue: int = 4096
    timeout_s: float = 30.0
    max_wait_ms: float = 2.0
    session_ttl_s: float = 1800.0
    retry_after_s: int = 1


def error_body(message: str, field: str | None = None) -> bytes:
    return json.dumps({"error": message, **({"field": field} if field else {})}).encode()


async def send_json(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] = ()) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """413 for a body over ``limit`` bytes: by its Content-Length at once, else while it streams in."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await send_json(send, 413, self._message())
        chunks, size = [], 0
        while True:  # read the body here, so a body that grows past the limit never reaches the app
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return await send_json(send, 413, self._message())
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body, delivered = b"".join(chunks), False

        async def replay() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _message(self) -> bytes:
        return error_body(f"request body larger than {self.limit} bytes (--max-body-bytes)", "body")


class ApiKey:
    """401 unless the request carries the key (``Authorization: Bearer KEY`` or ``X-API-Key: KEY``);
    compared with ``hmac.compare_digest``, in constant time. OPEN_PATHS need none."""

    def __init__(self, app, key: str):
        self.app, self.key = app, key.encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or scope["method"] == "OPTIONS":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        given = headers.get(b"x-api-key", b"")
        authorization = headers.get(b"authorization", b"")
        if authorization[:7].lower() == b"bearer ":
            given = authorization[7:].strip()
        if not hmac.compare_digest(given, self.key):
            reason = "missing API key" if not given else "wrong API key"
            return await send_json(send, 401, error_body(f"{reason}: send Authorization: Bearer KEY or X-API-Key: KEY", "authorization"),
                                   [(b"www-authenticate", b"Bearer")])
        await self.app(scope, receive, send)
