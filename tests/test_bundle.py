"""Bundles: atomic writes, the manifest schema and checksums verified on load, a failed parity check
writes nothing, format-1 bundles still load and predict."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, run_aitk
from applied_aitk import Graph, TrainResult
from applied_aitk.bundle import load_bundle, remove_stale_temp
from applied_aitk.errors import AitkError, ParityError
from applied_aitk.package import package

FORMAT_1 = REPO / "tests" / "data" / "wine-format1"  # written by aitk before format 2, with --quantize int8


class Usecase:
    """What ``package`` needs of a use case: its name, one no plugin registers (so no asset types
    are checked); the plugin is the test's own distribution: aitk."""

    name = "toy"
    plugin = "fraud"  # an entry point of the aitk distribution


@pytest.fixture
def bundle_copy(wine, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(wine["bundle"], copy)
    return copy


def edit_manifest(bundle: Path, edit) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    edit(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def linear_result(module=None, **extra) -> TrainResult:
    torch.manual_seed(0)
    module = module or torch.nn.Linear(3, 2).eval()
    graph = Graph(module, (torch.randn(2, 3),), ["x"], ["y"], parity_inputs=(torch.randn(7, 3),))
    return TrainResult(graphs=[graph], weights={"w": torch.zeros(1)}, **extra)


def test_a_trained_bundle_verifies_and_records_parity_and_its_plugin(wine):
    bundle = load_bundle(wine["bundle"], usecase="wine")
    assert set(bundle.manifest["files"]) == {"model.onnx", "weights.safetensors", "history.csv", "README.md"}
    assert bundle.graph()["parity"]["max_abs_diff"]["probabilities"] < 1e-4
    assert bundle.graph()["schema"]["inputs"][0]["shape"] == ["batch", 13]
    assert bundle.manifest["format_version"] == 2 and bundle.plugin["name"] == "aitk-wine"
    assert bundle.model_file() == wine["bundle"].resolve() / "model.onnx"


def test_a_changed_byte_is_refused(bundle_copy, wine):
    model = bundle_copy / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    with pytest.raises(AitkError, match="model.onnx does not match its checksum"):
        load_bundle(bundle_copy)
    result = run_aitk("wine", "predict", str(bundle_copy), str(wine["data"] / "predict.csv"), "--out", str(bundle_copy.parent / "p.jsonl"), plugins="wine")
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {bundle_copy}: bundle file model.onnx does not match its checksum (changed or corrupt)"


@pytest.mark.parametrize("name", ["../outside.txt", "/etc/passwd", "sub/../../outside.txt"])
def test_a_manifest_path_escaping_the_bundle_is_refused(bundle_copy, name):
    (bundle_copy.parent / "outside.txt").write_text("x")
    edit_manifest(bundle_copy, lambda m: m["files"].__setitem__(name, "0" * 64))
    with pytest.raises(AitkError, match="points outside the bundle"):
        load_bundle(bundle_copy)


def test_wrong_usecase_and_format_are_refused(bundle_copy):
    with pytest.raises(AitkError, match="a 'wine' bundle, expected a 'fraud' one"):
        load_bundle(bundle_copy, usecase="fraud")
    edit_manifest(bundle_copy, lambda m: m.__setitem__("format_version", 99))
    with pytest.raises(AitkError, match="bundle format 99"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.__setitem__("format_version", 2.0), "field format_version: expected an integer, got 2.0"),
    (lambda m: m.__setitem__("format_version", True), "field format_version: expected an integer, got True"),
    (lambda m: m.pop("plugin"), "field plugin is missing"),
    (lambda m: m.__setitem__("assets", ["features"]), "field assets: expected an object, got list"),
    (lambda m: m["graphs"].pop("model"), "field graphs: no 'model' graph"),
    (lambda m: m["graphs"]["model"].__setitem__("file", "other.onnx"), "field graphs.model.file: 'other.onnx' is not among the bundle's files"),
    (lambda m: m["graphs"]["model"]["variants"].__setitem__("int3", {"file": "model.onnx"}), "unknown variant 'int3'"),
    (lambda m: m["files"].__setitem__("model.onnx", 42), "field files.model.onnx: expected a sha256 digest"),
])
def test_a_malformed_manifest_is_refused_naming_bundle_and_field(bundle_copy, edit, message):
    edit_manifest(bundle_copy, edit)
    with pytest.raises(AitkError, match=message) as error:
        load_bundle(bundle_copy)
    assert str(error.value).startswith(f"{bundle_copy}: manifest field")


