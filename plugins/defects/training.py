"""Training: features of good images -> coreset memory bank -> threshold and defect-type head; the
graph (two parts: int8 and fp16 convert the features only) for the core to package."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from applied_aitk import AitkError, Graph, TrainResult
from applied_aitk.console import get_logger, progress
from applied_aitk.runtime import Runtime
from applied_aitk.train import seed_everything

from applied_aitk.usecases.defects import data as D
from applied_aitk.usecases.defects import model as M

logger = get_logger(__name__)

CALIBRATION_IMAGES = 32
PARITY_ATOL = 1e-3


def train(data: Path, config: Any, runtime: Runtime) -> TrainResult:
    """PatchCore (``method=patchcore``), or the fine-tuned network (``method=segment``; beside
    PatchCore: ``ensemble``; the best of the three on validation: ``auto``; and any training set
    without good images: the type classifier alone)."""
    items = D.load_items(data, "train")
    if config.method == "patchcore" and config.tiles > 1:
        raise AitkError(f"tiles={config.tiles} needs method=segment, ensemble or auto (method=patchcore runs on whole images; "
                        f"method=ensemble tiles PatchCore too)")
    if config.method != "patchcore" or not any(i.good for i in items):
        from applied_aitk.usecases.defects import finetune

        return finetune.train(data, config, runtime)
    return train_patchcore(data, config, runtime, items)


def train_patchcore(data: Path, config: Any, runtime: Runtime, items: list[D.Item]) -> TrainResult:
    started = time.perf_counter()
    seed_everything(config.seed)
    if runtime.threads:
        torch.set_num_threads(runtime.threads)
    bank_items, val_items = D.split_validation(items, D.validation_items(data), config.val_fraction, config.seed)
    logger.info(f"{len(bank_items)} good images for the memory bank, {len(val_items)} for validation "
        f"({sum(not i.good for i in val_items)} defects)")
    features, info = M.build_features(config.backbone, config.weights, config.feature_stages, config.image_size, logger.info)
    device = runtime.torch_device()
    size = config.image_size

    bank_features = extract(features, bank_items, size, config.batch_size, device, "bank features", config.max_image_pixels)
    bank, bank_info = build_bank(bank_features, config)
    types = sorted({i.defect_type for i in items if not i.good and i.defect_type})
    head = M.AnomalyHead(bank, size, config.sigma, classes=len(types) if len(types) >= 2 else 0, channels=bank.shape[1])
    model = M.DefectModel(features.cpu(), head).eval()

    val_features = extract(features, val_items, size, config.batch_size, device, "validation", config.max_image_pixels) if val_items else None
    metrics: dict[str, Any] = {"bank_images": len(bank_items), "validation_images": len(val_items)}
    if head.classifier is not None:
        metrics["classifier_train_accuracy"] = fit_classifier(head, val_items, val_features, types, config)
    val_scores = head_scores(head, val_features) if val_features is not None else _self_scores(head, bank_features)
    labels = np.array([not i.good for i in val_items]) if val_items else np.zeros(len(val_scores), bool)
    threshold, method = calibrate(val_scores, labels, config.percentile)
    metrics.update(validation_metrics(val_scores, labels, threshold))

    metrics["train_seconds"] = round(time.perf_counter() - started, 1)
    assets = {
        "preprocessing": preprocessing(size, info),
        "backbone": info,
        "memory_bank": bank_info,
        "threshold": threshold,
        "threshold_method": method,
        "defect_types": types if head.classifier is not None else [],
        "outputs": output_names(head),
    }
    result = TrainResult(graphs=[], weights=model.state_dict(), assets=assets, metrics=metrics)

    def check(variant: str, path: Path, fp32: Path) -> dict[str, Any]:
        """int8: its scores against fp32's on the validation images, and its own threshold."""
        if variant != "int8":
            return {}
        report = int8_report(fp32, path, val_items or bank_items, labels, config)
        result.assets["threshold_int8"] = calibrate(np.array(report.pop("scores")), labels, config.percentile)[0]
        return report

    calibration = _sample_images(bank_items, size, config.max_image_pixels)
    parity = _sample_images(val_items or bank_items, size, config.max_image_pixels, count=3)
    result.graphs.append(model_graph(model, calibration, parity, check))
    return result


def preprocessing(size: int, info: dict) -> dict[str, Any]:
    return {
        "input": "image",
        "dtype": "uint8",
        "layout": "NHWC",
        "size": [size, size],
        "color": "RGB; grayscale replicated, alpha composited on white, 16-bit scaled by 1/257",
        "resize": "Pillow bilinear to size x size (aspect ratio not kept)",
        "normalise": "inside the graph: (pixel/255 - mean) / std",
        "mean": info["mean"],
        "std": info["std"],
    }


def output_names(head: M.AnomalyHead) -> list[str]:
    return ["anomaly_map", "score"] + (["defect_probs"] if head.classifier is not None else [])


