"""Bundles: atomic writes, checksums and paths verified on load, a failed parity check writes nothing."""

import json
import shutil

import pytest
import torch

from conftest import run_aitk
from toolkit.bundle import BundleWriter, load_bundle
from toolkit.errors import AitkError, ParityError
from toolkit.onnx_export import export


@pytest.fixture
def bundle_copy(wine, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(wine["bundle"], copy)
    return copy


def test_a_trained_bundle_verifies_and_records_parity(wine):
    bundle = load_bundle(wine["bundle"], usecase="wine")
    assert set(bundle.manifest["files"]) == {"model.onnx", "weights.safetensors"}
    assert bundle.manifest["model"]["parity"]["max_abs_diff"]["probabilities"] < 1e-4
    assert bundle.manifest["model"]["schema"]["inputs"][0]["shape"] == ["batch", 13]


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
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["files"][name] = "0" * 64
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(AitkError, match="points outside the bundle"):
        load_bundle(bundle_copy)


def test_wrong_usecase_and_format_are_refused(bundle_copy):
    with pytest.raises(AitkError, match="a 'wine' bundle, expected a 'fraud' one"):
        load_bundle(bundle_copy, usecase="fraud")
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["format_version"] = 99
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(AitkError, match="bundle format 99"):
        load_bundle(bundle_copy)


class BatchDependent(torch.nn.Module):
    """Python control flow on the batch size: tracing bakes in one branch, so the export is wrong."""

    def forward(self, x):
        return x * 2 if x.shape[0] > 4 else x


def test_a_failed_parity_check_leaves_no_bundle(tmp_path, bundle_copy):
    before = sorted(p.name for p in bundle_copy.iterdir())
    with pytest.raises(ParityError, match="differs from torch"):
        with BundleWriter(bundle_copy, usecase="wine", plugin_version="0") as writer:
            export(BatchDependent(), (torch.ones(2, 3),), writer.path("model.onnx"), ["x"], ["y"], parity_inputs=(torch.ones(7, 3),))
            writer.commit()
    assert sorted(p.name for p in bundle_copy.iterdir()) == before, "the old bundle is untouched"
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"], "no temporary directory is left behind"
    with pytest.raises(ParityError):
        with BundleWriter(tmp_path / "new", usecase="wine", plugin_version="0") as writer:
            export(BatchDependent(), (torch.ones(2, 3),), writer.path("model.onnx"), ["x"], ["y"], parity_inputs=(torch.ones(7, 3),))
            writer.commit()
    assert not (tmp_path / "new").exists()


def test_commit_replaces_an_existing_bundle_whole(tmp_path):
    for value in (1, 2):
        with BundleWriter(tmp_path / "b", usecase="wine", plugin_version="0") as writer:
            writer.write_json("value.json", {"v": value})
            writer.commit()
    assert load_bundle(tmp_path / "b").read_json("value.json") == {"v": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["b"]
