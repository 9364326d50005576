"""`aitk serve`: online inference for bundles over HTTP (FastAPI served by uvicorn).

Every model gets ``POST /v1/{name}/predict`` with dynamic batching; use cases add their own
endpoints through ``UseCase.serve_routes``. See toolkit/serve/app.py for the endpoints."""

from __future__ import annotations

import dataclasses
from typing import Any

from applied_aitk.serve.limits import Limits

__all__ = ["Limits", "build_app", "run"]


def build_app(specs: list[str], runtime: Any, limits: Limits | None = None, api_key: str | None = None,
              batch_size: int | None = None, usecases: dict | None = None):
    """The ASGI app serving the bundles ``specs`` (``BUNDLE`` or ``NAME=BUNDLE``); models load now."""
    from applied_aitk.plugins import get_usecases
    from applied_aitk.serve.app import create_app
    from applied_aitk.serve.metrics import Metrics
    from applied_aitk.serve.models import load_models

    limits = limits or Limits()
    metrics = Metrics()
    # ORT's idle threads sleep rather than spin: the event loop shares the cores with them
    runtime = dataclasses.replace(runtime, spinning=False)
    models = load_models(specs, usecases if usecases is not None else get_usecases(), runtime, limits, metrics, batch_size)
    return create_app(models, limits, metrics, api_key)


def run(app: Any, host: str, port: int, limits: Limits, access_log: bool = False) -> None:
    """Serve ``app`` until SIGINT or SIGTERM; then stop accepting, let requests in flight finish
    (up to the request timeout), and return."""
    import signal

    import uvicorn

    from applied_aitk import console

    # uvicorn drains on SIGTERM, then raises the signal again for the handler that was there
    # before it: make that one a no-op, so that a drained server exits 0 rather than by the signal.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        uvicorn.run(app, host=host, port=port, access_log=access_log, log_level="warning" if console.quiet else "info",
                    timeout_graceful_shutdown=max(1, int(limits.timeout_s) + 1))
    finally:
        signal.signal(signal.SIGTERM, previous)
