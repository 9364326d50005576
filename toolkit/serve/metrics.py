"""Prometheus metrics of one server, in its own registry (``GET /metrics``): requests, latency,
batch sizes, records and error rows, queue depth, all labelled by model.

With ``--workers N`` the worker processes write their values to files in PROMETHEUS_MULTIPROC_DIR
(prometheus_client's multiprocess mode, chosen when the variable is set as the process starts),
and whichever worker answers ``GET /metrics`` adds up every worker's: counts and histograms of
all of them (those of a worker that died included), queued records of the live ones."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client import multiprocess

SHARED_DIR = "PROMETHEUS_MULTIPROC_DIR"
_NAMES: ContextVar[list[str] | None] = ContextVar("aitk_request_names", default=None)
"""The (model, endpoint) labels of the request being answered (``Metrics.counted``)."""

LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        disable_created_metrics()  # the *_created series only double the output
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("aitk_requests", "HTTP requests answered, by model, endpoint and status code", ["model", "endpoint", "code"], registry=r)
        self.latency = Histogram("aitk_request_seconds", "Time to answer a request, seconds", ["model", "endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.batches = Histogram("aitk_batch_size", "Items per model call (dynamic batching)", ["model"], buckets=BATCH_BUCKETS, registry=r)
        self.records = Counter("aitk_records", "Records predicted", ["model"], registry=r)
        self.errors = Counter("aitk_record_errors", "Records answered with an error row", ["model"], registry=r)
        self._children: dict[tuple, object] = {}
        self.queued = Gauge("aitk_queued_records", "Records a model holds (queued, decoding or running)", ["model"], registry=r,
                            multiprocess_mode="livesum")
        self.shared = os.environ.get(SHARED_DIR)

    def request(self, model: str, endpoint: str, code: int, seconds: float) -> None:
        """Count one request answered with status ``code`` after ``seconds``."""
        self._child(self.latency, model, endpoint).observe(seconds)
        self._child(self.requests, model, endpoint, str(code)).inc()

    async def counted(self, names: list[str], answer: Callable[[Callable], Awaitable[None]], send) -> None:
        """``await answer(send)`` (an ASGI app answering one HTTP request), counted whatever its
        status (401 of the API key, 404, 413, 422, 503 included) by ``names``: [model, endpoint],
        which the handler may rename while it runs (``name``); not counted if nothing was answered."""
        started, status = time.perf_counter(), None

        async def sending(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        token = _NAMES.set(names)
        try:
            await answer(sending)
        finally:
            _NAMES.reset(token)
            if status is not None:
                self.request(names[0], names[1], status, time.perf_counter() - started)

    @staticmethod
    def name(model: str, endpoint: str) -> None:
        """Count the request being answered under ``model`` and ``endpoint`` (a handler that knows
        them better than the path does: a model named in the body)."""
        names = _NAMES.get()
        if names is not None:
            names[:] = [model, endpoint]

    def batch(self, model: str, size: int) -> None:
        self._child(self.batches, model).observe(size)

    def rows(self, model: str, rows: list[dict]) -> None:
        self._child(self.records, model).inc(len(rows))
        bad = sum(1 for row in rows if row.get("error") is not None)
        if bad:
            self._child(self.errors, model).inc(bad)

    def held(self, model: str, records: int) -> None:
        self._child(self.queued, model).set(records)

    def _child(self, metric, *labels: str):
        """``metric.labels(*labels)``, looked up once (labels() validates and locks on every call)."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def text(self) -> bytes:
        """The Prometheus text of this process, or of every worker process in multiprocess mode."""
        if not self.shared:
            return generate_latest(self.registry)
        _forget_killed(self.shared)
        everyone = CollectorRegistry()
        multiprocess.MultiProcessCollector(everyone, self.shared)
        return generate_latest(everyone)

    def close(self) -> None:
        """This process ends: in multiprocess mode its queued records stop counting."""
        if self.shared:
            multiprocess.mark_process_dead(os.getpid(), self.shared)


def _forget_killed(folder: str) -> None:
    """The queued records of a worker that ended without ``close`` (killed; uvicorn starts another)
    stop counting."""
    from applied_aitk.serve.workers import process_alive

    for file in Path(folder).glob("gauge_live*_*.db"):
        pid = int(file.stem.rsplit("_", 1)[1])
        if not process_alive(pid):
            multiprocess.mark_process_dead(pid, folder)
