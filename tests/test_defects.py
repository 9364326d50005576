"""The defects use case as a user drives it: sample data, train, evaluate, predict with heatmaps and bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import assert_report, run_aitk

QUICK = ["--set", "image_size=96", "--set", "sigma=1.5", "--set", "memory_size=256", "--set", "classifier_epochs=100"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A tiny brick-texture dataset (MVTec layout, masks, 3 defect types, a two-page TIFF among the
    good training images) and a bundle trained on it with int8 and fp16 models (one training: `--quantize` repeated)."""
    from applied_aitk.usecases.defects.sample import write_sample

    root = tmp_path_factory.mktemp("defects")
    (data,) = write_sample(root / "data", textures=("brick",), tile=96, train_good=24, train_defects=2, test_good=8, test_defects=4)
    first, second = (Image.open(p).convert("RGB") for p in sorted((data / "train" / "good").glob("*.png"))[:2])
    first.save(data / "train" / "good" / "stack.tif", save_all=True, append_images=[second])  # a multi-page file: its first page, a warning
    result = run_aitk("defects", "train", str(data), "--out", str(root / "bundle"), "--quantize", "int8", "--quantize", "fp16", "--threads", "2", *QUICK,
                      plugins="defects")
    assert result.returncode == 0, result.stderr
    return {"data": data, "bundle": root / "bundle", "root": root, "train_stderr": result.stderr}


def test_trained_model_separates_defects_from_good_images(trained):
    result = run_aitk("defects", "evaluate", str(trained["bundle"]), str(trained["data"]), "--json", "--report", str(trained["root"] / "report"), plugins="defects")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["image_auroc"] > 0.9
    assert metrics["pixel_auroc"] > 0.9
    assert sum(map(sum, metrics["confusion_matrix"]["rows_true_cols_predicted"])) == metrics["images"] == 20
    assert "defect_type_accuracy" in metrics
    assert_report(trained["root"] / "report", "roc_pr.png", "confusion_matrix.png")


def test_onnx_model_matches_torch_rebuilt_from_the_bundle_weights(trained):
    import torch

    from applied_aitk.usecases.defects import data as D
    from applied_aitk.usecases.defects import model as M
    from applied_aitk.bundle import load_bundle
    from applied_aitk.runtime import Runtime

    bundle = load_bundle(trained["bundle"], usecase="defects")
    info, weights = bundle.assets["backbone"], bundle.read_weights()
    features, _ = M.build_features(info["backbone"], "none", info["layers"], 96, log=lambda m: None)
    head = M.AnomalyHead(weights["head.bank"], 96, 1.5, classes=len(bundle.assets["defect_types"]), channels=weights["head.bank"].shape[1])
    model = M.DefectModel(features, head)
    model.load_state_dict(weights)
    images = np.stack([D.load_image(p, 96)[0] for p in sorted((trained["data"] / "test").rglob("*.png"))[:5]])
    with torch.no_grad():
        expected = [t.numpy() for t in model.eval()(torch.from_numpy(images))]
    got = Runtime(device="cpu").session(bundle.file("model.onnx"))(images)
    assert [o["name"] for o in bundle.graph()["schema"]["outputs"]] == ["anomaly_map", "score", "defect_probs"]
    for want, have in zip(expected, got):
        np.testing.assert_allclose(have, want, atol=1e-3, rtol=1e-4)
    assert "int8" in bundle.variants() and "threshold_int8" in bundle.assets


