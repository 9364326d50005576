"""The model bundle: a directory with manifest.json, ONNX graphs, weights and assets, checksummed.

Written into a temporary directory beside the target and renamed into place, so a crash never
leaves half a bundle; loading checks the manifest against its schema (toolkit/manifest.py), the
use case and every file's sha256, refuses a manifest entry that points outside the bundle and an
ONNX file whose external data is not a listed file. Nothing here unpickles. Bundles are written
by ``applied_aitk.package.package``; plugins only read them."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from applied_aitk import manifest as schema
from applied_aitk.errors import AitkError
from applied_aitk.files import read_json, replace_dir

FORMAT_VERSION = schema.FORMAT_VERSION
MANIFEST = "manifest.json"


class Bundle:
    """A verified bundle on disk: ``path``, ``manifest`` (format 2) and helpers to read its files;
    ``stored_format`` is the format of its manifest.json (1 for a bundle read through the mapping)."""

    def __init__(self, path: Path, manifest: dict[str, Any], stored_format: int = FORMAT_VERSION):
        self.path = path
        self.manifest = manifest
        self.stored_format = stored_format

    @property
    def usecase(self) -> str:
        return self.manifest["usecase"]

    @property
    def plugin(self) -> dict[str, str]:
        """``{"name", "version"}`` of the distribution that trained it."""
        return self.manifest["plugin"]

    @property
    def config(self) -> dict[str, Any]:
        """The training settings; a missing key is an AitkError naming the bundle."""
        return _Section(self.manifest["config"], f"{self.path}: bundle has no setting")

    @property
    def metrics(self) -> dict[str, Any]:
        return self.manifest["metrics"]

    @property
    def assets(self) -> dict[str, Any]:
        """Plugin settings recorded at training (preprocessing, thresholds, labels...); a missing
        key is an AitkError naming the bundle."""
        return _Section(self.manifest["assets"], f"{self.path}: bundle has no asset")

    def graph(self, name: str = "model") -> dict[str, Any]:
        """The manifest entry of an ONNX graph: file, schema, parity, variants and the use case's checks."""
        if name not in self.manifest["graphs"]:
            raise AitkError(f"{self.path}: bundle has no graph {name!r}")
        return self.manifest["graphs"][name]

    def variants(self, graph: str = "model") -> list[str]:
        """The variants (int8, fp16, int4) written for ``graph``."""
        return list(self.graph(graph)["variants"])

    def model_file(self, variant: str | None = None, graph: str = "model") -> Path:
        """The ONNX file of ``graph`` (None: fp32, or a variant: int8, fp16, int4)."""
        entry = self.graph(graph)
        if variant is not None:
            if variant not in entry["variants"]:
                raise AitkError(f"{self.path}: bundle has no {variant} variant of {graph!r} (train with --quantize {variant} to add one)")
            entry = entry["variants"][variant]
        return self.file(entry["file"])

    def file(self, name: str) -> Path:
        if name not in self.manifest["files"]:
            raise AitkError(f"{self.path}: bundle has no file {name!r}")
        return _inside(self.path, name)

    def has(self, name: str) -> bool:
        return name in self.manifest["files"]

    def read_json(self, name: str) -> Any:
        try:
            return json.loads(self.file(name).read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise AitkError(f"{self.path}: bundle file {name} is not valid JSON ({e})") from None

    def read_array(self, name: str):
        """A numpy array; an object array (which would need unpickling) or a damaged file is refused."""
        import numpy as np

        try:
            return np.load(self.file(name), allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise AitkError(f"{self.path}: bundle file {name} is not a plain numeric .npy array ({e})") from None

    def read_weights(self, name: str = "weights.safetensors") -> dict:
        from safetensors.torch import load_file

        return load_file(self.file(name))


class _Section(dict):
    """A manifest section whose missing keys raise AitkError with one clear line, not KeyError."""

    def __init__(self, values: dict, missing: str):
        super().__init__(values)
        self._missing = missing

    def __missing__(self, key: str) -> Any:
        raise AitkError(f"{self._missing} {key!r}")


class BundleWriter:
    """Builds a bundle in a temporary directory; ``commit()`` checksums it, validates the manifest and
    renames it into place. Used by ``applied_aitk.package.package``.

    Use as a context manager: leaving the block by an exception (a failed parity check, Ctrl-C,
    SIGTERM) removes the temporary directory and leaves any existing bundle at ``out`` untouched."""

    def __init__(self, out: Path, usecase: str, plugin: dict[str, str], config: Any = None):
        from applied_aitk import __version__

        self.out = Path(out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp(self.out)
        self.dir = self.out.with_name(f".{self.out.name}.tmp-{os.getpid()}")
        self.dir.mkdir()
        self.manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "usecase": usecase,
            "plugin": plugin,
            "toolkit_version": __version__,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "config": jsonable(config) if config is not None else {},
            "graphs": {},
            "assets": {},
            "metrics": {},
        }
        self._signals = _terminate_raises()

    def __enter__(self) -> BundleWriter:
        self._signals.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self.dir.exists():
                shutil.rmtree(self.dir, ignore_errors=True)
        finally:
            self._signals.__exit__(exc_type, exc, tb)

    def path(self, name: str) -> Path:
        """Where to write the file ``name`` inside the bundle being built."""
        target = _inside(self.dir, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def write_json(self, name: str, data: Any) -> None:
        self.path(name).write_text(json.dumps(jsonable(data), indent=2))

    def write_array(self, name: str, array) -> None:
        import numpy as np

        np.save(self.path(name), np.asarray(array), allow_pickle=False)

    def write_weights(self, state_dict: dict, name: str = "weights.safetensors") -> None:
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, self.path(name))

    def commit(self) -> Bundle:
        files = sorted(p for p in self.dir.rglob("*") if p.is_file())
        self.manifest["files"] = {p.relative_to(self.dir).as_posix(): _sha256(p)[0] for p in files}
        self.manifest = schema.validate(jsonable(self.manifest), str(self.out))
        (self.dir / MANIFEST).write_text(json.dumps(self.manifest, indent=2))
        replace_dir(self.dir, self.out)
        return Bundle(self.out, self.manifest)


def load_bundle(path: Path, usecase: str | None = None, verify: bool = True) -> Bundle:
    """The bundle at ``path``, its manifest checked against the schema (format 1 is read as format 2),
    every file against its checksum and the assets against their use case's types; AitkError with
    one line naming the bundle otherwise."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not path.exists():
        raise AitkError(f"{path}: no such bundle (no file or folder there)")
    if not manifest_path.is_file():
        raise AitkError(f"{path}: not a bundle (no {MANIFEST})")
    manifest = read_json(manifest_path)
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if type(version) is int and version not in (1, FORMAT_VERSION):
        raise AitkError(f"{path}: bundle format {version!r}, this aitk reads formats 1 and {FORMAT_VERSION}")
    if type(version) is int and version == 1:
        manifest = schema.from_format_1(manifest)
    manifest = schema.validate(manifest, str(path))
    if usecase is not None and manifest["usecase"] != usecase:
        raise AitkError(f"{path}: a {manifest['usecase']!r} bundle, expected a {usecase!r} one")
    for name, digest in manifest["files"].items():
        file = _inside(path, name)
        if not file.is_file():
            raise AitkError(f"{path}: bundle file {name} is missing")
        if verify:
            actual, external = _sha256(file, scan=file.suffix == ".onnx")
            if actual != digest:
                raise AitkError(f"{path}: bundle file {name} does not match its checksum (changed or corrupt)")
            if external:
                _check_external_data(path, name, manifest["files"])
    _check_assets(manifest, path)
    return Bundle(path, manifest, version)


def _check_assets(manifest: dict[str, Any], path: Path) -> None:
    """The assets against the types the bundle's use case declares (``UseCase.asset_types``), when
    an installed plugin provides that use case."""
    from applied_aitk.plugins import get_usecases

    declared = getattr(get_usecases().get(manifest["usecase"]), "asset_types", None)
    if declared:
        schema.check_assets(manifest["assets"], declared, str(path))


def _check_external_data(root: Path, name: str, files: dict[str, str]) -> None:
    """Every external-data file an ONNX graph refers to must be a listed (so checksummed) bundle file."""
    import onnx

    model = onnx.load(str(root / name), load_external_data=False)
    for tensor in _tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        relative = (Path(name).parent / location).as_posix()
        _inside(root, relative)
        if os.path.normpath(relative) not in files:
            raise AitkError(f"{root}: {name} reads external data from {location!r}, which is not a file of the bundle's manifest")


def _tensors(graph) -> Iterator[Any]:
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            for sub in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                yield from _tensors(sub)


def remove_stale_temp(out: Path) -> None:
    """Remove ``.OUT.tmp-PID`` / ``.OUT.old-PID`` folders left beside ``out`` by a run that was killed
    (its process is gone), and format-1 ``.OUT.XXXXXXXX`` ones."""
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(?:(?:tmp|old)-(\d+)|[a-z0-9_]{{8}})")
    if not out.parent.is_dir():
        return
    for candidate in out.parent.iterdir():
        match = pattern.fullmatch(candidate.name)
        if match and candidate.is_dir() and not (match.group(1) and _alive(int(match.group(1)))):
            shutil.rmtree(candidate, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # ours, from an earlier attempt in this process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


@contextmanager
def _terminate_raises() -> Iterator[None]:
    """SIGTERM raises SystemExit (exit 143) while the bundle is written, so the temp folder is removed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _inside(root: Path, name: str) -> Path:
    target = (root / name).resolve()
    if name.startswith("/") or not target.is_relative_to(root.resolve()):
        raise AitkError(f"{root}: bundle entry {name!r} points outside the bundle")
    return target


def _sha256(path: Path, scan: bool = False) -> tuple[str, bool]:
    """(sha256 hex digest, whether the bytes hold b"location" when ``scan``: an ONNX file's external data key)."""
    digest = hashlib.sha256()
    found, tail = False, b""
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
            if scan and not found:
                found = b"location" in tail + chunk
                tail = chunk[-8:]
    return digest.hexdigest(), found


def jsonable(value: Any) -> Any:
    """Dataclasses, paths, tuples and numpy scalars as plain JSON values; NaN and infinities as
    None (JSON has no NaN: Python's json wrote ``NaN`` into manifest.json, which strict readers refuse)."""
    import dataclasses
    import math

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
