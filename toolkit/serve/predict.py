"""``POST /v1/{model}/predict``: records from JSON or uploaded files, decoded and batched into the
model's rows, and the direct ASGI path that answers JSON requests.

A one-record request costs the server more in framework work than in the model (fraud, py-spy
under load: FastAPI's and our middleware, Starlette's request and response objects, the standard
library's JSON, a future per record gathered, a timeout scope, metrics wrapped around ``send``),
so ``PredictPath`` answers ``POST /v1/{model}/predict`` with a JSON body before FastAPI's
middleware and routing (``ServeApp``), with the same rows, errors, API key, body limit and
metrics, JSON in and out through orjson, the time limit a timer on the request's future; every
other request (uploads, unknown models, the docs) goes through the FastAPI app."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import orjson
from starlette.requests import Request

from applied_aitk.errors import AitkError
from applied_aitk.serve.batcher import QueueFull, run_in_thread
from applied_aitk.serve.http import HTTPError, crash_content, json_body, limit_error
from applied_aitk.serve.limits import Limits, Refused, check_key, read_body, send_json
from applied_aitk.serve.metrics import Metrics
from applied_aitk.serve.models import ServedModel, json_records
from applied_aitk.usecase import Predictor, Record


async def predict_json(served: ServedModel, values: list[Any], deadline: float | None = None) -> list[dict[str, Any]]:
    """The rows batch `predict` writes for a request's JSON values (``json_values``): made into
    records a batch at a time in the model's thread (``ServedModel.json_batches``: table rows), or
    here and decoded by ``predict_rows``. QueueFull and TimeoutError as ``predict_rows``."""
    items = list(enumerate(values))
    if not served.json_batches:
        return await predict_rows(served, json_records(served.predictor, items), deadline)
    batcher = served.batcher
    ticket = batcher.reserve(len(items))
    try:
        return await batcher.submit(ticket, items, deadline)
    finally:
        batcher.release(ticket)


async def predict_rows(served: ServedModel, records: list[Record], deadline: float | None = None) -> list[dict[str, Any]]:
    """The rows batch `predict` writes for ``records``, through the model's dynamic batcher;
    QueueFull if the model holds too many records, TimeoutError at the loop time ``deadline``."""
    batcher = served.batcher
    ticket = batcher.reserve(len(records))
    try:
        if served.predictor.threaded_decode:
            decoding = run_in_thread(served.decode, records)
            decoded = await (decoding if deadline is None else asyncio.wait_for(decoding, deadline - asyncio.get_running_loop().time()))
        else:  # decoding is trivial (table rows): a thread's hand-offs would cost more than it
            decoded = served.decode(records)
        return await batcher.submit(ticket, list(zip(records, decoded)), deadline)
    finally:
        batcher.release(ticket)


def json_values(body: bytes, limits: Limits) -> list[Any]:
    """The record values of a JSON body ``{"records": [...]}``; HTTPError (4xx naming the field)
    for a body of another shape."""
    parsed = json_body(body)
    if not isinstance(parsed, dict):
        raise HTTPError(422, 'body: expected a JSON object like {"records": [...]}', "body")
    if "records" not in parsed:
        raise HTTPError(422, 'records: missing; send {"records": [...]}', "records")
    values = parsed["records"]
    if not isinstance(values, list):
        raise HTTPError(422, "records: expected a list", "records")
    check_count(len(values), limits, "records")
    return values


async def upload_records(predictor: Predictor, request: Request, limits: Limits) -> list[Record]:
    """One record per file of a multipart form; 415 for a model that takes JSON only."""
    if type(predictor).from_upload is Predictor.from_upload:
        raise HTTPError(415, 'this model takes JSON records ({"records": [...]}), not file uploads', "body")
    form = await request.form(max_files=limits.max_records + 1)
    files = [value for _, value in form.multi_items() if not isinstance(value, str)]
    if not files:
        raise HTTPError(422, "files: no file in the form", "files")
    check_count(len(files), limits, "files")
    records = []
    for i, upload in enumerate(files):
        name = upload.filename or str(i)
        try:
            records.append(predictor.from_upload(await upload.read(), name))
        except AitkError as e:
            records.append(Record(name, error=str(e)))
    return records


def check_count(count: int, limits: Limits, field: str) -> None:
    if count == 0:
        raise HTTPError(422, f"{field}: empty; send at least one", field)
    if count > limits.max_records:
        raise HTTPError(413, f"{field}: {count} in one request, at most {limits.max_records} (--max-records)", field)


class PredictPath:
    """``POST /v1/{model}/predict`` with a JSON body for a served model, answered straight from
    ASGI: the API key, the body limit, the records, the batcher, the rows as JSON."""

    def __init__(self, models: dict[str, ServedModel], limits: Limits, metrics: Metrics, api_key: str | None):
        self.models, self.limits, self.metrics = models, limits, metrics
        self.key = api_key.encode() if api_key else None

    def target(self, scope) -> ServedModel | None:
        """The model a request is for, if it is one for this path; None for any other request."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        if not (path.startswith("/v1/") and path.endswith("/predict")):
            return None
        served = self.models.get(path[len("/v1/"):-len("/predict")])
        for name, value in scope["headers"]:
            if name == b"content-type" and value.startswith(b"multipart/form-data"):
                return None
        return served

    async def answer(self, served: ServedModel, scope, receive, send) -> None:
        """Answer the request, counted in the metrics with its status (nothing if the client left first)."""
        started, limits = time.perf_counter(), self.limits
        headers: list[tuple[bytes, bytes]] = []
        try:
            if self.key is not None:
                check_key(self.key, scope)
            body = await read_body(scope, receive, limits.max_body_bytes)
            if body is None:
                return
            deadline = asyncio.get_running_loop().time() + limits.timeout_s
            rows = await predict_json(served, json_values(body, limits), deadline)
            status, content = 200, _dumps({"model": served.name, "rows": rows})
        except Refused as e:
            status, content, headers = e.status, e.body, e.headers
        except (HTTPError, QueueFull, asyncio.TimeoutError) as e:
            error = e if isinstance(e, HTTPError) else limit_error(e, limits)
            status, content = error.status, _dumps(error.content())
            headers = [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
        except Exception as e:  # as the app's handler: one line in the log, no traceback in the answer
            status, content = 500, _dumps(crash_content(scope["method"], scope["path"], e))
        try:
            await send_json(send, status, content, headers)
        finally:
            self.metrics.request(served.name, "predict", status, time.perf_counter() - started)


def _dumps(content: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(content)
    except orjson.JSONEncodeError:  # what orjson cannot encode and the standard library can (integers beyond 64 bits)
        return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
