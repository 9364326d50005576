"""Training: split by time, fit preprocessing, train with early stopping on validation PR-AUC,
calibrate, choose the threshold; the core exports and packages the result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

import applied_aitk.train
from applied_aitk import Graph, TrainResult
from applied_aitk.console import get_logger
from applied_aitk.errors import AitkError
from applied_aitk.runtime import Runtime
from applied_aitk.train import seed_everything

from applied_aitk.usecases.fraud import data as fdata
from applied_aitk.usecases.fraud import metrics
from applied_aitk.usecases.fraud.model import FraudModel, build, focal_loss

logger = get_logger(__name__)


def train(data: Path, config: Any, runtime: Runtime) -> TrainResult:
    seed_everything(config.seed)
    frame = fdata.read_table(data)
    supervised = config.model != "autoencoder"
    columns = fdata.resolve_columns(frame, config, data, need_label=supervised)
    fdata.check_numeric(frame, columns.numeric, data)
    y = fdata.labels(frame, columns.label, data) if columns.label else None
    if y is not None and np.isnan(y).any():
        keep = ~np.isnan(y)
        logger.info(f"{int((~keep).sum())} rows without a label left out")
        frame, y = frame[keep], y[keep]  # the index keeps each row's file and line for messages
    if supervised and not 0 < np.sum(y) < len(y):
        raise AitkError(f"{data}: label column {columns.label!r} needs both fraud (1) and legitimate (0) rows")
    train_rows, val_rows = split(frame, y, columns.time, config, data)
    prep = fdata.Preprocessing.fit(frame.iloc[train_rows], columns, config.min_category_count, config.max_categories)
    numeric, categorical = prep.encode_checked(frame, data)
    logger.info(
        f"{len(frame)} rows ({len(train_rows)} train, {len(val_rows)} validation"
        + (f", {int(y.sum())} frauds" if y is not None else "")
        + f"); {len(columns.numeric)} numeric, {len(columns.categorical)} categorical features"
        + (f"; split by {columns.time}" if columns.time else "")
    )
    device = runtime.torch_device()
    net = build(config.model, prep.numeric, prep.vocab_sizes, config)
    model = FraudModel(net, bool(columns.numeric), bool(columns.categorical))
    tensors = (torch.from_numpy(numeric), torch.from_numpy(categorical))
    y_val = y[val_rows] if y is not None else None
    if y_val is not None and not 0 < y_val.sum() < len(y_val):
        y_val = None  # an autoencoder's validation rows without both classes: no labels to stop or calibrate on
    if supervised:
        pos_weight = positive_weight(config, y, train_rows)
        history = fit_classifier(net, tensors, y, train_rows, val_rows, pos_weight, config, device)
    else:
        normal = train_rows if y is None else train_rows[y[train_rows] == 0]
        history = fit_autoencoder(net, tensors, normal, val_rows, y_val, config, device)
    net.to("cpu").eval()
    operating = operating_point(model, raw_scores(net, tensors, val_rows), y_val, config)
    result = train_result(config, model, prep, tensors, val_rows, operating)
    result.history = history
    if supervised and not config.pos_weight:
        result.resolved = {"pos_weight": pos_weight}  # the weight the data gave: on the card and in `aitk bundle info`
    return result


def operating_point(model: FraudModel, raw_val: np.ndarray, y_val: np.ndarray | None, config: Any) -> dict[str, Any]:
    """Calibrate on the validation rows, then choose the threshold there; returns both with the validation metrics."""
    calibration = calibrate(model, raw_val, y_val, config)
    score_val = torch.sigmoid(model.a * torch.from_numpy(raw_val) + model.b).numpy()
    if y_val is not None:
        threshold, rule = metrics.choose_threshold(
            y_val, score_val, config.negative_weight, config.target_precision, config.target_recall, config.cost_fn, config.cost_fp
        )
        validation = metrics.summary(y_val, score_val, threshold, config.negative_weight, config.cost_fn or 1.0, config.cost_fp or 1.0)
    else:
        threshold, rule = 0.5, f"anomaly_rate {config.anomaly_rate:g} of validation rows"
        validation = {"rows": len(raw_val), "flagged": float(np.mean(score_val >= threshold))}
    logger.info(f"threshold {threshold:.4g} ({rule}); validation " + " ".join(f"{k}={v:.4g}" for k, v in validation.items() if isinstance(v, float)))
    return {"calibration": calibration, "threshold": threshold, "rule": rule, "validation": validation}


def split(frame, y: np.ndarray | None, time: str | None, config: Any, source: Path) -> tuple[np.ndarray, np.ndarray]:
    """Validation is the latest ``val_fraction`` of rows by time (a random stratified share without a time column)."""
    n = len(frame)
    n_val = max(1, int(round(n * config.val_fraction)))
    if n - n_val < 2:
        raise AitkError(f"{source}: {n} rows are too few to train and validate on")
    if time:
        order = fdata.time_order(frame, time, source)
        train_rows, val_rows = order[: n - n_val], order[n - n_val :]
        if y is None or (0 < y[val_rows].sum() < len(val_rows) and y[train_rows].sum() > 0):
            return np.sort(train_rows), np.sort(val_rows)
        logger.warning("the time split leaves training or validation without one of the classes; splitting at random instead")
    rng = np.random.default_rng(config.seed)
    if y is None:
        rows = rng.permutation(n)
        return np.sort(rows[n_val:]), np.sort(rows[:n_val])
    val_rows = []
    for cls in (0, 1):
        members = rng.permutation(np.flatnonzero(y == cls))
        val_rows.extend(members[: max(1, int(round(len(members) * config.val_fraction)))] if len(members) > 1 else [])
    val_rows = np.sort(np.array(val_rows, dtype=np.int64))
    train_rows = np.setdiff1d(np.arange(n), val_rows)
    if y[train_rows].sum() == 0:
        raise AitkError(f"{source}: no fraud (label 1) rows to learn from")
    return train_rows, val_rows


def batches(rows: np.ndarray, size: int, generator: np.random.Generator):
    rows = generator.permutation(rows)
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def raw_scores(net, tensors, rows: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """The network's uncalibrated scores for ``rows`` (on CPU, eval mode)."""
    net.eval()
    parts = []
    with torch.no_grad():
        for start in range(0, len(rows), chunk):
            index = torch.from_numpy(rows[start : start + chunk])
            parts.append(net(tensors[0][index], tensors[1][index]).numpy())
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def positive_weight(config: Any, y: np.ndarray, train_rows: np.ndarray) -> float:
    """The loss weight of a fraud row: ``pos_weight`` when set, else legitimate / fraud training rows."""
    positives = float(y[train_rows].sum())
    return float(config.pos_weight or (len(train_rows) - positives) / max(positives, 1.0))


