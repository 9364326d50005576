"""Training the fine-tuned network (``method=segment``, and every types-only data set): labelled
defects (masks where given, image labels alone otherwise) and synthetic defects on the good images,
end to end through ``applied_aitk.train.fit``; selection and threshold on validation groups carved out
of the training data."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from applied_aitk import AitkError, Graph, TrainResult
from applied_aitk.console import get_logger
from applied_aitk.runtime import Runtime
from applied_aitk.train import fit, seed_everything

from applied_aitk.usecases.defects import data as D
from applied_aitk.usecases.defects import ensemble as E
from applied_aitk.usecases.defects import model as M
from applied_aitk.usecases.defects import training as T
from applied_aitk.usecases.defects.network import DefectNet, Encoder, Heads, freeze_early_stages, losses
from applied_aitk.usecases.defects.synthetic import synthesize
from applied_aitk.usecases.defects.tiling import Tiler

logger = get_logger(__name__)

PARITY_ATOL = 1e-3
BACKBONE_LR_SCALE = 1.0
"""The pretrained stages learn at this fraction of ``learning_rate`` (the heads at all of it). On
validation groups of magnetic tile (128 px, 600 s), 1.0 against 0.1: the network's pixel AUROC
0.90 against 0.87 after ten epochs, its image AUROC 0.77-0.81 against 0.72-0.80 from epoch 3 on."""


@dataclass
class Arrays:
    """A set of images in memory at the model size: images uint8 [N, S, S, 3], masks bool [N, S, S],
    has_mask [N] (good images, and defects with a mask), defective [N], types [N] (index, -1: none)."""

    images: np.ndarray
    masks: np.ndarray
    has_mask: np.ndarray
    defective: np.ndarray
    types: np.ndarray


def load_arrays(items: list[D.Item], types: list[str], size: int, max_pixels: int) -> Arrays:
    """Every image and mask of ``items`` resized to ``size``; a bad image fails naming its file."""
    with ThreadPoolExecutor(4) as pool:
        images = list(pool.map(lambda i: D.load_image(i.image, size, max_pixels=max_pixels)[0], items))
        masks = list(pool.map(lambda i: D.load_mask(i.mask, size), items))
    return Arrays(
        np.stack(images), np.stack(masks), np.array([i.good or i.mask is not None for i in items]),
        np.array([not i.good for i in items]), np.array([types.index(i.defect_type) if i.defect_type in types else -1 for i in items]),
    )


def with_synthetic(arrays: Arrays, rows: np.ndarray, fraction: float, rng: np.random.Generator) -> Arrays:
    """The batch ``rows`` of ``arrays``, flipped at random, with a synthetic defect on ``fraction``
    of its good images (the foreign texture: another image of the set)."""
    images, masks = arrays.images[rows].copy(), arrays.masks[rows].copy()
    defective, has_mask = arrays.defective[rows].copy(), arrays.has_mask[rows].copy()
    for k in range(len(rows)):
        if rng.random() < 0.5:
            images[k], masks[k] = images[k][:, ::-1], masks[k][:, ::-1]
        if rng.random() < 0.5:
            images[k], masks[k] = images[k][::-1], masks[k][::-1]
        if not defective[k] and rng.random() < fraction:
            foreign = arrays.images[rng.integers(len(arrays.images))]
            images[k], masks[k] = synthesize(images[k], foreign, rng)
            defective[k], has_mask[k] = True, True
    return Arrays(images, masks, has_mask, defective, arrays.types[rows])


def synthetic_validation(arrays: Arrays, seed: int) -> Arrays:
    """The good validation images, each also with one synthetic defect (a fixed draw): what
    validation scores a good-only model on when there is no real defect to score it on."""
    good = np.flatnonzero(~arrays.defective)
    copy = with_synthetic(arrays, good, 1.0, np.random.default_rng(seed + 1))
    both = np.concatenate([good, good])
    return Arrays(np.concatenate([arrays.images[good], copy.images]), np.concatenate([arrays.masks[good], copy.masks]),
                  np.ones(len(both), bool), np.concatenate([np.zeros(len(good), bool), copy.defective]), arrays.types[both])


def run(net: DefectNet, images: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """The network's outputs (as ONNX gives them) on uint8 images, in eval mode."""
    net.eval()
    outputs: list[list[np.ndarray]] = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            out = net(torch.from_numpy(images[start : start + batch_size]))
            out = out if isinstance(out, tuple) else (out,)
            outputs.append([o.numpy() for o in out])
    return [np.concatenate(column) for column in zip(*outputs)]


