"""The bundle's model card, README.md, in the manner of Hugging Face model cards: what the model is
for, what it was trained on (name, records, size, sha256, date), with which libraries and settings,
its metrics and export checks, the limits its plugin declares, and how to use it.

The core writes it for every bundle from the manifest (``applied_aitk.package.package``); a use case
adds only its own text, ``UseCase.model_card`` (intended use and limitations). ``summary`` is what
`aitk bundle info` shows."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from applied_aitk.counting import count_records
from applied_aitk.errors import AitkError
from applied_aitk.extras import DISTRIBUTION
from applied_aitk.io import has_suffix

if TYPE_CHECKING:
    from applied_aitk.bundle import Bundle

CARD = "README.md"
LIBRARIES = ("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "numpy")  # distributions; those installed are listed
STRUCTURED = (".yaml", ".yml", ".json", ".toml")  # whose records only the use case can count


def data_facts(data: Path | str) -> dict[str, Any]:
    """What identifies the training data ``data`` (a file or a folder): ``name`` as given, ``files``,
    ``bytes``, ``sha256`` (of the file; of a folder, over its files' relative paths and contents),
    ``modified`` (the newest file's time, UTC) and ``records`` (rows of CSV, JSONL and Parquet, one
    per other file such as an image; None where only the use case could count them: YAML, JSON,
    TOML). A ``data`` that is not a path (a use case's own spec, such as a glob) has only its ``name``."""
    path = Path(data)
    facts: dict[str, Any] = {"name": str(data)}
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.is_file() and not any(p.startswith(".") for p in f.relative_to(path).parts))
    else:
        return facts
    digest = hashlib.sha256()
    for file in files:
        if file != path:
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    newest = max((f.stat().st_mtime for f in files), default=None)
    facts.update(
        files=len(files),
        records=None if any(has_suffix(f, STRUCTURED) for f in files) else count_records(files),
        bytes=sum(f.stat().st_size for f in files),
        sha256=digest.hexdigest(),
        modified=None if newest is None else dt.datetime.fromtimestamp(newest, dt.timezone.utc).isoformat(timespec="seconds"),
    )
    return facts


def card_text(bundle: Bundle) -> str:
    """The bundle's model card; AitkError for a bundle written before aitk wrote them."""
    if not bundle.has(CARD):
        raise AitkError(f"{bundle.path}: this bundle has no model card (it was written before aitk wrote them); "
                        f"`aitk bundle info {bundle.path}` shows what it records")
    return bundle.file(CARD).read_text(encoding="utf-8")


def summary(bundle: Bundle) -> dict[str, Any]:
    """What `aitk bundle info` shows: what the bundle is, its data, files, settings, metrics, graphs."""
    manifest = bundle.manifest
    sizes = {name: bundle.file(name).stat().st_size for name in manifest["files"]}
    return {
        "bundle": str(bundle.path),
        "usecase": manifest["usecase"],
        "created": manifest["created"],
        "plugin": f"{manifest['plugin']['name']} {manifest['plugin']['version']}",
        "format_version": bundle.stored_format,
        "checksums": f"{len(sizes)} files verified",
        "model card": str(bundle.path / CARD) if bundle.has(CARD) else "none",
        "data": manifest.get("data", "not recorded"),
        "files": {name: f"{size / 1e6:.2f} MB" for name, size in sizes.items()},
        "config": {**manifest["config"], **manifest.get("resolved", {})},
        **({"resolved at training": {k: _resolved(v, manifest["config"].get(k)) for k, v in manifest["resolved"].items()}}
           if manifest.get("resolved") else {}),
        "metrics": manifest["metrics"],
        "graphs": manifest["graphs"],
        "libraries": manifest.get("libraries", "not recorded"),
    }


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries that trained and exported the model."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def model_card(manifest: dict[str, Any], summary: str, text: str) -> str:
    """The model card (Markdown with Hugging Face's YAML front matter) of a bundle with ``manifest``;
    ``summary`` is the use case's one line, ``text`` its ``model_card`` (intended use, limitations)."""
    usecase, plugin = manifest["usecase"], manifest["plugin"]
    core = f" (aitk {manifest['toolkit_version']})" if plugin["name"] != DISTRIBUTION else ""  # a built-in: the core itself
    parts = [
        f"---\nlibrary_name: aitk\ntags: [aitk, {usecase}, onnx]\n---\n",
        f"# {usecase} model\n\n{summary}\n\n"
        f"Trained {manifest['created']} by the `{usecase}` use case of {plugin['name']} {plugin['version']}"
        f"{core}; predictions run through ONNX Runtime.\n",
        _data(manifest.get("data")),
        text.strip() + "\n" if text.strip() else "## Intended use and limitations\n\nThe plugin declares none.\n",
        "## Metrics\n\nMeasured at training:\n\n" + _table(_flat(manifest["metrics"])),
        "## Export checks\n\n" + _table(_checks(manifest["graphs"]), ("file", "check")),
        "## Training settings\n\n" + _table(_flat(_settings(manifest)), ("setting", "value")),
        "## Libraries\n\n" + _table(manifest.get("libraries") or {}, ("library", "version")),
        f"## How to use\n\n```\naitk {usecase} predict BUNDLE INPUT... --out predictions.jsonl\n"
        f"aitk {usecase} evaluate BUNDLE DATA --report report\naitk serve BUNDLE\naitk bundle info BUNDLE\n```\n\n"
        "Every file of the bundle is listed with its sha256 in `manifest.json` (this card included); "
        "loading the bundle checks them.\n",
    ]
    return "\n".join(parts)


def _settings(manifest: dict[str, Any]) -> dict[str, Any]:
    """The training settings with the values training used: a setting it worked out itself (0 or
    "auto" meaning "from the data") shows its value and what was set, ``14 (set: 0)``."""
    resolved = manifest.get("resolved") or {}
    config = manifest["config"]
    return {k: _resolved(resolved[k], config.get(k)) if k in resolved else v for k, v in {**config, **resolved}.items()}


def _resolved(used: Any, given: Any) -> str:
    def shown(value: Any) -> str:
        return value if isinstance(value, str) and value else _compact(value)

    return f"{shown(used)} (set: {shown(given)})"


def _data(facts: dict[str, Any] | None) -> str:
    if not facts:
        return "## Training data\n\nNot recorded (the model was not trained by `aitk train`, e.g. imported).\n"
    if "sha256" not in facts:
        return f"## Training data\n\n`{facts['name']}` (as given to train; not a single file or folder, so not hashed).\n"
    records = "not counted" if facts.get("records") is None else f"{facts['records']:,}"
    rows = {"name": f"`{facts['name']}`", "records": records, "files": facts["files"], "size": f"{facts['bytes']:,} bytes",
            "sha256": f"`{facts['sha256']}`", "last modified": facts.get("modified") or ""}
    return "## Training data\n\n" + _table(rows, ("data", "value"))


def _checks(graphs: dict[str, Any]) -> dict[str, str]:
    """Per ONNX file, how it compares with torch (parity) or with the fp32 model (int8, int4)."""
    checks = {}
    for entry in graphs.values():
        checks[entry["file"]] = _compact(entry.get("parity", {}))
        for variant in entry.get("variants", {}).values():
            checks[variant["file"]] = _compact(variant.get("parity") or variant.get("vs_fp32") or {})
    return checks


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(", ", ": "))[:300]


def _flat(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _table(mapping: dict[str, Any], header: tuple[str, str] = ("metric", "value")) -> str:
    if not mapping:
        return "(none)\n"
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    for key, value in mapping.items():
        cell = f"{value:.4g}" if isinstance(value, float) else _compact(value) if isinstance(value, (list, dict)) else str(value)
        lines.append(f"| {key} | {cell.replace('|', '/')} |")
    return "\n".join(lines) + "\n"
