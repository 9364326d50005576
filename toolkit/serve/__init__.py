"""`aitk serve`: online inference for bundles over HTTP (FastAPI served by uvicorn).

Every model gets ``POST /v1/{name}/predict`` with dynamic batching; use cases add their own
endpoints through ``UseCase.serve_routes``. See toolkit/serve/app.py for the endpoints."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from applied_aitk.serve.limits import Limits

__all__ = ["Limits", "build_app", "run", "serve_here"]


def build_app(specs: list[str], runtime: Any, limits: Limits | None = None, api_key: str | None = None,
              batch_size: int | None = None, usecases: dict | None = None, state_dir: Path | None = None, peers: Any = None):
    """The ASGI app serving the bundles ``specs`` (``BUNDLE`` or ``NAME=BUNDLE``); models load now.
    ``state_dir``: the folder worker processes share (their sessions), ``peers`` the processes
    (toolkit/serve/workers.py); None for a server of one process."""
    from applied_aitk.plugins import get_usecases
    from applied_aitk.serve.app import create_app
    from applied_aitk.serve.metrics import Metrics
    from applied_aitk.serve.models import load_models

    limits = limits or Limits()
    metrics = Metrics()
    # ORT's idle threads sleep rather than spin: the event loop shares the cores with them
    runtime = dataclasses.replace(runtime, spinning=False)
    models = load_models(specs, usecases if usecases is not None else get_usecases(), runtime, limits, metrics, batch_size, state_dir)
    return create_app(models, limits, metrics, api_key, peers)


def serve_here(specs: list[str], runtime: Any, limits: Limits, api_key: str | None, batch_size: int | None,
               host: str, port: int, workers: int = 1, access_log: bool = False) -> None:
    """`aitk serve` on this machine: the bundles ``specs`` on ``host:port`` until SIGTERM or SIGINT,
    from one process, or from ``workers`` processes (toolkit/serve/workers.py)."""
    check_address(host, port)
    if workers > 1:
        from applied_aitk.serve.workers import serve_workers

        return serve_workers(specs, runtime, limits, api_key, batch_size, host, port, workers, access_log)
    app = build_app(specs, runtime, limits, api_key, batch_size)
    announce([(name, model.bundle.path) for name, model in app.state.models.items()], host, port, api_key)
    run(app, host, port, limits, access_log)


def check_address(host: str, port: int) -> None:
    """AitkError, in one line, when ``host:port`` cannot be listened on (a port in use, a host that
    is not this machine's), before any bundle loads: uvicorn logged `serving ... on` it, then its
    own ERROR line, and exited 3 (the exit code of a batch run with failed records)."""
    import socket

    from applied_aitk.errors import AitkError

    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise AitkError(f"--host {host}: {getattr(e, 'strerror', None) or e}") from None
    with socket.socket(family, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as e:
            raise AitkError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def announce(models: list[tuple[str, Any]], host: str, port: int, api_key: str | None, workers: int = 1) -> None:
    """The log line saying what is served where: ``models`` as (name, bundle path)."""
    from applied_aitk.console import get_logger

    served = ", ".join(f"/v1/{name}/predict ({path})" for name, path in models)
    processes = f", from {workers} worker processes" if workers > 1 else ""
    get_logger(__name__).info(f"serving {served} on http://{host}:{port} (docs: /docs){processes}{'; API key required' if api_key else ''}")


def run(app: Any, host: str, port: int, limits: Limits, access_log: bool = False, workers: int = 1) -> None:
    """Serve ``app`` until SIGINT or SIGTERM; then stop accepting, let requests in flight finish
    (up to the request timeout), and return. With ``workers`` > 1, ``app`` is the import string of
    an app factory, called in each of uvicorn's worker processes (toolkit/serve/workers.py)."""
    import signal

    import uvicorn

    from applied_aitk import console
    from applied_aitk.serve.protocol import OneWriteHTTP

    # uvicorn drains on SIGTERM and SIGINT (Ctrl-C), then raises the signal again for the handler
    # that was there before it: make that one a no-op, so that a drained server exits 0 rather than
    # by the signal (SIGINT: a KeyboardInterrupt somewhere in uvicorn's shutdown, `interrupted` and
    # exit 130 or not depending on where it landed), as uvicorn's supervisor of --workers does.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        uvicorn.run(app, host=host, port=port, access_log=access_log, log_level="warning" if console.quiet else "info",
                    timeout_graceful_shutdown=max(1, int(limits.timeout_s) + 1), workers=workers, factory=workers > 1,
                    http=OneWriteHTTP)  # a response's status line, headers and body in one write
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
