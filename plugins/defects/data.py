"""Reading defect data: images of any mode and size, MVTec-AD folders and CSV manifests."""

from __future__ import annotations

import csv
import io
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from applied_aitk import AitkError, InputError
from applied_aitk.console import get_logger, warn_once
from applied_aitk.io import GZIP_MAGIC, open_binary
from applied_aitk.usecases.defects.plugin import IMAGE_SUFFIXES

logger = get_logger(__name__)

GOOD_LABELS = {"good", "ok", "normal", "free", "0", "false", "pass"}
GENERIC_DEFECT_LABELS = {"defect", "defective", "bad", "anomaly", "anomalous", "ng", "nok", "1", "true", "fail"}
VAL_SPLITS = {"val", "valid", "validation"}


@dataclass
class Item:
    """One labelled image: ``defect_type`` is None for good images and for untyped defects;
    ``group`` names the part or region an image shows, when a manifest says."""

    image: Path
    good: bool
    defect_type: str | None = None
    mask: Path | None = None
    group: str | None = None


DEFAULT_MAX_PIXELS = 178_956_970
"""Pillow's own limit (2 x Image.MAX_IMAGE_PIXELS): a guard against decompression bombs."""
MIN_SIDE = 8
"""Smaller images show too few pixels to inspect; they are refused, not scored."""
Image.MAX_IMAGE_PIXELS = None  # open_image checks the limit itself, naming the file and the setting

SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


def open_image(source: Path | bytes, name: str = "", max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """An RGB PIL image from a file or bytes; grayscale, 16-bit, float, palette, RGBA and CMYK are converted.

    Pixels are scaled by their type, never stretched per image, so that scores stay comparable
    between images: 8-bit as is, 16-bit by 1/257 (65535 becomes 255), 32-bit integer images as
    16-bit data, float images from [0, 1]. Raises InputError naming the file for anything that
    is not a readable image, an image over ``max_pixels`` pixels or under MIN_SIDE on a side,
    and pixel values its type cannot hold (int32 outside 0..65535, float outside [0, 1])."""
    return open_pages(source, name, max_pixels)[0]


def open_pages(source: Path | bytes, name: str = "", max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Image.Image, int]:
    """(``open_image`` of the file: its first page, how many pages or frames it holds: a
    multi-page TIFF, an animated GIF or WebP has more than one)."""
    name = name or str(source)
    try:
        image = _open(source, name)
        check_size(image.size, name, max_pixels)
        image.load()
        pages = int(getattr(image, "n_frames", 1))
        image = ImageOps.exif_transpose(image)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise InputError(f"{name}: not a readable image ({type(e).__name__}: {e})") from None
    return to_rgb(image, name), pages


def _open(source: Path | bytes, name: str) -> Image.Image:
    """``Image.open`` of a file or bytes, gzip undone (``x.png.gz``, which a folder of inputs holds
    as it holds ``x.csv.gz``); InputError for an empty one (Pillow: "cannot identify image file")."""
    if not isinstance(source, bytes) and _gzipped(source):
        with open_binary(source) as f:
            try:
                source = f.read()
            except (OSError, EOFError) as e:
                raise InputError(f"{name}: not a readable image (gzip: {e})") from None
    empty = not source if isinstance(source, bytes) else _size(source) == 0
    if empty:
        raise InputError(f"{name}: empty file (0 bytes), not an image")
    return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)


