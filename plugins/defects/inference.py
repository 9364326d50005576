"""Running a defects bundle in ONNX Runtime: predictor rows, defect boxes, heatmap overlays, evaluation."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from applied_aitk import AitkError, Predictor, Record
from applied_aitk.bundle import Bundle
from applied_aitk.runtime import Runtime
from applied_aitk.files import atomic_path, atomic_write

from applied_aitk.usecases.defects import data as D


@dataclass
class Decoded:
    """The model input (uint8 [S, S, 3]), the original size, the original RGB image when heatmaps need it, the record id."""

    image: np.ndarray
    size: tuple[int, int]
    original: Image.Image | None
    name: str
    pages: int = 1


def bundle_threshold(bundle: Bundle, runtime: Runtime, override: float | None) -> float:
    """``--threshold`` when given, else the one calibrated for the model file this runtime runs."""
    if override is not None:
        return float(override)
    assets = bundle.assets
    if assets.get("method") == "types":
        return float("nan")  # a types-only bundle has no ok/defect decision
    if runtime.variant_for(bundle) == "int8" and "threshold_int8" in assets:
        return float(assets["threshold_int8"])
    return float(assets["threshold"])


class DefectPredictor(Predictor):
    def __init__(self, bundle: Bundle, runtime: Runtime, threshold: float | None = None, heatmaps: Path | None = None,
                 max_image_pixels: int | None = None):
        self.size = image_size(bundle)
        self.max_pixels = max_pixels(bundle, max_image_pixels)
        self.session = runtime.session(runtime.model_file(bundle))
        self.provider = self.session.provider
        self.threshold = bundle_threshold(bundle, runtime, threshold)
        self.types = bundle.assets.get("defect_types", [])
        self.heatmaps = Path(heatmaps) if heatmaps else None
        self.heatmap_names: set[str] = set()
        if self.heatmaps:
            self.heatmaps.mkdir(parents=True, exist_ok=True)

    def read(self, paths: Iterable[Path]) -> Iterator[Record]:
        for path in paths:
            if str(path) == "-":
                yield Record(id="-", data=sys.stdin.buffer.read())
            else:
                yield Record(id=str(path), data=Path(path))

    def from_json(self, value: Any, id: str) -> Record:
        """``{"image": BASE64}`` (the file's bytes, base64-encoded) -> the record ``read`` makes of a file."""
        return Record(id, data=D.image_from_json(value))

    def from_upload(self, data: bytes, filename: str) -> Record:
        return Record(filename, data=data)

    def decode(self, record: Record) -> Decoded:
        image, pages = D.open_pages(record.data, record.id, self.max_pixels)
        return Decoded(D.resize(image, self.size), image.size, image if self.heatmaps else None, record.id, pages)

    def predict(self, inputs: list[Decoded]) -> list[dict[str, Any]]:
        outputs = self.session(np.stack([x.image for x in inputs]))
        if len(outputs) == 1:  # types-only: every input is a defect of one of the known types
            return [{"defect_type": self.types[int(np.argmax(p))], "defect_type_prob": float(np.max(p))} for p in outputs[0]]
        maps, scores = outputs[0], outputs[1]
        probs = outputs[2] if len(outputs) > 2 else None
        rows = []
        for k, x in enumerate(inputs):
            defect = bool(scores[k] >= self.threshold)
            boxes = regions(maps[k], self.threshold, x.size) if defect else []
            row: dict[str, Any] = {"score": float(scores[k]), "label": "defect" if defect else "ok", "boxes": boxes}
            if self.types:
                best = int(np.argmax(probs[k]))
                row["defect_type"] = self.types[best] if defect else None
                row["defect_type_prob"] = float(probs[k][best]) if defect else None
            if x.pages > 1:  # scored from its first page alone: say so
                row["warnings"] = [f"{x.pages} pages (frames) in the file; only the first was scored"]
            if self.heatmaps:
                path = self.heatmaps / heatmap_name(x.name, self.heatmap_names)
                row["heatmap"] = str(write_overlay(x, maps[k], float(scores[k]), self.threshold, boxes, path))
            rows.append(row)
        return rows


def regions(anomaly_map: np.ndarray, threshold: float, original_size: tuple[int, int]) -> list[list[int]]:
    """Bounding boxes [x0, y0, x1, y1] (original pixels, x1/y1 exclusive) of connected regions above ``threshold``."""
    from scipy import ndimage

    labelled, _ = ndimage.label(anomaly_map >= threshold)
    h, w = anomaly_map.shape
    sx, sy = original_size[0] / w, original_size[1] / h
    boxes = []
    for rows, cols in ndimage.find_objects(labelled):
        boxes.append([
            int(cols.start * sx), int(rows.start * sy),
            min(original_size[0], int(np.ceil(cols.stop * sx))), min(original_size[1], int(np.ceil(rows.stop * sy))),
        ])
    return boxes


def heatmap_name(record_id: str, used: set[str]) -> str:
    """``crack_000.png`` for ``.../crack/000.png`` (parent folder and stem); ``-2``, ``-3``... when
    another input of the run already took the name."""
    path = Path(record_id)
    stem = "_".join(part for part in (path.parent.name, path.stem) if part not in ("", ".", "..")) or "image"
    name, n = f"{stem}.png", 1
    while name in used:
        n += 1
        name = f"{stem}-{n}.png"
    used.add(name)
    return name


def write_overlay(x: Decoded, anomaly_map: np.ndarray, score: float, threshold: float, boxes: list[list[int]], path: Path) -> Path:
    """The image (its own size) with the anomaly map as a colour layer (the threshold sits at 60%
    of the scale), its boxes, a colour bar on the right edge with the threshold marked, and the
    verdict and score written in the top-left corner."""
    import matplotlib
    from PIL import ImageDraw, ImageFont

    size = x.original.size
    heat = Image.fromarray(anomaly_map.astype(np.float32), "F").resize(size, Image.Resampling.BILINEAR)
    level = np.clip(0.6 * np.asarray(heat) / max(threshold, 1e-12), 0, 1)
    jet = matplotlib.colormaps["jet"]
    overlay = Image.blend(x.original, Image.fromarray((jet(level)[..., :3] * 255).astype(np.uint8), "RGB"), 0.45)
    draw = ImageDraw.Draw(overlay)
    line = max(1, min(size) // 150)
    for x0, y0, x1, y1 in boxes:
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=(255, 255, 255), width=line)
    bar_w, (w, h) = max(3, size[0] // 40), size
    ramp = (jet(np.linspace(1, 0, h))[:, :3] * 255).astype(np.uint8)
    overlay.paste(Image.fromarray(np.repeat(ramp[:, None], bar_w, axis=1), "RGB"), (w - bar_w, 0))
    draw.line([w - 2 * bar_w, int(0.4 * h), w - 1, int(0.4 * h)], fill=(255, 255, 255), width=line)  # the threshold (60% of the scale)
    font = ImageFont.load_default(size=max(8, min(size) // 14))
    text = f"{'DEFECT' if score >= threshold else 'ok'} {score:.3g} (thr {threshold:.3g})"
    box = draw.textbbox((2, 1), text, font=font)
    draw.rectangle(box, fill=(0, 0, 0))
    draw.text((2, 1), text, fill=(255, 80, 80) if score >= threshold else (255, 255, 255), font=font)
    with atomic_path(path) as tmp:
        overlay.save(tmp, format="PNG")
    return path


def max_pixels(bundle: Bundle, given: int | None) -> int:
    """The image size limit: given, else the bundle's training setting, else Pillow's."""
    return int(given or bundle.config.get("max_image_pixels") or D.DEFAULT_MAX_PIXELS)


def run_items(session, items: list[D.Item], size: int, batch_size: int = 16, limit: int = D.DEFAULT_MAX_PIXELS):
    """(maps [N, S, S], scores [N], probabilities [N, K] or None) of labelled items."""
    maps, scores, probs = [], [], []
    with ThreadPoolExecutor(4) as pool:
        for start in range(0, len(items), batch_size):
            images = np.stack(list(pool.map(lambda i: D.load_image(i.image, size, max_pixels=limit)[0], items[start : start + batch_size])))
            outputs = session(images)
            if len(outputs) == 1:  # types-only
                probs.append(outputs[0])
                continue
            maps.append(outputs[0])
            scores.append(outputs[1])
            if len(outputs) > 2:
                probs.append(outputs[2])
    return (np.concatenate(maps) if maps else None, np.concatenate(scores) if scores else None,
            np.concatenate(probs) if probs else None)


def evaluate(bundle: Bundle, data: Path, runtime: Runtime, report: Path | None, threshold: float | None,
             max_image_pixels: int | None = None) -> dict[str, Any]:
    from sklearn.metrics import confusion_matrix, roc_auc_score

    items = D.load_items(data, "test")
    size = image_size(bundle)
    session = runtime.session(runtime.model_file(bundle))
    threshold = bundle_threshold(bundle, runtime, threshold)
    maps, scores, probs = run_items(session, items, size, limit=max_pixels(bundle, max_image_pixels))
    if scores is None:
        return evaluate_types(bundle, items, probs, report, {"model": runtime.model_file(bundle).name, "provider": session.provider})
    defective = np.array([not i.good for i in items])
    predicted = scores >= threshold
    both = defective.any() and not defective.all()
    tp = int(np.sum(predicted & defective))
    metrics: dict[str, Any] = {
        "image_auroc": float(roc_auc_score(defective, scores)) if both else None,
        "pixel_auroc": None,
        "f1": 2 * tp / max(1, int(predicted.sum() + defective.sum())),
        "precision": tp / max(1, int(predicted.sum())),
        "recall": tp / max(1, int(defective.sum())),
        "accuracy": float(np.mean(predicted == defective)),
        "threshold": threshold,
        "images": len(items),
        "defects": int(defective.sum()),
        "confusion_matrix": {"labels": ["ok", "defect"], "rows_true_cols_predicted": confusion_matrix(defective, predicted, labels=[False, True]).tolist()},
        "model": runtime.model_file(bundle).name,
        "provider": session.provider,
    }
    with_masks = [k for k, i in enumerate(items) if i.good or i.mask is not None]
    if any(items[k].mask is not None for k in with_masks):
        masks = np.stack([D.load_mask(items[k].mask, size) for k in with_masks])
        if masks.any() and not masks.all():
            metrics["pixel_auroc"] = float(roc_auc_score(masks.ravel(), maps[with_masks].ravel()))
    types = sorted({i.defect_type for i in items if not i.good and i.defect_type})
    if both and types:
        metrics["auroc_by_type"] = {
            t: float(roc_auc_score(defective[sel], scores[sel])) for t in types for sel in [np.array([i.good or i.defect_type == t for i in items])]
        }
    if both:
        at = float(np.quantile(scores[~defective], 1 - FPR, method="higher"))  # at most 1% of the good test images flagged
        metrics["recall_at_1pct_fpr"] = float(np.mean(scores[defective] > at))
        if types:
            metrics["recall_at_1pct_fpr_by_type"] = {t: float(np.mean(scores[[i.defect_type == t for i in items]] > at)) for t in types}
    known = bundle.assets.get("defect_types", [])
    typed = [k for k, i in enumerate(items) if not i.good and i.defect_type in known]
    if probs is not None and typed:
        metrics["defect_type_accuracy"] = float(np.mean([known[int(np.argmax(probs[k]))] == items[k].defect_type for k in typed]))
    if report is not None:
        write_report(Path(report), defective, scores, threshold, metrics)
        write_heatmaps(Path(report) / "heatmaps", items, maps, scores, threshold, max_pixels(bundle, max_image_pixels))
    if metrics["pixel_auroc"] is None:
        del metrics["pixel_auroc"]
    return metrics


def write_report(folder: Path, defective: np.ndarray, scores: np.ndarray, threshold: float, metrics: dict[str, Any]) -> None:
    """roc_pr.png (ROC and precision-recall curves with the threshold marked), confusion_matrix.png and metrics.json."""
    import json

    from sklearn.metrics import precision_recall_curve, roc_curve

    from applied_aitk.report import pyplot, save_figure

    plt = pyplot()

    folder.mkdir(parents=True, exist_ok=True)
    if defective.any() and not defective.all():
        fig, (roc, pr) = plt.subplots(1, 2, figsize=(10, 4.5))
        fpr, tpr, _ = roc_curve(defective, scores)
        roc.plot(fpr, tpr, label=f"AUROC {metrics['image_auroc']:.3f}")
        roc.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8)
        roc.plot([np.mean(scores[~defective] >= threshold)], [np.mean(scores[defective] >= threshold)], "o", color="red", label="threshold")
        roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (image level)")
        roc.legend(loc="lower right")
        precision, recall, _ = precision_recall_curve(defective, scores)
        pr.plot(recall, precision)
        pr.plot([metrics["recall"]], [metrics["precision"]], "o", color="red", label=f"threshold (F1 {metrics['f1']:.3f})")
        pr.set(xlabel="recall", ylabel="precision", title="precision-recall (image level)", ylim=(0, 1.02))
        pr.legend(loc="lower left")
        fig.tight_layout()
        save_figure(fig, folder / "roc_pr.png")
    plot_confusion(np.array(metrics["confusion_matrix"]["rows_true_cols_predicted"]), ["ok", "defect"], f"images, threshold {threshold:.3g}",
                   folder / "confusion_matrix.png")
    atomic_write(folder / "metrics.json", json.dumps(metrics, indent=2))


def evaluate_types(bundle: Bundle, items: list[D.Item], probs: np.ndarray, report: Path | None, about: dict[str, Any]) -> dict[str, Any]:
    """A types-only bundle on labelled defect images: accuracy, recall per type and the confusion
    matrix (rows true type, columns predicted); with ``report``, the matrix as a picture."""
    from sklearn.metrics import confusion_matrix

    known = bundle.assets["defect_types"]
    kept = [k for k, i in enumerate(items) if i.defect_type in known]
    unknown = sorted({str(i.defect_type or "good") for i in items if i.defect_type not in known})
    if not kept:
        raise AitkError(f"no test image of a type the bundle knows ({', '.join(known)})")
    true = np.array([known.index(items[k].defect_type) for k in kept])
    predicted = probs[kept].argmax(1)
    matrix = confusion_matrix(true, predicted, labels=list(range(len(known))))
    metrics: dict[str, Any] = {
        "defect_type_accuracy": float(np.mean(true == predicted)),
        "recall_by_type": {t: float(matrix[k, k] / max(1, matrix[k].sum())) for k, t in enumerate(known)},
        "images": len(kept),
        "confusion_matrix": {"labels": known, "rows_true_cols_predicted": matrix.tolist()},
        **about,
    }
    if unknown:
        metrics["skipped_types"] = unknown
    if report is not None:
        import json

        Path(report).mkdir(parents=True, exist_ok=True)
        plot_confusion(matrix, known, "defect types", Path(report) / "confusion_matrix.png")
        atomic_write(Path(report) / "metrics.json", json.dumps(metrics, indent=2))
    return metrics


def plot_confusion(matrix: np.ndarray, labels: list[str], title: str, path: Path) -> None:
    from sklearn.metrics import ConfusionMatrixDisplay

    from applied_aitk.report import pyplot, save_figure

    side = 3.0 + 0.45 * len(labels)
    fig, ax = pyplot().subplots(figsize=(side + 0.8, side))
    ConfusionMatrixDisplay(matrix, display_labels=labels).plot(ax=ax, cmap="Blues", xticks_rotation=45, colorbar=False)
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path)


HEATMAPS_PER_CLASS = 2
FPR = 0.01


def write_heatmaps(folder: Path, items: list[D.Item], maps: np.ndarray, scores: np.ndarray, threshold: float, limit: int) -> None:
    """Overlays (map, colour bar, score and verdict) of the first HEATMAPS_PER_CLASS test images of
    each class, named after the input: ``crack-000.png`` for ``test/crack/000.png``."""
    shown: dict[str, int] = {}
    used: set[str] = set()
    for k, item in enumerate(items):
        kind = "good" if item.good else item.defect_type or "defect"
        if shown.get(kind, 0) >= HEATMAPS_PER_CLASS:
            continue
        shown[kind] = shown.get(kind, 0) + 1
        image = D.open_image(item.image, str(item.image), limit)
        decoded = Decoded(np.zeros(0, np.uint8), image.size, image, str(item.image))
        boxes = regions(maps[k], threshold, image.size) if scores[k] >= threshold else []
        name = f"{kind}-{item.image.stem}.png"
        stem, n = name[:-4], 1
        while name in used:
            n += 1
            name = f"{stem}-{n}.png"
        used.add(name)
        folder.mkdir(parents=True, exist_ok=True)
        write_overlay(decoded, maps[k], float(scores[k]), threshold, boxes, folder / name)


def image_size(bundle: Bundle) -> int:
    size = bundle.assets.get("preprocessing", {}).get("size")
    if not size:
        raise AitkError(f"{bundle.path}: manifest has no preprocessing size")
    return int(size[0])
