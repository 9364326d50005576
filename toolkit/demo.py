"""`aitk demo`: every installed use case end to end on its own sample data."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from applied_aitk.console import get_logger
from applied_aitk.runtime import Runtime
from applied_aitk.usecase import UseCase

logger = get_logger(__name__)


def run_demo(usecases: dict[str, UseCase], out: Path, only: list[str], runtime: Runtime) -> list[dict[str, Any]]:
    """One summary row per use case; a use case that fails is reported and the others still run.
    Without the training dependencies (a slim install) the demo stops at once: ModuleNotFoundError."""
    from applied_aitk.errors import AitkError
    from applied_aitk.extras import install_hint

    unknown = sorted(set(only) - set(usecases))
    if unknown:
        raise AitkError(f"--only {unknown[0]}: no such use case; installed: {', '.join(usecases)}")
    rows = []
    for name, usecase in usecases.items():
        if only and name not in only:
            continue
        logger.info(f"== demo: {name} ==")
        try:
            rows.append(demo_usecase(usecase, out / name, runtime))
        except Exception as e:
            if isinstance(e, ModuleNotFoundError) and install_hint(e):
                raise
            message = str(e) if isinstance(e, AitkError) else f"{type(e).__name__}: {e}"
            logger.error(f"demo {name} failed: {message}")
            rows.append({"usecase": name, "status": f"failed: {message}"})
    return rows


def demo_usecase(usecase: UseCase, out: Path, runtime: Runtime) -> dict[str, Any]:
    from applied_aitk.batch import expand_inputs, run_batch
    from applied_aitk.bundle import load_bundle
    from applied_aitk.package import train_bundle
    from applied_aitk.report import finish

    started = time.perf_counter()
    sample = usecase.sample(out / "sample")
    bundle = train_bundle(usecase, sample.train, out / "bundle", usecase.config_from(sample.settings), runtime)
    trained = time.perf_counter()
    bundle = load_bundle(bundle.path, usecase=usecase.name)
    metrics = usecase.evaluate(bundle, sample.evaluate, runtime, report=out / "report")
    report = finish(out / "report", f"aitk demo: {usecase.name}", metrics, bundle)
    paths = expand_inputs([str(p) for p in sample.predict], usecase.input_suffixes)
    predictor = usecase.load(bundle, runtime)
    summary = run_batch(predictor, paths, out / "predictions.jsonl", batch_size=usecase.batch_size, total=predictor.count(paths))
    return {
        "usecase": usecase.name,
        "status": "ok",
        "train_s": round(trained - started, 1),
        "metrics": ", ".join(f"{k}={v:.3g}" for k, v in _headline(metrics)),
        "predicted": f"{summary['ok']} ok, {summary['failed']} failed",
        "records_per_s": summary["records_per_s"],
        "provider": summary["provider"],
        "bundle": str(bundle.path),
        "report": str(report),
    }


def _headline(metrics: dict[str, Any], count: int = 3) -> list[tuple[str, float]]:
    scalars = [(k, float(v)) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return scalars[:count]
