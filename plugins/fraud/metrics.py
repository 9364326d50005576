"""Ranking and threshold metrics for rare positives, with legitimate rows weighted by
``negative_weight`` so under-sampled data estimates precision at the real fraud rate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from applied_aitk.console import get_logger
from applied_aitk.files import atomic_path

logger = get_logger(__name__)


def weights(y: np.ndarray, negative_weight: float) -> np.ndarray:
    return np.where(y > 0.5, 1.0, negative_weight)


def pr_auc(y: np.ndarray, score: np.ndarray, negative_weight: float = 1.0) -> float:
    """Average precision (area under the precision-recall curve), negatives weighted."""
    from sklearn.metrics import average_precision_score

    if y.sum() == 0:
        return float("nan")
    return float(average_precision_score(y, score, sample_weight=weights(y, negative_weight)))


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if y.min() == y.max():
        return float("nan")
    return float(roc_auc_score(y, score))


def recall_at_fpr(y: np.ndarray, score: np.ndarray, fpr: float = 0.01) -> float:
    """The highest recall whose false-positive rate stays within ``fpr``."""
    from sklearn.metrics import roc_curve

    if y.min() == y.max():
        return float("nan")
    fprs, tprs, _ = roc_curve(y, score)
    return float(tprs[fprs <= fpr].max())


def counts(y: np.ndarray, score: np.ndarray, threshold: float, negative_weight: float) -> dict[str, float]:
    flag = score >= threshold
    positive = y > 0.5
    return {
        "tp": float(np.sum(flag & positive)),
        "fp": float(np.sum(flag & ~positive) * negative_weight),
        "fn": float(np.sum(~flag & positive)),
        "tn": float(np.sum(~flag & ~positive) * negative_weight),
    }


def at_threshold(y: np.ndarray, score: np.ndarray, threshold: float, negative_weight: float, cost_fn: float, cost_fp: float) -> dict[str, float]:
    """Precision, recall, false-positive rate and expected cost when flagging ``score >= threshold``."""
    c = counts(y, score, threshold, negative_weight)
    total = c["tp"] + c["fp"] + c["fn"] + c["tn"]
    return {
        "threshold": float(threshold),
        "precision": c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else float("nan"),
        "recall": c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else float("nan"),
        "false_positive_rate": c["fp"] / (c["fp"] + c["tn"]) if c["fp"] + c["tn"] else float("nan"),
        "expected_cost": cost_fn * c["fn"] + cost_fp * c["fp"],
        "expected_cost_per_1000": 1000 * (cost_fn * c["fn"] + cost_fp * c["fp"]) / total if total else float("nan"),
    }


def curve(y: np.ndarray, score: np.ndarray, negative_weight: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per candidate threshold (each distinct score, high to low): threshold, tp, fp (weighted), fn."""
    order = np.argsort(-score, kind="stable")
    s, positive = score[order], y[order] > 0.5
    tp = np.cumsum(positive).astype(np.float64)
    fp = np.cumsum(~positive) * float(negative_weight)
    last = np.r_[s[1:] != s[:-1], True]  # the last row of each run of equal scores
    tp, fp, thresholds = tp[last], fp[last], s[last]
    return thresholds, tp, fp, positive.sum() - tp


def choose_threshold(
    y: np.ndarray,
    score: np.ndarray,
    negative_weight: float = 1.0,
    target_precision: float | None = None,
    target_recall: float | None = None,
    cost_fn: float | None = None,
    cost_fp: float | None = None,
) -> tuple[float, str]:
    """The flagging threshold on validation scores, and how it was chosen.

    By precision: the lowest threshold (most recall) whose precision reaches the target. By recall:
    the highest threshold (fewest alerts) whose recall reaches it. By costs: the least expected
    ``cost_fn * FN + cost_fp * FP``. Otherwise the threshold with the best F1."""
    thresholds, tp, fp, fn = curve(y, score, negative_weight)
    precision = tp / np.maximum(tp + fp, 1e-12)
    recall = tp / max(tp[-1] + fn[-1], 1e-12)
    if target_precision:
        ok = np.flatnonzero(precision >= target_precision)
        if ok.size:
            return float(thresholds[ok[-1]]), f"precision >= {target_precision:g} on validation"
        best = int(np.argmax(precision))
        logger.warning(f"no threshold reaches precision {target_precision:g} on validation; using the most precise one ({precision[best]:.3f})")
        return float(thresholds[best]), f"highest precision on validation ({precision[best]:.3f} < {target_precision:g})"
    if target_recall:
        ok = np.flatnonzero(recall >= target_recall)
        return float(thresholds[ok[0]]), f"recall >= {target_recall:g} on validation"
    if cost_fn or cost_fp:
        cost = (cost_fn or 0.0) * fn + (cost_fp or 0.0) * fp
        best = int(np.argmin(cost))
        if (cost_fn or 0.0) * (fn[-1] + tp[-1]) < cost[best]:  # flagging nothing is cheaper
            return float(np.nextafter(np.float32(thresholds[0]), np.float32(np.inf))), "least expected cost (flag nothing)"
        return float(thresholds[best]), f"least expected cost (cost_fn={cost_fn or 0:g}, cost_fp={cost_fp or 0:g})"
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1))]), "best F1 on validation"


