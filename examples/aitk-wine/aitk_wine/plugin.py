"""The `wine` use case: a tabular classifier trained on a CSV with a label column.

Module level imports stay light (stdlib and toolkit): aitk imports every plugin to build its CLI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from applied_aitk import AitkError, Graph, Predictor, Sample, TrainResult, UseCase, hookimpl
from applied_aitk.bundle import Bundle
from applied_aitk.runtime import Runtime
from applied_aitk.settings import setting
from applied_aitk.table_predictor import TABLE_SUFFIXES, TablePredictor

from aitk_wine import data

if TYPE_CHECKING:
    from applied_aitk.columns import Columns  # numpy and orjson: imported where predictions are made


@dataclass
class Config:
    """The training settings (`train --help` shows them; --set and --config change them)."""

    label: str = setting("label", "The label column of the CSV.")
    hidden_size: int = setting(64, "Hidden units of the MLP.", ge=1)
    epochs: int = setting(300, "Passes over the training rows (one full-batch step each).", ge=1)
    learning_rate: float = setting(0.01, "Adam learning rate.", gt=0)
    val_fraction: float = setting(0.2, "Share of rows held out for early stopping.", gt=0, lt=1)
    patience: int = setting(30, "Epochs without a lower validation loss before stopping (0: never early).", ge=0)
    max_steps: int = setting(0, "Stop after this many optimizer steps (0: no limit).", ge=0)
    max_time: float = setting(0.0, "Stop after this many seconds of training (0: no limit).", ge=0)
    seed: int = setting(0, "Seed of the split and the initial weights.")

    deprecated_names: ClassVar[dict[str, str]] = {"hidden": "hidden_size", "lr": "learning_rate"}


class Wine(UseCase):
    name = "wine"
    summary = "Tabular classification: a CSV with numeric features and a label column."
    Config = Config
    input_suffixes = TABLE_SUFFIXES
    asset_types = {"features": list[str], "classes": list[str], "label": str, "ranges": list[list[float]] | None}
    model_card = """## Intended use

Classifying rows of a table like the training CSV (the same numeric feature columns) into the
labels seen in training, with a probability per label. A small MLP: a baseline to start from.

## Limitations

- Only the labels of the training data can be predicted; rows unlike the training data (values far
  outside its ranges) are scored at the edge of those ranges, with a warning, and may be wrong.
