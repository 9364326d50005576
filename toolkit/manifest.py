"""The bundle manifest's schema, owned by the core: what every bundle records, checked when it is
written and when it is read. A bundle of format 1 is read through ``from_format_1``.

Format 2 (``manifest.json``)::

    format_version   2 (an integer)
    usecase          the use case's name
    plugin           {"name", "version"}: the distribution that registered the use case
    toolkit_version  the aitk that wrote the bundle
    created          ISO 8601 time, UTC
    config           the training settings, as given
    resolved         (optional) {setting: value used} for settings training worked out itself
                     (a 0 or "auto" meaning "from the data")
    graphs           {"model": GRAPH, ...}: the ONNX graphs; "model" is the one predict runs
    assets           the use case's JSON settings (preprocessing, thresholds, labels...)
    metrics          figures measured at training
    files            {relative path: sha256} of every other file in the bundle (README.md, the
                     model card, included)
    data             (optional) the training data: name, files, records, bytes, sha256, modified
    libraries        (optional) versions of Python, torch, onnx, onnxruntime(-gpu), numpy at training

    GRAPH = {"file", "schema" (inputs, outputs), "parity" (the check against torch),
             "variants": {"int8" | "fp16" | "int4": {"file", ...its checks}}, ...the use case's checks}
"""

from __future__ import annotations

import re
from typing import Any

from applied_aitk.errors import AitkError

FORMAT_VERSION = 2
VARIANTS = ("int8", "fp16", "int4")
SHA256 = re.compile(r"[0-9a-f]{64}")


def variant_file(graph: str, variant: str | None) -> str:
    """The file name of ``graph``'s ONNX file: ``model.onnx``, ``model.int8.onnx``, ``model.fp16.onnx``, ``model.int4.onnx``."""
    return f"{graph}.onnx" if variant is None else f"{graph}.{variant}.onnx"


def validate(manifest: Any, where: str) -> dict[str, Any]:
    """``manifest`` if it has every field of format 2 with the right type; else AitkError naming
    ``where`` (the bundle) and the field."""
    top = _mapping(manifest, "manifest", where)
    version = top.get("format_version")
    if type(version) is not int:  # 1.0 and true are not format versions
        raise AitkError(f"{where}: manifest field format_version: expected an integer, got {version!r}")
    for key in ("usecase", "toolkit_version", "created"):
        _text(top, key, where)
    plugin = _field(top, "plugin", dict, where)
    for key in ("name", "version"):
        _text(plugin, key, where, "plugin.")
    for key in ("config", "assets", "metrics"):
        _field(top, key, dict, where)
    if "resolved" in top:
        _field(top, "resolved", dict, where)
    files = _field(top, "files", dict, where)
    for name, digest in files.items():
        if not isinstance(digest, str) or not SHA256.fullmatch(digest):
            raise AitkError(f"{where}: manifest field files.{name}: expected a sha256 digest, got {digest!r}")
    graphs = _field(top, "graphs", dict, where)
    if "model" not in graphs:
        raise AitkError(f"{where}: manifest field graphs: no 'model' graph")
    for name, graph in graphs.items():
        _graph(graph, f"graphs.{name}.", files, where)
    return top


def _graph(graph: Any, prefix: str, files: dict, where: str) -> None:
    graph = _mapping(graph, prefix.rstrip("."), where)
    _listed(graph, prefix, files, where)
    _field(graph, "schema", dict, where, prefix)
    _field(graph, "parity", dict, where, prefix)
    for variant, entry in _field(graph, "variants", dict, where, prefix).items():
        if variant not in VARIANTS:
            raise AitkError(f"{where}: manifest field {prefix}variants: unknown variant {variant!r} (expected {' or '.join(VARIANTS)})")
        _listed(_mapping(entry, f"{prefix}variants.{variant}", where), f"{prefix}variants.{variant}.", files, where)


def _listed(entry: dict, prefix: str, files: dict, where: str) -> None:
    name = _text(entry, "file", where, prefix)
    if name not in files:
        raise AitkError(f"{where}: manifest field {prefix}file: {name!r} is not among the bundle's files")


def _mapping(value: Any, field: str, where: str) -> dict:
    if not isinstance(value, dict):
        raise AitkError(f"{where}: manifest field {field}: expected an object, got {type(value).__name__}")
    return value


def _field(mapping: dict, key: str, kind: type, where: str, prefix: str = "") -> Any:
    if key not in mapping:
        raise AitkError(f"{where}: manifest field {prefix}{key} is missing")
    value = mapping[key]
    if not isinstance(value, kind):
        raise AitkError(f"{where}: manifest field {prefix}{key}: expected {_names[kind]}, got {type(value).__name__}")
    return value


