"""Demo data: tiles of real CC0 texture photos (scikit-image's brick, grass, gravel) with synthetic defects.

Each texture becomes an MVTec-AD category folder: train/good (plus a few labelled defects in
train/<type> so the defect-type head has something to learn), test/good, test/<type> and
ground_truth/<type>/<name>_mask.png. Training tiles come from the top of each photo and test
tiles from the bottom, so no test pixel was seen in training."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

TEXTURES = ("brick", "grass", "gravel")
DEFECTS = ("scratch", "spot", "crack")
TRAIN_ROWS = 0.6
ATTRIBUTION = """Sample data written by `aitk defects sample`.

Tiles are cut from three photos that scikit-image ships as skimage.data.brick, .grass and .gravel,
each licensed under the Creative Commons CC0 License (public domain dedication):
- brick: CC0Textures "Bricks25" (https://cc0textures.com/view.php?tex=Bricks25)
- grass: DeviantArt linolafett "Grass 01" (https://www.deviantart.com/linolafett/art/Grass-01-434853879)
- gravel: CC0Textures "Gravel04" (https://cc0textures.com/view.php?tex=Gravel04)
The scratches, spots and cracks and their masks are synthetic, drawn by aitk.
"""


def write_sample(
    out: Path,
    textures: tuple[str, ...] = TEXTURES,
    tile: int = 128,
    train_good: int = 40,
    train_defects: int = 3,
    test_good: int = 12,
    test_defects: int = 6,
    seed: int = 0,
) -> list[Path]:
    """Write one MVTec-style category folder per texture under ``out``; returns the folders."""
    import skimage.data

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ATTRIBUTION.txt").write_text(ATTRIBUTION)
    folders = []
    for t, texture in enumerate(textures):
        photo = getattr(skimage.data, texture)()
        rng = np.random.default_rng(seed + t)
        root = out / texture
        split_row = int(photo.shape[0] * TRAIN_ROWS)
        top, bottom = photo[:split_row], photo[split_row:]
        for i in range(train_good):
            _save(_tile(top, tile, rng), root / "train/good" / f"{i:03d}.png")
        for i in range(test_good):
            _save(_tile(bottom, tile, rng), root / "test/good" / f"{i:03d}.png")
        for defect in DEFECTS:
            for i in range(train_defects):
                image, _ = draw_defect(_tile(top, tile, rng), defect, rng)
                _save(image, root / "train" / defect / f"{i:03d}.png")
            for i in range(test_defects):
                image, mask = draw_defect(_tile(bottom, tile, rng), defect, rng)
                _save(image, root / "test" / defect / f"{i:03d}.png")
                _save(mask.astype(np.uint8) * 255, root / "ground_truth" / defect / f"{i:03d}_mask.png")
        folders.append(root)
    return folders


def _tile(region: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    y = rng.integers(0, region.shape[0] - size + 1)
    x = rng.integers(0, region.shape[1] - size + 1)
    tile = region[y : y + size, x : x + size]
    tile = np.rot90(tile, rng.integers(4))
    return np.ascontiguousarray(tile[:, ::-1] if rng.random() < 0.5 else tile)


def _save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def draw_defect(tile: np.ndarray, defect: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(tile with the defect, boolean mask of the defect's pixels); ``tile`` is uint8 [S, S] or [S, S, C]."""
    from scipy import ndimage

    size = tile.shape[0]
    if defect == "scratch":
        mask = _polyline(size, rng, steps=3, step_length=size * rng.uniform(0.12, 0.22), turn=0.25)
        mask = ndimage.binary_dilation(mask)
        shade = 255.0
    elif defect == "spot":
        mask = _ellipse(size, rng)
        shade = 0.0 if rng.random() < 0.5 else 255.0
    elif defect == "crack":
        mask = _polyline(size, rng, steps=int(rng.integers(25, 45)), step_length=3.0, turn=0.6)
        mask = ndimage.binary_dilation(mask, iterations=1)
        shade = 0.0
    else:
        raise ValueError(f"unknown defect {defect!r}")
    # soft edges look like a real mark rather than a pasted shape; the mask keeps the hard outline
    alpha = np.clip(ndimage.gaussian_filter(mask.astype(np.float64), 0.8) * rng.uniform(0.7, 0.95) * 1.6, 0, 1)
    alpha = alpha[..., None] if tile.ndim == 3 else alpha
    image = tile.astype(np.float64) * (1 - alpha) + shade * alpha
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask


def _polyline(size: int, rng: np.random.Generator, steps: int, step_length: float, turn: float) -> np.ndarray:
    from skimage.draw import line

    mask = np.zeros((size, size), dtype=bool)
    margin = size // 6
    y, x = rng.uniform(margin, size - margin, 2)
    angle = rng.uniform(0, 2 * math.pi)
    for _ in range(steps):
        angle += rng.normal(0, turn)
        ny = float(np.clip(y + step_length * math.sin(angle), 1, size - 2))
        nx = float(np.clip(x + step_length * math.cos(angle), 1, size - 2))
        rr, cc = line(int(y), int(x), int(ny), int(nx))
        mask[rr, cc] = True
        y, x = ny, nx
    return mask


def _ellipse(size: int, rng: np.random.Generator) -> np.ndarray:
    from skimage.draw import ellipse

    mask = np.zeros((size, size), dtype=bool)
    r = rng.uniform(0.05, 0.1, 2) * size
    cy, cx = rng.uniform(size * 0.2, size * 0.8, 2)
    rr, cc = ellipse(cy, cx, r[0], r[1], shape=mask.shape, rotation=rng.uniform(0, math.pi))
    mask[rr, cc] = True
    return mask
