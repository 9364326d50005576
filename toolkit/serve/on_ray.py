"""`aitk serve --engine ray`: the same app (routes, rows, errors, limits, API key) on Ray Serve.

Ray Serve's HTTP proxy listens on ``host:port`` and hands each request to one of ``replicas``
copies of the app; each replica loads the bundles and batches its own requests dynamically, as
the local engine does. With GPUs in the cluster (and ``--device`` not cpu) there is one replica
per GPU by default, each holding one; on CPUs ``--replicas N`` (default 1) share the cores.
``GET /metrics`` answers for the replica that took the request. Without ``address`` a local Ray
instance starts (and stops at the end); SIGTERM or SIGINT drains the replicas and stops."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
from typing import Any

from applied_aitk.console import get_logger
from applied_aitk.errors import AitkError
from applied_aitk.runtime import Runtime
from applied_aitk.serve.limits import Limits

logger = get_logger(__name__)

APP_NAME = "aitk"


class Ingress:
    """One replica: builds the app of the bundles on its worker (``__serve_build_asgi_app__``)."""

    def __init__(self, specs: list[str], runtime: Runtime, limits: Limits, api_key: str | None, batch_size: int | None):
        self.settings = (specs, runtime, limits, api_key, batch_size)

    def __serve_build_asgi_app__(self):
        from applied_aitk.serve import build_app

        return build_app(*self.settings)


def serve_on_ray(specs: list[str], runtime: Runtime, limits: Limits, api_key: str | None, batch_size: int | None,
                 host: str, port: int, replicas: int | None = None, address: str | None = None) -> None:
    """Serve ``specs`` on Ray Serve at ``http://host:port`` until SIGTERM or SIGINT.

    Raises AitkError when Ray Serve is not installed, a bundle cannot be served, or the replicas
    fail to start (with the failure's last line)."""
    from applied_aitk.plugins import get_usecases
    from applied_aitk.serve.models import resolve_specs

    from applied_aitk.ray_engine import last_line

    ray, serve = import_ray_serve()
    models = resolve_specs(specs, get_usecases())  # a bad bundle fails here, in one line, before Ray starts
    stateful = [name for name, usecase, _ in models if usecase.serve_state]
    if stateful and (replicas or 1) > 1:
        raise AitkError(f"--replicas {replicas}: {', '.join(stateful)} keeps state between requests (conversations) in the replica "
                        "that answered; serve it with --replicas 1")
    started_here = not ray.is_initialized()
    if started_here:
        env = {k: v for k, v in os.environ.items() if k.startswith("AITK_")}
        ray.init(address=address, runtime_env={"env_vars": env}, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    stop, previous = threading.Event(), {}
    try:
        # after ray.init, whose handlers would abort the process: a signal while the replicas start stops them cleanly too
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        options, runtime = _placement(ray, runtime, replicas, len(stateful) > 0)
        serve.start(http_options={"host": host, "port": port}, logging_config={"log_level": "WARNING"})
        deployment = serve.deployment(serve.ingress()(Ingress), name="aitk", **options,
                                      graceful_shutdown_timeout_s=limits.timeout_s + 1, max_ongoing_requests=limits.max_queue)
        serve.run(deployment.bind(specs, runtime, limits, api_key, batch_size), name=APP_NAME, route_prefix="/", blocking=False)
        logger.info(f"serving {', '.join(specs)} on Ray Serve, {options['num_replicas']} replica(s), at http://{host}:{port} (docs: /docs)")
        while not stop.wait(0.5):
            pass
        # the replicas finish the requests they hold; bounded, in case a signal to the whole process
        # group took Ray down too. A cluster given by --address keeps running, with Serve.
        _bounded(lambda: serve.delete(APP_NAME), limits.timeout_s + 10)
    except (ray.exceptions.RayError, RuntimeError) as e:  # replicas that fail to start: the reason, not Ray's traceback
        raise AitkError(f"Ray Serve: {last_line(e)}") from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if started_here:
            ray.shutdown()


def import_ray_serve():
    """``(ray, ray.serve)``; AitkError naming the extra to install when Ray Serve is missing."""
    try:
        import ray
        from ray import serve
    except ImportError:
        raise AitkError("--engine ray needs Ray Serve: pip install 'applied-aitk[ray]'") from None
    for name in ("ray", "ray.serve"):  # Ray's INFO lines on the terminal: only our own line says where we serve
        logging.getLogger(name).setLevel(logging.WARNING)
    return ray, serve


def _placement(ray, runtime: Runtime, replicas: int | None, stateful: bool) -> tuple[dict[str, Any], Runtime]:
    """Replica count and resources: one GPU each where the cluster has GPUs, else a share of the CPUs."""
    resources = ray.cluster_resources()
    cpus = max(1, int(resources.get("CPU", 1)))
    gpus = int(resources.get("GPU", 0)) if runtime.device != "cpu" else 0
    count = replicas or (1 if stateful else gpus) or 1
    actor: dict[str, Any] = {"num_cpus": min(1.0, cpus / count)}
    if gpus:
        actor["num_gpus"] = min(1.0, gpus / count)
    if runtime.threads is None:  # ORT's threads: the replicas share the cores instead of each taking them all
        runtime = dataclasses.replace(runtime, threads=max(1, cpus // count))
    return {"num_replicas": count, "ray_actor_options": actor}, runtime


def _bounded(function, seconds: float) -> None:
    """``function()``, given up on after ``seconds``."""
    worker = threading.Thread(target=function, daemon=True)
    worker.start()
    worker.join(seconds)
