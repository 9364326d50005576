"""The fine-tuned defect network: a timm backbone (its later stages trained) with a small
segmentation head (anomaly map and image score) and a defect-type head, end to end.

The segmentation head follows the discriminative half of DRAEM (Zavrtanik et al., ICCV 2021): it
learns "defect or not" per pixel from real masks, from image labels alone (the image score is
the map's maximum, trained as a multiple-instance label), and from synthetic defects on good
images (``applied_aitk.usecases.defects.synthetic``), so that the same network serves a line with labelled
defects and one with good images only."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DefectNet(nn.Module):
    """uint8 images [B, S, S, 3] (NHWC, RGB) -> ``anomaly_map`` [B, S, S] (defect probability per
    pixel), ``score`` [B] (image defect probability: the maximum of the 3x3-averaged logit map,
    through a sigmoid) and, with ``classes`` >= 2, ``defect_probs`` [B, classes] (softmax).

    ``segment=False`` builds the types-only network (a labelled set of defect kinds, no good class):
    its only output is ``defect_probs``. ``stages`` are the backbone's feature stages the heads read
    (each its own stride); the map is computed on the finest one's grid and upsampled bilinearly."""

    def __init__(self, backbone: nn.Module, stages: list[int], channels: list[int], mean: list[float], std: list[float],
                 image_size: int, classes: int = 0, segment: bool = True, width: int = 64):
        super().__init__()
        self.backbone = backbone
        self.stages = list(stages)
        self.image_size = image_size
        self.segment = segment
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255)
        if segment:
            self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in channels)
            self.decoder = nn.Sequential(nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 1, 1))
        with torch.no_grad():  # the stages' grid sizes, as constants in the exported graph (not Shape arithmetic)
            self.grids = [tuple(s.shape[-2:]) for s in self.features(torch.zeros(1, image_size, image_size, 3, dtype=torch.uint8))]
        deepest = channels[-1]
        self.classifier = nn.Linear(2 * deepest if segment else deepest, classes) if classes >= 2 else None

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = (images.permute(0, 3, 1, 2).float() - self.mean) / self.std
        return self.backbone.forward_intermediates(x, indices=self.stages, intermediates_only=True)

    def logits(self, stages: list[torch.Tensor]) -> torch.Tensor:
        """Defect logits [B, 1, h, w] on the finest stage's grid."""
        size = self.grids[0]
        x = self.lateral[0](stages[0])
        for conv, s in zip(self.lateral[1:], stages[1:]):
            x = x + F.interpolate(conv(s), size=size, mode="bilinear", align_corners=False)
        return self.decoder(x)

    def heads(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The raw outputs training needs: ``logits`` [B, 1, h, w], ``score_logit`` [B] and ``type_logits`` [B, K]."""
        return self.raw(self.features(images))

    def raw(self, stages: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        deepest = stages[-1].flatten(2)
        pooled = deepest.mean(2)
        if self.segment:
            logits = self.logits(stages)
            out["logits"] = logits
            out["score_logit"] = F.avg_pool2d(logits, 3, stride=1, padding=1, count_include_pad=False).flatten(1).amax(1)
            attention = torch.softmax(F.interpolate(logits.detach(), size=self.grids[-1], mode="bilinear", align_corners=False).flatten(1), 1)
            pooled = torch.cat([pooled, (deepest * attention.unsqueeze(1)).sum(2)], 1)
        if self.classifier is not None:
            out["type_logits"] = self.classifier(pooled)
        return out

    def outputs(self, stages: list[torch.Tensor]):
        """The exported outputs from the backbone's stage features (see the class)."""
        out = self.raw(stages)
        probs = torch.softmax(out["type_logits"], -1) if self.classifier is not None else None
        if not self.segment:
            return probs
        size = (self.image_size, self.image_size)
        anomaly_map = torch.sigmoid(F.interpolate(out["logits"], size=size, mode="bilinear", align_corners=False))[:, 0]
        score = torch.sigmoid(out["score_logit"])
        return (anomaly_map, score) if probs is None else (anomaly_map, score, probs)

    def forward(self, images: torch.Tensor):
        return self.outputs(self.features(images))

    def train(self, mode: bool = True) -> DefectNet:
        """Batch-norm statistics stay frozen (eval) in the backbone: batches are small."""
        super().train(mode)
        self.backbone.eval()
        return self


def freeze_early_stages(backbone: nn.Module, stage_modules: list[str], frozen_stages: int) -> int:
    """Stop gradients to the stem and the first ``frozen_stages`` feature stages (their parameters
    come before stage ``frozen_stages``'s module in registration order): fine-tuning the later
    stages only costs a fraction of full back-propagation. Returns the number of trainable tensors."""
    first_trained = stage_modules[frozen_stages] if frozen_stages < len(stage_modules) else None
    trainable = False
    count = 0
    for name, parameter in backbone.named_parameters():
        if first_trained is not None and (name == first_trained or name.startswith(first_trained + ".")):
            trainable = True
        parameter.requires_grad_(trainable)
        count += trainable
    return count


def losses(out: dict[str, torch.Tensor], masks: torch.Tensor, has_mask: torch.Tensor, defective: torch.Tensor,
           types: torch.Tensor) -> dict[str, torch.Tensor]:
    """The training losses of a batch: ``pixel`` (BCE of the map against the masks, [B, S, S] bool,
    on images with ``has_mask``: good and synthetic images, real defects with masks), ``image``
    (BCE of the score against ``defective``: weak supervision for defects without masks) and
    ``type`` (cross-entropy on images whose ``types`` index is >= 0)."""
    found: dict[str, torch.Tensor] = {}
    if "logits" in out:
        if has_mask.any():
            logits = F.interpolate(out["logits"][has_mask], size=masks.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
            target = masks[has_mask].float()
            found["pixel"] = F.binary_cross_entropy_with_logits(logits, target) + dice_loss(logits, target)
        found["image"] = F.binary_cross_entropy_with_logits(out["score_logit"], defective.float())
    typed = types >= 0
    if "type_logits" in out and typed.any():
        found["type"] = F.cross_entropy(out["type_logits"][typed], types[typed])
    return found


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice over the images that have defect pixels (0 when none has): it weighs small
    defects as much as large ones, which per-pixel BCE does not."""
    rows = target.flatten(1).any(1)
    if not rows.any():
        return logits.sum() * 0
    p, t = torch.sigmoid(logits[rows]).flatten(1), target[rows].flatten(1)
    return (1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).mean()


class Encoder(nn.Module):
    """The backbone part of a DefectNet (or an Ensemble) for export: images -> its stage features (a tuple)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor):
        return tuple(self.net.features(images))


class Heads(nn.Module):
    """The heads part of a DefectNet for export: stage features -> the outputs (kept in fp32 by int8:
    a probability quantized to 256 levels would tie scores and move the threshold)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, *stages: torch.Tensor):
        return self.net.outputs(list(stages))
