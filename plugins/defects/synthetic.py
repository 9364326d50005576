"""Synthetic defects on good images, so that a network can learn "defect" from good images alone.

Two published recipes and the sample data's own marks:

- DRAEM (Zavrtanik, Kristan, Skočaj, "DRAEM - A discriminatively trained reconstruction embedding
  for surface anomaly detection", ICCV 2021): a smooth random-noise mask (DRAEM thresholds Perlin
  noise; this uses value noise: random grids upsampled bicubically, which gives the same kind of
  blobs) filled with foreign texture blended in at a random opacity. The foreign texture here is
  another training image, turned, flipped and with its contrast changed (DRAEM uses DTD textures,
  which are not available offline).
- CutPaste (Li, Sohn, Yoon, Pfister, "CutPaste: Self-Supervised Learning for Anomaly Detection and
  Localization", CVPR 2021): a rectangle of the image itself pasted elsewhere, and the thin "scar"
  variant.
- scratches, spots and cracks as ``aitk defects sample`` draws them.
- marks of the surface itself rather than foreign matter, as pressed and machined parts show them
  (the magnetic-tile set's blowholes, fray, uneven areas and broken edges): a noise blob darkened
  or lightened by a factor (``shade``: small and strong, or large and faint, with a soft edge) and
  a chip broken out of the image's edge, dark like the background behind it (``chip``).

Every function takes and returns uint8 images [S, S, 3] and boolean masks [S, S]."""

from __future__ import annotations

import numpy as np
from PIL import Image

VISIBLE = 8
"""A drawn mark's soft edge joins its mask where it moves a pixel by more than this many levels."""
KINDS = ("noise", "noise", "cutpaste", "scar", "scratch", "spot", "crack", "shade", "shade", "chip")
"""Drawn uniformly: DRAEM's noise blobs and the shaded blobs twice as often as each other kind."""


def synthesize(image: np.ndarray, foreign: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(image with one synthetic defect, its mask); ``foreign`` is another image of the same size
    (the texture DRAEM's blobs are filled with). The mask is never empty."""
    from applied_aitk.usecases.defects.sample import draw_defect

    for _ in range(10):
        kind = KINDS[rng.integers(len(KINDS))]
        if kind == "noise":
            out, mask = noise_blobs(image, foreign, rng)
        elif kind == "shade":
            out, mask = shade(image, rng)
        elif kind == "chip":
            out, mask = chip(image, rng)
        elif kind in ("cutpaste", "scar"):
            out, mask = cut_paste(image, rng, scar=kind == "scar")
        else:
            out, mask = draw_defect(image, kind, rng)
            mask |= np.abs(out.astype(np.int16) - image).max(-1) > VISIBLE  # the soft edge, where it shows
        if mask.any():
            return out, mask
    return out, mask


def value_noise(size: int, rng: np.random.Generator, octaves: int = 5) -> np.ndarray:
    """Smooth random noise [size, size] in about [0, 1]: a random grid of 2..2**octaves cells a side upsampled bicubically."""
    cells = int(2 ** rng.integers(1, octaves + 1))
    grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
    return np.asarray(Image.fromarray(grid, "F").resize((size, size), Image.Resampling.BICUBIC))


def noise_blobs(image: np.ndarray, foreign: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """DRAEM: noise above a threshold is the mask, filled with ``foreign`` (augmented) at opacity 1 - beta."""
    size = image.shape[0]
    noise = value_noise(size, rng)
    mask = noise > np.quantile(noise, 1 - rng.uniform(0.02, 0.2))  # 2-20% of the image
    texture = np.rot90(foreign, int(rng.integers(4))).astype(np.float32)
    if rng.random() < 0.5:
        texture = texture[:, ::-1]
    texture = np.clip((texture - texture.mean()) * rng.uniform(0.5, 2.0) + rng.uniform(0, 255), 0, 255)
    if rng.random() < 0.3:
        texture = 255 - texture
    beta = rng.uniform(0.0, 0.8)
    m = mask[..., None]
    out = np.where(m, beta * image + (1 - beta) * texture, image)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), mask


def cut_paste(image: np.ndarray, rng: np.random.Generator, scar: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """CutPaste: a patch of the image (2-15% of its area; a scar: 2-6% of the side wide, 10-30% long)
    pasted elsewhere, its brightness jittered."""
    size = image.shape[0]
    if scar:
        h, w = max(2, int(size * rng.uniform(0.1, 0.3))), max(1, int(size * rng.uniform(0.02, 0.06)))
        h, w = (h, w) if rng.random() < 0.5 else (w, h)
    else:
        area = size * size * rng.uniform(0.02, 0.15)
        aspect = np.exp(rng.uniform(np.log(0.3), np.log(3.3)))
        h = int(np.clip(np.sqrt(area * aspect), 2, size - 1))
        w = int(np.clip(np.sqrt(area / aspect), 2, size - 1))
    y0, x0 = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
    y1, x1 = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
    patch = image[y0 : y0 + h, x0 : x0 + w].astype(np.float32) * rng.uniform(0.7, 1.3) + rng.uniform(-30, 30)
    out = image.copy()
    out[y1 : y1 + h, x1 : x1 + w] = np.clip(np.rint(patch), 0, 255).astype(np.uint8)
    mask = np.zeros((size, size), bool)
    mask[y1 : y1 + h, x1 : x1 + w] = np.any(out[y1 : y1 + h, x1 : x1 + w] != image[y1 : y1 + h, x1 : x1 + w], axis=-1)
    return out, mask


def shade(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A noise blob whose pixels are scaled by a factor: small (0.1-3% of the image) and strong
    (x0.3-0.75, a pit or a stain), or large (10-40%) and faint (x0.7-0.9 or x1.1-1.3, an uneven
    area). The edge is soft; the mask is where a pixel moved by more than ``VISIBLE`` levels (may be empty)."""
    from scipy import ndimage

    size = image.shape[0]
    noise = value_noise(size, rng, octaves=3)  # a few blobs, not a speckle
    small = rng.random() < 0.5
    share = rng.uniform(0.001, 0.03) if small else rng.uniform(0.1, 0.4)
    region = noise > np.quantile(noise, 1 - share)
    factor = rng.uniform(0.3, 0.75) if small else (rng.uniform(0.7, 0.9) if rng.random() < 0.6 else rng.uniform(1.1, 1.3))
    alpha = ndimage.gaussian_filter(region.astype(np.float32), size / 128 * rng.uniform(0.5, 2.0))[..., None]
    out = np.clip(np.rint(image * (1 - alpha + alpha * factor)), 0, 255).astype(np.uint8)
    return out, np.abs(out.astype(np.int16) - image).max(-1) > VISIBLE


def chip(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A piece broken out of one edge: an ellipse centred on the border (3-25% of the side across,
    its outline roughened by noise) filled with a dark background (levels 0-50)."""
    size = image.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    a, b = size * rng.uniform(0.03, 0.25), size * rng.uniform(0.02, 0.12)
    along = rng.uniform(0, size)
    edge = int(rng.integers(4))
    dy, dx = [(yy, xx - along), (size - 1 - yy, xx - along), (xx, yy - along), (size - 1 - xx, yy - along)][edge]
    rough = (value_noise(size, rng) - 0.5) * 0.6
    mask = (dx / a) ** 2 + (dy / b) ** 2 < 1 + rough
    out = image.copy()
    out[mask] = np.clip(rng.uniform(0, 50) + rng.normal(0, 4, (int(mask.sum()), 1)), 0, 255).astype(np.uint8)
    return out, mask
