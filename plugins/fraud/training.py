"""Training: split by time, fit preprocessing, train with early stopping on validation PR-AUC,
calibrate, choose the threshold, export to ONNX (parity-checked) and write the bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

import toolkit
from toolkit import onnx_export
from toolkit.bundle import Bundle, BundleWriter
from toolkit.console import log
from toolkit.errors import AitkError
from toolkit.runtime import Runtime
from toolkit.train import EarlyStopping, log_epoch, seed_everything

from plugins.fraud import data as fdata
from plugins.fraud import metrics
from plugins.fraud.model import ARCHITECTURES, FraudModel, build, focal_loss


def check_config(config: Any) -> Any:
    """Validate the settings; thresholds and costs given as text (``--set``) become numbers."""
    for key in ("target_precision", "target_recall", "cost_fn", "cost_fp"):
        value = getattr(config, key)
        if value is not None and value != "":
            try:
                setattr(config, key, float(value))
            except (TypeError, ValueError):
                raise AitkError(f"setting {key}={value!r}: expected a number") from None
        else:
            setattr(config, key, None)
    if config.model not in ARCHITECTURES:
        raise AitkError(f"setting model={config.model!r}: expected one of {', '.join(ARCHITECTURES)}")
    if config.loss not in ("weighted", "focal"):
        raise AitkError(f"setting loss={config.loss!r}: expected weighted or focal")
    for key in ("target_precision", "target_recall"):
        value = getattr(config, key)
        if value is not None and not 0 < value <= 1:
            raise AitkError(f"--{key.replace('_', '-')} {value}: expected a number in (0, 1]")
    rules = [config.target_precision is not None, config.target_recall is not None, config.cost_fn is not None or config.cost_fp is not None]
    if sum(rules) > 1:
        raise AitkError("choose the threshold by one rule: --target-precision, --target-recall, or --cost-fn/--cost-fp")
    if not 0 < config.val_fraction < 1:
        raise AitkError(f"setting val_fraction={config.val_fraction}: expected a number in (0, 1)")
    return config


def train(data: Path, out: Path, config: Any, runtime: Runtime) -> Bundle:
    config = check_config(config)
    seed_everything(config.seed)
    frame = fdata.read_table(data)
    supervised = config.model != "autoencoder"
    columns = fdata.resolve_columns(frame, config, data, need_label=supervised)
    fdata.check_numeric(frame, columns.numeric, data)
    y = fdata.labels(frame, columns.label, data) if columns.label else None
    if y is not None and np.isnan(y).any():
        keep = ~np.isnan(y)
        log(f"{int((~keep).sum())} rows without a label left out")
        frame, y = frame[keep].reset_index(drop=True), y[keep]
    if supervised and not 0 < np.sum(y) < len(y):
        raise AitkError(f"{data}: label column {columns.label!r} needs both fraud (1) and legitimate (0) rows")
    train_rows, val_rows = split(frame, y, columns.time, config, data)
    prep = fdata.Preprocessing.fit(frame.iloc[train_rows], columns, config.min_category_count, config.max_categories)
    numeric, categorical = prep.encode_checked(frame, data)
    log(
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
        fit_classifier(net, tensors, y, train_rows, val_rows, config, device)
    else:
        normal = train_rows if y is None else train_rows[y[train_rows] == 0]
        fit_autoencoder(net, tensors, normal, val_rows, y_val, config, device)
    net.to("cpu").eval()
    operating = operating_point(model, raw_scores(net, tensors, val_rows), y_val, config)
    return write_bundle(out, config, runtime, model, prep, tensors, val_rows, operating)


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
    log(f"threshold {threshold:.4g} ({rule}); validation " + " ".join(f"{k}={v:.4g}" for k, v in validation.items() if isinstance(v, float)))
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
        log("warning: the time split leaves training or validation without one of the classes; splitting at random instead")
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


def fit_classifier(net, tensors, y: np.ndarray, train_rows: np.ndarray, val_rows: np.ndarray, config: Any, device: str) -> None:
    positives = float(y[train_rows].sum())
    pos_weight = config.pos_weight or (len(train_rows) - positives) / max(positives, 1.0)
    labels = torch.from_numpy(y.astype(np.float32))
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    stopper = EarlyStopping(patience=config.patience, mode="max")
    generator = np.random.default_rng(config.seed)
    for epoch in range(config.epochs):
        net.to(device).train()
        total = 0.0
        for rows in batches(train_rows, config.batch_size, generator):
            index = torch.from_numpy(rows)
            target = labels[index].to(device)
            logits = net(tensors[0][index].to(device), tensors[1][index].to(device))
            weight = 1.0 + (pos_weight - 1.0) * target
            if config.loss == "focal":
                loss = focal_loss(logits, target, weight, config.focal_gamma)
            else:
                loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, weight=weight)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(rows)
        net.to("cpu")
        val_pr_auc = metrics.pr_auc(y[val_rows], raw_scores(net, tensors, val_rows), config.negative_weight)
        log_epoch(epoch, config.epochs, loss=total / len(train_rows), val_pr_auc=val_pr_auc)
        if stopper.step(val_pr_auc, net, epoch):
            break
    stopper.restore_best(net)
    log(f"best epoch {stopper.best_epoch + 1}: validation PR-AUC {stopper.best:.4f}")


def fit_autoencoder(net, tensors, train_rows: np.ndarray, val_rows: np.ndarray, y_val: np.ndarray | None, config: Any, device: str) -> None:
    """Learns to reconstruct (mostly) legitimate rows; stops on validation PR-AUC when labels exist, else on validation error."""
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    stopper = EarlyStopping(patience=config.patience, mode="max" if y_val is not None else "min")
    generator = np.random.default_rng(config.seed)
    for epoch in range(config.epochs):
        net.to(device).train()
        total = 0.0
        for rows in batches(train_rows, config.batch_size, generator):
            index = torch.from_numpy(rows)
            loss = net.errors(tensors[0][index].to(device), tensors[1][index].to(device)).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(rows)
        net.to("cpu")
        raw = raw_scores(net, tensors, val_rows)
        if y_val is not None:
            value = metrics.pr_auc(y_val, raw, config.negative_weight)
            log_epoch(epoch, config.epochs, loss=total / len(train_rows), val_pr_auc=value)
        else:
            value = float(np.mean(np.exp(raw)))
            log_epoch(epoch, config.epochs, loss=total / len(train_rows), val_error=value)
        if stopper.step(value, net, epoch):
            break
    stopper.restore_best(net)
    log(f"best epoch {stopper.best_epoch + 1}")


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


def write_bundle(out: Path, config: Any, runtime: Runtime, model: FraudModel, prep: fdata.Preprocessing, tensors, val_rows, operating: dict[str, Any]) -> Bundle:
    model.eval()
    names = model.input_names()
    example = graph_inputs(model, tuple(t[:2] for t in tensors))
    parity = graph_inputs(model, parity_inputs(tensors, val_rows))
    with BundleWriter(out, usecase="fraud", plugin_version=toolkit.__version__, config=config) as w:
        w.manifest["model"] = onnx_export.export(
            model, example, w.path("model.onnx"), names, ["score", "logit"], parity_inputs=parity, atol=1e-3, fp16=runtime.fp16
        )
        if runtime.int8:
            w.manifest["model_int8"] = quantize(w.path("model.onnx"), w.path("model.int8.onnx"), model, tensors, val_rows)
        w.write_weights(model.state_dict())
        w.write_json("preprocessing.json", prep.to_json())
        w.manifest["assets"] = {
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
        w.manifest["metrics"] = {"validation": operating["validation"]}
        return w.commit()


def graph_inputs(model: FraudModel, pair: tuple) -> tuple:
    """The (numeric, categorical) pair cut down to the inputs the graph has."""
    return tuple(t for t, present in zip(pair, (model.has_numeric, model.has_categorical)) if present)


def quantize(src: Path, dst: Path, model: FraudModel, tensors, val_rows) -> dict[str, Any]:
    """int8 dynamic quantization; records its largest score difference from fp32 on validation rows."""
    import logging

    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's advice to pre-process does not apply to an MLP
    try:
        onnx_export.quantize_dynamic(src, dst)
    finally:
        logging.getLogger().setLevel(quiet)
    runtime = Runtime(device="cpu")
    rows = torch.from_numpy(val_rows)
    feeds = dict(zip(model.input_names(), (t.numpy() for t in graph_inputs(model, (tensors[0][rows], tensors[1][rows])))))
    fp32 = runtime.session(src).run(feeds)[0]
    int8 = runtime.session(dst).run(feeds)[0]
    diff = float(np.max(np.abs(fp32 - int8))) if len(fp32) else 0.0
    log(f"int8 model: max score difference from fp32 on validation {diff:.4g}")
    return {"file": dst.name, "max_abs_score_diff_vs_fp32": diff, "rows": len(val_rows)}