def _label_output(head: M.AnomalyHead) -> str | None:
    return "defect_probs" if head.classifier is not None else None


def load_batch(items: list[D.Item], size: int, pool: ThreadPoolExecutor, max_pixels: int = D.DEFAULT_MAX_PIXELS) -> np.ndarray:
    """uint8 [N, size, size, 3]; a bad image fails with its name."""
    return np.stack(list(pool.map(lambda i: D.load_image(i.image, size, max_pixels=max_pixels)[0], items)))


def extract(features: M.PatchFeatures, items: list[D.Item], size: int, batch_size: int, device: str, desc: str,
            max_pixels: int = D.DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Patch features [N, C, h, w] (on CPU) of ``items``; a bad training image fails with its name."""
    features = features.to(device)
    out = []
    batches = range(0, len(items), batch_size)
    with ThreadPoolExecutor(4) as pool, torch.no_grad():
        for start in progress(batches, desc, total=len(batches), unit="batch"):
            images = torch.from_numpy(load_batch(items[start : start + batch_size], size, pool, max_pixels)).to(device)
            out.append(features(images).cpu())
    features.cpu()
    return torch.cat(out)


def build_bank(features: torch.Tensor, config: Any) -> tuple[torch.Tensor, dict]:
    """Coreset of all patch features: greedy k-center over at most ``coreset_pool`` random patches."""
    flat = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])
    generator = torch.Generator().manual_seed(config.seed)
    pool = flat[torch.randperm(len(flat), generator=generator)[: config.coreset_pool]] if len(flat) > config.coreset_pool else flat
    size = min(config.memory_size, len(pool))
    started = time.perf_counter()
    bank = pool[M.coreset(pool, size, config.projection, config.seed)].clone()
    logger.info(f"memory bank: {size} of {len(flat)} patch features ({time.perf_counter() - started:.1f} s)")
    return bank, {"rows": size, "dim": int(flat.shape[1]), "patches": int(len(flat)), "pool": int(len(pool))}


def head_scores(head: M.AnomalyHead, features: torch.Tensor, batch: int = 32) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([head(features[i : i + batch])[1] for i in range(0, len(features), batch)]).numpy()


def _self_scores(head: M.AnomalyHead, features: torch.Tensor) -> np.ndarray:
    logger.warning("no validation images (val_fraction=0 and no defects): the threshold comes from training images and will be low")
    return head_scores(head, features)


def fit_classifier(head: M.AnomalyHead, val_items: list[D.Item], val_features: torch.Tensor, types: list[str], config: Any) -> float:
    """Train the defect-type head on the pooled features of the labelled training defects."""
    rows = [k for k, i in enumerate(val_items) if not i.good and i.defect_type]
    chosen = val_features[rows]
    with torch.no_grad():
        pooled = head.pooled(chosen, head.patch_scores(chosen))
    labels = torch.tensor([types.index(val_items[k].defect_type) for k in rows])
    accuracy = head.classifier.fit(pooled, labels, config.classifier_epochs, config.seed)
    logger.info(f"defect-type head: {len(types)} types, {len(rows)} images, train accuracy {accuracy:.3f}")
    return accuracy


def calibrate(scores: np.ndarray, defective: np.ndarray, percentile: float) -> tuple[float, str]:
    """(threshold, how it was chosen): F1-optimal when there are defects, else a percentile of good scores."""
    good = scores[~defective]
    if defective.any() and len(good):
        order = np.sort(np.unique(scores))
        best, best_f1 = order[-1], -1.0
        for k, t in enumerate(order):
            f1 = _f1(scores >= t, defective)
            if f1 > best_f1:
                # halfway to the next lower score, so the threshold does not sit on a training example
                best, best_f1 = (t + order[k - 1]) / 2 if k else t, f1
        return float(best), f"F1-optimal on validation ({len(good)} good, {int(defective.sum())} defect images)"
    values = good if len(good) else scores
    return float(np.percentile(values, percentile)), f"{percentile:g}th percentile of {len(values)} validation good-image scores"


def _f1(predicted: np.ndarray, actual: np.ndarray) -> float:
    tp = float(np.sum(predicted & actual))
    return 2 * tp / max(1.0, float(predicted.sum() + actual.sum()))


def validation_metrics(scores: np.ndarray, defective: np.ndarray, threshold: float) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    metrics: dict[str, Any] = {"threshold": threshold}
    if defective.any() and not defective.all():
        metrics["validation_auroc"] = float(roc_auc_score(defective, scores))
        metrics["validation_f1"] = _f1(scores >= threshold, defective)
    else:
        metrics["validation_good_flagged"] = float(np.mean(scores >= threshold)) if len(scores) else 0.0
    return metrics


def _sample_images(items: list[D.Item], size: int, max_pixels: int, count: int = CALIBRATION_IMAGES) -> np.ndarray:
    step = max(1, len(items) // count)
    with ThreadPoolExecutor(4) as pool:
        return load_batch(items[::step][:count], size, pool, max_pixels)


def model_graph(model: M.DefectModel, calibration: np.ndarray, parity: np.ndarray, check) -> Graph:
    """The graph: features, then head, exported as two parts (each parity-checked) and chained; the
    variants convert the features only (int8 static, calibrated on ``calibration``): the head's
    memory-bank distances need fp32."""
    example_t, parity_t = torch.from_numpy(calibration[:2]), torch.from_numpy(parity)
    with torch.no_grad():
        example_f, parity_f = model.features(example_t), model.features(parity_t)
    outputs, label = output_names(model.head), _label_output(model.head)
    features = Graph(
        model.features, (example_t,), ["image"], ["features"], name="features", dynamic_axes={"image": {0: "batch"}, "features": {0: "batch"}},
        parity_inputs=(parity_t,), atol=PARITY_ATOL, calibration=[{"image": calibration[i : i + 8]} for i in range(0, len(calibration), 8)],
        prepare=lambda path: fuse_pads(path, calibration[:1]),
    )
    head = Graph(model.head, (example_f,), ["features"], outputs, name="head", dynamic_axes={"features": {0: "batch"}, **{o: {0: "batch"} for o in outputs}},
                 parity_inputs=(parity_f,), atol=PARITY_ATOL, label_output=label, variants=())
    return Graph(model, (example_t,), ["image"], outputs, parity_inputs=(parity_t,), atol=PARITY_ATOL, label_output=label, parts=[features, head], check=check)


def fuse_pads(path: Path, example: np.ndarray) -> None:
    """Fold each zero Pad that feeds a Conv into the Conv's own (asymmetric) pads attribute.

    torch has no asymmetric conv padding, so TF-"same" convolutions export as Pad + Conv; ONNX
    Runtime does not fuse them, and in the int8 graph each Pad costs a dequantize/quantize pair
    at full resolution. The pad amounts are computed by the graph, so they are read by running it."""
    import onnx

    from applied_aitk.runtime import Runtime

    model = onnx.load(str(path))
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    pairs = [
        (pad, consumers[pad.output[0]][0])
        for pad in model.graph.node
        if pad.op_type == "Pad" and len(consumers.get(pad.output[0], [])) == 1 and consumers[pad.output[0]][0].op_type == "Conv"
        and all(a.name != "mode" or a.s == b"constant" for a in pad.attribute) and (len(pad.input) < 3 or not pad.input[2])
    ]
    if not pairs:
        return
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(pad.input[1], onnx.TensorProto.INT64, None) for pad, _ in pairs)
    values = Runtime(device="cpu").session(probe.SerializeToString())(example)[-len(pairs):]
    for (pad, conv), amounts in zip(pairs, values):
        begin, end = amounts[: len(amounts) // 2], amounts[len(amounts) // 2 :]
        if begin[:2].any() or end[:2].any():
            continue
        for attribute in list(conv.attribute):
            if attribute.name == "pads":
                conv.attribute.remove(attribute)
        conv.attribute.append(onnx.helper.make_attribute("pads", [int(v) for v in [*begin[2:], *end[2:]]]))
        conv.input[0] = pad.input[0]
        model.graph.node.remove(pad)
    _drop_dead_nodes(model)
    onnx.save(model, str(path))


def _drop_dead_nodes(model) -> None:
    needed = {o.name for o in model.graph.output}
    for node in reversed(list(model.graph.node)):
        if any(o in needed for o in node.output):
            needed.update(node.input)
        else:
            model.graph.node.remove(node)


def int8_report(fp32: Path, int8: Path, items: list[D.Item], defective: np.ndarray, config: Any) -> dict[str, Any]:
    """How far the int8 model's scores are from fp32's on the validation images."""
    from sklearn.metrics import roc_auc_score

    runtime = Runtime(device="cpu")
    sessions = [runtime.session(fp32), runtime.session(int8)]
    scores: list[list[np.ndarray]] = [[], []]
    with ThreadPoolExecutor(4) as pool:
        for start in range(0, len(items), config.batch_size):
            images = load_batch(items[start : start + config.batch_size], config.image_size, pool, config.max_image_pixels)
            for k, session in enumerate(sessions):
                scores[k].append(session(images)[1])
    fp, q = np.concatenate(scores[0]), np.concatenate(scores[1])
    report: dict[str, Any] = {"max_abs_score_diff": float(np.max(np.abs(fp - q))), "score_corr": float(np.corrcoef(fp, q)[0, 1]) if len(fp) > 1 else 1.0, "scores": q.tolist()}
    if defective.any() and not defective.all():
        report["validation_auroc_fp32"] = float(roc_auc_score(defective, fp))
        report["validation_auroc_int8"] = float(roc_auc_score(defective, q))
    logger.info(f"int8: max score diff {report['max_abs_score_diff']:.4g}, correlation {report['score_corr']:.5f}")
    return report