def _gzipped(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(2) == GZIP_MAGIC
    except OSError:  # Image.open says why
        return False


def _size(path: Path) -> int | None:
    try:
        return Path(path).stat().st_size
    except OSError:  # Image.open says why
        return None


def image_from_json(value: object) -> bytes:
    """The image bytes of a JSON record ``{"image": BASE64}``; InputError names the field."""
    import base64
    import binascii

    if not isinstance(value, dict) or not isinstance(value.get("image"), str):
        raise InputError('field image: expected {"image": "<the image file, base64-encoded>"}')
    try:
        return base64.b64decode(value["image"], validate=True)
    except (binascii.Error, ValueError) as e:
        raise InputError(f"field image: not valid base64 ({e})") from None


def check_size(size: tuple[int, int], name: str, max_pixels: int) -> None:
    """InputError for an image too large to decode safely or too small to inspect."""
    width, height = size
    if width * height > max_pixels:
        raise InputError(
            f"{name}: {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,} "
            "(a guard against decompression bombs); to read it, raise the limit: train --set max_image_pixels=N, predict --max-image-pixels N"
        )
    if min(width, height) < MIN_SIDE:
        raise InputError(f"{name}: {width}x{height} pixels is too small to inspect (at least {MIN_SIDE} on each side)")


def to_rgb(image: Image.Image, name: str = "image") -> Image.Image:
    """RGB from any Pillow mode, scaling deep pixels by their type (see ``open_image``)."""
    if image.mode in SIXTEEN_BIT or image.mode in ("I", "F"):
        image = Image.fromarray(_to_8bit(np.asarray(image), image.mode, name), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # transparent pixels become white rather than whatever colour hides under alpha 0
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return image.convert("RGB")


def _to_8bit(values: np.ndarray, mode: str, name: str) -> np.ndarray:
    values = values.astype(np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if mode == "F":
        if not np.isfinite(values).all():
            raise InputError(f"{name}: float image with NaN or infinite pixels")
        if low < -1e-6 or high > 1 + 1e-6:
            raise InputError(f"{name}: float pixels from {low:.4g} to {high:.4g}; float images must hold values in [0, 1]")
        values = values * 255.0
    else:
        if mode == "I" and (low < 0 or high > 65535):
            raise InputError(f"{name}: 32-bit integer pixels from {low:.0f} to {high:.0f}; expected 16-bit values (0..65535)")
        values = values / 257.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def load_image(source: Path | bytes, size: int, name: str = "", max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, Image.Image]:
    """(uint8 array [size, size, 3] for the model, the original RGB image), for training and
    evaluation: a multi-page file (TIFF, animated GIF or WebP) gives its first page, with a warning
    line naming it (predict says so in the row's ``warnings``)."""
    image, pages = open_pages(source, name, max_pixels)
    if pages > 1:
        warn_once(f"{name or source}: {pages} pages (frames) in the file; only the first is used", logger.name)
    return resize(image, size), image


def resize(image: Image.Image, size: int) -> np.ndarray:
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def load_mask(path: Path | None, size: int) -> np.ndarray:
    """A boolean [size, size] mask; no mask file means a defect-free image (all False)."""
    if path is None:
        return np.zeros((size, size), dtype=bool)
    try:
        mask = _open(path, str(path))
        check_size(mask.size, str(path), DEFAULT_MAX_PIXELS)
        mask.load()
        mask = to_rgb(mask, str(path))
    except (UnidentifiedImageError, OSError, ValueError, InputError) as e:
        raise AitkError(f"{path}: not a readable mask image ({e})") from None
    mask = mask.convert("L").resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(mask) > 127


def load_items(data: Path, split: str) -> list[Item]:
    """Labelled images of ``split`` ("train" or "test") from an MVTec-AD category folder or a CSV manifest.

    For "train", a CSV's rows with split val/valid/validation come back too (``validation_items``
    names them); a CSV without a split column gives all its rows to either split."""
    data = Path(data)
    if data.is_file() and data.suffix.lower() == ".csv":
        items = _csv_items(data, {split, *VAL_SPLITS} if split == "train" else {split})
    elif data.is_dir():
        items = _mvtec_items(data, split)
    else:
        raise AitkError(f"{data}: expected an MVTec-AD category folder (train/good, test/...) or a CSV manifest")
    if not items:
        raise AitkError(f"{data}: no {split} images found")
    return items


def validation_items(data: Path) -> set[Path]:
    """Images a CSV manifest puts in its validation split (empty for MVTec folders)."""
    if not (Path(data).is_file() and Path(data).suffix.lower() == ".csv"):
        return set()
    return {item.image for item in _csv_items(Path(data), VAL_SPLITS)}


def split_validation(items: list[Item], val: set[Path], fraction: float, seed: int) -> tuple[list[Item], list[Item]]:
    """(good images for the memory bank, validation images for the threshold).

    Labelled defects always go to validation (they never enter the memory bank). Without an
    explicit validation split, ``fraction`` of the good images is held out at random, whole
    groups at a time: an image whose twin (the same part, another lighting) sat in the bank
    would score low and pull the threshold down."""
    good = [i for i in items if i.good and i.image not in val]
    held = [i for i in items if not i.good or i.image in val]
    if not any(i.good for i in held) and fraction > 0 and len(good) >= 2:
        grouped = len({i.group for i in good}) > 1
        groups: dict[str, list[Item]] = {}
        for item in good:
            groups.setdefault(item.group if grouped and item.group else str(item.image), []).append(item)
        keys = sorted(groups)
        random.Random(seed).shuffle(keys)
        target = min(len(good) - 1, max(1, round(fraction * len(good))))
        held_good: list[Item] = []
        while len(keys) > 1 and len(held_good) < target:  # one group at least stays in the bank
            held_good += groups[keys.pop()]
        held += held_good
        good = [i for key in keys for i in groups[key]]
    if not good:
        raise AitkError("no good (defect-free) training images: the memory bank needs some")
    return good, held


def _mvtec_items(root: Path, split: str) -> list[Item]:
    folder = root / split
    if not folder.is_dir():
        if not (root / "train").is_dir() and not (root / "test").is_dir():
            raise AitkError(f"{root}: not an MVTec-AD category folder (expected train/good and test/<defect> folders)")
        raise AitkError(f"{root}: no {split}/ folder")
    items = []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        good = class_dir.name.lower() in GOOD_LABELS
        for image in _images(class_dir):
            mask = None if good else _mvtec_mask(root, class_dir.name, image)
            items.append(Item(image, good, None if good else class_dir.name, mask))
    return items


def _mvtec_mask(root: Path, defect: str, image: Path) -> Path | None:
    for name in (f"{image.stem}_mask.png", f"{image.stem}.png"):
        candidate = root / "ground_truth" / defect / name
        if candidate.is_file():
            return candidate
    return None


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _csv_items(path: Path, splits: set[str]) -> list[Item]:
    from applied_aitk.table_files import excel_separator

    with open(path, newline="", encoding="utf-8-sig") as f:
        first = f.readline()
        hinted = excel_separator(first)
        if not hinted:
            f.seek(0)
        reader = csv.DictReader(f, delimiter=hinted or ",")
        reader.fieldnames  # reads the header
        rows, after = [], reader.line_num + bool(hinted)  # (the line a row starts on, the row): a quoted field may span lines
        for row in reader:
            rows.append((after + 1, row))
            after = reader.line_num + bool(hinted)
    if not rows or "image" not in rows[0][1] or "label" not in rows[0][1]:
        raise AitkError(f"{path}: a manifest needs the columns image and label (optional: mask, defect_type, split, group)")
    items = []
    for number, row in rows:
        split = (row.get("split") or "").strip().lower()
        if "split" in row and split not in splits:
            continue
        items.append(_csv_item(path, number, row))
    return items


def _csv_item(path: Path, number: int, row: dict[str, str]) -> Item:
    image = (row.get("image") or "").strip()
    label = (row.get("label") or "").strip()
    if not image or not label:
        raise AitkError(f"{path}:{number}: fields image and label must not be empty")
    good = label.lower() in GOOD_LABELS
    defect_type = None
    if not good:
        defect_type = (row.get("defect_type") or "").strip() or (None if label.lower() in GENERIC_DEFECT_LABELS else label)
    mask = (row.get("mask") or "").strip()
    group = (row.get("group") or "").strip() or None
    return Item(path.parent / image, good, defect_type, path.parent / mask if mask and not good else None, group)


def split_groups(items: list[Item], val: set[Path], fraction: float, seed: int) -> tuple[list[Item], list[Item]]:
    """(training images, validation images) for the fine-tuned network: the manifest's val split
    when it has one, else ``fraction`` of the images held out whole groups at a time (a part's
    images never sit on both sides), stratified by what a group holds (good, or its commonest
    defect type) so that validation sees each kind. Defects go to both sides, unlike
    ``split_validation``: the network learns from them."""
    if val:
        return [i for i in items if i.image not in val], [i for i in items if i.image in val]
    groups: dict[str, list[Item]] = {}
    for item in items:
        groups.setdefault(item.group or str(item.image), []).append(item)
    kinds: dict[str, list[str]] = {}
    for key, members in groups.items():
        labels = [i.defect_type or ("good" if i.good else "defect") for i in members]
        kinds.setdefault(max(set(labels), key=labels.count), []).append(key)
    rng = random.Random(seed)
    held: set[str] = set()
    for kind in sorted(kinds):
        keys = sorted(kinds[kind])
        rng.shuffle(keys)
        target = fraction * sum(len(groups[k]) for k in keys)
        taken = 0
        while len(keys) > 1 and taken < target:  # one group of each kind at least stays for training
            key = keys.pop()
            held.add(key)
            taken += len(groups[key])
    train = [i for key, members in groups.items() if key not in held for i in members]
    return train, [i for key in sorted(held) for i in groups[key]]
