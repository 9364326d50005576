"""The `aitk serve` application: generic endpoints for every model, plus the ones use cases add.

    POST /v1/{model}/predict   {"records": [...]} (or multipart files) -> {"model", "rows"}: the
                               rows batch `predict` writes for those records, error rows included
    GET  /v1/models            each model's use case, bundle, versions, metrics, provider
    GET  /healthz  /readyz     liveness; readiness (models loaded, batchers running)
    GET  /metrics              Prometheus text
    GET  /docs                 OpenAPI docs"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from applied_aitk import __version__
from applied_aitk.serve.http import HTTPError, guarded, install_error_handlers
from applied_aitk.serve.limits import ApiKey, BodyLimit, Limits
from applied_aitk.serve.metrics import Metrics
from applied_aitk.serve.models import ServedModel
from applied_aitk.serve.predict import PredictPath, json_values, predict_json, predict_rows, upload_records

PREDICT_ANSWER = {
    "type": "object", "required": ["model", "rows"],
    "properties": {"model": {"type": "string"}, "rows": {"type": "array", "items": {"type": "object"},
                   "description": "One row per record, in order: the rows batch `predict` writes, error rows ({\"id\", \"error\"}) included."}},
}

PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {
                "type": "object", "required": ["records"],
                "properties": {"records": {"type": "array", "items": {}, "description": "One JSON value per record, shaped as the use case's input (a table row as an object, a JSONL line's object, an image as {\"image\": BASE64})."}},
            }},
            "multipart/form-data": {"schema": {
                "type": "object",
                "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}, "description": "One record per file (images)."}},
            }},
        },
    }
}


class ServeApp(FastAPI):
    """The FastAPI app, with ``POST /v1/{model}/predict`` (JSON) answered by ``predict_path`` before
    FastAPI's middleware and routing, which cost a one-record request more than its model does.
    Every HTTP request is counted in the metrics, whatever answers it (that path counts its own)."""

    predict_path: PredictPath | None = None
    _endpoints: frozenset[str] | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or self.predict_path is None:
            return await super().__call__(scope, receive, send)
        served = self.predict_path.target(scope)
        if served is not None:  # counted by the path itself, which knows its status
            return await self.predict_path.answer(served, scope, receive, send)
        await self.state.metrics.counted(self.names(scope["path"]), lambda sending: FastAPI.__call__(self, scope, receive, sending), send)

    def names(self, path: str) -> list[str]:
        """[model, endpoint] of a request by its path: the served model after ``/v1/`` (else ""),
        and its last part that a route names (``/v1/chatbot/conversations/ID/messages``: messages;
        else "other"), so that unknown paths add no series."""
        if self._endpoints is None:
            parts = {part for route in self.routes for part in getattr(route, "path", "").split("/") if part and "{" not in part}
            self._endpoints = frozenset(parts - {"v1", *self.state.models})
        parts = path.split("/")
        model = parts[2] if len(parts) > 3 and parts[1] == "v1" and parts[2] in self.state.models else ""
        return [model, next((part for part in reversed(parts) if part in self._endpoints), "other")]


def create_app(models: dict[str, ServedModel], limits: Limits, metrics: Metrics, api_key: str | None = None, peers: Any = None) -> FastAPI:
    """``peers``: the other worker processes of the server (``workers.Peers``: ``up()``, ``down()``,
    ``ready()``), None for a server of one process."""
    state = {"ready": False}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batchers = [b for model in models.values() for b in model.batchers]
        for batcher in batchers:
            batcher.start()
        state["ready"] = True
        if peers is not None:
            peers.up()
        try:
            yield
        finally:
            state["ready"] = False
            if peers is not None:
                peers.down()
            for batcher in batchers:
                await batcher.stop()
            metrics.close()

    app = ServeApp(title="aitk serve", version=__version__, lifespan=lifespan,
                  description="Online inference for aitk bundles through ONNX Runtime, with dynamic batching.")
    app.state.models, app.state.metrics, app.state.limits = models, metrics, limits
    install_error_handlers(app)

    def model_named(name: str) -> ServedModel:
        if name not in models:
            raise HTTPError(404, f"model {name!r}: not served here (served: {', '.join(models)})", "model")
        return models[name]

    @app.get("/healthz", tags=["probes"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["probes"])
    async def readyz() -> JSONResponse:
        """Ready for traffic: every model loaded and its batcher running, in every worker process (503 otherwise)."""
        ready = state["ready"] and all(b.running for m in models.values() for b in m.batchers) and (peers is None or peers.ready())
        return JSONResponse({"status": "ready" if ready else "not ready"}, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["probes"])
    async def prometheus() -> Response:
        """Prometheus text: requests, latency, batch sizes, records, error rows, queued records, by model."""
        return Response(metrics.text(), media_type=metrics.content_type)

    @app.get("/v1/models", tags=["models"])
    async def list_models() -> dict[str, Any]:
        """Every model served: name, use case, bundle, versions, metrics, execution provider."""
        return {"models": [model.info() for model in models.values()]}

    @app.post("/v1/{model}/predict", tags=["models"], openapi_extra=PREDICT_BODY,
              responses={200: {"content": {"application/json": {"schema": PREDICT_ANSWER}}}})
    async def predict(model: str, request: Request) -> JSONResponse:
        """The rows batch `predict` writes for these records (``id`` is the record's position in
        the request unless the use case takes it from the record), error rows included."""
        served = model_named(model)
        rows = await guarded(metrics, limits, model, "predict", _predict(served, request, limits))
        return JSONResponse({"model": model, "rows": rows})  # plain values already: no jsonable_encoder pass

    async def _predict(served: ServedModel, request: Request, limits: Limits) -> list[dict[str, Any]]:
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            return await predict_rows(served, await upload_records(served.predictor, request, limits))
        return await predict_json(served, json_values(await request.body(), limits))

    for model in models.values():
        model.usecase.serve_routes(app, model)
    app.predict_path = PredictPath(models, limits, metrics, api_key)
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)
    if api_key:
        app.add_middleware(ApiKey, key=api_key)
    return app
