"""The `fraud` use case: score, flag and explain transactions with a tabular deep model.

Only stdlib and toolkit imports at module level: numpy, pandas and torch load inside the commands."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit import AitkError, Predictor, Sample, UseCase, hookimpl
from toolkit.usecase import Option

SAMPLE = Path(__file__).parent / "sample_data" / "creditcard_sample.csv"


@dataclass
class FraudConfig:
    label: str = ""
    """Label column (1 = fraud); empty: "Class" if present, else "label"."""
    time: str = ""
    """Time column for the time-ordered validation split; empty: Time/time/timestamp if present; "none": random split."""
    numeric: str = ""
    """Numeric feature columns, comma-separated; the rest are detected."""
    categorical: str = ""
    """Categorical feature columns, comma-separated; the rest are detected."""
    ignore: str = ""
    """Columns that are not features (ids, free text), comma-separated."""
    model: str = "mlp"
    """mlp, ft_transformer, or autoencoder (no labels needed: the reconstruction error is the score)."""
    width: int = 128
    """Hidden width (mlp, autoencoder) or token width (ft_transformer)."""
    layers: int = 2
    """Hidden layers (mlp, autoencoder) or transformer blocks (ft_transformer)."""
    heads: int = 4
    embedding_dim: int = 8
    dropout: float = 0.1
    loss: str = "weighted"
    """weighted (class-weighted cross-entropy) or focal."""
    pos_weight: float = 0.0
    """Weight of a fraud row in the loss; 0: legitimate / fraud rows in the training data."""
    focal_gamma: float = 2.0
    epochs: int = 200
    patience: int = 20
    """Epochs without a better validation PR-AUC before stopping."""
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.2
    """Share of rows (the latest, by time) held out for early stopping, calibration and the threshold."""
    min_category_count: int = 2
    """Categories seen fewer times share the out-of-vocabulary bucket."""
    max_categories: int = 1000
    anomaly_rate: float = 0.01
    """autoencoder without labels: the share of validation rows the threshold flags."""
    target_precision: float | None = None
    target_recall: float | None = None
    cost_fn: float | None = None
    cost_fp: float | None = None
    negative_weight: float = 1.0
    """Weight of a legitimate row when the data is under-sampled (calibration, threshold, PR-AUC)."""
    seed: int = 0


class Fraud(UseCase):
    name = "fraud"
    summary = "Fraud detection on transaction tables: a calibrated, thresholded, explained score per row."
    Config = FraudConfig
    input_suffixes = (".csv", ".parquet")
    options = {
        "train": [
            Option("target_precision", float, None, "choose the threshold with this precision on validation (most recall)"),
            Option("target_recall", float, None, "choose the threshold with this recall on validation (fewest alerts)"),
            Option("cost_fn", float, None, "cost of a missed fraud; with --cost-fp, choose the least-cost threshold"),
            Option("cost_fp", float, None, "cost of a false alert"),
            Option("negative_weight", float, None, "weight of a legitimate row when they are under-sampled (e.g. 115.6)"),
        ],
        "evaluate": [
            Option("negative_weight", float, None, "weight of a legitimate row (default: the training setting)"),
            Option("cost_fn", float, None, "cost of a missed fraud (default: the training setting, else 1)"),
            Option("cost_fp", float, None, "cost of a false alert (default: the training setting, else 1)"),
            Option("threshold", float, None, "flag scores at or above this (default: the bundle's threshold)"),
        ],
        "predict": [
            Option("explain", int, 3, "top features per row that drove the score (0: none, faster)"),
            Option("threshold", float, None, "flag scores at or above this (default: the bundle's threshold)"),
            Option("keep", str, None, "columns to copy into each output row, comma-separated (e.g. an id)"),
        ],
    }

    def sample(self, out: Path) -> Sample:
        """500 ULB transactions split by time: the first 70% to train on, the rest to evaluate and predict."""
        out.mkdir(parents=True, exist_ok=True)
        with open(SAMPLE, newline="") as f:
            rows = list(csv.reader(f))
        header, body = rows[0], rows[1:]
        cut = int(len(body) * 0.7)
        _write_csv(out / "train.csv", header, body[:cut])
        _write_csv(out / "evaluate.csv", header, body[cut:])
        label = header.index("Class")
        _write_csv(out / "predict.csv", [c for c in header if c != "Class"], [r[:label] + r[label + 1 :] for r in body[cut:]])
        (out / "ATTRIBUTION.md").write_text((SAMPLE.parent / "ATTRIBUTION.md").read_text())
        return Sample(out / "train.csv", out / "evaluate.csv", [out / "predict.csv"], {"epochs": 60, "patience": 15, "negative_weight": 115.6})

    def train(self, data: Path, out: Path, config: FraudConfig, runtime) -> Any:
        from plugins.fraud.training import train

        return train(Path(data), Path(out), config, runtime)

    def evaluate(self, bundle, data: Path, runtime, report: Path | None = None, **options: Any) -> dict[str, Any]:
        import numpy as np

        from plugins.fraud import data as fdata
        from plugins.fraud import metrics
        from plugins.fraud.scoring import Scorer

        scorer = Scorer(bundle, runtime)
        frame = fdata.read_table(Path(data))
        label = bundle.assets["label"] or bundle.config.get("label")
        if not label:  # an autoencoder trained without labels: take the usual label column of this data
            label = next((c for c in fdata.LABEL_DEFAULTS if c in frame.columns), fdata.LABEL_DEFAULTS[0])
        fdata.require(list(frame.columns), label, data)
        y = fdata.labels(frame, label, data)
        score = scorer.score_frame(frame, data)
        keep = ~np.isnan(y)  # rows without a label are scored (a bad cell is still an error) but not counted
        if not keep.any():
            raise AitkError(f"{data}: no labelled rows to evaluate")
        y, score = y[keep], score[keep]
        weight = _given(options.get("negative_weight"), bundle.assets.get("negative_weight"), 1.0)
        cost_fn = _given(options.get("cost_fn"), bundle.assets.get("cost_fn"), 1.0)
        cost_fp = _given(options.get("cost_fp"), bundle.assets.get("cost_fp"), 1.0)
        threshold = _given(options.get("threshold"), scorer.threshold, 0.5)
        result = metrics.summary(y, score, threshold, weight, cost_fn, cost_fp)
        result["provider"] = scorer.session.provider
        if report is not None:
            report = Path(report)
            report.mkdir(parents=True, exist_ok=True)
            metrics.plot_pr(y, score, weight, threshold, report / "pr_curve.png", f"{Path(data).name} (negatives x{weight:g})")
            result["pr_curve"] = str(report / "pr_curve.png")
        return result

    def load(self, bundle, runtime, **options: Any) -> Predictor:
        from plugins.fraud import data as fdata
        from plugins.fraud.scoring import FraudPredictor, Scorer

        scorer = Scorer(bundle, runtime)
        keep = fdata.names(options.get("keep"))
        explain = options.get("explain")
        return FraudPredictor(scorer, 3 if explain is None else explain, options.get("threshold"), keep)


def _given(value: Any, trained: Any, default: float) -> float:
    """An option's value, else the bundle's setting, else the default."""
    for candidate in (value, trained):
        if candidate is not None:
            return float(candidate)
    return default


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    tmp.replace(path)


@hookimpl
def register_usecases(register) -> None:
    register(Fraud())

