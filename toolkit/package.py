"""From what a use case learned to a bundle: ``train`` returns a ``TrainResult``, ``package`` writes it.

``package`` exports every graph to ONNX and checks it against torch, writes the variants asked for
(int8, fp16, int4) with their checks, the weights, the asset files and the manifest, and commits the
bundle atomically: a failed check, Ctrl-C or SIGTERM leaves no bundle and no temp folder. The
manifest's fields come from here, never from a plugin (toolkit/manifest.py has the schema)."""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from applied_aitk import onnx_export
from applied_aitk.bundle import Bundle, BundleWriter, jsonable, remove_stale_temp
from applied_aitk.errors import AitkError
from applied_aitk.manifest import VARIANTS, variant_file
from applied_aitk.usecase import Graph, TrainResult

if TYPE_CHECKING:
    from applied_aitk.runtime import Runtime
    from applied_aitk.usecase import UseCase

CORE_KEYS = {"file", "schema", "parity", "parts", "variants", "vs_fp32"}


def train_bundle(usecase: UseCase, data: Path, out: Path, config: Any, runtime: Runtime, variants: Sequence[str] = ()) -> Bundle:
    """``usecase.train`` then ``package``: what `aitk USECASE train` runs. A stale temp folder of a
    killed run to the same ``out`` is removed first; the result's checkpoint folder once the bundle
    is written."""
    remove_stale_temp(Path(out))
    result = usecase.train(data, out, config, runtime)
    bundle = package(result, out, usecase, config, variants, data)
    if result.checkpoint is not None:
        shutil.rmtree(result.checkpoint, ignore_errors=True)
    return bundle


def package(result: TrainResult, out: Path, usecase: UseCase, config: Any, variants: Sequence[str] = (), data: Path | None = None) -> Bundle:
    """Write ``result`` as the bundle ``out`` for ``usecase`` (its name, and the plugin's name and
    version from the installed distribution), recording ``config``, the training ``data``'s name,
    size and hash (``applied_aitk.card.data_facts``) and the library versions; ``variants`` (int8, fp16,
    int4) are written for the graphs that allow them, and the model card README.md last. Raises
    ParityError (nothing written) when an export disagrees with torch, AitkError for a result that
    cannot make a valid bundle."""
    from applied_aitk.card import CARD, data_facts, library_versions, model_card
    from applied_aitk.plugins import distribution_of

    variants = _checked_variants(variants)
    _check_result(result)
    with BundleWriter(out, usecase.name, distribution_of(usecase), config) as writer, tempfile.TemporaryDirectory() as tmp:
        for graph in result.graphs:
            writer.manifest["graphs"][graph.name] = _write_graph(graph, writer, Path(tmp), variants)
        writer.write_weights(result.weights)
        for name, value in result.files.items():
            _write_file(writer, name, value)
        writer.manifest["assets"] = result.assets
        writer.manifest["metrics"] = result.metrics
        if result.resolved:
            writer.manifest["resolved"] = result.resolved
        if data is not None:
            writer.manifest["data"] = data_facts(data)
        writer.manifest["libraries"] = library_versions()
        if result.history:
            _write_file(writer, "history.csv", history_csv(result.history))
        _write_file(writer, CARD, model_card(jsonable(writer.manifest), getattr(usecase, "summary", ""), getattr(usecase, "model_card", "")))
        return writer.commit()


def _checked_variants(variants: Sequence[str]) -> list[str]:
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise AitkError(f"variant {unknown[0]!r}: expected {' or '.join(VARIANTS)}")
    return list(dict.fromkeys(variants))


def _check_result(result: TrainResult) -> None:
    names = [g.name for g in result.graphs]
    if "model" not in names or len(set(names)) != len(names):
        raise AitkError(f"a use case's TrainResult needs one graph named 'model' and distinct names, got {names}")
    reserved = {"manifest.json", "weights.safetensors", "history.csv", "README.md", *(variant_file(n, v) for n in names for v in (None, *VARIANTS))}
    clash = sorted(reserved & set(result.files))
    if clash:
        raise AitkError(f"a use case's TrainResult file {clash[0]!r} clashes with a file the core writes")


def _write_graph(graph: Graph, writer: BundleWriter, tmp: Path, variants: list[str]) -> dict[str, Any]:
    path = writer.path(variant_file(graph.name, None))
    entry = {**_export(graph, path, tmp), **_check(graph, "fp32", path, path), "variants": {}}
    for variant in variants:
        if variant not in _allowed(graph):
            continue
        target = writer.path(variant_file(graph.name, variant))
        entry["variants"][variant] = {**_write_variant(graph, variant, path, target, tmp), **_check(graph, variant, target, path)}
    return entry


