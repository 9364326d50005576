"""``POST /v1/{model}/predict``: records from JSON or uploaded files, decoded and batched into the
model's rows, and the direct ASGI path that answers JSON requests.

A one-record request costs the server more in framework work than in the model (fraud, py-spy
under load: FastAPI's and our middleware, Starlette's request and response objects, the standard
library's JSON, a future per record gathered), so ``PredictPath`` answers ``POST /v1/{model}/predict``
with a JSON body before FastAPI's middleware and routing (``ServeApp``), with the same rows,
errors, API key and body limit, JSON in and out through orjson; every other request (uploads,
unknown models, the docs) goes through the FastAPI app."""

from __future__ import annotations

import json
from typing import Any

import orjson
from starlette.requests import Request

from applied_aitk.errors import AitkError
from applied_aitk.serve.batcher import run_in_thread
from applied_aitk.serve.http import HTTPError, crash_content, guarded, json_body
from applied_aitk.serve.limits import Limits, key_checked, limited_body, send_json
from applied_aitk.serve.metrics import Metrics
from applied_aitk.serve.models import ServedModel
from applied_aitk.usecase import Predictor, Record


async def predict_rows(served: ServedModel, records: list[Record]) -> list[dict[str, Any]]:
    """The rows batch `predict` writes for ``records``, through the model's dynamic batcher."""
    with served.batcher.reserve(len(records)) as ticket:
        if served.predictor.threaded_decode:
            decoded = await run_in_thread(served.decode, records)
        else:  # decoding is trivial (table rows): a thread's hand-offs would cost more than it
            decoded = served.decode(records)
        return await served.batcher.submit(ticket, list(zip(records, decoded)))


def json_records(predictor: Predictor, body: bytes, limits: Limits) -> list[Record]:
    """The records of a JSON body ``{"records": [...]}``; a value that cannot be a record is an
    error record. HTTPError (4xx naming the field) for a body of another shape."""
    parsed = json_body(body)
    if not isinstance(parsed, dict):
        raise HTTPError(422, 'body: expected a JSON object like {"records": [...]}', "body")
    if "records" not in parsed:
        raise HTTPError(422, 'records: missing; send {"records": [...]}', "records")
    values = parsed["records"]
    if not isinstance(values, list):
        raise HTTPError(422, "records: expected a list", "records")
    check_count(len(values), limits, "records")
    records = []
    for i, value in enumerate(values):
        try:
            records.append(predictor.from_json(value, str(i)))
        except AitkError as e:
            records.append(Record(str(i), error=f"records[{i}]: {e}"))
    return records


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
        if self.key is not None and not await key_checked(self.key, scope, send):
            return
        body = await limited_body(scope, receive, send, self.limits.max_body_bytes)
        if body is None:
            return
        headers: dict[str, str] = {}
        try:
            rows = await guarded(self.metrics, self.limits, served.name, "predict", _rows(served, body, self.limits))
            self.metrics.rows(served.name, rows)
            status, content = 200, {"model": served.name, "rows": rows}
        except HTTPError as e:
            status, content, headers = e.status, e.content(), e.headers
        except Exception as e:  # as the app's handler: one line in the log, no traceback in the answer
            status, content = 500, crash_content(scope["method"], scope["path"], e)
        await send_json(send, status, _dumps(content), [(k.lower().encode(), v.encode()) for k, v in headers.items()])


async def _rows(served: ServedModel, body: bytes, limits: Limits) -> list[dict[str, Any]]:
    return await predict_rows(served, json_records(served.predictor, body, limits))


def _dumps(content: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(content)
    except orjson.JSONEncodeError:  # what orjson cannot encode and the standard library can (integers beyond 64 bits)
        return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
