"""The fine-tuned defect network (method=segment) and the types-only classifier, on tiny generated data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import assert_report, run_aitk

TINY = ["--set", "batch_size=8", "--set", "patience=0", "--threads", "2"]


@pytest.fixture(scope="module")
def segment(tmp_path_factory) -> dict[str, Path]:
    """Brick tiles with labelled scratches, spots and cracks (masks), and a segment bundle with int8."""
    from applied_aitk.usecases.defects.sample import write_sample

    root = tmp_path_factory.mktemp("segment")
    (data,) = write_sample(root / "data", textures=("brick",), tile=64, train_good=24, train_defects=4, test_good=8, test_defects=4)
    result = run_aitk("defects", "train", str(data), "--out", str(root / "bundle"), "--quantize", "int8", *TINY,
                      "--set", "image_size=64", "--set", "method=segment", "--set", "epochs=4", plugins="defects")
    assert result.returncode == 0, result.stderr
    return {"data": data, "bundle": root / "bundle", "root": root}


def test_segment_network_finds_defects_and_draws_a_named_report(segment):
    result = run_aitk("defects", "evaluate", str(segment["bundle"]), str(segment["data"]), "--json", "--report", str(segment["root"] / "report"), plugins="defects")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["image_auroc"] > 0.8 and metrics["pixel_auroc"] > 0.8  # chance is 0.5
    assert set(metrics["recall_at_1pct_fpr_by_type"]) == {"crack", "scratch", "spot"}
    heatmaps = sorted(p.name for p in (segment["root"] / "report" / "heatmaps").glob("*.png"))
    assert heatmaps == ["crack-000.png", "crack-001.png", "good-000.png", "good-001.png", "scratch-000.png", "scratch-001.png", "spot-000.png", "spot-001.png"]
    assert_report(segment["root"] / "report", "roc_pr.png", "confusion_matrix.png", "heatmaps/crack-000.png")


def test_segment_onnx_matches_torch_rebuilt_from_the_bundle_weights(segment):
    import torch

    from applied_aitk.usecases.defects import data as D
    from applied_aitk.usecases.defects import model as M
    from applied_aitk.usecases.defects.network import DefectNet
    from applied_aitk.bundle import load_bundle
    from applied_aitk.runtime import Runtime

    bundle = load_bundle(segment["bundle"], usecase="defects")
    info = bundle.assets["backbone"]
    backbone, _ = M.build_backbone(info["backbone"], "none", info["layers"], 64)
    net = DefectNet(backbone, info["layers"], info["channels"], info["mean"], info["std"], 64, classes=3)
    net.load_state_dict(bundle.read_weights())
    images = np.stack([D.load_image(p, 64)[0] for p in sorted((segment["data"] / "test").rglob("*.png"))[:5]])
    with torch.no_grad():
        expected = [t.numpy() for t in net.eval()(torch.from_numpy(images))]
    got = Runtime(device="cpu").session(bundle.file("model.onnx"))(images)
    assert [o["name"] for o in bundle.graph()["schema"]["outputs"]] == ["anomaly_map", "score", "defect_probs"]
    for want, have in zip(expected, got):
        np.testing.assert_allclose(have, want, atol=1e-3)
    int8 = Runtime(device="cpu").session(bundle.file("model.int8.onnx"))(images)
    assert np.corrcoef(int8[1], got[1])[0, 1] > 0.9 and "threshold_int8" in bundle.assets


def test_types_only_data_trains_the_classifier_and_reports_a_confusion_matrix(tmp_path):
    """Three kinds of mark, no good class: accuracy, the matrix (JSON and picture) and predict rows."""
    from applied_aitk.usecases.defects.sample import draw_defect

    rng = np.random.default_rng(0)
    rows = ["image,label,split"]
    for split, count in (("train", 14), ("test", 6)):
        for kind in ("scratch", "spot", "crack"):
            for k in range(count):
                image, _ = draw_defect(np.full((48, 48), 128, np.uint8) + rng.integers(0, 20, (48, 48), dtype=np.uint8), kind, rng)
                name = f"{split}/{kind}-{k}.png"
                (tmp_path / split).mkdir(exist_ok=True)
                Image.fromarray(image).save(tmp_path / name)
                rows.append(f"{name},{kind},{split}")
    (tmp_path / "kinds.csv").write_text("\n".join(rows) + "\n")
    trained = run_aitk("defects", "train", str(tmp_path / "kinds.csv"), "--out", str(tmp_path / "b"), *TINY, "--set", "image_size=64", "--set", "epochs=3",
                       "--set", "learning_rate=0.003", plugins="defects")
    assert trained.returncode == 0, trained.stderr
    result = run_aitk("defects", "evaluate", str(tmp_path / "b"), str(tmp_path / "kinds.csv"), "--json", "--report", str(tmp_path / "report"), plugins="defects")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["defect_type_accuracy"] > 0.6  # the majority class would score 1/3
    matrix = metrics["confusion_matrix"]
    assert matrix["labels"] == ["crack", "scratch", "spot"] and np.sum(matrix["rows_true_cols_predicted"]) == 18
    assert_report(tmp_path / "report", "confusion_matrix.png")
    out = tmp_path / "rows.jsonl"
    assert run_aitk("defects", "predict", str(tmp_path / "b"), str(tmp_path / "test"), "--out", str(out), plugins="defects").returncode == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 18 and all(r["defect_type"] in matrix["labels"] and 0 < r["defect_type_prob"] <= 1 for r in rows)


def test_synthetic_defects_change_only_the_masked_pixels():
    from applied_aitk.usecases.defects.synthetic import synthesize

    rng = np.random.default_rng(0)
    image = np.random.default_rng(1).integers(90, 160, (64, 64, 3), dtype=np.uint8)
    foreign = np.random.default_rng(2).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    for _ in range(30):
        out, mask = synthesize(image, foreign, rng)
        assert out.shape == image.shape and out.dtype == np.uint8 and mask.shape == (64, 64) and 0 < mask.sum() < 64 * 64 * 0.5
        # outside the mask at most the faint rim of a soft-edged mark (scratch, spot, crack)
        assert np.abs(out.astype(int) - image)[~mask].max(initial=0) <= 8


def _manifest(data: Path, out: Path, drop_train: set[str] | None = None) -> Path:
    """A CSV manifest of an MVTec-style sample folder; ``drop_train``: defect types (or "*": all)
    left out of the training split."""
    rows = ["image,label,defect_type,mask,split"]
    for split in ("train", "test"):
        for image in sorted((data / split).rglob("*.png")):
            kind = image.parent.name
            if split == "train" and kind != "good" and drop_train is not None and ({"*", kind} & drop_train):
                continue
            mask = data / "ground_truth" / kind / f"{image.stem}_mask.png"
            rows.append(f"{image},{'good' if kind == 'good' else 'defect'},{'' if kind == 'good' else kind},{mask if mask.exists() else ''},{split}")
    out.write_text("\n".join(rows) + "\n")
    return out


def test_labelled_defects_beat_good_images_only(segment):
    """The same network, settings and data, once without the training defects (synthetic ones only)."""
    good_only = _manifest(segment["data"], segment["root"] / "good_only.csv", drop_train={"*"})
    trained = run_aitk("defects", "train", str(good_only), "--out", str(segment["root"] / "good_only"), *TINY,
                       "--set", "image_size=64", "--set", "method=segment", "--set", "epochs=4", plugins="defects")
    assert trained.returncode == 0, trained.stderr
    scores = {}
    for name in ("bundle", "good_only"):
        result = run_aitk("defects", "evaluate", str(segment["root"] / name), str(segment["data"]), "--json", plugins="defects")
        assert result.returncode == 0, result.stderr
        scores[name] = json.loads(result.stdout)
    assert scores["bundle"]["image_auroc"] > scores["good_only"]["image_auroc"] + 0.03
    assert scores["bundle"]["pixel_auroc"] > scores["good_only"]["pixel_auroc"]


def test_ensemble_catches_a_kind_unseen_in_training_and_its_fp16_export_matches(tmp_path):
    """Cracks left out of training: the ensemble (network + PatchCore) still ranks them above good
    tiles; the manifest records every method's validation AUROC; the fp16 file (run by CPU ORT)
    agrees with fp32."""
    from applied_aitk.bundle import load_bundle
    from applied_aitk.runtime import Runtime
    from applied_aitk.usecases.defects.sample import write_sample

    (data,) = write_sample(tmp_path / "data", textures=("brick",), tile=64, train_good=24, train_defects=4, test_good=8, test_defects=4)
    manifest = _manifest(data, tmp_path / "no_crack.csv", drop_train={"crack"})
    trained = run_aitk("defects", "train", str(manifest), "--out", str(tmp_path / "b"), "--quantize", "fp16", *TINY,
                       "--set", "image_size=64", "--set", "method=ensemble", "--set", "epochs=2", plugins="defects")
    assert trained.returncode == 0, trained.stderr
    result = run_aitk("defects", "evaluate", str(tmp_path / "b"), str(manifest), "--json", plugins="defects")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["auroc_by_type"]["crack"] > 0.8 and metrics["image_auroc"] > 0.8
    bundle = load_bundle(tmp_path / "b", usecase="defects")
    selection = bundle.metrics["selection"]
    assert bundle.assets["method"] == selection["method"] == "ensemble" and set(selection["validation_auroc"]) == {"patchcore", "segment", "ensemble"}
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted((data / "test").rglob("*.png"))])
    fp32 = Runtime(device="cpu").session(bundle.file("model.onnx"))(images)
    fp16 = Runtime(device="cpu").session(bundle.file("model.fp16.onnx"))(images)
    spread = np.ptp(fp32[1])
    assert np.max(np.abs(fp16[1] - fp32[1])) < 0.02 * spread and np.corrcoef(fp16[1], fp32[1])[0, 1] > 0.999


def test_auto_picks_the_best_validation_auroc_and_the_simpler_on_a_tie():
    from applied_aitk.usecases.defects.ensemble import choose

    assert choose({"patchcore": 0.8, "segment": 0.9, "ensemble": 0.85}) == "segment"
    assert choose({"patchcore": 0.9, "segment": 0.9, "ensemble": 0.9}) == "patchcore"
    assert choose({"patchcore": None, "segment": None, "ensemble": None}) == "ensemble"
    # validated on synthetic defects only, the network alone (trained on them) is not a candidate
    assert choose({"patchcore": 0.8, "segment": 0.97, "ensemble": 0.9}, synthetic=True) == "ensemble"


def test_learning_rate_warms_up_and_anneals_to_zero_by_the_end_of_the_run_or_of_max_time():
    import torch

    from applied_aitk.usecases.defects.finetune import Schedule

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    schedule = Schedule(optimizer, total_steps=100)
    rates = []
    for _ in range(100):
        schedule.step()
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates[0] < 0.03 and max(rates) == pytest.approx(0.1, rel=0.05) and rates[-1] < 0.001
    timed = Schedule(optimizer, total_steps=10**6, max_time=1e-9)  # the time budget is the nearer end: already spent
    timed.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def _plates(rng: np.random.Generator, count: int, defect: bool, side: int = 104) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Grey plates side x side px (a smooth shade and fine noise); with ``defect``, a 4 x 4 px dark
    spot at a random place. Returns uint8 RGB images [count, side, side, 3] and the spots' corners."""
    images, corners = [], []
    for _ in range(count):
        shade = np.asarray(Image.fromarray(rng.random((6, 6)).astype(np.float32), "F").resize((side, side), Image.Resampling.BICUBIC))
        image = 110 + 40 * shade + rng.normal(0, 6, (side, side))
        y, x = (int(v) for v in rng.integers(4, side - 8, 2))
        if defect:
            image[y : y + 4, x : x + 4] -= 60
        images.append(np.repeat(np.clip(image, 0, 255).astype(np.uint8)[..., None], 3, -1))
        corners.append((y, x))
    return np.stack(images), corners


