"""Scoring through ONNX Runtime: scores, flags, and which features drove each score.

Explanations are occlusion in ORT: each feature in turn is replaced by a typical value (its
training median, or its most frequent category) and the drop in the calibrated log-odds is
that feature's impact. The features with the largest positive impact are reported."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from toolkit import Predictor, Record
from toolkit.bundle import Bundle
from toolkit.errors import AitkError
from toolkit.runtime import Runtime

from plugins.fraud import data as fdata

CHUNK = 65536


class Scorer:
    """The bundle's ONNX model and preprocessing: encoded rows in, (score, logit) out."""

    def __init__(self, bundle: Bundle, runtime: Runtime):
        self.prep = fdata.Preprocessing.from_json(bundle.read_json(bundle.assets["preprocessing"]))
        self.session = runtime.session(runtime.model_file(bundle))
        self.threshold = float(bundle.assets["threshold"])

    def run(self, numeric: np.ndarray, categorical: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores, logits = [], []
        for start in range(0, len(numeric), CHUNK):
            feeds = {"numeric": numeric[start : start + CHUNK], "categorical": categorical[start : start + CHUNK]}
            score, logit = self.session.run({k: v for k, v in feeds.items() if k in self.session.input_names})
            scores.append(score)
            logits.append(logit)
        if not scores:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        return np.concatenate(scores), np.concatenate(logits)

    def impacts(self, numeric: np.ndarray, categorical: np.ndarray, logit: np.ndarray) -> np.ndarray:
        """[rows, features] drop in log-odds when each feature (numeric first) is set to its typical value."""
        base_numeric, base_categorical = self.prep.baseline()
        out = np.zeros((len(numeric), numeric.shape[1] + categorical.shape[1]), dtype=np.float32)
        for j in range(numeric.shape[1]):
            occluded = numeric.copy()
            occluded[:, j] = base_numeric[j]
            out[:, j] = logit - self.run(occluded, categorical)[1]
        for j in range(categorical.shape[1]):
            occluded = categorical.copy()
            occluded[:, j] = base_categorical[j]
            out[:, numeric.shape[1] + j] = logit - self.run(numeric, occluded)[1]
        return out

    def score_frame(self, frame: Any, source: Any) -> np.ndarray:
        """Scores of a whole labelled or unlabelled table (a bad cell is an error naming its row)."""
        numeric, categorical = self.prep.encode_checked(frame, source)
        return self.run(numeric, categorical)[0]


class FraudPredictor(Predictor):
    """Rows of raw values in; per row: score, flag and the top features (or an error)."""

    def __init__(self, scorer: Scorer, explain: int, threshold: float | None, keep: list[str]):
        self.scorer = scorer
        self.provider = scorer.session.provider
        self.explain = max(int(explain or 0), 0)
        self.threshold = scorer.threshold if threshold is None else float(threshold)
        self.keep = keep

    def read(self, paths: Iterable[Path]) -> Iterator[Record]:
        """One record per table row, id "FILE:ROW" (ROW counts data rows from 1); each file's header
        is checked against the columns the bundle needs before any of its rows is read."""
        needed = [*self.scorer.prep.columns.features, *self.keep]
        paths = [Path(p) for p in paths]
        for path in paths:
            if str(path) != "-":
                header = fdata.header(path)
                for column in needed:
                    fdata.require(header, column, path)
        for path in paths:
            row = 0
            for chunk in fdata.iter_chunks(path):
                if row == 0 and str(path) == "-":
                    for column in needed:
                        fdata.require(list(chunk.columns), column, "stdin")
                columns = [c for c in needed if c in chunk.columns] or list(chunk.columns)
                for values in chunk[columns].itertuples(index=False, name=None):
                    row += 1
                    yield Record(f"{'stdin' if str(path) == '-' else path}:{row}", dict(zip(columns, values)))

    def predict(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        prep = self.scorer.prep
        for column in [*prep.columns.features, *self.keep]:
            if column not in inputs[0]:
                raise AitkError(f"missing column {column!r}")
        columns = [*prep.columns.features, *self.keep]
        grid = np.array([[*map(r.get, columns)] for r in inputs], dtype=object).reshape(len(inputs), len(columns))
        table = {c: grid[:, j] for j, c in enumerate(columns)}
        numeric, categorical, bad, reasons = prep.encode(table)
        rows: list[dict[str, Any]] = [{"error": r} for r in reasons]
        good = np.flatnonzero(~bad)
        if not good.size:
            return rows
        numeric, categorical = numeric[good], categorical[good]
        score, logit = self.scorer.run(numeric, categorical)
        explanations = self._explanations(numeric, categorical, logit, table, good) if self.explain else None
        flags = (score >= self.threshold).tolist()
        for k, (i, value) in enumerate(zip(good.tolist(), np.round(score.astype(np.float64), 6).tolist())):
            row: dict[str, Any] = {c: _plain(table[c][i]) for c in self.keep}
            row["score"] = value
            row["flag"] = flags[k]
            if explanations is not None:
                row["top_features"] = explanations[k]
            rows[i] = row
        return rows

    def _explanations(self, numeric, categorical, logit, table, good) -> list[list[dict[str, Any]]]:
        """Per row, up to ``explain`` features that raised its score most: name, value, impact (log-odds)."""
        impacts = self.scorer.impacts(numeric, categorical, logit)
        top = np.argsort(-impacts, axis=1, kind="stable")[:, : self.explain]
        top_impacts = np.round(np.take_along_axis(impacts, top, axis=1).astype(np.float64), 4).tolist()
        features, n_numeric = self.scorer.prep.columns.features, numeric.shape[1]

        def value(k: int, j: int) -> Any:
            if j < n_numeric:
                v = numeric[k, j]
                return None if np.isnan(v) else float(f"{v:.7g}")
            return _plain(table[features[j]][good[k]])

        return [
            [{"feature": features[j], "value": value(k, j), "impact": x} for j, x in zip(top[k].tolist(), top_impacts[k]) if x > 0]
            for k in range(len(top))
        ]


def _plain(value: Any) -> Any:
    """A JSON-able cell: numpy scalars as Python ones, missing as None."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, str) and value.strip().lower() in fdata.MISSING:
        return None
    return value
