"""Tiled inference: a large image is read at a higher resolution and cut into overlapping tiles of
the model's size, so that a defect a few pixels wide is not lost in a resize to ``image_size``.

With ``tiles = n`` the input is ``n x n`` tiles of ``size`` pixels overlapping by a quarter of a
tile: ``input_size = size + (n - 1) * stride`` with ``stride = size - size // 4`` (n = 2 at 224 px:
392 px; n = 4: 728 px). Each tile goes through the model on its own; the anomaly maps are
stitched (the mean where tiles overlap), the image score is the maximum over the tiles, and the
defect type is the one of the tile with the highest score. Everything is static slicing and
padding, so it exports to ONNX inside the model."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Tiler(nn.Module):
    """Cuts images [B, L, L, ...] into tiles [B * n * n, S, S, ...] and puts per-tile outputs back
    together (``L = input_size``, ``S = size``, ``n = tiles``; tiles ordered row by row)."""

    def __init__(self, size: int, tiles: int):
        super().__init__()
        self.size, self.tiles = size, tiles
        self.stride = size - size // 4
        self.input_size = size + (tiles - 1) * self.stride
        self.offsets = [(y * self.stride, x * self.stride) for y in range(tiles) for x in range(tiles)]
        count = torch.zeros(self.input_size, self.input_size)
        for y, x in self.offsets:
            count[y : y + size, x : x + size] += 1
        self.register_buffer("weight", 1 / count)

    @property
    def count(self) -> int:
        """Tiles per image."""
        return len(self.offsets)

    def split(self, images: torch.Tensor) -> torch.Tensor:
        """[B, L, L, ...] -> [B * n * n, S, S, ...] (images NHWC, or masks [B, L, L])."""
        if self.count == 1:
            return images
        s = self.size
        return torch.stack([images[:, y : y + s, x : x + s] for y, x in self.offsets], 1).flatten(0, 1)

    def stitch(self, maps: torch.Tensor) -> torch.Tensor:
        """Per-tile maps [B * n * n, S, S] -> [B, L, L], the mean where tiles overlap."""
        if self.count == 1:
            return maps
        tiles = maps.view(-1, self.count, self.size, self.size)
        far = self.input_size - self.size
        return sum(F.pad(tiles[:, k], (x, far - x, y, far - y)) for k, (y, x) in enumerate(self.offsets)) * self.weight

    def image_max(self, values: torch.Tensor) -> torch.Tensor:
        """Per-tile values [B * n * n] -> their maximum per image [B]."""
        return values if self.count == 1 else values.view(-1, self.count).amax(1)

    def best(self, rows: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Per-tile rows [B * n * n, K] -> the row of each image's highest-scoring tile [B, K]."""
        if self.count == 1:
            return rows
        grouped = rows.view(-1, self.count, rows.shape[-1])
        index = scores.view(-1, self.count).argmax(1)
        return torch.gather(grouped, 1, index.view(-1, 1, 1).expand(-1, 1, rows.shape[-1]))[:, 0]

    def per_image(self, raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A DefectNet's raw training outputs per tile -> the image score (the tiles' maximum logit:
        a defect image needs one defective tile, a good image none) and the highest-scoring tile's
        type logits; the logit maps stay per tile."""
        if self.count == 1 or "score_logit" not in raw:
            return raw
        out = dict(raw, score_logit=self.image_max(raw["score_logit"]))
        if "type_logits" in raw:
            out["type_logits"] = self.best(raw["type_logits"], raw["score_logit"])
        return out

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` run tile by tile (itself when there is one tile)."""
        return model if self.count == 1 else Tiled(model, self)


class Tiled(nn.Module):
    """A model with ``features(images)`` and ``outputs(features)`` (DefectNet, Ensemble, a PatchCore
    DefectModel) on images [B, L, L, 3]: the same outputs as the model's, stitched (see the module)."""

    def __init__(self, model: nn.Module, tiler: Tiler):
        super().__init__()
        self.net = model
        self.tiler = tiler

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        found = self.net.features(self.tiler.split(images))
        return list(found) if isinstance(found, (list, tuple)) else [found]

    def outputs(self, stages: list[torch.Tensor]):
        out = self.net.outputs(stages)
        anomaly_map, score = self.tiler.stitch(out[0]), self.tiler.image_max(out[1])
        return (anomaly_map, score) if len(out) == 2 else (anomaly_map, score, self.tiler.best(out[2], out[1]))

    def forward(self, images: torch.Tensor):
        return self.outputs(self.features(images))

    def scores(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """An Ensemble's per-method image scores, each the maximum over the tiles."""
        return {name: self.tiler.image_max(values) for name, values in self.net.scores(self.tiler.split(images)).items()}
