"""Errors as JSON for every endpoint, the core's and the plugins': 4xx naming the field, 503 with
Retry-After when a model's queue is full, 504 after the request timeout, and never a traceback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from applied_aitk.console import get_logger
from applied_aitk.errors import unicode_problem
from applied_aitk.serve.batcher import QueueFull
from applied_aitk.serve.limits import Limits
from applied_aitk.serve.metrics import Metrics

logger = get_logger(__name__)

T = TypeVar("T")


class HTTPError(Exception):
    """An error answered as ``{"error": message, "field": field}`` with ``status``."""

    def __init__(self, status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.field, self.headers = status, message, field, headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse(self.content(), status_code=self.status, headers=self.headers)

    def content(self) -> dict[str, str]:
        return {"error": self.message, **({"field": self.field} if self.field else {})}


def field_name(location: tuple | list) -> str:
    """``("body", "records", 3, "text")`` -> ``records[3].text``."""
    name = ""
    for part in location:
        if part in ("body", "query", "path", "header") and not name:
            continue
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"


def json_body(body: bytes) -> Any:
    """A request body's JSON value, by orjson, or by the standard library for what orjson refuses
    and it takes (NaN, Infinity, a lone surrogate in a text); HTTPError 400 naming ``body`` if it is
    not JSON (or not UTF-8)."""
    import orjson

    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body)
    except json.JSONDecodeError as e:
        raise not_json(e.msg, e.pos) from None
    except ValueError as e:  # not UTF-8
        raise HTTPError(400, f"body: not valid JSON ({e})", "body") from None
    except RecursionError:  # arrays or objects nested thousands deep (orjson stops at 1024 levels)
        raise HTTPError(400, "body: not valid JSON (nested too deeply)", "body") from None


def unparsed(cause: BaseException) -> HTTPError:
    """The 400 of a body FastAPI failed to parse for ``cause``, worded as ``json_body`` words it."""
    problem = "nested too deeply" if isinstance(cause, RecursionError) else f"{type(cause).__name__}: {cause}"
    return HTTPError(400, f"body: not valid JSON ({problem})", "body")


def not_json(message: str, position: int) -> HTTPError:
    """The 400 of a body that is not JSON, worded as batch `predict` words a line that is not."""
    return HTTPError(400, f"body: not valid JSON ({message} at character {position})", "body")


def invalid(errors: list[dict[str, Any]]) -> HTTPError:
    """The error of a request pydantic refused (its first problem), the same for every endpoint:
    a body that is not JSON is 400 naming ``body`` (as ``POST /v1/{model}/predict`` answers it), a
    text with a lone surrogate 422 in batch `predict`'s words, anything else 422 naming the field."""
    first = errors[0] if errors else {}
    location = tuple(first.get("loc", ()))
    if first.get("type") == "json_invalid":
        position = location[-1] if location and isinstance(location[-1], int) else 0
        return not_json(str(first.get("ctx", {}).get("error", "JSON decode error")), position)
    first, location, message = _without_union_tags(first, location, errors)
    field = field_name(location)
    given = first.get("input")
    problem = unicode_problem(given) if first.get("type") == "string_unicode" and isinstance(given, str) else None
    return HTTPError(422, f"{field}: {problem or message}", field)


def _without_union_tags(first: dict[str, Any], location: tuple, errors: list[dict[str, Any]]) -> tuple[dict[str, Any], tuple, str]:
    """(the error, its location, its message) with the names pydantic gives the members of a union
    (``prompt: str | list[str]`` fails as ``("prompt", "str")`` and ``("prompt", "list[str]")``) taken
    out of the location: an error inside one member's value is that one (``prompt[0]: Input should be
    a valid string``), otherwise the members' messages are joined (``prompt: Input should be a valid
    string or a valid list``)."""
    message = str(first.get("msg", "invalid"))
    for k in range(len(location)):
        members = [e for e in errors if tuple(e.get("loc", ()))[:k] == location[:k] and len(e.get("loc", ())) > k]
        tags = {e["loc"][k] for e in members}
        if len(tags) < 2 or not all(_type_name(t) for t in tags) or any(e.get("type") == "missing" and len(e["loc"]) == k + 1 for e in members):
            continue  # fields of one object (a missing field is never a union member's own error)
        inside = [e for e in members if len(e["loc"]) > k + 1]
        if inside:
            return inside[0], location[:k] + tuple(inside[0]["loc"][k + 1 :]), str(inside[0].get("msg", "invalid"))
        said = [str(e.get("msg", "invalid")) for e in members]
        return first, location[:k], said[0] + "".join(f" or {m.removeprefix('Input should be ')}" for m in said[1:])
    return first, location, message


def _type_name(part: Any) -> bool:
    """Whether a location part reads as pydantic's name of a union member: a type (``str``,
    ``list[str]``, ``function-after[...]``) or a model's class name, never a field's snake_case name."""
    if not isinstance(part, str) or not part:
        return False
    return part in _BUILTIN_TYPES or "[" in part or "-" in part or part[0].isupper()


_BUILTIN_TYPES = frozenset({"str", "int", "float", "bool", "bytes", "list", "dict", "tuple", "set", "none", "any", "decimal", "date", "datetime"})


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPError)
    async def on_http_error(request: Request, error: HTTPError) -> JSONResponse:
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        return invalid(list(error.errors())).response()

    @app.exception_handler(StarletteHTTPException)
    async def on_starlette(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 400 and error.__cause__ is not None:  # FastAPI could not parse the body ("There was an error parsing the body")
            return unparsed(error.__cause__).response()
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code, headers=getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def on_crash(request: Request, error: Exception) -> JSONResponse:
        return crash_response(request.method, request.url.path, error)


def crash_response(method: str, path: str, error: Exception) -> JSONResponse:
    """A 500 for an unexpected failure: one line in the log, none of it in the answer."""
    return JSONResponse(crash_content(method, path, error), status_code=500)


def crash_content(method: str, path: str, error: Exception) -> dict[str, str]:
    logger.error(f"{method} {path}: {type(error).__name__}: {error}")
    return {"error": f"internal error ({type(error).__name__}); the server log has the details"}


async def guarded(metrics: Metrics, limits: Limits, model: str, endpoint: str, work: Awaitable[T]) -> T:
    """Await ``work`` within the request timeout, the request counted in the metrics under ``model``
    and ``endpoint`` (with the status it is answered with: ``Metrics.counted``); a full queue is a
    503 with Retry-After, a timeout a 504 (``limit_error``), any HTTPError keeps its status."""
    metrics.name(model, endpoint)
    try:
        return await _within(work, limits.timeout_s)
    except (QueueFull, asyncio.TimeoutError) as e:
        raise limit_error(e, limits) from None


def limit_error(error: QueueFull | asyncio.TimeoutError, limits: Limits) -> HTTPError:
    """The answer to a request refused for a full queue (503 with Retry-After) or out of time (504)."""
    if isinstance(error, QueueFull):
        return HTTPError(503, f"busy: {error}; retry later", None, {"Retry-After": str(limits.retry_after_s)})
    return HTTPError(504, f"timed out after {limits.timeout_s:g} s (--timeout)")


async def _within(work: Awaitable[T], seconds: float) -> T:
    """``await work``, TimeoutError after ``seconds``: in this task where Python has asyncio.timeout
    (3.11), not in a task of its own as wait_for runs it."""
    if not hasattr(asyncio, "timeout"):
        return await asyncio.wait_for(work, seconds)
    async with asyncio.timeout(seconds):
        return await work