def train(data: Path, config: Any, runtime: Runtime) -> TrainResult:
    started = time.perf_counter()
    seed_everything(config.seed)
    if runtime.threads:
        torch.set_num_threads(runtime.threads)
    items = D.load_items(data, "train")
    segment = any(i.good for i in items)
    types = sorted({i.defect_type for i in items if not i.good and i.defect_type})
    if not segment and len(types) < 2:
        raise AitkError(f"{data}: no good images and fewer than two defect types: nothing to learn")
    train_items, val_items = D.split_groups(items, D.validation_items(data), config.val_fraction, config.seed)
    if not train_items or not val_items:
        raise AitkError(f"{data}: {len(items)} training images are too few to hold out validation groups (val_fraction={config.val_fraction})")
    size = config.image_size
    tiler = Tiler(size, config.tiles if segment else 1)  # the network sees tiles of size; images are read at input_size
    train_set = load_arrays(train_items, types, tiler.input_size, config.max_image_pixels)
    val_set = load_arrays(val_items, types, tiler.input_size, config.max_image_pixels)
    real_defects = bool(val_set.defective.any())
    if segment and not real_defects:
        val_set = synthetic_validation(val_set, config.seed)
    logger.info(f"{'segmentation' if segment else 'types-only'} network: {len(train_items)} training images "
                f"({int(train_set.defective.sum())} defects), {len(val_items)} validation images, {len(types)} defect types")

    backbone, info = M.build_backbone(config.backbone, config.weights, config.feature_stages, size)
    classes = len(types) if len(types) >= 2 else 0
    stages, channels = (config.feature_stages, info["channels"]) if segment else (config.feature_stages[-1:], info["channels"][-1:])
    net = DefectNet(backbone, stages, channels, info["mean"], info["std"], size, classes, segment)  # types-only: the deepest stage alone
    freeze_early_stages(backbone, info["stage_modules"], config.frozen_stages)
    history = optimise(net, tiler, train_set, val_set, config, segment)
    metrics: dict[str, Any] = {"train_images": len(train_items), "validation_images": len(val_items), "epochs": len(history)}
    model, method = net, "segment" if segment else "types"
    if segment and config.method in ("ensemble", "auto"):
        model, metrics["selection"] = E.combine(net, train_set.images, ~train_set.defective, val_set.images, val_set.defective, config, tiler, weigh=real_defects)
        method = "ensemble" if config.method == "ensemble" else E.choose(metrics["selection"]["validation_auroc"], synthetic=not real_defects)
        metrics["selection"].update(method=method, validation="real defects" if real_defects else "synthetic defects on the good validation images")
        logger.info(f"method={config.method}: {method}")
        model = {"segment": net, "ensemble": model, "patchcore": model.patchcore}[method]
        if method == "patchcore" and classes:
            typed = train_set.types >= 0
            model = E.with_type_head(model, train_set.images[typed], train_set.types[typed], classes, config, tiler)
    model = tiler.wrap(model)

    outputs = run(model, val_set.images, config.batch_size)
    assets: dict[str, Any] = {"preprocessing": T.preprocessing(tiler.input_size, info), "backbone": info, "method": method,
                              "defect_types": types if classes else [], "frozen_stages": config.frozen_stages, "network_stages": list(stages),
                              "tiles": {"tiles": tiler.tiles, "tile_size": size, "stride": tiler.stride}}
    if segment:
        threshold, how = T.calibrate(outputs[1], val_set.defective, config.percentile)
        metrics.update(T.validation_metrics(outputs[1], val_set.defective, threshold))
        assets.update(threshold=threshold, threshold_method=how, outputs=["anomaly_map", "score"] + (["defect_probs"] if classes else []))
    else:
        assets["outputs"] = ["defect_probs"]
    if classes:
        typed = val_set.types >= 0
        metrics["validation_type_accuracy"] = float(np.mean(outputs[-1][typed].argmax(1) == val_set.types[typed])) if typed.any() else None
    metrics["train_seconds"] = round(time.perf_counter() - started, 1)
    result = TrainResult(graphs=[], weights=model.state_dict(), assets=assets, metrics=metrics, history=history)
    if method == "patchcore" and tiler.count == 1:
        def check(variant: str, path: Path, fp32: Path) -> dict[str, Any]:
            return int8_check(fp32, path, val_set, config, result) if variant == "int8" else {}

        result.graphs.append(T.model_graph(model, calibration_images(train_set.images), val_set.images[:3], check))
    else:
        result.graphs.append(network_graph(model, train_set.images, val_set, config, result))
    return result