def test_a_manifest_that_is_not_an_object_is_refused_by_the_cli(bundle_copy, wine):
    (bundle_copy / "manifest.json").write_text("[1, 2]")
    result = run_aitk("wine", "evaluate", str(bundle_copy), str(wine["data"] / "test.csv"), plugins="wine")
    assert result.returncode == 1 and result.stderr.strip() == f"error: {bundle_copy}: manifest field manifest: expected an object, got list"


def test_a_missing_path_and_a_folder_that_is_no_bundle_are_told_apart(tmp_path):
    with pytest.raises(AitkError, match=r"^.*/typo: no such bundle \(no file or folder there\)$"):
        load_bundle(tmp_path / "typo")
    with pytest.raises(AitkError, match=r"^.*: not a bundle \(no manifest.json\)$"):
        load_bundle(tmp_path)


def test_a_missing_asset_and_an_object_array_are_one_clear_line(tmp_path):
    table = np.array([{"a": 1}], dtype=object)
    bundle = package(linear_result(files={"table.npy": np.zeros(2)}), tmp_path / "b", Usecase(), {})
    np.save(tmp_path / "object.npy", table, allow_pickle=True)
    with pytest.raises(AitkError, match=r"bundle has no asset 'threshold'"):
        bundle.assets["threshold"]
    shutil.copyfile(tmp_path / "object.npy", tmp_path / "b" / "table.npy")
    bundle = load_bundle(tmp_path / "b", verify=False)
    with pytest.raises(AitkError, match=r"bundle file table.npy is not a plain numeric .npy array"):
        bundle.read_array("table.npy")


@pytest.mark.parametrize("edit, message", [
    (lambda a: a.__setitem__("classes", {"0": "cultivar_0", "1": "cultivar_1", "2": "cultivar_2"}),
     "bundle asset classes: input should be a valid list, got an object"),
    (lambda a: a["features"].__setitem__(3, 7), "bundle asset features[3]: input should be a valid string, got the number 7"),
    (lambda a: a.pop("label"), "bundle has no asset 'label'"),
    (lambda a: a.__setitem__("ranges", [[0, 1]] * 12), "bundle asset ranges: expected a [min, max] pair for each of the 13 features, got 12 entries"),
])
def test_a_hand_edited_asset_is_refused_once_at_load(bundle_copy, wine, tmp_path, edit, message):
    """Wine's `classes` as an object failed every row with KeyError: 0; now one line, exit 1, no output."""
    edit_manifest(bundle_copy, lambda m: edit(m["assets"]))
    out = tmp_path / "p.jsonl"
    result = run_aitk("wine", "predict", str(bundle_copy), str(wine["data"] / "predict.csv"), "--out", str(out), plugins="wine")
    assert result.returncode == 1 and not out.exists()
    line = result.stderr.strip()
    assert line.startswith(f"error: {'' if 'ranges' in message else f'{bundle_copy}: '}{message}") and "\n" not in line, line
    assert "train the bundle again" in line


