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


class Refused(Exception):
    """A request answered with ``status`` and the JSON ``body`` instead of being served (its body
    too large, its API key missing or wrong)."""

    def __init__(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or []

    async def send(self, send) -> None:
        await send_json(send, self.status, self.body, self.headers)


def error_body(message: str, field: str | None = None) -> bytes:
    return json.dumps({"error": message, **({"field": field} if field else {})}).encode()


async def send_json(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] = ()) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


async def read_body(scope, receive, limit: int) -> bytes | None:
    """The whole request body; None if the client went away. Refused (413) for a body over
    ``limit`` bytes, by its Content-Length at once, else as soon as it grows past it."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise _too_large(limit)
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body"):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(limit: int) -> Refused:
    return Refused(413, error_body(f"body: larger than {limit} bytes (--max-body-bytes)", "body"))


class BodyLimit:
    """413 for a body over ``limit`` bytes: by its Content-Length at once, else while it streams in."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        try:
            body = await read_body(scope, receive, self.limit)  # a body past the limit never reaches the app
        except Refused as refused:
            return await refused.send(send)
        if body is None:
            return
        delivered = False

        async def replay() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class ApiKey:
    """401 unless the request carries the key (``Authorization: Bearer KEY`` or ``X-API-Key: KEY``);
    compared with ``hmac.compare_digest``, in constant time. OPEN_PATHS need none."""

    def __init__(self, app, key: str):
        self.app, self.key = app, key.encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or scope["method"] == "OPTIONS":
            return await self.app(scope, receive, send)
        try:
            check_key(self.key, scope)
        except Refused as refused:
            return await refused.send(send)
        await self.app(scope, receive, send)


def check_key(key: bytes, scope) -> None:
    """Refused (401) unless the request carries ``key``."""
    given = authorization = b""
    for name, value in scope["headers"]:
        if name == b"x-api-key":
            given = value
        elif name == b"authorization":
            authorization = value
    if authorization[:7].lower() == b"bearer ":
        given = authorization[7:].strip()
    if hmac.compare_digest(given, key):
        return
    reason = "missing API key" if not given else "wrong API key"
    raise Refused(401, error_body(f"{reason}: send Authorization: Bearer KEY or X-API-Key: KEY", "authorization"),
                  [(b"www-authenticate", b"Bearer")])
