"""Reading CSV tables: numeric feature columns and a label column."""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from toolkit import AitkError, InputError, Record


def read_table(path: Path, label: str):
    """Features (float32 array), labels (list of str) and feature names of a labelled CSV."""
    import numpy as np
    import pandas as pd

    frame = pd.read_csv(path)
    if label not in frame.columns:
        raise AitkError(f"{path}: no label column {label!r} (columns: {', '.join(frame.columns)})")
    features = [c for c in frame.columns if c != label]
    for column in features:
        if not pd.api.types.is_numeric_dtype(frame[column]):
            raise AitkError(f"{path}: column {column!r} is not numeric")
    if frame[features].isna().any().any():
        raise AitkError(f"{path}: missing values in {', '.join(frame[features].columns[frame[features].isna().any()])}")
    return frame[features].to_numpy(np.float32), frame[label].astype(str).tolist(), features


def read_records(paths: Iterable[Path]) -> Iterator[Record]:
    """One record per CSV row, id ``file:line``; ``-`` reads CSV from stdin."""
    for path in paths:
        with (open(path, newline="", encoding="utf-8") if str(path) != "-" else _stdin()) as f:
            for line, row in enumerate(csv.DictReader(f), start=2):
                yield Record(id=f"{path.name}:{line}", data=row)


def row_features(row: dict[str, str], features: list[str]) -> list[float]:
    """The row's feature values in training order; InputError names the field that is wrong."""
    values = []
    for name in features:
        text = row.get(name)
        if text is None or text == "":
            raise InputError(f"field {name!r}: missing, expected a number")
        try:
            value = float(text)
        except ValueError:
            raise InputError(f"field {name!r}: {text!r} is not a number") from None
        if not math.isfinite(value):
            raise InputError(f"field {name!r}: {text!r} is not a finite number")
        values.append(value)
    return values


def _stdin():
    sys.stdin.reconfigure(newline="")
    return sys.stdin


def write_sample(out: Path) -> tuple[Path, Path, Path]:
    """The UCI wine data (178 wines, 13 chemical measurements, 3 cultivars) split 70/30."""
    from sklearn.datasets import load_wine

    frame = load_wine(as_frame=True).frame.rename(columns={"target": "label"})
    frame["label"] = frame["label"].map(lambda i: f"cultivar_{i}")
    frame = frame.sample(frac=1.0, random_state=0)
    cut = int(len(frame) * 0.7)
    out.mkdir(parents=True, exist_ok=True)
    train, test, predict = out / "train.csv", out / "test.csv", out / "predict.csv"
    frame.iloc[:cut].to_csv(train, index=False)
    frame.iloc[cut:].to_csv(test, index=False)
    frame.iloc[cut:].drop(columns=["label"]).to_csv(predict, index=False)
    (out / "SOURCE.txt").write_text("UCI Wine data set (Forina et al.), CC BY 4.0, as shipped by scikit-learn.\n")
    return train, test, predict