def fit_classifier(net, tensors, y: np.ndarray, train_rows: np.ndarray, val_rows: np.ndarray, pos_weight: float, config: Any,
                   device: str) -> list[dict[str, float]]:
    """Trains ``net`` with early stopping on validation PR-AUC, a fraud row weighing ``pos_weight``
    in the loss; returns the per-epoch history."""
    labels = torch.from_numpy(y.astype(np.float32))

    def loss(index: torch.Tensor) -> torch.Tensor:
        target = labels[index].to(device)
        logits = net(tensors[0][index].to(device), tensors[1][index].to(device))
        weight = 1.0 + (pos_weight - 1.0) * target
        if config.loss == "focal":
            return focal_loss(logits, target, weight, config.focal_gamma)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, target, weight=weight)

    def validate() -> dict[str, float]:
        return {"val_pr_auc": metrics.pr_auc(y[val_rows], _scores_on_cpu(net, tensors, val_rows, device), config.negative_weight)}

    result = _fit(net, train_rows, loss, validate, "val_pr_auc", "max", config, device)
    logger.info(f"best epoch {result.best_epoch}: validation PR-AUC {result.best:.4f}")
    return result.history


def fit_autoencoder(net, tensors, train_rows: np.ndarray, val_rows: np.ndarray, y_val: np.ndarray | None, config: Any, device: str) -> list[dict[str, float]]:
    """Learns to reconstruct (mostly) legitimate rows; stops on validation PR-AUC when labels exist,
    else on validation error. Returns the per-epoch history."""

    def loss(index: torch.Tensor) -> torch.Tensor:
        return net.errors(tensors[0][index].to(device), tensors[1][index].to(device)).mean()

    def validate() -> dict[str, float]:
        raw = _scores_on_cpu(net, tensors, val_rows, device)
        if y_val is not None:
            return {"val_pr_auc": metrics.pr_auc(y_val, raw, config.negative_weight)}
        return {"val_error": float(np.mean(np.exp(raw)))}

    monitor, mode = ("val_pr_auc", "max") if y_val is not None else ("val_error", "min")
    result = _fit(net, train_rows, loss, validate, monitor, mode, config, device)
    logger.info(f"best epoch {result.best_epoch}")
    return result.history


def _fit(net, train_rows: np.ndarray, loss_fn, validate, monitor: str, mode: str, config: Any, device: str) -> applied_aitk.train.FitResult:
    """AdamW over shuffled batches of ``train_rows`` through the shared loop (applied_aitk.train.fit)."""
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    generator = np.random.default_rng(config.seed)

    def step(rows: np.ndarray) -> float:
        loss = loss_fn(torch.from_numpy(rows))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    net.to(device)
    return applied_aitk.train.fit(
        net, lambda epoch: batches(train_rows, config.batch_size, generator), step, validate, epochs=config.epochs,
        monitor=monitor, mode=mode, patience=config.patience, max_steps=config.max_steps, max_time=config.max_time,
    )