def _check(graph: Graph, variant: str, path: Path, fp32: Path) -> dict[str, Any]:
    found = graph.check(variant, path, fp32) if graph.check else {}
    clash = sorted(CORE_KEYS & set(found))
    if clash:
        raise AitkError(f"graph {graph.name!r}: its check returned {clash[0]!r}, a manifest field the core writes")
    return found


def _allowed(graph: Graph) -> set[str]:
    return set().union(*(p.variants for p in graph.parts)) if graph.parts else set(graph.variants)


def _export(graph: Graph, path: Path, tmp: Path) -> dict[str, Any]:
    """Export (a single module, or its parts chained) and check the file against ``graph.module``."""
    parts = {}
    if graph.parts:
        for part in graph.parts:
            parts[part.name] = _export(part, tmp / variant_file(part.name, None), tmp)["parity"]
        chain([tmp / variant_file(p.name, None) for p in graph.parts], path)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on Python branches: the parity check is the proof
            onnx_export.export(graph.module, graph.example_inputs, path, graph.input_names, graph.output_names,
                               graph.dynamic_axes, graph.parity_inputs, graph.atol, graph.label_output, custom_opsets=graph.custom_opsets)
        if graph.prepare:
            graph.prepare(path)
    entry = {"file": path.name, "schema": onnx_export.onnx_schema(path), "parity": _parity(graph, path)}
    if parts:
        entry["parts"] = parts
    return entry


def _parity(graph: Graph, path: Path, atol: float | None = None, rtol: float = 0.0) -> dict[str, Any]:
    inputs = graph.parity_inputs or graph.example_inputs
    return onnx_export.check_parity(graph.module, path, inputs, graph.output_names, graph.atol if atol is None else atol, graph.label_output, rtol)


def _write_variant(graph: Graph, variant: str, fp32: Path, target: Path, tmp: Path) -> dict[str, Any]:
    """The variant file: fp16 checked against torch with a tolerance relative to each output's scale;
    int8 and int4 compared with fp32 (quantization moves outputs by design; the use case's check judges it)."""
    if graph.parts:
        files = [_convert(p, variant, tmp / variant_file(p.name, None), tmp / variant_file(p.name, variant))
                 if variant in p.variants else tmp / variant_file(p.name, None) for p in graph.parts]
        chain(files, target)
    else:
        _convert(graph, variant, fp32, target)
    if variant == "fp16":
        return {"file": target.name, "parity": _parity(graph, target, onnx_export.FP16_ATOL, onnx_export.FP16_RTOL)}
    return {"file": target.name, "vs_fp32": onnx_export.compare(fp32, target, graph.parity_inputs or graph.example_inputs, graph.output_names, graph.label_output)}


def _convert(graph: Graph, variant: str, src: Path, dst: Path) -> Path:
    if variant == "fp16":
        onnx_export.convert_fp16(src, dst)
    elif variant == "int4":
        onnx_export.quantize_int4(src, dst)
    elif graph.calibration is not None:
        onnx_export.quantize_static(src, dst, graph.calibration)
    else:
        onnx_export.quantize_dynamic(src, dst)
    return dst


def chain(files: list[Path], out: Path) -> None:
    """One ONNX graph from ``files`` run in sequence: each one's outputs feed the next one's inputs of
    the same name; internal names get the part's index as a prefix so they cannot clash."""
    import onnx
    from onnx import compose

    merged = onnx.load(str(files[0]))
    for k, file in enumerate(files[1:], 1):
        following = compose.add_prefix(onnx.load(str(file)), f"part{k}/", rename_inputs=False, rename_outputs=False)
        following.ir_version = merged.ir_version
        links = {o.name for o in merged.graph.output} & {i.name for i in following.graph.input}
        merged = compose.merge_models(merged, following, io_map=[(name, name) for name in sorted(links)])
    onnx.checker.check_model(merged)
    onnx.save(merged, str(out))


def _write_file(writer: BundleWriter, name: str, value: Any) -> None:
    import numpy as np

    if isinstance(value, Path):
        shutil.copyfile(value, writer.path(name))
    elif isinstance(value, (str, bytes)):
        writer.path(name).write_bytes(value.encode() if isinstance(value, str) else value)
    elif isinstance(value, np.ndarray):
        if not name.endswith(".npy"):
            raise AitkError(f"bundle file {name!r}: an array is written as .npy")
        writer.write_array(name, value)
    elif name.endswith(".json"):
        writer.write_json(name, value)
    else:
        raise AitkError(f"bundle file {name!r}: expected a .json name for a {type(value).__name__}")


def history_csv(history: list[dict[str, Any]]) -> str:
    """The training history as CSV text: one row per entry, the union of the keys as columns."""
    import csv
    import io

    columns = list(dict.fromkeys(k for row in history for k in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return text.getvalue()
