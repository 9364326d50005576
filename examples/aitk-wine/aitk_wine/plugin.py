"""The `wine` use case: a tabular classifier trained on a CSV with a label column.

Module level imports stay light (stdlib and toolkit): aitk imports every plugin to build its CLI."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit import Predictor, Record, Sample, UseCase, __version__, hookimpl
from toolkit.bundle import Bundle, BundleWriter
from toolkit.runtime import Runtime

from aitk_wine import data


@dataclass
class Config:
    label: str = "label"
    hidden: int = 64
    epochs: int = 300
    lr: float = 0.01
    val_fraction: float = 0.2
    patience: int = 30
    seed: int = 0


class Wine(UseCase):
    name = "wine"
    summary = "Tabular classification: a CSV with numeric features and a label column."
    Config = Config
    input_suffixes = (".csv",)

    def sample(self, out: Path) -> Sample:
        train, test, predict = data.write_sample(out)
        return Sample(train=train, evaluate=test, predict=[predict])

    def train(self, data_path: Path, out: Path, config: Config, runtime: Runtime) -> Bundle:
        import numpy as np
        import torch

        from toolkit import onnx_export
        from toolkit.train import seed_everything

        from aitk_wine.model import TabularClassifier

        seed_everything(config.seed)
        x, labels, features = data.read_table(data_path, config.label)
        classes = sorted(set(labels))
        y = np.array([classes.index(label) for label in labels])
        model = fit(x, y, len(classes), config)
        with BundleWriter(out, usecase=self.name, plugin_version=__version__, config=config) as bundle:
            example = torch.from_numpy(x[:4])
            bundle.manifest["model"] = onnx_export.export(
                model, (example,), bundle.path("model.onnx"), ["features"], ["probabilities"],
                parity_inputs=(torch.from_numpy(x[:7]),), label_output="probabilities", fp16=runtime.fp16,
            )
            if runtime.int8:
                onnx_export.quantize_dynamic(bundle.path("model.onnx"), bundle.path("model.int8.onnx"))
            bundle.write_weights(model.state_dict())
            bundle.manifest["assets"] = {"features": features, "classes": classes, "label": config.label}
            bundle.manifest["metrics"] = {"train_accuracy": float((model(torch.from_numpy(x)).argmax(-1).numpy() == y).mean())}
            return bundle.commit()

    def evaluate(self, bundle: Bundle, data_path: Path, runtime: Runtime, report: Path | None = None) -> dict[str, Any]:
        import numpy as np
        from sklearn.metrics import accuracy_score, f1_score

        x, labels, _ = data.read_table(data_path, bundle.assets["label"])
        predictor = self.load(bundle, runtime)
        predicted = [row["label"] for row in predictor.predict(list(x))]
        majority = max(set(labels), key=labels.count)
        return {
            "accuracy": accuracy_score(labels, predicted),
            "macro_f1": f1_score(labels, predicted, average="macro"),
            "majority_baseline_accuracy": float(np.mean([label == majority for label in labels])),
            "rows": len(labels),
        }

    def load(self, bundle: Bundle, runtime: Runtime) -> Predictor:
        return ClassifierPredictor(bundle, runtime)


class ClassifierPredictor(Predictor):
    def __init__(self, bundle: Bundle, runtime: Runtime):
        self.session = runtime.session(runtime.model_file(bundle))
        self.provider = self.session.provider
        self.classes = bundle.assets["classes"]
        self.features = bundle.assets["features"]

    def read(self, paths: Iterable[Path]) -> Iterator[Record]:
        return data.read_records(paths)

    def decode(self, record: Record) -> list[float]:
        return data.row_features(record.data, self.features)

    def predict(self, inputs: list) -> list[dict[str, Any]]:
        import numpy as np

        (probabilities,) = self.session(np.asarray(inputs, dtype=np.float32))
        return [
            {"label": self.classes[int(p.argmax())], "probability": float(p.max()),
             "probabilities": {c: round(float(v), 6) for c, v in zip(self.classes, p)}}
            for p in probabilities
        ]


def fit(x, y, n_classes: int, config: Config):
    """Full-batch Adam with early stopping on a held-out fraction; returns the best model."""
    import torch

    from toolkit.train import EarlyStopping, log_epoch

    from aitk_wine.model import TabularClassifier

    order = torch.randperm(len(x))
    n_val = max(1, int(len(x) * config.val_fraction))
    val, tr = order[:n_val], order[n_val:]
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y).long()
    model = TabularClassifier(x.shape[1], n_classes, config.hidden)
    model.mean.copy_(x_t[tr].mean(0))
    model.std.copy_(x_t[tr].std(0).clamp_min(1e-6))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    stopper = EarlyStopping(patience=config.patience)
    for epoch in range(config.epochs):
        model.train()
        optimizer.zero_grad()
        loss = loss_fn(model.logits(x_t[tr]), y_t[tr])
        loss.backward()
        optimizer.step()
        model.eval()
        with torch.no_grad():
            val_loss = loss_fn(model.logits(x_t[val]), y_t[val]).item()
        if epoch % 50 == 0:
            log_epoch(epoch, config.epochs, loss=loss.item(), val_loss=val_loss)
        if stopper.step(val_loss, model, epoch):
            break
    stopper.restore_best(model)
    return model.eval()


@hookimpl
def register_usecases(register):
    register(Wine())
