"""Predicting with a bundle through ONNX Runtime: one record per series, its next H steps as quantiles."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from applied_aitk.usecases.forecast import data, time_features
from applied_aitk.usecases.forecast.data import Series, SeriesError
from applied_aitk.usecases.forecast.schema import Schema, check_columns
from applied_aitk.usecases.forecast.time_features import Spec
from applied_aitk import AitkError, InputError, Predictor, Record
from applied_aitk.bundle import Bundle
from applied_aitk.console import get_logger
from applied_aitk.files import atomic_path
from applied_aitk.runtime import Runtime

logger = get_logger(__name__)

OUT_OF_RANGE = 10.0
"""Standard deviations from a series' training mean beyond which its forecast carries a warning."""


@dataclass
class Window:
    """One model input: a series' latest context and what the output row and plot need."""

    id: str
    feeds: list[np.ndarray]  # context, loc, scale[, past][, future], without the batch axis
    times: Any  # the horizon's timestamps
    history: tuple[Any, np.ndarray]  # recent (timestamps, values), for plots
    warnings: list[str]  # why the forecast may not be trusted (values far outside what training saw)
    where: str = ""  # "PATH:LINE" of the series' first row, for messages


@dataclass
class Failed:
    """A series that cannot be forecast: its error row (``series``, in the long layout ``timestamp``, ``error``)."""

    row: dict[str, Any]


