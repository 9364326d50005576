"""The fine-tuned network beside PatchCore's good-only score (``method=ensemble``), and the choice
between PatchCore, the network and both on validation groups of the training data (``method=auto``).

The network learns the defects it was shown (labelled kinds and synthetic ones); a kind it never
saw can look normal to it. PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly
Detection", CVPR 2022) scores the distance to the nearest good patch and needs no defect at all, so
it flags whatever is unlike the good training images. The ensemble adds the two maps, each
standardised by its image scores on the good validation images, so that either one can raise an
image: a defect seen in training through the network, an unseen kind through PatchCore."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from applied_aitk.console import get_logger

from applied_aitk.usecases.defects import model as M
from applied_aitk.usecases.defects import training as T
from applied_aitk.usecases.defects.network import DefectNet
from applied_aitk.usecases.defects.tiling import Tiler

logger = get_logger(__name__)

WEIGHTS = (0.25, 0.5, 0.75)
"""The network's shares of the ensemble's sum that validation with real defects chooses among."""
METHODS = ("patchcore", "segment", "ensemble")
"""``method=auto`` picks one of these by validation AUROC; on a tie, the earlier (the simpler)."""


class Ensemble(nn.Module):
    """uint8 images [B, S, S, 3] (NHWC, RGB) -> ``anomaly_map`` [B, S, S], ``score`` [B] and, when
    the network has a defect-type head, ``defect_probs`` [B, K].

    The map is ``(network logit map - a) / b + (PatchCore distance map - c) / d`` (the network's
    logits upsampled, not averaged: a defect of one stride-8 cell, a blowhole at 128 px, keeps its
    peak; PatchCore's smoothed nearest-neighbour distances), where a, b and
    c, d are the mean and standard deviation of each one's image score on the good validation
    images (``scales`` [2, 2]; b and d divided by twice each one's share, ``combine``); the score
    is the map's maximum. Unitless: about 0 on a typical good
    image, a few units per standard deviation above."""

    def __init__(self, net: DefectNet, patchcore: M.DefectModel, scales: torch.Tensor):
        super().__init__()
        self.net = net
        self.patchcore = patchcore
        self.register_buffer("scales", scales.float().reshape(2, 2))

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The network's stage features, then PatchCore's patch features (frozen backbone)."""
        return [*self.net.features(images), self.patchcore.features(images)]

    def parts(self, stages: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(network logit map [B, S, S], PatchCore map [B, S, S], the network's raw outputs)."""
        raw = self.net.raw(stages[:-1])
        size = (self.net.image_size, self.net.image_size)
        network = F.interpolate(raw["logits"], size=size, mode="bilinear", align_corners=False)[:, 0]
        return network, self.patchcore.head(stages[-1])[0], raw

    def outputs(self, stages: list[torch.Tensor]):
        network, patchcore, raw = self.parts(stages)
        anomaly_map = (network - self.scales[0, 0]) / self.scales[0, 1] + (patchcore - self.scales[1, 0]) / self.scales[1, 1]
        score = anomaly_map.flatten(1).amax(1)
        if "type_logits" not in raw:
            return anomaly_map, score
        return anomaly_map, score, torch.softmax(raw["type_logits"], -1)

    def forward(self, images: torch.Tensor):
        return self.outputs(self.features(images))

    def scores(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Image scores [B] of each method: ``segment`` (the network's logit), ``patchcore`` and ``ensemble``."""
        stages = self.features(images)
        network, patchcore, _ = self.parts(stages)
        return {"patchcore": patchcore.flatten(1).amax(1), "segment": network.flatten(1).amax(1), "ensemble": self.outputs(stages)[1]}


def patchcore_beside(net: DefectNet, good_images: np.ndarray, config: Any) -> M.DefectModel:
    """PatchCore at the network's input size: a coreset memory bank of the frozen pretrained
    backbone's patch features of ``good_images`` (uint8 [N, S, S, 3]: the good training images)."""
    size = net.image_size
    features, _ = M.build_features(config.backbone, config.weights, config.feature_stages, size, logger.info)
    with torch.no_grad():
        found = torch.cat([features(torch.from_numpy(good_images[i : i + config.batch_size])) for i in range(0, len(good_images), config.batch_size)])
    bank, _ = T.build_bank(found, config)
    return M.DefectModel(features, M.AnomalyHead(bank, size, config.sigma)).eval()


def image_scores(model: Ensemble, images: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """``Ensemble.scores`` over uint8 images [N, S, S, 3], in batches."""
    model.eval()
    found: dict[str, list[np.ndarray]] = {m: [] for m in METHODS}
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            for name, values in model.scores(torch.from_numpy(images[start : start + batch_size])).items():
                found[name].append(values.numpy())
    return {name: np.concatenate(values) for name, values in found.items()}


def combine(net: DefectNet, train_images: np.ndarray, train_good: np.ndarray, val_images: np.ndarray, val_defective: np.ndarray,
            config: Any, tiler: Tiler, weigh: bool = False) -> tuple[Ensemble, dict[str, Any]]:
    """The ensemble of the trained ``net`` and PatchCore on the good training images (their tiles),
    standardised on the good validation images, and the validation AUROC of each method
    (``selection`` for the manifest; None without validation defects). Images are uint8 at the
    tiler's input size.

    ``weigh`` (validation holds real defects): the network's share of the sum is chosen among
    ``WEIGHTS`` by validation AUROC (equal shares on a tie), folded into the scales, so that a
    network much stronger or weaker than PatchCore on these defects is not diluted by the other."""
    from sklearn.metrics import roc_auc_score

    patchcore = patchcore_beside(net, tiler.split(torch.from_numpy(train_images[train_good])).numpy(), config)
    model = Ensemble(net, patchcore, torch.tensor([[0.0, 1.0], [0.0, 1.0]])).eval()
    found = image_scores(tiler.wrap(model), val_images, config.batch_size)
    good = ~val_defective
    both = bool(val_defective.any() and good.any())
    spread = []
    for k, name in enumerate(("segment", "patchcore")):
        values = found[name][good]
        spread.append(max(float(values.std()), 1e-6))
        model.scales[k] = torch.tensor([float(values.mean()), spread[k]])
    tried = {}
    for weight in WEIGHTS if weigh and both else (0.5,):
        model.scales[:, 1] = torch.tensor([spread[0] / (2 * weight), spread[1] / (2 * (1 - weight))])
        scores = image_scores(tiler.wrap(model), val_images, config.batch_size)["ensemble"]
        tried[weight] = (float(roc_auc_score(val_defective, scores)) if both else 0.0, -abs(weight - 0.5), scores)
    weight = max(tried, key=lambda w: tried[w][:2])
    model.scales[:, 1] = torch.tensor([spread[0] / (2 * weight), spread[1] / (2 * (1 - weight))])
    found["ensemble"] = tried[weight][2]
    auroc = {name: float(roc_auc_score(val_defective, found[name])) if both else None for name in METHODS}
    logger.info("validation AUROC: " + ", ".join(f"{n} {v:.3f}" for n, v in auroc.items() if v is not None) + f"; network weight {weight}")
    return model, {"validation_auroc": auroc, "validation_good_images": int(good.sum()), "validation_defect_images": int(val_defective.sum()),
                   "network_weight": weight, "weight_validation_auroc": {str(w): round(v[0], 4) for w, v in tried.items()} if len(tried) > 1 else None}


def choose(auroc: dict[str, float | None], synthetic: bool = False) -> str:
    """The method with the best validation AUROC (the simpler on a tie; ``ensemble`` without any).

    ``synthetic``: validation held synthetic defects only (no labelled ones), the very kind the
    network alone was trained on, so its AUROC there says little about real defects (on magnetic
    tile it ranked first on validation and last on test): the choice is then PatchCore or the ensemble."""
    known = [m for m in METHODS if auroc.get(m) is not None and not (synthetic and m == "segment")]
    return max(known, key=lambda m: (auroc[m], -METHODS.index(m))) if known else "ensemble"


def with_type_head(patchcore: M.DefectModel, images: np.ndarray, types: np.ndarray, classes: int, config: Any, tiler: Tiler) -> M.DefectModel:
    """PatchCore (when ``method=auto`` chose it) given a defect-type head trained on the typed
    training defects (``images`` uint8 at the tiler's input size, ``types`` their indices), as
    ``method=patchcore`` has; with tiles, on each image's highest-scoring tile."""
    old = patchcore.head
    head = M.AnomalyHead(old.bank, old.image_size, config.sigma, classes=classes, channels=old.bank.shape[1])
    with torch.no_grad():
        tiles = tiler.split(torch.from_numpy(images))
        features = torch.cat([patchcore.features(tiles[i : i + config.batch_size]) for i in range(0, len(tiles), config.batch_size)])
        scores = head.patch_scores(features)
        pooled = tiler.best(head.pooled(features, scores), scores.flatten(1).amax(1))
    head.classifier.fit(pooled, torch.from_numpy(types).long(), config.classifier_epochs, config.seed)
    return M.DefectModel(patchcore.features, head).eval()