def _text(mapping: dict, key: str, where: str, prefix: str = "") -> str:
    value = _field(mapping, key, str, where, prefix)
    if not value:
        raise AitkError(f"{where}: manifest field {prefix}{key}: expected a non-empty string")
    return value


_names = {dict: "an object", str: "a string", list: "a list"}


def check_assets(assets: dict[str, Any], types: dict[str, Any], where: str) -> None:
    """A bundle's ``assets`` against the types its use case declares (``UseCase.asset_types``):
    AitkError with one line naming ``where`` (the bundle) and the asset when one is missing or of
    another type (a hand-edited manifest.json), so that a command fails once, at load, and never
    with a KeyError in every row. pydantic checks the types strictly (an integer is a number, text
    never is); a dataclass is an object of its fields and no others; an asset whose type allows
    None may be absent (bundles written before it existed)."""
    from pydantic import TypeAdapter, ValidationError

    for name, kind in types.items():
        adapter = TypeAdapter(_checkable(kind))
        if name not in assets:
            if _accepts_none(adapter):
                continue
            raise AitkError(f"{where}: bundle has no asset {name!r} (was manifest.json edited? train the bundle again)")
        try:
            adapter.validate_python(assets[name], strict=True)
        except ValidationError as e:
            first = e.errors()[0]
            at = name + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
            got = "" if first["type"] == "missing" else f", got {_json_kind(first['input'])}"
            raise AitkError(f"{where}: bundle asset {at}: {first['msg'][0].lower()}{first['msg'][1:]}{got} "
                            "(was manifest.json edited? train the bundle again)") from None


def _checkable(kind: Any) -> Any:
    """``kind``, a dataclass as a pydantic model of its fields that refuses other keys (``Cls(**asset)`` would)."""
    import dataclasses
    import typing

    if not (dataclasses.is_dataclass(kind) and isinstance(kind, type)):
        return kind
    from pydantic import ConfigDict, create_model

    hints = typing.get_type_hints(kind)
    required = {f.name: f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING for f in dataclasses.fields(kind)}
    fields: dict[str, Any] = {name: (hints[name], ... if needed else None) for name, needed in required.items()}
    return create_model(kind.__name__, __config__=ConfigDict(extra="forbid"), **fields)


def _accepts_none(adapter: Any) -> bool:
    from pydantic import ValidationError

    try:
        adapter.validate_python(None, strict=True)
    except ValidationError:
        return False
    return True


def _json_kind(value: Any) -> str:
    """How a message names a JSON value: ``an object``, ``a list``, ``text 'abc'``, ``the number 3``..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"text {value[:40]!r}"
    return "an object" if isinstance(value, dict) else "a list"


def from_format_1(manifest: dict[str, Any]) -> dict[str, Any]:
    """A format-1 manifest as format 2. Format 1 kept the main graph under ``model`` (with codegen's
    second graph under ``model.score`` and the fp16 variant under ``model.fp16``), the int8 variant
    under ``model_int8`` (forecast: ``model.int8``), and ``plugin_version`` (aitk's own version)."""
    upgraded = {k: v for k, v in manifest.items() if k not in ("model", "model_int8", "plugin_version")}
    version = str(manifest.get("plugin_version", "unknown"))
    upgraded.update(format_version=FORMAT_VERSION, plugin={"name": "aitk", "version": version}, toolkit_version=version)
    for key in ("config", "assets", "metrics"):
        upgraded.setdefault(key, {})
    model = manifest.get("model")
    if not isinstance(model, dict):
        upgraded["graphs"] = model  # validate() names what is wrong
        return upgraded
    model = dict(model)
    graphs: dict[str, Any] = {}
    if isinstance(model.get("score"), dict):
        graphs["score"] = {**model.pop("score"), "variants": {}}
    variants = {v: model.pop(v) for v in VARIANTS if isinstance(model.get(v), dict)}
    if isinstance(manifest.get("model_int8"), dict):
        variants["int8"] = manifest["model_int8"]
    for variant in VARIANTS:  # format 1 found variants by file name; some plugins wrote no entry
        if variant not in variants and variant_file("model", variant) in manifest.get("files", {}):
            variants[variant] = {"file": variant_file("model", variant)}
    graphs = {"model": {**model, "variants": variants}, **graphs}
    upgraded["graphs"] = graphs
    return upgraded