class ForecastPredictor(Predictor):
    def __init__(self, bundle: Bundle, runtime: Runtime, plot: Path | None = None, fill_gaps: bool | None = None,
                 layout: str = "wide"):
        self.session = runtime.session(runtime.model_file(bundle))
        self.provider = self.session.provider
        self.schema = Schema(**bundle.assets["schema"])
        self.spec = Spec(**bundle.assets["spec"])
        self.fill_gaps = self.schema.fill_gaps if fill_gaps is None else fill_gaps
        self.stats = dict(zip(bundle.read_json("series.json"), bundle.read_array("scale.npy")))
        self.plot = Path(plot) if plot else None
        self.median = self.spec.quantiles.index(0.5)
        self.layout = layout

    def count(self, paths: list[Path]) -> int | None:
        """The series in ``paths``, for the progress bar's total: a row each in a wide table, one per
        file without an id column, else the distinct ids, read from the id columns alone. A file that
        cannot be read counts one (its error row); None with stdin."""
        from applied_aitk.usecases.forecast.table import EmptyTable, read_table
        from applied_aitk.counting import count_records

        if any(str(p) == "-" for p in paths):
            return None
        if self.schema.format == "wide":
            return count_records(paths)
        if not self.schema.keys:
            return len(paths)
        total = 0
        for path in paths:
            try:
                bad_lines: dict[int, str] = {}  # counted, not logged: read() reports them
                table = read_table(path, self.schema.delimiter, self.schema.decimal, self.schema.keys, bad_lines)
                total += len(table.drop_duplicates()) + len(bad_lines)
            except EmptyTable:
                continue
            except AitkError:
                total += 1
        return total

    def read(self, paths: Iterable[Path]) -> Iterator[Record]:
        """One record per series; a file that cannot be read, or lacks a column, is one error record,
        and so is each line that cannot be a row (``PATH:LINE``; its series is read without it). An
        empty file or one with only a header is a warning, no record. A series id seen in an earlier
        file is an error row (``PATH:SERIES``), made when decoded so that it names its series."""
        from applied_aitk.usecases.forecast.table import EmptyTable

        seen: dict[str, Path] = {}
        for path in paths:
            bad_lines: dict[int, str] = {}
            try:
                frame = data.read(path, self.schema, bad_lines)
            except EmptyTable:
                continue
            except AitkError as e:
                yield Record(id=str(path), error=str(e))
                continue
            if frame.empty and not bad_lines:
                logger.warning(f"{path}: no rows, nothing to predict")
            for line, reason in sorted(bad_lines.items()):
                yield Record(id=f"{path}:{line}", error=f"{path}:{line}: {reason}")
            for sid, part in data.split_series(frame, self.schema, path):
                if sid == data.NO_ID:
                    yield Record(id=f"{path}:{int(min(part.index))}", data=(sid, data.no_id(part, self.schema), path))
                    continue
                if sid in seen:
                    problem = SeriesError(sid, f"also in {seen[sid]}; series ids must be unique across inputs", min(part.index))
                    yield Record(id=f"{path}:{sid}", data=(sid, problem, path))
                    continue
                seen[sid] = path
                yield Record(id=sid, data=(sid, part, path))

    def from_json(self, value: Any, id: str) -> Record:
        """One series as the rows of the table `predict` reads: ``{"rows": [{column: value, ...}, ...]}``
        with the columns the model was trained with; ``"id"`` names it when the table has no id column."""
        import pandas as pd

        rows = value.get("rows") if isinstance(value, dict) else None
        if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
            raise InputError('field rows: expected a list of objects, one per time step, like {"rows": [{"date": "2024-01-01", "sales": 12}]}')
        name = Path(str(value.get("id", id)))
        _check_cells(rows, self.schema)
        frame = pd.DataFrame(rows)  # messages name a row by its place in rows: rows[K]
        check_columns(frame, self.schema, Path("field rows"))  # was named by the record's position: "0: no column ..."
        parts = list(data.split_series(frame, self.schema, name))
        if len(parts) != 1:
            raise InputError(f"field rows: {len(parts)} series; send one series per record")
        sid, part = parts[0]
        return Record(sid, data=(sid, part, None))

    def decode(self, record: Record) -> Window | Failed:
        """The series' model input, or its error row (``Failed``) naming file, line and series."""
        sid, part, path = record.data
        try:
            if isinstance(part, SeriesError):
                raise part
            series = data.prepare(sid, part, self.schema, self.schema.freq, self.fill_gaps)
            if series.n < self.spec.context_length:
                raise SeriesError(sid, f"{series.n} values, the model needs at least {self.spec.context_length} (its context_length)",
                                  min(part.index))
        except SeriesError as e:
            return self.failed(e.located(path), sid, e.timestamp)
        return self.window(series, data.location(path, int(min(part.index))))

    def failed(self, message: str, sid: str, timestamp: str | None = None) -> Failed:
        """An error row that names its series (and, in the long layout, the timestamp at fault), for joining back."""
        row: dict[str, Any] = {"series": sid}
        if self.layout == "long":
            row["timestamp"] = timestamp
        return Failed({**row, "error": message})

    def window(self, series: Series, where: str) -> Window:
        L, H = self.spec.context_length, self.spec.horizon
        past, future = time_features.features(series, self.spec, self.schema.freq, extra=H)
        feeds = self.feeds(series, series.n, past, future)
        keep = min(series.n, max(3 * H, L))
        history = (series.times[series.n - keep : series.n], series.y[-keep:])
        times = time_features.future_times(series.times[: series.n], self.schema.freq, H)
        return Window(series.id, feeds, times, history, self.out_of_range(series), where)

    def out_of_range(self, series: Series) -> list[str]:
        """A warning per target whose recent values lie over OUT_OF_RANGE standard deviations from the
        series' training mean (series the model was not trained on are scaled by their own context)."""
        if series.id not in self.stats:
            return []
        loc, scale = self.stats[series.id]
        recent = series.y[-self.spec.context_length :]
        far = np.abs(recent - loc) / scale
        found = []
        for t, target in enumerate(self.schema.targets):
            k = int(np.argmax(far[:, t]))
            if far[k, t] > OUT_OF_RANGE:
                found.append(f"{target}: {recent[k, t]:.6g} is {far[k, t]:.0f} standard deviations from the training data "
                             f"(mean {loc[t]:.6g}, std {scale[t]:.6g}); the forecast extrapolates")
        return found

    def feeds(self, series: Series, t0: int, past: np.ndarray, future: np.ndarray) -> list[np.ndarray]:
        """Inputs for the forecast from origin ``t0`` (the first step forecast)."""
        L, H = self.spec.context_length, self.spec.horizon
        stats = self.scale_of(series.id, series.y[:t0])
        feeds = [series.y[t0 - L : t0].astype(np.float32), stats[0], stats[1]]
        if past.shape[1]:
            feeds.append(past[t0 - L : t0])
        if future.shape[1]:
            feeds.append(future[t0 : t0 + H])
        return feeds

    def scale_of(self, sid: str, history: np.ndarray) -> np.ndarray:
        """The series' stored mean and std, or those of its context for a series the model has not seen."""
        if sid in self.stats:
            return self.stats[sid]
        return time_features.series_scale(history[-self.spec.context_length :])

    def run(self, feeds: list[list[np.ndarray]]) -> np.ndarray:
        """Quantiles [windows, horizon, targets, quantiles] for a list of per-window inputs."""
        batch = [np.stack(column) for column in zip(*feeds)]
        return self.session(*batch)[0]

    def predict(self, inputs: list[Window | Failed]) -> list[dict[str, Any]]:
        windows = [w for w in inputs if isinstance(w, Window)]
        quantiles = iter(self.run([w.feeds for w in windows]) if windows else [])
        rows = []
        for window in inputs:
            if isinstance(window, Failed):
                rows.append(window.row)
                continue
            q = next(quantiles)
            rows.append(self.row(window, q))
            if self.plot is not None and "error" not in rows[-1]:
                plot_forecast(self.plot / png_name(window.id), window.id, window.history, window.times, q, self.spec.quantiles, self.schema.targets)
        return rows

    def row(self, window: Window, q: np.ndarray) -> dict[str, Any]:
        if not np.isfinite(q).all():
            return self.failed(f"{window.where}: series {window.id}: the forecast overflows float32 (values too large for the model)", window.id).row
        row: dict[str, Any] = {"series": window.id, "timestamp": time_features.format_times(window.times)}
        targets = self.schema.targets
        for t, target in enumerate(targets):
            for k, level in enumerate(self.spec.quantiles):
                key = quantile_name(level) if len(targets) == 1 else f"{target}_{quantile_name(level)}"
                row[key] = [float(f"{v:.6g}") for v in q[:, t, k].tolist()]
        if window.warnings:
            row["warnings"] = window.warnings
        return row