def plot_pr(y: np.ndarray, score: np.ndarray, negative_weight: float, threshold: float, path: Path, title: str) -> None:
    """Precision-recall curve PNG with the operating threshold marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    precision, recall, _ = precision_recall_curve(y, score, sample_weight=weights(y, negative_weight))
    point = at_threshold(y, score, threshold, negative_weight, 0.0, 0.0)
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    ax.step(recall, precision, where="post", label=f"PR-AUC {pr_auc(y, score, negative_weight):.3f}")
    ax.plot([point["recall"]], [point["precision"]], "o", color="C3", label=f"threshold {threshold:.3g}")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.01), title=title)
    ax.legend(loc="lower left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)


def summary(y: np.ndarray, score: np.ndarray, threshold: float, negative_weight: float, cost_fn: float, cost_fp: float) -> dict[str, Any]:
    return {
        "pr_auc": pr_auc(y, score, negative_weight),
        "roc_auc": roc_auc(y, score),
        "recall_at_1pct_fpr": recall_at_fpr(y, score, 0.01),
        **at_threshold(y, score, threshold, negative_weight, cost_fn, cost_fp),
        "rows": int(len(y)),
        "frauds": int(y.sum()),
        "negative_weight": float(negative_weight),
        "cost_fn": float(cost_fn),
        "cost_fp": float(cost_fp),
    }


def plot_threshold(y: np.ndarray, score: np.ndarray, negative_weight: float, threshold: float, cost_fn: float, cost_fp: float, path: Path) -> None:
    """Two panels: the score distribution of each class (log counts) with the threshold, and
    precision, recall and expected cost (right axis) against the threshold."""
    from applied_aitk.report import pyplot, save_figure

    plt = pyplot()
    fig, (dist, sweep) = plt.subplots(1, 2, figsize=(11, 4))
    bins = np.linspace(float(score.min()), float(score.max()) + 1e-9, 50)
    dist.hist(score[y <= 0.5], bins=bins, alpha=0.6, label=f"legitimate ({int(np.sum(y <= 0.5))})", log=True)
    dist.hist(score[y > 0.5], bins=bins, alpha=0.6, label=f"fraud ({int(np.sum(y > 0.5))})", log=True)
    dist.axvline(threshold, color="C3", linestyle="--", label=f"threshold {threshold:.3g}")
    dist.set(xlabel="score", ylabel="rows (log)", title="score distribution by class")
    dist.legend()
    cuts, tp, fp, fn = curve(y, score, negative_weight)
    with np.errstate(invalid="ignore", divide="ignore"):
        sweep.plot(cuts, tp / (tp + fp), label="precision")
        sweep.plot(cuts, tp / (tp + fn), label="recall")
    sweep.axvline(threshold, color="C3", linestyle="--", label="threshold")
    sweep.set(xlabel="threshold (flag score >= threshold)", ylabel="precision / recall", ylim=(0, 1.02), title=f"against the threshold (negatives x{negative_weight:g})")
    right = sweep.twinx()
    right.plot(cuts, cost_fn * fn + cost_fp * fp, color="C2", label=f"expected cost (fn {cost_fn:g}, fp {cost_fp:g})")
    right.set_ylabel("expected cost")
    right.legend(loc="upper center")
    sweep.legend(loc="lower left")
    fig.tight_layout()
    save_figure(fig, path)