- The probabilities are the network's softmax, not calibrated on held-out data.
- Accuracy on other data than the evaluation set is unknown: evaluate on your own labelled rows.
"""

    def sample(self, out: Path) -> Sample:
        train, test, predict = data.write_sample(out)
        return Sample(train=train, evaluate=test, predict=[predict])

    def train(self, data_path: Path, out: Path, config: Config, runtime: Runtime) -> TrainResult:
        import numpy as np
        import torch

        from applied_aitk.ranges import value_ranges
        from applied_aitk.train import seed_everything

        seed_everything(config.seed)
        x, labels, features = data.read_table(data_path, config.label)
        classes = sorted(set(labels))
        y = np.array([classes.index(label) for label in labels])
        model, history = fit(x, y, len(classes), config)
        graph = Graph(model, (torch.from_numpy(x[:4]),), ["features"], ["probabilities"],
                      parity_inputs=(torch.from_numpy(x[:7]),), label_output="probabilities")
        return TrainResult(
            graphs=[graph],
            weights=model.state_dict(),
            assets={"features": features, "classes": classes, "label": config.label, "ranges": value_ranges(x)},
            metrics={"train_accuracy": float((model(torch.from_numpy(x)).argmax(-1).numpy() == y).mean())},
            history=history,
        )

    def evaluate(self, bundle: Bundle, data_path: Path, runtime: Runtime, report: Path | None = None) -> dict[str, Any]:
        import numpy as np
        from sklearn.metrics import accuracy_score, f1_score

        from applied_aitk.tables import table_data

        x, labels, _ = data.read_table(data_path, bundle.assets["label"])  # AitkError when it has no rows
        unknown = [label for label in labels if label not in bundle.assets["classes"]]
        if unknown:  # it could only be counted wrong: a score of the model's vocabulary, not of the data
            raise AitkError(f"{data_path}: label {unknown[0]!r} is not one the bundle was trained on "
                            f"({len(unknown)} unknown in all; trained on {', '.join(bundle.assets['classes'])})")
        predictor = self.load(bundle, runtime)
        predicted = [row["label"] for row in predictor.predict_batch(table_data(x))]
        majority = max(set(labels), key=labels.count)
        return {
            "accuracy": accuracy_score(labels, predicted),
            "macro_f1": f1_score(labels, predicted, average="macro"),
            "majority_baseline_accuracy": float(np.mean([label == majority for label in labels])),
            "rows": len(labels),
        }

    def load(self, bundle: Bundle, runtime: Runtime) -> Predictor:
        return ClassifierPredictor(bundle, runtime)


class ClassifierPredictor(TablePredictor):
    """Table rows in (the core reads and checks them, a batch at a time), a label and probabilities out."""

    def __init__(self, bundle: Bundle, runtime: Runtime):
        from applied_aitk.ranges import TrainingRanges
        from applied_aitk.tables import Schema

        self.session = runtime.session(runtime.model_file(bundle))
        self.provider = self.session.provider
        self.classes = bundle.assets["classes"]
        self.features = bundle.assets["features"]
        self.ranges = TrainingRanges(self.features, bundle.assets.get("ranges"))
        self.columns = Schema(tuple(self.features))

    def schema(self):
        """The feature columns, read as float32 (a missing or non-finite cell is an error row)."""
        return self.columns

    def predict_columns(self, data: dict[str, Any]) -> Columns:
        """Per row of ``data["numbers"]`` (float32 [rows, features]): label, its probability, all
        probabilities (rounded to 6 places), as columns: batch `predict` writes them as JSON lines
        with no Python object per row; ``predict_batch`` (`aitk serve`) makes the rows from them."""
        import numpy as np

        from applied_aitk.columns import Columns

        x, warnings = self.ranges.clip(data["numbers"])
        (probabilities,) = self.session(x)
        best = probabilities.argmax(-1)
        rounded = np.round(probabilities.astype(np.float64), 6)
        return Columns(
            {"label": [self.classes[i] for i in best.tolist()],
             "probability": probabilities[np.arange(len(best)), best],
             "probabilities": {name: rounded[:, j] for j, name in enumerate(self.classes)}},
            extra={i: {"warnings": warning} for i, warning in enumerate(warnings) if warning},
        )

def fit(x, y, n_classes: int, config: Config):
    """Full-batch Adam with early stopping on a held-out fraction; returns the best model and the
    per-epoch history (loss, val_loss), which the bundle keeps as history.csv."""
    import torch

    from applied_aitk import train

    from aitk_wine.model import TabularClassifier

    order = torch.randperm(len(x))
    n_val = max(1, int(len(x) * config.val_fraction))
    val, tr = order[:n_val], order[n_val:]
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y).long()
    model = TabularClassifier(x.shape[1], n_classes, config.hidden_size)
    model.mean.copy_(x_t[tr].mean(0))
    model.std.copy_(x_t[tr].std(0).clamp_min(1e-6))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(rows) -> float:
        optimizer.zero_grad()
        loss = loss_fn(model.logits(x_t[rows]), y_t[rows])
        loss.backward()
        optimizer.step()
        return loss.item()

    @torch.no_grad()
    def validate() -> dict[str, float]:
        model.eval()
        return {"val_loss": loss_fn(model.logits(x_t[val]), y_t[val]).item()}

    result = train.fit(
        model, lambda epoch: [tr], step, validate, epochs=config.epochs, patience=config.patience,
        max_steps=config.max_steps, max_time=config.max_time, log_every=50,
    )
    return model.eval(), result.history


@hookimpl
def register_usecases(register):
    register(Wine())