def long_rows(row: dict[str, Any]) -> list[dict[str, Any]]:
    """A series' row in long (tidy) form: one row per horizon step, ``id, series, timestamp, p10, p50,
    p90`` (``TARGET_p10``... for several targets), its warnings on each; a row already long stays."""
    times = row.get("timestamp")
    if not isinstance(times, list):
        return [row]
    steps = {k: v for k, v in row.items() if isinstance(v, list) and k not in ("timestamp", "warnings")}
    head = {k: v for k, v in row.items() if k in ("id", "series")}
    tail = {k: v for k, v in row.items() if k not in steps and k not in head and k != "timestamp"}
    return [{**head, "timestamp": t, **{k: v[i] for k, v in steps.items()}, **tail} for i, t in enumerate(times)]


def quantile_name(level: float) -> str:
    return f"p{level * 100:g}"


def png_name(series_id: str) -> str:
    """A safe file name for a series id; ids that had to change get a short hash so two cannot collide."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", series_id)[:100]
    if safe != series_id:
        safe += "-" + hashlib.sha1(series_id.encode()).hexdigest()[:8]
    return safe + ".png"


def plot_forecast(path: Path, title: str, history: tuple[Any, np.ndarray], times: Any, q: np.ndarray,
                  quantiles: list[float], targets: list[str], actual: np.ndarray | None = None,
                  baselines: dict[str, np.ndarray] | None = None) -> None:
    """History, median and the outer quantile band per target, one panel each, with the actual
    values and the ``baselines`` forecasts ({name: [horizon, targets]}) when given; written via temp + rename."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 1.2 + 2.4 * len(targets)))
    axes = fig.subplots(len(targets), 1, squeeze=False, sharex=True)[:, 0]
    median = quantiles.index(0.5)
    band = f"{quantile_name(quantiles[0])}-{quantile_name(quantiles[-1])}"
    for t, ax in enumerate(axes):
        ax.plot(history[0], history[1][:, t], color="black", linewidth=1, label="history")
        ax.fill_between(times, q[:, t, 0], q[:, t, -1], color="tab:blue", alpha=0.25, label=band)
        ax.plot(times, q[:, t, median], color="tab:blue", linewidth=1.5, label="median")
        if actual is not None:
            ax.plot(times, actual[:, t], color="tab:orange", linewidth=1, label="actual")
        for (name, values), style in zip((baselines or {}).items(), (":", "--")):
            ax.plot(times, values[:, t], color="grey", linestyle=style, linewidth=1, label=name)
        ax.set_ylabel(targets[t])
    axes[0].set_title(f"series {title}")
    axes[0].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)


def _check_cells(rows: list[dict[str, Any]], schema: Any) -> None:
    """InputError naming ``rows[K]`` and the field where a column the series is read from holds
    true/false, a list or an object (pandas would read true as 1.0, a list as its text)."""
    from applied_aitk.table_json import _cells

    for k, row in enumerate(rows):
        needed = [c for c in row if schema.format == "wide" or c in {*schema.keys, schema.time, *schema.targets, *schema.past, *schema.known}]
        problem = _cells(row, needed)
        if isinstance(problem, str):
            raise InputError(f"rows[{k}]: {problem}")
