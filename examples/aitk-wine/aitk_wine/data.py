"""Reading CSV tables: numeric feature columns and a label column."""

from __future__ import annotations

from pathlib import Path

from applied_aitk import AitkError, shown


def read_table(path: Path, label: str):
    """Features (float32 array), labels (list of str) and feature names of a labelled CSV (also
    .csv.gz; UTF-8, or UTF-16 with a byte-order mark; comma, semicolon with decimal commas, tab:
    ``applied_aitk.table_files.read_frame``).

    AitkError names the file and what is wrong: no rows, no label column; a missing label, or a
    feature cell that is not a number, missing, or too large for float32 as ``PATH:LINE`` (the
    line as an editor shows it)."""
    import numpy as np
    import pandas as pd

    from applied_aitk.table_files import read_frame, where

    frame = read_frame(path)
    if frame.empty:
        raise AitkError(f"{path}: no rows")
    if label not in frame.columns:
        raise AitkError(f"{path}: no label column {label!r} (columns: {', '.join(frame.columns)})")
    missing = frame[label].isna().to_numpy() | (frame[label].astype(str).str.strip() == "").to_numpy()
    if missing.any():  # as text it would be a class "nan"
        raise AitkError(f"{where(frame, int(np.argmax(missing)), path)}: column {label!r}: missing label")
    features = [c for c in frame.columns if c != label]
    for column in features:
        if not pd.api.types.is_numeric_dtype(frame[column]):
            row = int(np.argmax(pd.to_numeric(frame[column], errors="coerce").isna() & frame[column].notna()))
            raise AitkError(f"{where(frame, row, path)}: column {column!r}: expected a number, got {shown(frame[column].iloc[row])}")
    for column in features:
        if frame[column].isna().any():
            raise AitkError(f"{where(frame, int(np.argmax(frame[column].isna())), path)}: column {column!r}: missing value")
    x = frame[features].to_numpy(np.float64)
    too_big = ~(np.abs(x) <= np.finfo(np.float32).max)
    if too_big.any():
        row, col = map(int, np.argwhere(too_big)[0])
        raise AitkError(f"{where(frame, row, path)}: column {features[col]!r}: {float(x[row, col])!r} is not a finite float32")
    return x.astype(np.float32), frame[label].astype(str).tolist(), features


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
