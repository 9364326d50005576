"""Prometheus metrics of one server, in its own registry (``GET /metrics``): requests, latency,
batch sizes, records and error rows, queue depth, all labelled by model."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

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
        self.queued = Gauge("aitk_queued_records", "Records a model holds (queued, decoding or running)", ["model"], registry=r)

    def request(self, model: str, endpoint: str, code: int, seconds: float) -> None:
        """Count one request answered with status ``code`` after ``seconds``."""
        self._child(self.latency, model, endpoint).observe(seconds)
        self._child(self.requests, model, endpoint, str(code)).inc()

    def batch(self, model: str, size: int) -> None:
        self._child(self.batches, model).observe(size)

    def rows(self, model: str, rows: list[dict]) -> None:
        self._child(self.records, model).inc(len(rows))
        bad = sum(1 for row in rows if row.get("error") is not None)
        if bad:
            self._child(self.errors, model).inc(bad)

    def _child(self, metric, *labels: str):
        """``metric.labels(*labels)``, looked up once (labels() validates and locks on every call)."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def text(self) -> bytes:
        return generate_latest(self.registry)