def test_every_use_case_declares_the_assets_it_reads_and_its_bundles_have_them(tmp_path):
    """Each built-in use case, the example plugin and the template declare asset types; the types
    accept what training writes (the example's bundle, a format-1 one) and refuse other JSON."""
    from applied_aitk.manifest import check_assets
    from applied_aitk.plugins import get_usecases

    usecases = get_usecases()
    for name in ("chatbot", "codegen", "defects", "forecast", "fraud", "wine"):
        assert usecases[name].asset_types, name
    assert "asset_types = {" in (REPO / "toolkit/templates/plugin/package/plugin.py.tmpl").read_text()
    assert load_bundle(FORMAT_1, usecase="wine").assets["classes"] == ["cultivar_0", "cultivar_1", "cultivar_2"]
    spec = {"context_length": 24, "horizon": 6, "quantiles": [0.1, 0.5, 0.9], "season": 12, "calendar": [], "past_features": [], "future_features": []}
    schema = {"format": "long", "id": "series", "time": "date", "targets": ["value"]}
    check_assets({"spec": spec, "schema": schema}, usecases["forecast"].asset_types, "b")
    with pytest.raises(AitkError, match=r"^b: bundle asset spec.horizon: input should be a valid integer, got text '6'"):
        check_assets({"spec": {**spec, "horizon": "6"}, "schema": schema}, usecases["forecast"].asset_types, "b")
    with pytest.raises(AitkError, match=r"^b: bundle asset spec.extra: extra inputs are not permitted"):
        check_assets({"spec": {**spec, "extra": 1}, "schema": schema}, usecases["forecast"].asset_types, "b")
    with pytest.raises(AitkError, match=r"^b: bundle asset threshold: input should be a valid number, got true/false"):
        check_assets({"preprocessing": "p.json", "threshold": True}, usecases["fraud"].asset_types, "b")


def test_external_data_must_be_a_listed_file(tmp_path):
    import onnx

    bundle = package(linear_result(), tmp_path / "b", Usecase(), {})
    model = onnx.load(str(bundle.model_file()))
    onnx.save(model, str(tmp_path / "b" / "model.onnx"), save_as_external_data=True, location="w.bin", size_threshold=0)
    edit_manifest(tmp_path / "b", lambda m: m["files"].__setitem__("model.onnx", _sha256(tmp_path / "b" / "model.onnx")))
    with pytest.raises(AitkError, match="model.onnx reads external data from 'w.bin', which is not a file of the bundle's manifest"):
        load_bundle(tmp_path / "b")
    edit_manifest(tmp_path / "b", lambda m: m["files"].__setitem__("w.bin", _sha256(tmp_path / "b" / "w.bin")))
    assert load_bundle(tmp_path / "b").has("w.bin")
    (tmp_path / "b" / "w.bin").write_bytes(b"0" * 32)
    with pytest.raises(AitkError, match="w.bin does not match its checksum"):
        load_bundle(tmp_path / "b")


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_format_1_bundle_still_loads_and_predicts(wine, tmp_path):
    bundle = load_bundle(FORMAT_1, usecase="wine")
    assert bundle.stored_format == 1 and bundle.manifest["format_version"] == 2
    assert bundle.plugin == {"name": "aitk", "version": "0.1.0"} and bundle.variants() == ["int8"]
    assert bundle.model_file("int8").name == "model.int8.onnx"
    out = tmp_path / "p.jsonl"
    result = run_aitk("wine", "predict", str(FORMAT_1), str(wine["data"] / "predict.csv"), "--out", str(out), "--quantize", "int8", plugins="wine")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows and all(row["label"].startswith("cultivar_") for row in rows)
    evaluated = run_aitk("wine", "evaluate", str(FORMAT_1), str(wine["data"] / "test.csv"), "--json", plugins="wine")
    assert json.loads(evaluated.stdout)["accuracy"] > 0.8


class BatchDependent(torch.nn.Module):
    """Python control flow on the batch size: tracing bakes in one branch, so the export is wrong."""

    def forward(self, x):
        return x * 2 if x.shape[0] > 4 else x


def test_a_failed_parity_check_leaves_no_bundle(tmp_path, bundle_copy):
    before = sorted(p.name for p in bundle_copy.iterdir())
    with pytest.raises(ParityError, match="differs from torch"):
        package(linear_result(BatchDependent()), bundle_copy, Usecase(), {})
    assert sorted(p.name for p in bundle_copy.iterdir()) == before, "the old bundle is untouched"
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"], "no temporary directory is left behind"
    with pytest.raises(ParityError):
        package(linear_result(BatchDependent()), tmp_path / "new", Usecase(), {})
    assert not (tmp_path / "new").exists()


