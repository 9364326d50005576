"""The model bundle: a directory with manifest.json, model.onnx, weights and assets, checksummed.

Written into a temporary directory beside the target and renamed into place, so a crash never
leaves half a bundle; loading verifies the format, the use case and every file's sha256, and
refuses a manifest entry that points outside the bundle. Nothing here unpickles."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from toolkit.errors import AitkError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class Bundle:
    """A verified bundle on disk: ``path``, ``manifest`` and helpers to read its files."""

    def __init__(self, path: Path, manifest: dict[str, Any]):
        self.path = path
        self.manifest = manifest

    @property
    def usecase(self) -> str:
        return self.manifest["usecase"]

    @property
    def config(self) -> dict[str, Any]:
        return self.manifest.get("config", {})

    @property
    def metrics(self) -> dict[str, Any]:
        return self.manifest.get("metrics", {})

    @property
    def assets(self) -> dict[str, Any]:
        """Plugin settings recorded at training (preprocessing, thresholds, labels...)."""
        return self.manifest.get("assets", {})

    def file(self, name: str) -> Path:
        if name not in self.manifest["files"]:
            raise AitkError(f"{self.path}: bundle has no file {name!r}")
        return _inside(self.path, name)

    def has(self, name: str) -> bool:
        return name in self.manifest["files"]

    def read_json(self, name: str) -> Any:
        return json.loads(self.file(name).read_text())

    def read_array(self, name: str):
        import numpy as np

        return np.load(self.file(name), allow_pickle=False)

    def read_weights(self, name: str = "weights.safetensors") -> dict:
        from safetensors.torch import load_file

        return load_file(self.file(name))


class BundleWriter:
    """Builds a bundle in a temporary directory; ``commit()`` checksums it and renames it into place.

    Use as a context manager: leaving the block by an exception (a failed parity check, say)
    removes the temporary directory and leaves any existing bundle at ``out`` untouched."""

    def __init__(self, out: Path, usecase: str, plugin_version: str, config: Any = None):
        self.out = Path(out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", dir=self.out.parent))
        self.manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "usecase": usecase,
            "plugin_version": plugin_version,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "config": _jsonable(config) if config is not None else {},
            "assets": {},
            "metrics": {},
        }

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)

    def path(self, name: str) -> Path:
        """Where to write the file ``name`` (any plugin asset) inside the bundle being built."""
        target = _inside(self.dir, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def write_json(self, name: str, data: Any) -> None:
        self.path(name).write_text(json.dumps(_jsonable(data), indent=2))

    def write_array(self, name: str, array) -> None:
        import numpy as np

        np.save(self.path(name), np.asarray(array), allow_pickle=False)

    def write_weights(self, state_dict: dict, name: str = "weights.safetensors") -> None:
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, self.path(name))

    def commit(self) -> Bundle:
        files = sorted(p for p in self.dir.rglob("*") if p.is_file())
        self.manifest["files"] = {p.relative_to(self.dir).as_posix(): _sha256(p) for p in files}
        self.manifest = _jsonable(self.manifest)
        (self.dir / MANIFEST).write_text(json.dumps(self.manifest, indent=2))
        _replace_dir(self.dir, self.out)
        return Bundle(self.out, self.manifest)


def load_bundle(path: Path, usecase: str | None = None, verify: bool = True) -> Bundle:
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise AitkError(f"{path}: not a bundle (no {MANIFEST})")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AitkError(f"{manifest_path}: not valid JSON ({e})") from None
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise AitkError(f"{path}: bundle format {version!r}, this aitk reads format {FORMAT_VERSION}")
    if usecase is not None and manifest.get("usecase") != usecase:
        raise AitkError(f"{path}: a {manifest.get('usecase')!r} bundle, expected a {usecase!r} one")
    for name, digest in manifest.get("files", {}).items():
        file = _inside(path, name)
        if not file.is_file():
            raise AitkError(f"{path}: bundle file {name} is missing")
        if verify and _sha256(file) != digest:
            raise AitkError(f"{path}: bundle file {name} does not match its checksum (changed or corrupt)")
    return Bundle(path, manifest)


def _inside(root: Path, name: str) -> Path:
    target = (root / name).resolve()
    if name.startswith("/") or not target.is_relative_to(root.resolve()):
        raise AitkError(f"{root}: bundle entry {name!r} points outside the bundle")
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _replace_dir(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``; an existing ``dst`` is moved aside first and removed after."""
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.rename(dst, old)
    os.rename(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _jsonable(value: Any) -> Any:
    """Dataclasses, paths, tuples and numpy scalars as plain JSON values."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value
