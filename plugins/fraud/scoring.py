"""Scoring through ONNX Runtime: scores, flags, and which features drove each score.

Explanations are occlusion in ORT: each feature in turn is replaced by a typical value (its
training median, or its most frequent category) and the drop in the calibrated log-odds is
that feature's impact. The features with the largest positive impact are reported."""

from __future__ import annotations

from typing import Any

import numpy as np

from applied_aitk.bundle import Bundle
from applied_aitk.runtime import Runtime
from applied_aitk.table_predictor import TablePredictor

from applied_aitk.usecases.fraud import data as fdata

CHUNK = 65536
EXPLAIN_ROWS = 8
"""Rows whose occluded copies go through the model in one call, always this many: ONNX Runtime's
float32 results for a row depend on how many rows the call holds (not on which), so a fixed
count keeps a row's impacts the same in a request of one and in a batch of thousands."""


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

    def impacts(self, numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        """float64 [rows, features]: the drop in log-odds when each feature (numeric first) is set to
        its typical value. The copies of EXPLAIN_ROWS rows go through the model in one call, the
        last group padded to as many, so that a row's impacts are the same whatever rows come with it."""
        n, n_features = len(numeric), numeric.shape[1] + categorical.shape[1]
        if n == 0:
            return np.zeros((0, n_features))
        pad = -n % EXPLAIN_ROWS
        numeric = np.concatenate([numeric, np.repeat(numeric[-1:], pad, axis=0)])
        categorical = np.concatenate([categorical, np.repeat(categorical[-1:], pad, axis=0)])
        block = EXPLAIN_ROWS * max(1, CHUNK // (EXPLAIN_ROWS * (n_features + 1)))  # rows whose copies are made at once
        return np.concatenate([self._occlusions(numeric[i : i + block], categorical[i : i + block])
                               for i in range(0, len(numeric), block)])[:n]

    def _occlusions(self, numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        """float64 [rows, features] (rows: a multiple of EXPLAIN_ROWS): each row's log-odds minus
        its occluded copies', all of one model call."""
        base_numeric, base_categorical = self.prep.baseline()
        n_numeric, n_categorical = numeric.shape[1], categorical.shape[1]
        copies = n_numeric + n_categorical + 1  # copy j has feature j occluded, the last none
        numerics = np.repeat(numeric[:, None], copies, axis=1)  # [rows, copies, numeric]
        categoricals = np.repeat(categorical[:, None], copies, axis=1)
        numerics[:, np.arange(n_numeric), np.arange(n_numeric)] = base_numeric
        categoricals[:, n_numeric + np.arange(n_categorical), np.arange(n_categorical)] = base_categorical
        rows = len(numeric) * copies
        numerics, categoricals = numerics.reshape(rows, n_numeric), categoricals.reshape(rows, n_categorical)
        step = EXPLAIN_ROWS * copies
        logits = np.concatenate([self.run(numerics[i : i + step], categoricals[i : i + step])[1] for i in range(0, rows, step)])
        logits = logits.reshape(len(numeric), copies).astype(np.float64)
        return logits[:, -1:] - logits[:, :-1]

    def score_frame(self, frame: Any, source: Any) -> np.ndarray:
        """Scores of a whole labelled or unlabelled table (a bad cell is an error naming its row)."""
        numeric, categorical = self.prep.encode_checked(frame, source)
        return self.run(numeric, categorical)[0]


class FraudPredictor(TablePredictor):
    """Table rows in (the core reads and checks them, a batch at a time); per row: score, flag and
    the top features (or an error)."""

    def __init__(self, scorer: Scorer, explain: int, threshold: float | None, keep: list[str]):
        from applied_aitk.ranges import TrainingRanges
        from applied_aitk.tables import Schema

        self.scorer = scorer
        self.ranges = TrainingRanges(scorer.prep.columns.numeric, scorer.prep.ranges)
        self.provider = scorer.session.provider
        self.explain = max(int(explain or 0), 0)
        self.threshold = scorer.threshold if threshold is None else float(threshold)
        self.keep = keep
        prep = scorer.prep
        self.columns = Schema(tuple(prep.columns.numeric), (*prep.columns.categorical, *keep), fdata.MISSING)

    def schema(self):
        """The bundle's numeric columns (a missing cell is NaN, for the model to impute), then its
        categorical columns and the --keep columns as text."""
        return self.columns

    def predict_batch(self, data: dict[str, np.ndarray]) -> list[dict[str, Any]]:
        """Per row: score, flag, the top features (with --explain), the --keep cells, range warnings."""
        prep = self.scorer.prep
        numeric, warnings = self.ranges.clip(data["numbers"])
        texts = data["texts"]
        categorical = prep.category_ids(texts)
        score = self.scorer.run(numeric, categorical)[0]
        explanations = self._explanations(numeric, categorical, texts) if self.explain else None
        flags = (score >= self.threshold).tolist()
        kept = texts[:, len(prep.categorical):].tolist()
        rows = []
        for k, value in enumerate(np.round(score.astype(np.float64), 6).tolist()):
            row: dict[str, Any] = dict(zip(self.keep, kept[k]))
            row["score"] = value
            row["flag"] = flags[k]
            if explanations is not None:
                row["top_features"] = explanations[k]
            if warnings[k]:
                row["warnings"] = warnings[k]
            rows.append(row)
        return rows

    def _explanations(self, numeric, categorical, texts) -> list[list[dict[str, Any]]]:
        """Per row, up to ``explain`` features that raised its score most: name, value, impact (log-odds)."""
        impacts = self.scorer.impacts(numeric, categorical)
        top = np.argsort(-impacts, axis=1, kind="stable")[:, : self.explain]
        top_impacts = np.round(np.take_along_axis(impacts, top, axis=1), 4).tolist()
        features, n_numeric = self.scorer.prep.columns.features, numeric.shape[1]
        cells, numbers = texts.tolist(), numeric.tolist()  # Python floats: no numpy scalar per value shown

        def value(k: int, j: int) -> Any:
            if j < n_numeric:
                v = numbers[k][j]
                return None if v != v else float(f"{v:.7g}")  # NaN: a missing value
            return cells[k][j - n_numeric]

        return [
            [{"feature": features[j], "value": value(k, j), "impact": x} for j, x in zip(top[k].tolist(), top_impacts[k]) if x > 0]
            for k in range(len(top))
        ]
