"""`predict --engine ray`: the same predictor on a Ray cluster through Ray Data.

Ray Data reads the input files (one task per file), an actor pool holds the ORT predictors (one
per GPU when the cluster has GPUs), and the driver journals rows in input order, so the output is
the same file the local engine writes, error rows included. Ids repeated across the run are made
unique as the local engine does (``x``, ``x#2``...): a first pass over the files collects the
ids in input order, so the files are read twice. Without ``address`` a local Ray instance starts."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from applied_aitk.batch import Counter, Journal, Layout, predict_records, skip_done, write_batches
from applied_aitk.console import get_logger
from applied_aitk.errors import AitkError
from applied_aitk.extras import DISTRIBUTION
from applied_aitk.runtime import Runtime
from applied_aitk.usecase import Record

logger = get_logger(__name__)


def run_batch_ray(
    usecase_name: str,
    bundle: Path,
    runtime: Runtime,
    options: dict[str, Any],
    paths: list[Path],
    out: Path,
    batch_size: int = 32,
    resume: bool = False,
    address: str | None = None,
    actors: int | None = None,
    layout: Layout | None = None,
) -> dict[str, Any]:
    """``run_batch`` on Ray: the same rows, in input order, in ``out`` (``layout`` as there)."""
    ray = import_ray()
    if any(str(p) == "-" for p in paths):
        raise AitkError("--engine ray reads files, not stdin (-)")
    journal = Journal(out, resume, layout)
    env = {k: v for k, v in os.environ.items() if k.startswith("AITK_")}
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, runtime_env={"env_vars": env}, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    cpus = ray.cluster_resources().get("CPU", 1)
    gpus = int(ray.cluster_resources().get("GPU", 0)) if runtime.device != "cpu" else 0
    actors = actors or gpus or max(1, int(cpus) // 2)
    if runtime.threads is None:
        runtime = dataclasses.replace(runtime, threads=max(1, int(cpus) // actors))
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    done = frozenset(journal.ids)
    files = ray.data.from_items([{"path": str(p)} for p in paths], override_num_blocks=max(1, len(paths)))
    settings = (usecase_name, str(bundle), runtime, options)
    try:
        renames, inputs = _renames(files, settings)
        records = files.flat_map(lambda item: [{"record": r} for r in _renamed(_read_file(settings, item["path"]), renames.get(item["path"], {}))
                                               if r.id not in done])
        rows = records.map_batches(
            PredictorActor,
            fn_constructor_args=(settings,),
            batch_size=batch_size,
            batch_format="pandas",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=min(1.0, max(cpus - 1, 0.5) / actors),  # leave a CPU for the read tasks, or the pool starves them
            num_gpus=1 if gpus else 0,
        )
        batches = ([json.loads(text) for text in batch["row"]] for batch in rows.iter_batches(batch_size=batch_size, batch_format="pandas"))
        summary = write_batches(batches, journal, Counter(len(done & inputs)), provider=f"ray ({actors} actors)", inputs=inputs)
    except ray.exceptions.RayError as e:  # a failure inside Ray: its last line, not Ray's traceback
        raise AitkError(last_line(e)) from None
    finally:
        if started_here:
            ray.shutdown()
    summary["engine"] = "ray"
    return summary


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise AitkError(f"--engine ray needs Ray: pip install '{DISTRIBUTION}[ray]'") from None
    for name in ("ray", "ray.data"):  # a failure is reported as one line by the driver, not by Ray's loggers
        logging.getLogger(name).setLevel(logging.CRITICAL)
    return ray


def _read_file(settings: tuple, path: str) -> list:
    """The records of one input file (a Ray read task); a file that cannot be read is one error record."""
    try:
        return list(_predictor(*settings).read([Path(path)]))
    except AitkError as e:
        return [Record(id=path, error=str(e))]
    except Exception as e:  # a reader failing its own way: still that file's error, not the run's end
        return [Record(id=path, error=f"{path}: {type(e).__name__}: {e}")]


def _renames(files, settings: tuple) -> tuple[dict[str, dict[int, str]], set[str]]:
    """Per file, ``{position: new id}`` for its records whose id repeats one before it in the run
    (files in input order), numbered by the local engine's own ``skip_done``; and every record's id."""
    listed = []
    for row in files.flat_map(lambda item: _listed(settings, item["path"])).iter_rows():
        if row["warning"]:  # Ray's workers do not log to the driver: their warnings come back as rows
            logger.warning(row["warning"])
        else:
            listed.append((row["path"], row["id"]))
    renames: dict[str, dict[int, str]] = {}
    positions: dict[str, int] = {}
    ids: set[str] = set()
    for (path, given), record in zip(listed, skip_done((Record(id) for _, id in listed), set(), Counter(), read_ids=ids)):
        position = positions[path] = positions.get(path, -1) + 1
        if record.id != given:
            renames.setdefault(path, {})[position] = record.id
    return renames, ids


def _listed(settings: tuple, path: str) -> list[dict[str, str]]:
    """The ids of one file's records, then the warnings reading it logged (an empty file, a file
    that cannot be read), as the local engine shows them."""
    warnings: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())  # type: ignore[method-assign]
    aitk_logger = logging.getLogger("aitk")
    aitk_logger.addHandler(handler)
    try:
        ids = [{"path": path, "id": r.id, "warning": ""} for r in _read_file(settings, path)]
    finally:
        aitk_logger.removeHandler(handler)
    return ids + [{"path": path, "id": "", "warning": warning} for warning in warnings]


def _renamed(records: list, renames: dict[int, str]) -> list:
    return [dataclasses.replace(r, id=renames[i]) if i in renames else r for i, r in enumerate(records)]


RAY_ADVICE = re.compile(r"Failed to apply .* after \d+/\d+ attempts|To change retry attempts")
"""Lines Ray adds after the error itself (Ray Data's retry advice)."""


def last_line(error: Exception) -> str:
    """The user-facing line of a Ray error: the last line of its text before Ray's own advice,
    colours and module path dropped."""
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(error)).splitlines() if line.strip()]
    while len(lines) > 1 and RAY_ADVICE.match(lines[-1]):
        lines.pop()
    last = lines[-1] if lines else type(error).__name__
    return re.sub(rf"^{re.escape(AitkError.__module__)}\.\w+: ", "", last)


_predictors: dict[str, Any] = {}


def _predictor(usecase_name: str, bundle: str, runtime: Runtime, options: dict[str, Any]):
    """One predictor per worker process and setting, shared by the read tasks and the actor there."""
    key = json.dumps([usecase_name, bundle, dataclasses.asdict(runtime), options], default=str)
    if key not in _predictors:
        from applied_aitk.bundle import load_bundle
        from applied_aitk.plugins import get_usecases

        usecase = get_usecases()[usecase_name]
        _predictors[key] = usecase.load(load_bundle(Path(bundle), usecase=usecase_name), runtime, **options)
    return _predictors[key]


class PredictorActor:
    """Holds one ORT predictor; rows leave it as JSON text, so every column survives Ray's blocks."""

    def __init__(self, settings: tuple):
        self.predictor = _predictor(*settings)

    def __call__(self, batch):
        import pandas as pd

        rows = predict_records(self.predictor, list(batch["record"]))
        return pd.DataFrame({"row": [json.dumps(row, ensure_ascii=False) for row in rows]})