def _scores_on_cpu(net, tensors, rows: np.ndarray, device: str) -> np.ndarray:
    """Validation scores, computed on the CPU as the exported model is; the net goes back to ``device``."""
    scores = raw_scores(net.to("cpu"), tensors, rows)
    net.to(device)
    return scores


def calibrate(model: FraudModel, raw: np.ndarray, y: np.ndarray | None, config: Any) -> dict[str, Any]:
    """Set the model's score map ``sigmoid(a * raw + b)``.

    With labels: Platt scaling on validation, legitimate rows weighted by ``negative_weight`` so
    probabilities are at the real fraud rate. Without: 0.5 at the ``anomaly_rate`` quantile of
    validation errors (a ranking score, not a probability)."""
    if y is None:
        cut = float(np.quantile(raw, 1 - config.anomaly_rate))
        spread = float(raw.std()) or 1.0
        a, b = 1.0 / spread, -cut / spread
        method = "anomaly quantile"
    else:
        a, b = platt(raw, y, config.negative_weight)
        method = "platt"
    model.a.fill_(a)
    model.b.fill_(b)
    return {"method": method, "a": a, "b": b}


def platt(raw: np.ndarray, y: np.ndarray, negative_weight: float, l2: float = 1e-3) -> tuple[float, float]:
    """a, b minimising the weighted log-loss of ``sigmoid(a * raw + b)`` (a small L2 on ``a`` keeps a separable validation set finite)."""
    x = torch.from_numpy(raw.astype(np.float64))
    t = torch.from_numpy(y.astype(np.float64))
    w = torch.from_numpy(metrics.weights(y, negative_weight))
    w = w / w.sum()
    params = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([params], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        logits = params[0] * x + params[1]
        loss = (w * torch.nn.functional.binary_cross_entropy_with_logits(logits, t, reduction="none")).sum() + l2 * params[0] ** 2
        loss.backward()
        return loss

    optimizer.step(closure)
    a, b = params.detach().tolist()
    return float(a), float(b)


def parity_inputs(tensors, rows: np.ndarray, n: int = 37) -> tuple[torch.Tensor, torch.Tensor]:
    """Validation rows with some numeric cells blanked and some categories set to OOV, to exercise the graph's paths."""
    index = torch.from_numpy(rows[:n])
    numeric, categorical = tensors[0][index].clone(), tensors[1][index].clone()
    if numeric.numel():
        numeric[::3, ::2] = float("nan")
    if categorical.numel():
        categorical[1::4, :] = fdata.OOV
    return numeric, categorical


def train_result(config: Any, model: FraudModel, prep: fdata.Preprocessing, tensors, val_rows, operating: dict[str, Any]) -> TrainResult:
    model.eval()
    graph = Graph(
        model, graph_inputs(model, tuple(t[:2] for t in tensors)), model.input_names(), ["score", "logit"],
        parity_inputs=graph_inputs(model, parity_inputs(tensors, val_rows)), atol=1e-3,
        check=lambda variant, path, fp32: int8_report(fp32, path, model, tensors, val_rows) if variant == "int8" else {},
    )
    assets = {
        "preprocessing": "preprocessing.json",
        "architecture": config.model,
        "label": prep.columns.label,
        "time": prep.columns.time,
        "numeric": prep.columns.numeric,
        "categorical": prep.columns.categorical,
        "threshold": operating["threshold"],
        "threshold_rule": operating["rule"],
        "calibration": operating["calibration"],
        "negative_weight": config.negative_weight,
        "cost_fn": config.cost_fn,
        "cost_fp": config.cost_fp,
    }
    return TrainResult([graph], model.state_dict(), assets, {"preprocessing.json": prep.to_json()}, {"validation": operating["validation"]})


def graph_inputs(model: FraudModel, pair: tuple) -> tuple:
    """The (numeric, categorical) pair cut down to the inputs the graph has."""
    return tuple(t for t, present in zip(pair, (model.has_numeric, model.has_categorical)) if present)


def int8_report(fp32: Path, int8: Path, model: FraudModel, tensors, val_rows) -> dict[str, Any]:
    """The int8 graph's largest score difference from fp32 on the validation rows."""
    runtime = Runtime(device="cpu")
    rows = torch.from_numpy(val_rows)
    feeds = dict(zip(model.input_names(), (t.numpy() for t in graph_inputs(model, (tensors[0][rows], tensors[1][rows])))))
    diff = float(np.max(np.abs(runtime.session(fp32).run(feeds)[0] - runtime.session(int8).run(feeds)[0]))) if len(val_rows) else 0.0
    logger.info(f"int8 model: max score difference from fp32 on validation {diff:.4g}")
    return {"max_abs_score_diff_vs_fp32": diff, "rows": len(val_rows)}
