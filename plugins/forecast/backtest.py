"""Rolling-origin backtest: the model's forecasts beside naive and seasonal-naive ones on the same windows."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from applied_aitk.usecases.forecast import data, time_features
from applied_aitk.usecases.forecast.data import Series
from applied_aitk.usecases.forecast.predictor import ForecastPredictor, plot_forecast, png_name
from applied_aitk import AitkError
from applied_aitk.console import get_logger
from applied_aitk.files import atomic_path

logger = get_logger(__name__)

METRICS = ("smape", "mase", "mse", "mae")
MAX_PLOTS = 20


@dataclass
class Backtest:
    """One series' windows: actual values, model quantiles and the two baselines, [windows, horizon, targets(, q)]."""

    series: Series
    origins: np.ndarray
    actual: np.ndarray
    quantiles: np.ndarray
    naive: np.ndarray
    seasonal: np.ndarray
    scale: np.ndarray  # [targets] the series' std, for MSE and MAE in standardised units
    mase_scale: np.ndarray  # [targets] in-sample seasonal-naive MAE before the first origin


def origins_for(n: int, context: int, horizon: int, windows: int, stride: int) -> np.ndarray:
    """Forecast origins from the latest (the last ``horizon`` values) backwards, ``stride`` apart, oldest first."""
    t0 = n - horizon - stride * np.arange(windows)
    return np.sort(t0[t0 >= context])


def run_backtest(predictor: ForecastPredictor, series: list[Series], windows: int, stride: int, batch: int = 256) -> list[Backtest]:
    spec, freq = predictor.spec, predictor.schema.freq
    L, H, m = spec.context_length, spec.horizon, spec.season
    jobs = []  # (series, origins, feeds)
    for s in series:
        origins = origins_for(s.n, L, H, windows, stride)
        past, future = time_features.features(s, spec, freq)
        jobs.append((s, origins, [predictor.feeds(s, int(t0), past, future) for t0 in origins]))
    flat = [f for _, _, feeds in jobs for f in feeds]
    outputs = np.concatenate([predictor.run(flat[i : i + batch]) for i in range(0, len(flat), batch)]) if flat else None
    results, done = [], 0
    for s, origins, feeds in jobs:
        q = outputs[done : done + len(origins)]
        done += len(origins)
        ahead = origins[:, None] + np.arange(H)
        first = int(origins[0])
        results.append(Backtest(
            series=s,
            origins=origins,
            actual=s.y[ahead],
            quantiles=q.astype(np.float64),
            naive=np.repeat(s.y[origins - 1][:, None], H, axis=1),
            seasonal=s.y[origins[:, None] - m + np.arange(H) % m] if first >= m else np.repeat(s.y[origins - 1][:, None], H, axis=1),
            scale=predictor.scale_of(s.id, s.y[:first])[1].astype(np.float64),
            mase_scale=mase_scale(s.y[:first], m),
        ))
    return results


def mase_scale(history: np.ndarray, season: int) -> np.ndarray:
    """Mean absolute seasonal difference of the history (lag 1 when it is shorter than two seasons)."""
    lag = season if len(history) > 2 * season else 1
    if len(history) <= lag:
        return np.full(history.shape[1], np.nan)
    return np.abs(history[lag:] - history[:-lag]).mean(axis=0)


