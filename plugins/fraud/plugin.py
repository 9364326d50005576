"""The `fraud` use case: score, flag and explain transactions with a tabular deep model.

Only stdlib and toolkit imports at module level: numpy, pandas and torch load inside the commands."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from applied_aitk import AitkError, Predictor, Sample, TrainResult, UseCase, hookimpl
from applied_aitk.settings import setting
from applied_aitk.table_predictor import TABLE_SUFFIXES
from applied_aitk.usecase import Option
from applied_aitk.files import atomic_path

SAMPLE = Path(__file__).parent / "sample_data" / "creditcard_sample.csv"


@dataclass
class FraudConfig:
    label: str = setting("", 'Label column (1 = fraud); empty: "Class" if present, else "label".')
    time: str = setting("", 'Time column for the time-ordered validation split; empty: Time/time/timestamp if present; "none": random split.')
    numeric: list[str] = setting([], "Numeric feature columns; the rest are detected.")
    categorical: list[str] = setting([], "Categorical feature columns; the rest are detected.")
    ignore: list[str] = setting([], "Columns that are not features (ids, free text).")
    model: Literal["mlp", "ft_transformer", "autoencoder"] = setting("mlp", "The network; autoencoder needs no labels: the reconstruction error is the score.")
    hidden_size: int = setting(128, "Hidden width (mlp, autoencoder) or token width (ft_transformer).", ge=1)
    num_layers: int = setting(2, "Hidden layers (mlp, autoencoder) or transformer blocks (ft_transformer).", ge=1)
    num_heads: int = setting(4, "Attention heads (ft_transformer); must divide hidden_size.", ge=1)
    embedding_dim: int = setting(8, "Width of a categorical column's embedding (mlp, autoencoder).", ge=1)
    dropout: float = setting(0.1, "Dropout in the hidden layers.", ge=0, lt=1)
    loss: Literal["weighted", "focal"] = setting("weighted", "weighted: class-weighted cross-entropy; focal: focal loss.")
    pos_weight: float = setting(0.0, "Weight of a fraud row in the loss; 0: legitimate / fraud rows in the training data.", ge=0)
    focal_gamma: float = setting(2.0, "Focusing exponent of the focal loss.", ge=0)
    epochs: int = setting(200, "Passes over the training rows.", ge=1)
    patience: int = setting(20, "Epochs without a better validation PR-AUC before stopping (0: never early).", ge=0)
    batch_size: int = setting(256, "Rows per optimizer step.", ge=1)
    learning_rate: float = setting(1e-3, "AdamW learning rate.", gt=0)
    weight_decay: float = setting(1e-4, "AdamW weight decay.", ge=0)
    max_steps: int = setting(20_000, "Stop after this many optimizer steps (0: no limit); bounds training time as the data grows.", ge=0)
    max_time: float = setting(0.0, "Stop after this many seconds of training (0: no limit).", ge=0)
    val_fraction: float = setting(0.2, "Share of rows (the latest, by time) held out for early stopping, calibration and the threshold.", gt=0, lt=1)
    min_category_count: int = setting(2, "Categories seen fewer times share the out-of-vocabulary bucket.", ge=1)
    max_categories: int = setting(1000, "At most this many categories per column (the most frequent).", ge=1)
    anomaly_rate: float = setting(0.01, "autoencoder without labels: the share of validation rows the threshold flags.", gt=0, lt=1)
    target_precision: float | None = setting(None, "Choose the threshold with this precision on validation (most recall).", gt=0, le=1)
    target_recall: float | None = setting(None, "Choose the threshold with this recall on validation (fewest alerts).", gt=0, le=1)
    cost_fn: float | None = setting(None, "Cost of a missed fraud; with cost_fp, choose the least-cost threshold.", ge=0)
    cost_fp: float | None = setting(None, "Cost of a false alert.", ge=0)
    negative_weight: float = setting(1.0, "Weight of a legitimate row when the data is under-sampled (calibration, threshold, PR-AUC).", gt=0)
    seed: int = setting(0, "Seed of the split, the batches and the initial weights.")

    deprecated_names: ClassVar[dict[str, str]] = {"lr": "learning_rate", "width": "hidden_size", "layers": "num_layers", "heads": "num_heads"}

    def __post_init__(self) -> None:
        rules = [self.target_precision is not None, self.target_recall is not None, self.cost_fn is not None or self.cost_fp is not None]
        if sum(rules) > 1:
            raise ValueError("choose the threshold by one rule: --target-precision, --target-recall, or --cost-fn/--cost-fp")
        if self.model == "ft_transformer" and self.hidden_size % self.num_heads:
            raise ValueError(f"setting num_heads={self.num_heads}: expected a divisor of hidden_size={self.hidden_size} (ft_transformer)")


class Fraud(UseCase):
    name = "fraud"
    summary = "Fraud detection on transaction tables: a calibrated, thresholded, explained score per row."
    Config = FraudConfig
    input_suffixes = TABLE_SUFFIXES
    asset_types = {"preprocessing": str, "threshold": float, "label": str | None,
                   "negative_weight": float | None, "cost_fn": float | None, "cost_fp": float | None}
    model_card = """## Intended use

Ranking and flagging transactions of the kind in the training table (the same columns) for review:
a calibrated fraud probability, a decision at the trained threshold and the features that drove it.

## Limitations

- A decision aid for review queues, not an automatic verdict on people: a flagged row is a
  probability, and a missed fraud is possible at any threshold.
- Calibration and the threshold hold for the fraud rate and patterns of the training period;
  fraud changes over time, so re-evaluate on recent labelled data and retrain.
- Values far outside the training ranges are scored at the edge of those ranges, with a warning.
- The explanations are per-feature attributions of this model, not causes.
"""
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
            Option("threshold", float, None, "flag scores at or above this (default: the bundle's threshold)", min=0, max=1),
        ],
        "predict": [
            Option("explain", int, 3, "top features per row that drove the score (0: none, faster)", min=0),
            Option("threshold", float, None, "flag scores at or above this (default: the bundle's threshold)", min=0, max=1),
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

    def train(self, data: Path, out: Path, config: FraudConfig, runtime) -> TrainResult:
        from applied_aitk.usecases.fraud.training import train

        return train(Path(data), config, runtime)

    def evaluate(self, bundle, data: Path, runtime, report: Path | None = None, **options: Any) -> dict[str, Any]:
        import numpy as np

        from applied_aitk.usecases.fraud import data as fdata
        from applied_aitk.usecases.fraud import metrics
        from applied_aitk.usecases.fraud.scoring import Scorer

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
            metrics.plot_threshold(y, score, weight, threshold, cost_fn, cost_fp, report / "threshold.png")
            result["pr_curve"] = str(report / "pr_curve.png")
        return result

    def load(self, bundle, runtime, **options: Any) -> Predictor:
        from applied_aitk.usecases.fraud import data as fdata
        from applied_aitk.usecases.fraud.scoring import FraudPredictor, Scorer

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
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


@hookimpl
def register_usecases(register) -> None:
    register(Fraud())