def test_predict_over_a_folder_writes_rows_heatmaps_and_error_rows(trained, tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    test = trained["data"] / "test"
    for path in [test / "good/000.png", test / "crack/000.png", test / "spot/001.png"]:
        (folder / f"{path.parent.name}_{path.name}").write_bytes(path.read_bytes())
    # other modes and sizes are converted: RGBA, 16-bit grayscale, an odd-sized JPEG
    original = Image.open(test / "scratch/000.png")
    original.convert("RGBA").save(folder / "rgba.png")
    Image.fromarray(np.asarray(original, dtype=np.uint16) * 257).save(folder / "deep.png")
    original.resize((131, 77)).save(folder / "odd.jpg")
    (folder / "truncated.png").write_bytes((test / "good/001.png").read_bytes()[:300])
    (folder / "notes.png").write_text("not an image")
    (folder / "empty.png").write_bytes(b"")  # was "cannot identify image file"
    out = tmp_path / "rows.jsonl"
    heatmaps = tmp_path / "heatmaps"
    result = run_aitk("defects", "predict", str(trained["bundle"]), str(folder), "--out", str(out), "--heatmaps", str(heatmaps), plugins="defects")
    assert result.returncode == 3, result.stderr  # finished, with failed records
    rows = {Path(r["id"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    assert len(rows) == 9
    for name in ("truncated.png", "notes.png"):
        assert "not a readable image" in rows[name]["error"]
    assert rows["empty.png"]["error"] == f"{folder / 'empty.png'}: empty file (0 bytes), not an image"
    good = [r for r in rows.values() if r.get("error") is None]
    assert len(good) == 6
    for row in good:
        assert row["label"] in ("ok", "defect") and isinstance(row["score"], float)
        assert Path(row["heatmap"]).is_file()
        assert Image.open(row["heatmap"]).size == Image.open(folder / Path(row["id"]).name).size
        assert (row["defect_type"] is None) == (row["label"] == "ok") == (row["boxes"] == [])
    assert rows["crack_000.png"]["label"] == "defect"
    x0, y0, x1, y1 = rows["crack_000.png"]["boxes"][0]
    assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 96
    assert len(list(heatmaps.glob("*.png"))) == 6
    assert Path(rows["crack_000.png"]["heatmap"]).name == "inputs_crack_000.png"


def test_threshold_option_overrides_the_calibrated_one(trained, tmp_path):
    out = tmp_path / "rows.csv"
    result = run_aitk("defects", "predict", str(trained["bundle"]), str(trained["data"] / "test" / "crack"), "--out", str(out), "--threshold", "1e9", plugins="defects")
    assert result.returncode == 0, result.stderr
    assert set(out.read_text().splitlines()[1:]) and all(",ok," in line for line in out.read_text().splitlines()[1:])
    result = run_aitk("defects", "evaluate", str(trained["bundle"]), str(trained["data"]), "--json", "--threshold", "0", "--quantize", "int8", plugins="defects")
    metrics = json.loads(result.stdout)
    assert metrics["recall"] == 1.0 and metrics["threshold"] == 0.0 and metrics["model"] == "model.int8.onnx"


def test_fp16_model_keeps_the_separation(trained):
    """fp16 (meant for the CUDA provider) converts the backbone only; checked against torch at training, beside int8."""
    result = run_aitk("defects", "evaluate", str(trained["bundle"]), str(trained["data"]), "--json", "--quantize", "fp16", plugins="defects")
    metrics = json.loads(result.stdout)
    assert metrics["model"] == "model.fp16.onnx" and metrics["image_auroc"] > 0.9


def test_csv_manifest_with_splits_masks_and_types(tmp_path):
    from applied_aitk.usecases.defects import data as D

    (tmp_path / "img").mkdir()
    for name in ("a", "b", "c", "d"):
        Image.new("L", (20, 30), 100).save(tmp_path / "img" / f"{name}.jpg")
    Image.new("L", (20, 30), 255).save(tmp_path / "img" / "d_mask.png")
    (tmp_path / "split.csv").write_text(
        "image,mask,label,defect_type,split\n"
        "img/a.jpg,,good,free,train\nimg/b.jpg,,good,free,val\nimg/c.jpg,,defect,crack,train\nimg/d.jpg,img/d_mask.png,defect,blowhole,test\n"
    )
    train = D.load_items(tmp_path / "split.csv", "train")
    assert [(i.image.name, i.good, i.defect_type) for i in train] == [("a.jpg", True, None), ("b.jpg", True, None), ("c.jpg", False, "crack")]
    bank, held = D.split_validation(train, D.validation_items(tmp_path / "split.csv"), 0.5, 0)
    assert [i.image.name for i in bank] == ["a.jpg"] and {i.image.name for i in held} == {"b.jpg", "c.jpg"}
    (test,) = D.load_items(tmp_path / "split.csv", "test")
    assert test.defect_type == "blowhole" and D.load_mask(test.mask, 8).all()


def test_csv_manifest_with_excels_sep_hint_and_a_bad_row_named_by_its_line(tmp_path):
    from applied_aitk import AitkError
    from applied_aitk.usecases.defects import data as D

    Image.new("L", (20, 30), 100).save(tmp_path / "a.jpg")
    (tmp_path / "m.csv").write_text('sep=;\nimage;label\na.jpg;good\n"a.jpg";"good\nstill good"\n;defect\n')
    with pytest.raises(AitkError, match=r"m\.csv:6: fields image and label must not be empty"):
        D.load_items(tmp_path / "m.csv", "train")
    (tmp_path / "m.csv").write_text("sep=;\nimage;label\na.jpg;good\n")
    assert [i.image.name for i in D.load_items(tmp_path / "m.csv", "train")] == ["a.jpg"]


def test_validation_holds_out_whole_groups(tmp_path):
    """Images of one part (a group) never sit both in the memory bank and in the threshold's validation."""
    from applied_aitk.usecases.defects import data as D

    rows = [f"p{part}_{light}.jpg,good,{part}" for part in range(10) for light in range(6)]
    (tmp_path / "parts.csv").write_text("image,label,group\n" + "\n".join(rows) + "\n")
    bank, held = D.split_validation(D.load_items(tmp_path / "parts.csv", "train"), set(), 0.2, 0)
    assert len(held) == 12 and len(bank) == 48
    assert not {i.group for i in bank} & {i.group for i in held}


def test_image_modes_are_converted_to_rgb():
    from applied_aitk.usecases.defects.data import to_rgb

    deep = Image.fromarray(np.full((4, 5), 65535, dtype=np.uint16))
    assert np.asarray(to_rgb(deep)).max() == 255 and to_rgb(deep).mode == "RGB"
    transparent = Image.new("RGBA", (3, 3), (0, 0, 0, 0))
    assert np.asarray(to_rgb(transparent)).min() == 255  # transparent becomes white, not black
    assert to_rgb(Image.new("P", (3, 3))).mode == "RGB"


def test_serve_returns_the_rows_batch_predict_writes(trained, tmp_path):
    """Images as base64 in JSON and as multipart uploads: the rows of batch predict, error rows included."""
    import base64

    from serve_client import batch_rows, client, served_rows, slim_served_rows, without_ids

    test = trained["data"] / "test"
    paths = [test / "good/000.png", test / "crack/000.png", test / "spot/001.png"]
    (tmp_path / "notes.png").write_text("not an image")
    paths.append(tmp_path / "notes.png")
    batch = batch_rows("defects", trained["bundle"], paths, tmp_path / "out.jsonl")
    with client(trained["bundle"]) as c:
        served = served_rows(c, "defects", [{"image": base64.b64encode(p.read_bytes()).decode()} for p in paths])
        uploaded = c.post("/v1/defects/predict", files=[("files", (p.name, p.read_bytes(), "image/png")) for p in paths])
        bad = served_rows(c, "defects", [{"image": "%%%"}, {"picture": "x"}])
    good = [i for i, row in enumerate(batch) if row.get("error") is None]
    assert len(good) == 3
    assert [without_ids(served)[i] for i in good] == [without_ids(batch)[i] for i in good]
    assert slim_served_rows("defects", trained["bundle"], [{"image": base64.b64encode(paths[0].read_bytes()).decode()}]) == served[:1]
    assert without_ids(uploaded.json()["rows"])[:3] == without_ids(batch)[:3]
    assert [row["id"] for row in uploaded.json()["rows"]] == [p.name for p in paths]
    assert "not a readable image" in served[3]["error"] and "not a readable image" in uploaded.json()["rows"][3]["error"]
    assert "field image" in bad[0]["error"] and "field image" in bad[1]["error"]


def test_pixels_are_scaled_by_their_type_never_per_image(tmp_path):
    from applied_aitk.usecases.defects import data as D
    from applied_aitk import InputError

    tile = np.random.default_rng(0).integers(60, 200, (32, 32)).astype(np.uint8)
    eight = np.asarray(D.to_rgb(Image.fromarray(tile)))
    Image.fromarray(tile.astype(np.uint16) * 257).save(tmp_path / "deep.png")
    Image.fromarray(tile.astype(np.int32) * 257, "I").save(tmp_path / "int32.tif")
    Image.fromarray(tile.astype(np.float32) / 255, "F").save(tmp_path / "float.tif")
    for name in ("deep.png", "int32.tif", "float.tif"):
        np.testing.assert_array_equal(np.asarray(D.open_image(tmp_path / name)), eight, err_msg=name)
    dark = tile.astype(np.uint16)  # a dark 16-bit exposure: values <= 255 stay dark, as its type says
    brighter = dark.copy()
    brighter[0, 0] = 256
    a, b = (np.asarray(D.to_rgb(Image.fromarray(x))) for x in (dark, brighter))
    assert a.max() <= 1 and (a[1:] == b[1:]).all()  # one brighter pixel changes one pixel, not the scaling
    Image.fromarray(np.full((16, 16), -5, np.int32), "I").save(tmp_path / "signed.tif")
    Image.fromarray(np.full((16, 16), 3.5, np.float32), "F").save(tmp_path / "hdr.tif")
    with pytest.raises(InputError, match=r"signed.tif: 32-bit integer pixels from -5 to -5; expected 16-bit values"):
        D.open_image(tmp_path / "signed.tif")
    with pytest.raises(InputError, match=r"hdr.tif: float pixels from 3.5 to 3.5; float images must hold values in \[0, 1\]"):
        D.open_image(tmp_path / "hdr.tif")


def test_a_gzipped_image_is_read_and_a_broken_or_twice_gzipped_one_is_named(tmp_path):
    """A folder of inputs takes x.png.gz as it takes x.csv.gz: it was "cannot identify image file"."""
    import gzip

    from applied_aitk import InputError
    from applied_aitk.usecases.defects import data as D

    tile = np.random.default_rng(0).integers(0, 255, (16, 16, 3)).astype(np.uint8)
    Image.fromarray(tile).save(tmp_path / "a.png")
    packed = gzip.compress((tmp_path / "a.png").read_bytes())
    (tmp_path / "a.png.gz").write_bytes(packed)
    np.testing.assert_array_equal(np.asarray(D.open_image(tmp_path / "a.png.gz")), tile)
    for name, data, problem in [("twice.png.gz", gzip.compress(packed), "gzip inside gzip (the file was compressed twice)"),
                                ("cut.png.gz", packed[:6], "not a readable image (gzip: "),
                                ("empty.png.gz", gzip.compress(b""), "empty file (0 bytes), not an image")]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(InputError) as error:
            D.open_image(tmp_path / name)
        assert str(error.value).startswith(f"{tmp_path / name}: {problem}"), str(error.value)


def test_deep_tiny_and_oversized_images_in_predict_and_train(trained, tmp_path):
    good = sorted((trained["data"] / "test" / "good").glob("*.png"))[0]
    gray = np.asarray(Image.open(good).convert("L"))
    Image.fromarray(gray).save(tmp_path / "gray.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "gray16.tif")
    Image.fromarray(gray.astype(np.float32) / 255, "F").save(tmp_path / "grayf.tif")
    Image.new("L", (3, 2), 128).save(tmp_path / "tiny.png")
    Image.fromarray(np.full((16, 16), 70000, np.int32), "I").save(tmp_path / "wide.tif")
    out = tmp_path / "p.jsonl"
    result = run_aitk("defects", "predict", str(trained["bundle"]), *(str(tmp_path / n) for n in ("gray.png", "gray16.tif", "grayf.tif", "tiny.png", "wide.tif")),
                      "--out", str(out), plugins="defects")
    assert result.returncode == 3, result.stderr
    rows = {Path(r["id"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    assert rows["gray.png"]["score"] == pytest.approx(rows["gray16.tif"]["score"]) == pytest.approx(rows["grayf.tif"]["score"])
    assert rows["tiny.png"]["error"].endswith("tiny.png: 3x2 pixels is too small to inspect (at least 8 on each side)")
    assert "32-bit integer pixels from 70000 to 70000" in rows["wide.tif"]["error"]
    limited = run_aitk("defects", "predict", str(trained["bundle"]), str(good), "--out", str(out), "--max-image-pixels", "1000", plugins="defects")
    assert limited.returncode == 3 and "over the limit of 1,000 (a guard against decompression bombs)" in out.read_text()
    refused = run_aitk("defects", "train", str(trained["data"]), "--out", str(tmp_path / "b"), *QUICK, "--set", "max_image_pixels=5000", plugins="defects")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {trained['data']}/train/good/") and "9,216 pixels, over the limit of 5,000" in last


def test_a_truncated_training_image_fails_training_in_one_line_naming_it(trained, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(trained["data"], data)
    good = sorted((data / "train" / "good").glob("*.png"))
    (data / "train" / "good" / "zz_truncated.png").write_bytes(good[0].read_bytes()[:300])
    result = run_aitk("defects", "train", str(data), "--out", str(tmp_path / "b"), *QUICK, plugins="defects")
    assert result.returncode == 1 and "Traceback" not in result.stderr and not (tmp_path / "b").exists()
    assert result.stderr.strip().splitlines()[-1] == f"error: {data}/train/good/zz_truncated.png: not a readable image (OSError: image file is truncated)"


def test_training_warns_about_a_multi_page_image_naming_it(trained):
    """The fixture's training data holds a two-page TIFF: it was trained on from its first page
    without a word (predict says so in the row's warnings)."""
    line = f"warning: {trained['data']}/train/good/stack.tif: 2 pages (frames) in the file; only the first is used"
    assert trained["train_stderr"].splitlines().count(line) == 1


def test_a_multi_page_tiff_or_animated_gif_is_scored_from_its_first_page_with_a_warning(trained, tmp_path):
    good, other = sorted((trained["data"] / "test" / "good").glob("*.png"))[:2]
    first, second = Image.open(good).convert("RGB"), Image.open(other).convert("RGB")
    first.save(tmp_path / "stack.tif", save_all=True, append_images=[second, second])  # was scored from page 1 without a word
    first.save(tmp_path / "one.tif")
    out = tmp_path / "p.jsonl"
    result = run_aitk("defects", "predict", str(trained["bundle"]), str(tmp_path / "stack.tif"), str(tmp_path / "one.tif"), "--out", str(out), plugins="defects")
    assert result.returncode == 0, result.stderr
    rows = {Path(r["id"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    assert rows["stack.tif"]["warnings"] == ["3 pages (frames) in the file; only the first was scored"]
    assert rows["stack.tif"]["score"] == pytest.approx(rows["one.tif"]["score"]) and "warnings" not in rows["one.tif"]
    import shutil

    data = tmp_path / "data"  # evaluate reads it as training does: the first page, and a warning line naming the file
    shutil.copytree(trained["data"], data)
    first.save(data / "test" / "good" / "stack.tif", save_all=True, append_images=[second, second])
    evaluated = run_aitk("defects", "evaluate", str(trained["bundle"]), str(data), "--json", plugins="defects")
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"warning: {data}/test/good/stack.tif: 3 pages (frames) in the file; only the first is used" in evaluated.stderr.splitlines()


def test_a_folder_of_inputs_picks_up_gif_images_as_it_does_png(trained, tmp_path):
    """A GIF named on the command line was scored, but a folder holding one skipped it without a
    word (a folder of GIFs only: 'no input files'); training folders skipped them too."""
    from applied_aitk.usecases.defects import data as D

    good = sorted((trained["data"] / "test" / "good").glob("*.png"))[0]
    folder = tmp_path / "inputs"
    folder.mkdir()
    Image.open(good).convert("RGB").save(folder / "part.gif")
    Image.open(good).convert("RGB").save(folder / "part.png")
    out = tmp_path / "p.jsonl"
    result = run_aitk("defects", "predict", str(trained["bundle"]), str(folder), "--out", str(out), plugins="defects")
    assert result.returncode == 0, result.stderr
    rows = {Path(r["id"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    assert sorted(rows) == ["part.gif", "part.png"] and all("error" not in r for r in rows.values())
    assert D._images(folder) == [folder / "part.gif", folder / "part.png"]
