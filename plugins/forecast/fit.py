"""Training: windows over every series, pinball loss, a time-based validation split with early
stopping; the result (graph, scaling, int8 check) for the core to package."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from applied_aitk.usecases.forecast import data, table, time_features
from applied_aitk.usecases.forecast.data import Series
from applied_aitk.usecases.forecast.schema import Schema, resolve_schema
from applied_aitk.usecases.forecast.time_features import Spec
from applied_aitk.usecases.forecast.model import Forecaster, pinball_loss
from applied_aitk.usecases.forecast.plugin import MAX_EPOCH_BATCHES
from applied_aitk import AitkError, Graph, TrainResult
from applied_aitk.bundle import Bundle
from applied_aitk.console import get_logger
from applied_aitk.runtime import Runtime
import applied_aitk.train
from applied_aitk.train import seed_everything

logger = get_logger(__name__)

MAX_VAL_WINDOWS = 4096


class Windows:
    """Every series' values and features concatenated; a window is (series index, origin t0)."""

    def __init__(self, series: list[Series], spec: Spec, freq: str | None, stats: np.ndarray):
        self.L, self.H = spec.context_length, spec.horizon
        self.stats = stats.astype(np.float32)  # [series, 2, targets]
        ys, pasts, futures, starts, start = [], [], [], [], 0
        for s in series:
            past, future = time_features.features(s, spec, freq)
            ys.append(s.y.astype(np.float32))
            pasts.append(past)
            futures.append(future[: s.n])
            starts.append(start)
            start += s.n
        self.y, self.past, self.future = (np.concatenate(a) for a in (ys, pasts, futures))
        self.starts = np.asarray(starts)
        self.has_past, self.has_future = self.past.shape[1] > 0, self.future.shape[1] > 0

    def inputs(self, which: np.ndarray, t0: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Model inputs (context, loc, scale[, past][, future]) and the actual values for windows."""
        g = self.starts[which] + t0
        back = g[:, None] + np.arange(-self.L, 0)
        ahead = g[:, None] + np.arange(self.H)
        stats = self.stats[which]
        feeds = [self.y[back], stats[:, 0], stats[:, 1]]
        if self.has_past:
            feeds.append(self.past[back])
        if self.has_future:
            feeds.append(self.future[ahead])
        return feeds, self.y[ahead]


def split_origins(series: list[Series], L: int, H: int, val_fraction: float) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Train and validation windows as [k, 2] arrays of (series index, t0), and each series' split point.

    Validation windows forecast only the last ``val_fraction`` of a series (at least one horizon);
    training windows forecast only what comes before it."""
    train, val, cuts = [], [], []
    for i, s in enumerate(series):
        held = max(H, round(val_fraction * s.n)) if val_fraction > 0 else 0
        cut = s.n - held
        cuts.append(cut)
        t_train = np.arange(L, cut - H + 1)
        t_val = np.arange(max(L, cut), s.n - H + 1) if held else np.arange(0)
        train.append(np.stack([np.full(len(t_train), i), t_train], 1))
        val.append(np.stack([np.full(len(t_val), i), t_val], 1))
    return np.concatenate(train).astype(np.int64), np.concatenate(val).astype(np.int64), cuts


def train(data_path: Path, config: Any, runtime: Runtime) -> TrainResult:
    """Read, train; the core exports and packages the result."""
    # One torch thread unless told otherwise: a recurrent step's matrices are too small to split well,
    # and on a busy machine two threads trained the sample ten times slower than one.
    threads = torch.get_num_threads()
    torch.set_num_threads(runtime.threads or 1)
    try:
        return _train(data_path, config, runtime)
    finally:
        torch.set_num_threads(threads)


def _train(data_path: Path, config: Any, runtime: Runtime) -> TrainResult:
    seed_everything(config.seed)
    paths = table.input_files(data_path)
    schema = resolve_schema(table.read_table(paths[0], config.delimiter, config.decimal), config, paths[0])
    series, bad, freq = data.load_series(paths, schema, config.fill_gaps)
    schema.freq = freq
    season, horizon, context = time_features.defaults_for(freq)
    spec = time_features.make_spec(schema, config.context_length or context, config.horizon or horizon, list(config.quantiles),
                          config.season or season, calendar_span(series) if config.calendar else None)
    short = [s for s in series if s.n < spec.context_length + spec.horizon]
    for s in short:
        bad[s.id] = f"{s.where}: series {s.id}: {s.n} values, training needs at least context_length + horizon = {spec.context_length + spec.horizon}"
    series = [s for s in series if s.n >= spec.context_length + spec.horizon]
    report_skipped(bad)
    if not series:
        raise data.no_series(data_path, "train on", bad)
    logger.info(f"{len(series)} series, targets {', '.join(schema.targets)}, freq {freq or 'integer steps'}, "
        f"context {spec.context_length}, horizon {spec.horizon}, season {spec.season}")
    trained = fit(series, spec, freq, config, runtime)
    trained.metrics.update(series=len(series), skipped_series=len(bad))
    result = train_result(schema, spec, series, trained)
    result.resolved = resolved_settings(config, schema, spec)
    return result


def resolved_settings(config: Any, schema: Schema, spec: Spec) -> dict[str, Any]:
    """The value used for each setting left to training (0, empty or "auto": from the data)."""
    used = {"format": schema.format, "time_column": schema.time, "id_column": schema.id, "target": ",".join(schema.targets),
            "freq": schema.freq, "horizon": spec.horizon, "context_length": spec.context_length, "season": spec.season}
    return {name: value for name, value in used.items()
            if value not in (None, "") and getattr(config, name, None) in (0, "", "auto", None, [])}


def calendar_span(series: list[Series]) -> float | None:
    """Days the longest series spans; None for integer time steps."""
    if not series or not isinstance(series[0].times, pd.DatetimeIndex):
        return None
    return max((s.times[s.n - 1] - s.times[0]) / pd.Timedelta(days=1) for s in series)


def report_skipped(bad: dict[str, str], shown: int = 5) -> None:
    for reason in list(bad.values())[:shown]:
        logger.info(f"skipped {reason}")
    if len(bad) > shown:
        logger.info(f"skipped {len(bad) - shown} more series")


@dataclasses.dataclass
class Trained:
    model: Forecaster
    metrics: dict[str, Any]
    windows: Windows
    examples: np.ndarray  # validation windows (training ones without a validation split) for the export checks
    history: list[dict[str, float]]  # one row per epoch (applied_aitk.train.fit's)


def fit(series: list[Series], spec: Spec, freq: str | None, config: Any, runtime: Runtime) -> Trained:
    """Train on the windows before each series' validation cut; keep the best validation epoch."""
    L, H = spec.context_length, spec.horizon
    train, val, cuts = split_origins(series, L, H, config.val_fraction)
    if not len(train):
        raise AitkError(f"no training windows: each series needs more than context_length + horizon = {L + H} values before its validation part")
    stats = np.stack([time_features.series_scale(s.y[: max(cut, 2)]) for s, cut in zip(series, cuts)])
    windows = Windows(series, spec, freq, stats)
    if len(val) > MAX_VAL_WINDOWS:
        val = val[np.linspace(0, len(val) - 1, MAX_VAL_WINDOWS).round().astype(int)]
    device = runtime.torch_device()
    model = Forecaster(
        len(series[0].y[0]), len(spec.past_features), len(spec.future_features), L, H, spec.quantiles,
        config.cell, config.hidden_size, config.num_layers, config.dropout,
    )
    set_feature_scaling(model, windows)
    model.to(device)
    taus = torch.tensor(spec.quantiles, device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    rng = np.random.default_rng(config.seed)
    per_epoch = min(len(train), config.samples_per_epoch or MAX_EPOCH_BATCHES * config.batch_size)
    logger.info(f"{len(train)} training windows ({per_epoch} per epoch), {len(val)} validation windows, on {device}")

    def batches(epoch: int):
        order = rng.permutation(len(train))[:per_epoch]
        return [train[order[start : start + config.batch_size]] for start in range(0, per_epoch, config.batch_size)]

    def step(pick: np.ndarray) -> float:
        feeds, actual = windows.inputs(pick[:, 0], pick[:, 1])
        loss = batch_loss(model, feeds, actual, taus, device)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss.item()

    validate = (lambda: {"val_loss": validation_loss(model, windows, val, taus, device)}) if len(val) else None
    result = applied_aitk.train.fit(
        model, batches, step, validate, epochs=config.epochs, patience=config.patience, max_steps=config.max_steps, max_time=config.max_time,
    )
    model.cpu().eval()
    metrics = {"epochs": len(result.history), "best_epoch": result.best_epoch, "steps": result.steps, "stopped_by": result.stopped,
               "train_windows": len(train), "val_windows": len(val)}
    if len(val):
        metrics.update(validation_metrics(model, windows, val, spec.quantiles))
    return Trained(model, metrics, windows, val if len(val) else train[:MAX_VAL_WINDOWS], result.history)


def set_feature_scaling(model: Forecaster, windows: Windows) -> None:
    for name, values in (("past", windows.past), ("future", windows.future)):
        if values.shape[1]:
            std = values.std(axis=0)
            getattr(model, f"{name}_mean").copy_(torch.from_numpy(values.mean(axis=0)))
            getattr(model, f"{name}_std").copy_(torch.from_numpy(np.where(std > 1e-6, std, 1.0).astype(np.float32)))


def batch_loss(model: Forecaster, feeds: list[np.ndarray], actual: np.ndarray, taus: torch.Tensor, device: str) -> torch.Tensor:
    tensors = [torch.from_numpy(f).to(device) for f in feeds]
    loc, scale = tensors[1], tensors[2]
    target = (torch.from_numpy(actual).to(device) - loc[:, None]) / scale[:, None]
    return pinball_loss(model.scaled(*tensors), target, taus)


@torch.no_grad()
def validation_loss(model: Forecaster, windows: Windows, val: np.ndarray, taus: torch.Tensor, device: str, batch: int = 1024) -> float:
    model.eval()
    total = 0.0
    for start in range(0, len(val), batch):
        pick = val[start : start + batch]
        feeds, actual = windows.inputs(pick[:, 0], pick[:, 1])
        total += batch_loss(model, feeds, actual, taus, device).item() * len(pick)
    return total / len(val)


@torch.no_grad()
def validation_metrics(model: Forecaster, windows: Windows, val: np.ndarray, quantiles: list[float]) -> dict[str, float]:
    """Validation pinball loss, MSE and MAE of the median, and of the last-value forecast, in standardised units."""
    feeds, actual = windows.inputs(val[:, 0], val[:, 1])
    q = model.scaled(*(torch.from_numpy(f) for f in feeds)).numpy()
    loc, scale = feeds[1][:, None], feeds[2][:, None]
    z = (actual - loc) / scale
    naive = ((feeds[0][:, -1:] - loc) / scale).repeat(windows.H, axis=1)
    median = q[..., quantiles.index(0.5)]
    return {
        "val_pinball": pinball(q, z, quantiles),
        "val_mse": float(((median - z) ** 2).mean()),
        "val_mae": float(np.abs(median - z).mean()),
        "val_naive_mse": float(((naive - z) ** 2).mean()),
        "val_naive_mae": float(np.abs(naive - z).mean()),
        "val_coverage": float(((q[..., 0] <= z) & (z <= q[..., -1])).mean()),
    }


def input_names(model: Forecaster) -> list[str]:
    return ["context", "loc", "scale", *(["past"] if model.has_past else []), *(["future"] if model.has_future else [])]


def example_inputs(windows: Windows, picks: np.ndarray) -> tuple[tuple[torch.Tensor, ...], np.ndarray]:
    """Windows in standardised units (loc 0, scale 1), so tolerances mean the same for every series; and their actual values."""
    feeds, actual = windows.inputs(picks[:, 0], picks[:, 1])
    loc, scale = feeds[1][:, None], feeds[2][:, None]
    feeds[0], actual = (feeds[0] - loc) / scale, (actual - loc) / scale
    feeds[1], feeds[2] = np.zeros_like(feeds[1]), np.ones_like(feeds[2])
    return tuple(torch.from_numpy(np.ascontiguousarray(f)) for f in feeds), actual


def train_result(schema: Schema, spec: Spec, series: list[Series], trained: Trained) -> TrainResult:
    model, windows, examples = trained.model, trained.windows, trained.examples
    picks = examples[np.linspace(0, len(examples) - 1, min(len(examples), 64)).round().astype(int)]
    names = input_names(model)
    graph = Graph(model, example_inputs(windows, picks[:2])[0], names, ["quantiles"], parity_inputs=example_inputs(windows, picks)[0], atol=1e-4,
                  check=lambda variant, path, fp32: int8_report(fp32, path, *example_inputs(windows, examples), names, spec.quantiles) if variant == "int8" else {})
    assets = {
        "schema": dataclasses.asdict(schema),
        "spec": dataclasses.asdict(spec),
        "scaling": "targets: per-series mean and std from the training part (series.json, scale.npy; a series "
                   "the model has not seen uses its context window's); context mean level removed inside the graph",
    }
    files = {"series.json": [s.id for s in series], "scale.npy": windows.stats}
    return TrainResult([graph], model.state_dict(), assets, files, trained.metrics, trained.history)


def int8_report(fp32: Path, int8: Path, inputs: tuple[torch.Tensor, ...], actual: np.ndarray, names: list[str], quantiles: list[float]) -> dict[str, Any]:
    """How far int8 (dynamic: MatMul, Gemm and LSTM weights) moves the outputs and the pinball loss."""
    feeds = {name: t.numpy() for name, t in zip(names, inputs)}
    cpu = Runtime(device="cpu")
    fp32_q, int8_q = cpu.session(fp32).run(feeds)[0], cpu.session(int8).run(feeds)[0]
    return {
        "windows": len(actual), "max_abs_diff": float(np.abs(fp32_q - int8_q).max()),
        "pinball_fp32": pinball(fp32_q, actual, quantiles), "pinball_int8": pinball(int8_q, actual, quantiles),
        "quantiles_ordered": bool((np.diff(int8_q, axis=-1) >= 0).all()),
    }


def pinball(q: np.ndarray, actual: np.ndarray, quantiles: list[float]) -> float:
    """Mean quantile loss of ``q`` [..., quantiles] for ``actual`` [...]."""
    diff = actual[..., None] - q
    taus = np.asarray(quantiles)
    return float(np.maximum(taus * diff, (taus - 1) * diff).mean())


def torch_model(bundle: Bundle) -> Forecaster:
    """The bundle's torch model, from its weights (to compare with ONNX, or to fine-tune)."""
    spec, config = Spec(**bundle.assets["spec"]), bundle.config
    model = Forecaster(len(bundle.assets["schema"]["targets"]), len(spec.past_features), len(spec.future_features),
                       spec.context_length, spec.horizon, spec.quantiles, config["cell"], config["hidden_size"],
                       config["num_layers"], config["dropout"])
    model.load_state_dict(bundle.read_weights())
    return model.eval()