def test_tiling_finds_a_small_defect_that_a_whole_image_resize_loses(tmp_path):
    """A 4 px spot on 104 px plates: PatchCore on 4 x 4 tiles of 32 px finds every spot where it is;
    on the whole plate shrunk to 32 px it ranks them far worse. The tiled model exports to ONNX."""
    from types import SimpleNamespace

    import torch
    from sklearn.metrics import roc_auc_score

    from applied_aitk.onnx_export import export
    from applied_aitk.runtime import Runtime
    from applied_aitk.usecases.defects import model as M
    from applied_aitk.usecases.defects import training as T
    from applied_aitk.usecases.defects.tiling import Tiler

    rng = np.random.default_rng(0)
    train, _ = _plates(rng, 12, False)
    good, _ = _plates(rng, 8, False)
    spotted, corners = _plates(rng, 8, True)
    test, labels = np.concatenate([good, spotted]), np.r_[np.zeros(8), np.ones(8)]
    config = SimpleNamespace(coreset_pool=100_000, memory_size=1024, projection=0, seed=0)

    def detector(tiler: Tiler, images: np.ndarray) -> torch.nn.Module:
        features, _ = M.build_features(M.DEFAULT_BACKBONE, "auto", [1, 2], 32, log=lambda m: None)
        with torch.no_grad():
            bank, _ = T.build_bank(features(tiler.split(torch.from_numpy(images))), config)
        return tiler.wrap(M.DefectModel(features, M.AnomalyHead(bank, 32, 1.0)).eval())

    def shrink(images: np.ndarray) -> np.ndarray:
        return np.stack([np.asarray(Image.fromarray(i).resize((32, 32), Image.Resampling.BILINEAR)) for i in images])

    tiler = Tiler(32, 4)
    assert tiler.input_size == 104 and tiler.count == 16
    tiled, whole = detector(tiler, train), detector(Tiler(32, 1), shrink(train))
    with torch.no_grad():
        maps, scores = tiled(torch.from_numpy(test))
        _, whole_scores = whole(torch.from_numpy(shrink(test)))
    assert maps.shape == (16, 104, 104)
    assert roc_auc_score(labels, scores.numpy()) > 0.95 and roc_auc_score(labels, whole_scores.numpy()) < 0.8
    for k, (y, x) in enumerate(corners):  # the stitched map peaks on the spot
        peak = np.unravel_index(int(maps[8 + k].argmax()), (104, 104))
        assert abs(peak[0] - y - 1.5) <= 6 and abs(peak[1] - x - 1.5) <= 6
    export(tiled, (torch.from_numpy(test[:2]),), tmp_path / "tiled.onnx", ["image"], ["anomaly_map", "score"], atol=1e-3)
    onnx_maps, onnx_scores = Runtime(device="cpu").session(tmp_path / "tiled.onnx")(test[:5])
    np.testing.assert_allclose(onnx_scores, scores[:5].numpy(), rtol=1e-4, atol=1e-3)