def optimise(net: DefectNet, tiler: Tiler, train_set: Arrays, val_set: Arrays, config: Any, segment: bool) -> list[dict[str, Any]]:
    """``applied_aitk.train.fit`` over the training images (tile by tile: each tile's map against
    its part of the mask, each image's score, the maximum over its tiles, against its label); the
    best epoch by validation AUROC (types-only: accuracy) is kept. Returns the history."""
    from sklearn.metrics import roc_auc_score

    heads = [p for n, p in net.named_parameters() if not n.startswith("backbone.")]
    tuned = [p for n, p in net.named_parameters() if n.startswith("backbone.") and p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": heads, "lr": config.learning_rate},
                                   {"params": tuned, "lr": config.learning_rate * BACKBONE_LR_SCALE}], weight_decay=config.weight_decay)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    schedule = Schedule(optimizer, config.epochs * -(-len(train_set.images) // config.batch_size), config.max_time)

    def batches(epoch: int):
        order = torch.randperm(len(train_set.images), generator=generator).numpy()
        return [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]

    def step(rows: np.ndarray) -> float:
        batch = with_synthetic(train_set, rows, config.synthetic_fraction if segment else 0.0, rng)
        out = tiler.per_image(net.heads(tiler.split(torch.from_numpy(np.ascontiguousarray(batch.images)))))
        masks = tiler.split(torch.from_numpy(np.ascontiguousarray(batch.masks)))
        found = losses(out, masks, torch.from_numpy(batch.has_mask).repeat_interleave(tiler.count),
                       torch.from_numpy(batch.defective), torch.from_numpy(batch.types))
        loss = sum(found.values())
        optimizer.zero_grad()
        loss.backward()
        schedule.step()
        return float(loss.detach())

    def validate() -> dict[str, float]:
        outputs = run(tiler.wrap(net), val_set.images, config.batch_size)
        if not segment:
            return {"val_accuracy": float(np.mean(outputs[0].argmax(1) == val_set.types))}
        both = val_set.defective.any() and not val_set.defective.all()
        return {"val_auroc": float(roc_auc_score(val_set.defective, outputs[1])) if both else 0.0}

    found = fit(net, batches, step, validate, epochs=config.epochs, monitor="val_auroc" if segment else "val_accuracy", mode="max",
                patience=config.patience, max_time=config.max_time)
    logger.info(f"trained {found.steps} steps in {found.seconds:.0f} s; best epoch {found.best_epoch} ({found.stopped})")
    net.eval()
    return found.history


class Schedule:
    """Warm-up then cosine decay of every parameter group's learning rate (Loshchilov & Hutter,
    "SGDR", ICLR 2017), over ``total_steps`` or, when ``max_time`` (s) is set and comes first, over
    the time budget: the rate reaches zero where training ends either way, so a run cut by
    ``max_time`` still ends annealed. Warm-up: the first ``WARMUP`` of the run, linear from zero."""

    WARMUP = 0.05

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, max_time: float = 0.0):
        self.optimizer, self.total, self.max_time = optimizer, max(1, total_steps), max_time
        self.base = [group["lr"] for group in optimizer.param_groups]
        self.steps, self.started = 0, time.perf_counter()

    def progress(self) -> float:
        """The share of the run done, 0..1: steps, or the time budget when it is the nearer end."""
        done = self.steps / self.total
        if self.max_time:
            done = max(done, (time.perf_counter() - self.started) / self.max_time)
        return min(1.0, done)

    def step(self) -> None:
        """Set the rates for this step, then step the optimizer."""
        done = self.progress()
        factor = min(1.0, (done + 1 / self.total) / self.WARMUP) * 0.5 * (1 + np.cos(np.pi * done))
        for group, base in zip(self.optimizer.param_groups, self.base):
            group["lr"] = base * factor
        self.optimizer.step()
        self.steps += 1


def calibration_images(train_images: np.ndarray) -> np.ndarray:
    """Up to ``CALIBRATION_IMAGES`` training images spread over the set: int8's calibration data."""
    step = max(1, len(train_images) // T.CALIBRATION_IMAGES)
    return train_images[::step][: T.CALIBRATION_IMAGES]


def network_graph(net: DefectNet | E.Ensemble, train_images: np.ndarray, val_set: Arrays, config: Any, result: TrainResult) -> Graph:
    """The whole network (or the ensemble) as one graph of two parts, each parity-checked: the
    backbone (the ensemble: both backbones; int8 and fp16 convert it, int8 static, calibrated on
    training images) and the heads (always fp32). int8 has its own threshold and its validation
    figures against fp32 in the manifest."""
    calibration = calibration_images(train_images)
    example, parity = torch.from_numpy(calibration[:2]), torch.from_numpy(val_set.images[:3])
    outputs = result.assets["outputs"]
    label = "defect_probs" if "defect_probs" in outputs else None

    def batch(*names: str) -> dict[str, dict[int, str]]:
        return {name: {0: "batch"} for name in names}

    encoder, heads = Encoder(net).eval(), Heads(net).eval()
    with torch.no_grad():
        example_f, parity_f = encoder(example), encoder(parity)
    stages = [f"stage{k}" for k in range(len(example_f))]
    parts = [
        Graph(encoder, (example,), ["image"], stages, name="backbone", dynamic_axes=batch("image", *stages), parity_inputs=(parity,), atol=PARITY_ATOL,
              calibration=[{"image": calibration[i : i + 8]} for i in range(0, len(calibration), 8)], prepare=lambda path: T.fuse_pads(path, calibration[:1])),
        Graph(heads, example_f, stages, outputs, name="heads", dynamic_axes=batch(*stages, *outputs), parity_inputs=parity_f, atol=PARITY_ATOL, label_output=label, variants=()),
    ]

    def check(variant: str, path: Path, fp32: Path) -> dict[str, Any]:
        return int8_check(fp32, path, val_set, config, result) if variant == "int8" else {}

    return Graph(net, (example,), ["image"], outputs, parity_inputs=(parity,), atol=PARITY_ATOL, label_output=label, parts=parts, check=check)


def run_onnx(path: Path, images: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """The outputs of an ONNX file (ONNX Runtime, CPU) on uint8 images."""
    session = Runtime(device="cpu").session(path)
    outputs = [session(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    return [np.concatenate(column) for column in zip(*outputs)]


def int8_check(fp32: Path, int8: Path, val_set: Arrays, config: Any, result: TrainResult) -> dict[str, Any]:
    """The int8 file against fp32 on the validation images: score difference and AUROC of both
    (its own threshold goes into the assets), or type agreement for a types-only network."""
    from sklearn.metrics import roc_auc_score

    a, b = (run_onnx(path, val_set.images, config.batch_size) for path in (fp32, int8))
    if result.assets["method"] == "types":
        return {"type_agreement": float(np.mean(a[0].argmax(1) == b[0].argmax(1)))}
    report: dict[str, Any] = {"max_abs_score_diff": float(np.max(np.abs(a[1] - b[1]))),
                              "score_corr": float(np.corrcoef(a[1], b[1])[0, 1]) if len(a[1]) > 1 else 1.0}
    if val_set.defective.any() and not val_set.defective.all():
        report["validation_auroc_fp32"] = float(roc_auc_score(val_set.defective, a[1]))
        report["validation_auroc_int8"] = float(roc_auc_score(val_set.defective, b[1]))
    result.assets["threshold_int8"] = T.calibrate(b[1], val_set.defective, config.percentile)[0]
    logger.info(f"int8: max score diff {report['max_abs_score_diff']:.4g}, correlation {report['score_corr']:.5f}")
    return report