def test_commit_replaces_an_existing_bundle_whole(tmp_path):
    for value in (1, 2):
        package(linear_result(files={"value.json": {"v": value}}), tmp_path / "b", Usecase(), {})
    assert load_bundle(tmp_path / "b").read_json("value.json") == {"v": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def test_variants_are_written_and_resolved_by_the_bundle(tmp_path):
    bundle = package(linear_result(), tmp_path / "b", Usecase(), {"seed": 0}, variants=["int8", "fp16"])
    assert sorted(bundle.variants()) == ["fp16", "int8"]
    assert bundle.graph()["variants"]["fp16"]["parity"]["max_abs_diff"]["y"] < 0.05
    assert 0 < bundle.graph()["variants"]["int8"]["vs_fp32"]["max_abs_diff"]["y"] < 1  # recorded; a 3-feature toy quantizes coarsely
    assert {bundle.model_file(v).name for v in (None, "int8", "fp16")} == {"model.onnx", "model.int8.onnx", "model.fp16.onnx"}
    assert load_bundle(tmp_path / "b").manifest == bundle.manifest


def test_a_killed_runs_temp_folder_is_removed_by_the_next_train(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    stale = [tmp_path / f".b.tmp-{dead}", tmp_path / ".b.abcd1234"]
    live = tmp_path / f".b.tmp-{os.getppid()}"
    for folder in [*stale, live]:
        folder.mkdir()
    remove_stale_temp(tmp_path / "b")
    assert [p.exists() for p in stale] == [False, False] and live.exists()


def test_an_interrupted_train_leaves_no_temp_folder(tmp_path):
    """SIGTERM while the bundle is being written: no bundle, no hidden folder, exit 143."""
    script = (
        "import os, signal, torch\n"
        "from applied_aitk import Graph, TrainResult\n"
        "from applied_aitk.package import package\n"
        "class Usecase: name, plugin = 'wine', 'fraud'\n"
        "def check(variant, path, fp32):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return {}\n"
        "m = torch.nn.Linear(3, 2).eval()\n"
        "g = Graph(m, (torch.ones(2, 3),), ['x'], ['y'], check=check)\n"
        f"package(TrainResult([g], m.state_dict()), {str(tmp_path / 'b')!r}, Usecase(), {{}})\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 143, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_training_data_facts_name_count_and_hash_files_and_folders(tmp_path):
    from applied_aitk.card import data_facts

    (tmp_path / "images/good").mkdir(parents=True)
    for name in ("a.png", "b.png", "good/c.png"):
        (tmp_path / "images" / name).write_bytes(name.encode())
    (tmp_path / "images/.cache").write_text("ignored")
    folder = data_facts(tmp_path / "images")
    assert folder["files"] == 3 and folder["records"] == 3 and folder["bytes"] == 20 and len(folder["sha256"]) == 64
    (tmp_path / "images/good/c.png").write_bytes(b"changed")
    assert data_facts(tmp_path / "images")["sha256"] != folder["sha256"]
    (tmp_path / "domain.yaml").write_text("intents: []\n")
    assert data_facts(tmp_path / "domain.yaml")["records"] is None  # only the use case could count them
    (tmp_path / "t.csv").write_text("a,b\n1,2\n3,4")
    assert data_facts(tmp_path / "t.csv")["records"] == 2
    assert data_facts("stdlib:*.py") == {"name": "stdlib:*.py"}  # a use case's own spec: named only


def test_bundle_info_json_of_a_manifest_holding_nan_is_valid_json(bundle_copy):
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["metrics"]["accuracy"] = float("nan")  # Python's json wrote such a metric as NaN, which strict JSON readers refuse
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    shown = run_aitk("bundle", "info", str(bundle_copy), "--json", plugins="wine")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout, parse_constant=lambda name: pytest.fail(f"{name} in --json"))["metrics"]["accuracy"] is None