def point_metrics(actual: np.ndarray, forecast: np.ndarray, scale: np.ndarray, mase_denominator: np.ndarray) -> dict[str, float]:
    """sMAPE (%), MASE, and MSE and MAE of the standardised values, for one series' windows."""
    error = forecast - actual
    total = np.abs(actual) + np.abs(forecast)
    smape = np.where(total > 0, 200 * np.abs(error) / np.where(total > 0, total, 1), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mase = np.abs(error).mean(axis=(0, 1)) / mase_denominator
    mase = mase[np.isfinite(mase)]
    return {
        "smape": float(smape.mean()),
        "mase": float(mase.mean()) if len(mase) else float("nan"),
        "mse": float(((error / scale) ** 2).mean()),
        "mae": float(np.abs(error / scale).mean()),
    }


def series_metrics(result: Backtest, median: int) -> dict[str, dict[str, float]]:
    args = (result.scale, result.mase_scale)
    q = result.quantiles
    model = point_metrics(result.actual, q[..., median], *args)
    model["coverage"] = float(((q[..., 0] <= result.actual) & (result.actual <= q[..., -1])).mean())
    return {
        "model": model,
        "naive": point_metrics(result.actual, result.naive, *args),
        "seasonal_naive": point_metrics(result.actual, result.seasonal, *args),
    }


def summarise(results: list[Backtest], quantiles: list[float]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics averaged over series (each series' windows first), and one row per series."""
    per_series = [series_metrics(r, quantiles.index(0.5)) for r in results]

    def mean(method: str, key: str) -> float | None:
        values = np.array([m[method][key] for m in per_series])
        values = values[np.isfinite(values)]
        return round(float(values.mean()), 6) if len(values) else None

    metrics: dict[str, Any] = {key: mean("model", key) for key in METRICS}
    metrics["coverage"] = mean("model", "coverage")
    metrics["coverage_nominal"] = round(quantiles[-1] - quantiles[0], 6)
    for method in ("naive", "seasonal_naive"):
        metrics[method] = {key: mean(method, key) for key in METRICS}
    rows = [
        {"series": r.series.id, "windows": len(r.origins), **{f"{method}_{k}": v for method, values in m.items() for k, v in values.items()}}
        for r, m in zip(results, per_series)
    ]
    return metrics, rows


def evaluate(predictor: ForecastPredictor, paths: list[Path], windows: int, stride: int | None, report: Path | None,
             name: Path | str = "") -> dict[str, Any]:
    """Backtest every series of ``paths`` on its last ``windows`` origins; ``name`` (the data as given)
    names them in errors."""
    spec = predictor.spec
    L, H = spec.context_length, spec.horizon
    stride = stride or H
    if windows < 1 or stride < 1:
        raise AitkError(f"--windows {windows} --stride {stride}: expected positive numbers")
    series, bad, _ = data.load_series(paths, predictor.schema, predictor.fill_gaps)
    usable = []
    for s in series:
        if s.n < L + H:
            bad[s.id] = f"{s.where}: series {s.id}: {s.n} values, a backtest needs at least context_length + horizon = {L + H}"
        else:
            usable.append(s)
    for reason in list(bad.values())[:5]:
        logger.info(f"skipped {reason}")
    if not usable:
        raise data.no_series(name or ", ".join(map(str, paths)), "evaluate", bad)
    results = run_backtest(predictor, usable, windows, stride)
    metrics, rows = summarise(results, spec.quantiles)
    metrics.update(series=len(results), windows=int(sum(len(r.origins) for r in results)), horizon=H, stride=stride, season=spec.season)
    if bad:
        metrics["skipped"] = bad
    if report is not None:
        write_report(report, results, rows, predictor)
    return metrics


def write_report(report: Path, results: list[Backtest], rows: list[dict[str, Any]], predictor: ForecastPredictor) -> None:
    """backtest.csv (metrics per series, model and baselines) and a plot of each series' latest window
    with both baselines drawn (the first MAX_PLOTS series)."""
    report.mkdir(parents=True, exist_ok=True)
    with atomic_path(report / "backtest.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    L, H = predictor.spec.context_length, predictor.spec.horizon
    for r in results[:MAX_PLOTS]:
        t0 = int(r.origins[-1])
        start = max(0, t0 - max(3 * H, L))
        history = (r.series.times[start:t0], r.series.y[start:t0])
        plot_forecast(report / png_name(r.series.id), r.series.id, history, r.series.times[t0 : t0 + H], r.quantiles[-1],
                      predictor.spec.quantiles, predictor.schema.targets, actual=r.actual[-1],
                      baselines={"naive": r.naive[-1], f"seasonal naive ({predictor.spec.season})": r.seasonal[-1]})
    if len(results) > MAX_PLOTS:
        logger.info(f"plotted the first {MAX_PLOTS} of {len(results)} series in {report}")
