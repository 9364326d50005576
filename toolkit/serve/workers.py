"""`aitk serve --workers N`: N server processes answering on one listening socket, each loading the
bundles and batching its own requests, so that more than one event loop (and core) takes requests.

The processes are uvicorn's own (its multiprocess supervisor: it binds the socket, starts the
workers with an app factory, restarts one that dies, and on SIGTERM or SIGINT has each drain its
requests in flight before it exits). What the workers share lives in a temp folder made for the
server and removed when it stops:

    settings.json   what to serve (bundles, runtime, limits, API key), readable by this user only
    metrics/        PROMETHEUS_MULTIPROC_DIR: every worker's metrics, added up by ``GET /metrics``
    sessions.db     server-side sessions (chatbot conversations), SQLite in WAL mode
    ready/PID       one file per worker serving: ``GET /readyz`` is 200 once all N are (clients
                    that connect earlier would keep their connections to the first workers up)
    failed          the one line of a worker that could not start, for the supervisor to report"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from applied_aitk import console
from applied_aitk.errors import AitkError
from applied_aitk.runtime import Runtime
from applied_aitk.serve.limits import Limits
from applied_aitk.serve.metrics import SHARED_DIR

FOLDER = "AITK_SERVE_FOLDER"
"""The environment variable that names the shared folder in the worker processes."""
FACTORY = "applied_aitk.serve.workers:worker_app"


def serve_workers(specs: list[str], runtime: Runtime, limits: Limits, api_key: str | None, batch_size: int | None,
                  host: str, port: int, workers: int, access_log: bool = False) -> None:
    """Serve ``specs`` from ``workers`` processes on ``host:port`` until SIGTERM or SIGINT.

    Each worker's ONNX Runtime gets ``cores / workers`` threads unless ``runtime.threads`` says.
    Raises AitkError for a bundle that cannot be served (before any worker starts), or with a
    worker's one-line reason when one fails to start."""
    from applied_aitk.plugins import get_usecases
    from applied_aitk.serve import announce, run
    from applied_aitk.serve.models import resolve_specs

    models = resolve_specs(specs, get_usecases())  # a bad bundle fails here, in one line, before the workers start
    if runtime.threads is None:
        runtime = dataclasses.replace(runtime, threads=max(1, (os.cpu_count() or 1) // workers))
    with tempfile.TemporaryDirectory(prefix="aitk-serve-") as name:  # mode 0700
        folder = Path(name)
        (folder / "metrics").mkdir()
        (folder / "ready").mkdir()
        settings = {"workers": workers, "specs": specs, "runtime": dataclasses.asdict(runtime), "limits": dataclasses.asdict(limits),
                    "api_key": api_key, "batch_size": batch_size, "quiet": console.quiet}
        descriptor = os.open(folder / "settings.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as f:
            json.dump(settings, f)
        saved = {key: os.environ.get(key) for key in (FOLDER, SHARED_DIR)}
        os.environ.update({FOLDER: name, SHARED_DIR: str(folder / "metrics")})  # the workers inherit them
        announce([(name, bundle.path) for name, _, bundle in models], host, port, api_key, workers)
        try:
            run(FACTORY, host, port, limits, access_log, workers)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        if (folder / "failed").exists():
            raise AitkError(f"a worker could not start: {(folder / 'failed').read_text().strip()}")


def worker_app() -> Any:
    """The app of one worker process (uvicorn calls this factory in each): the bundles loaded, the
    metrics and sessions in the shared folder. A worker that cannot start writes its reason to
    ``failed`` and exits 3, which stops the supervisor rather than restarting it again and again."""
    from uvicorn.config import STARTUP_FAILURE

    from applied_aitk.serve import build_app

    folder = Path(os.environ[FOLDER])
    settings = json.loads((folder / "settings.json").read_text())
    console.setup(silent=settings["quiet"])
    try:
        return build_app(settings["specs"], Runtime(**settings["runtime"]), Limits(**settings["limits"]), settings["api_key"],
                         settings["batch_size"], state_dir=folder, peers=Peers(folder / "ready", settings["workers"]))
    except Exception as e:  # one line, as the CLI reports errors, not a traceback per worker
        reason = str(e) if isinstance(e, AitkError) else f"{type(e).__name__}: {e}"
        console.get_logger(__name__).error(reason)
        (folder / "failed").write_text(reason + "\n")
        sys.exit(STARTUP_FAILURE)


class Peers:
    """The worker processes serving, as files ``folder/PID`` (a file of a killed worker, whose
    process is gone, does not count)."""

    def __init__(self, folder: Path, workers: int):
        self.folder, self.workers, self.mark = folder, workers, folder / str(os.getpid())

    def up(self) -> None:
        self.mark.touch()

    def down(self) -> None:
        self.mark.unlink(missing_ok=True)

    def ready(self) -> bool:
        """All ``workers`` processes serve."""
        return sum(1 for file in self.folder.iterdir() if process_alive(int(file.name))) >= self.workers


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        pass
    return True
