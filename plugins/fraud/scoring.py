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
        """[rows, features] drop in log-odds when each feature (numeric first) is set to its typical
        value: every occluded copy of a block of rows goes through the model in one call."""
        n_numeric, n_features = numeric.shape[1], numeric.shape[1] + categorical.shape[1]
        block = max(1, CHUNK // max(1, n_features))
        return np.concatenate([self._occlusions(numeric[i : i + block], categorical[i : i + block], logit[i : i + block])
                               for i in range(0, len(numeric), block)] or [np.zeros((0, n_features), np.float32)])

    def _occlusions(self, numeric: np.ndarray, categorical: np.ndarray, logit: np.ndarray) -> np.ndarray:
        base_numeric, base_categorical = self.prep.baseline()
        n_numeric, n_features = numeric.shape[1], numeric.shape[1] + categorical.shape[1]
        numerics = np.repeat(numeric[None], n_features, axis=0)  # [features, rows, numeric]: copy j has feature j occluded
        categoricals = np.repeat(categorical[None], n_features, axis=0)
        for j in range(n_numeric):
            numerics[j, :, j] = base_numeric[j]
        for j in range(categorical.shape[1]):
            categoricals[n_numeric + j, :, j] = base_categorical[j]
        rows = n_features * len(numeric)
        occluded = self.run(numerics.reshape(rows, n_numeric), categoricals.reshape(rows, categorical.shape[1]))[1]
        return (logit[None, :] - occluded.reshape(n_features, len(numeric))).T.astype(np.float32)

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
        score, logit = self.scorer.run(numeric, categorical)
        explanations = self._explanations(numeric, categorical, logit, texts) if self.explain else None
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

    def _explanations(self, numeric, categorical, logit, texts) -> list[list[dict[str, Any]]]:
        """Per row, up to ``explain`` features that raised its score most: name, value, impact (log-odds)."""
        impacts = self.scorer.impacts(numeric, categorical, logit)
        top = np.argsort(-impacts, axis=1, kind="stable")[:, : self.explain]
        top_impacts = np.round(np.take_along_axis(impacts, top, axis=1).astype(np.float64), 4).tolist()
        features, n_numeric = self.scorer.prep.columns.features, numeric.shape[1]
        cells = texts.tolist()

        def value(k: int, j: int) -> Any:
            if j < n_numeric:
                v = numeric[k, j]
                return None if np.isnan(v) else float(f"{v:.7g}")
            return cells[k][j - n_numeric]

        return [
            [{"feature": features[j], "value": value(k, j), "impact": x} for j, x in zip(top[k].tolist(), top_impacts[k]) if x > 0]
            for k in range(len(top))
        ]
