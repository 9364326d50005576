"""The models `aitk serve` holds: each a loaded bundle, its Predictor and its batcher."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from applied_aitk.batch import _decode_all, _predict_decoded
from applied_aitk.outputs import finite_rows
from applied_aitk.bundle import Bundle, load_bundle
from applied_aitk.errors import AitkError
from applied_aitk.runtime import Runtime
from applied_aitk.serve.batcher import Batcher
from applied_aitk.serve.limits import Limits
from applied_aitk.serve.metrics import Metrics
from applied_aitk.serve.sessions import SessionStore
from applied_aitk.usecase import Predictor, Record, UseCase


@dataclass
class ServedModel:
    """One bundle being served under ``name`` (its use case's name unless given as NAME=BUNDLE).

    ``batcher`` runs ``(record, decoded)`` pairs through the predictor in dynamic batches and
    returns exactly the rows batch `predict` writes, error rows included. Use cases that add
    their own endpoints make their own batchers with ``new_batcher``, and keep state between
    requests in ``sessions``. ``state_dir``: the folder the server's worker processes share
    (``--workers N``), None for a server of one process."""

    name: str
    usecase: UseCase
    bundle: Bundle
    predictor: Predictor
    limits: Limits
    metrics: Metrics
    batch_size: int
    state_dir: Path | None = None
    batchers: list[Batcher] = field(default_factory=list)

    def __post_init__(self) -> None:
        # records that need no decoding (table rows) are made from the JSON values a batch at a time,
        # in the model's thread; others per request, and decoded (in a thread pool where it is work)
        predictor = self.predictor
        self.json_batches = not predictor.threaded_decode and type(predictor).from_upload is Predictor.from_upload
        self.batcher = self.new_batcher("predict", self._predict_json if self.json_batches else self._predict_pairs)

    def new_batcher(self, purpose: str, run, max_batch: int | None = None) -> Batcher:
        """A batcher for this model's ``run(items) -> results``, started and stopped with the server."""
        batcher = Batcher(f"{self.name}-{purpose}", run, max_batch or self.batch_size, self.limits.max_wait_ms / 1000,
                          self.limits.max_queue, on_batch=lambda size: self.metrics.batch(self.name, size), on_held=self._held)
        self.batchers.append(batcher)
        self._held()  # the model's queued records show (as 0) before its first request
        return batcher

    def _held(self) -> None:
        self.metrics.held(self.name, sum(b.held for b in self.batchers))

    def sessions(self, kind: str, limit: int) -> SessionStore:
        """A store of this model's server-side sessions (``kind``: what one is, e.g. conversation),
        expiring after ``--session-ttl``, shared by the worker processes; at most ``limit`` open."""
        path = None if self.state_dir is None else self.state_dir / "sessions.db"
        return SessionStore(path, self.name, kind, self.limits.session_ttl_s, limit)

    def decode(self, records: list[Record]) -> list[tuple[Any, str | None]]:
        """Each record decoded as batch `predict` decodes it: ``(input, None)`` or ``(None, error)``."""
        return _decode_all(self.predictor, records)

    def _predict_json(self, values: list[tuple[int, Any]]) -> list[dict[str, Any]]:
        records = json_records(self.predictor, values)
        return self._predict_pairs(list(zip(records, self.decode(records))))

    def _predict_pairs(self, pairs: list[tuple[Record, tuple[Any, str | None]]]) -> list[dict[str, Any]]:
        rows = _predict_decoded(self.predictor, [r for r, _ in pairs], [d for _, d in pairs])
        rows = finite_rows(rows)  # as the batch writer: a NaN or an infinity makes an error row
        self.metrics.rows(self.name, rows)  # once per batch, not per request
        return rows

    def info(self) -> dict[str, Any]:
        manifest = self.bundle.manifest
        return {
            "name": self.name,
            "usecase": self.usecase.name,
            "bundle": str(self.bundle.path),
            "plugin": manifest["plugin"],
            "format_version": manifest["format_version"],
            "created": manifest["created"],
            "metrics": manifest["metrics"],
            "provider": getattr(self.predictor, "provider", None),
            "batch_size": self.batch_size,
        }


def json_records(predictor: Predictor, values: list[tuple[int, Any]]) -> list[Record]:
    """The records of JSON values, each with its position in its request (the record's id), made by
    ``from_json_batch``; one that cannot be a record is an error record naming it (``records[3]: ...``)."""
    ids = [str(i) for i, _ in values]
    try:
        records = predictor.from_json_batch([value for _, value in values], ids)
    except Exception:  # a value failed in a way of its own: one by one, so that it fails alone
        records = [_json_record(predictor, value, id) for (_, value), id in zip(values, ids)]
    return [record if record.error is None else Record(record.id, error=f"records[{record.id}]: {record.error}") for record in records]


def _json_record(predictor: Predictor, value: Any, id: str) -> Record:
    try:
        return predictor.from_json(value, id)
    except AitkError as e:
        return Record(id, error=str(e))
    except Exception as e:  # as batch `predict` words a record that fails in a library's own way
        return Record(id, error=f"{type(e).__name__}: {e}")


def load_models(specs: list[str], usecases: dict[str, UseCase], runtime: Runtime, limits: Limits, metrics: Metrics,
                batch_size: int | None = None, state_dir: Path | None = None) -> dict[str, ServedModel]:
    """Load each ``BUNDLE`` or ``NAME=BUNDLE``; the name defaults to the bundle's use case."""
    models: dict[str, ServedModel] = {}
    for name, usecase, bundle in resolve_specs(specs, usecases):
        predictor = usecase.load(bundle, runtime)
        models[name] = ServedModel(name, usecase, bundle, predictor, limits, metrics, batch_size or usecase.batch_size, state_dir)
    return models


def resolve_specs(specs: list[str], usecases: dict[str, UseCase]) -> list[tuple[str, UseCase, Bundle]]:
    """``(name, use case, bundle)`` of each ``BUNDLE`` or ``NAME=BUNDLE``, models not loaded yet.

    Raises AitkError for a bundle that cannot be read, a use case no plugin provides, a name twice."""
    resolved: list[tuple[str, UseCase, Bundle]] = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = "", spec
        bundle = load_bundle(Path(path))
        kind = bundle.manifest["usecase"]
        if kind not in usecases:
            raise AitkError(f"{path}: a {kind!r} bundle, and no installed plugin provides {kind!r} (see `aitk plugins`)")
        name = name or kind
        if name in [n for n, _, _ in resolved]:
            raise AitkError(f"{path}: a second model named {name!r}; name them NAME=BUNDLE")
        resolved.append((name, usecases[kind], bundle))
    return resolved
