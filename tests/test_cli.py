"""The generic commands as a user runs them: devices, settings, doctor, bundle info, demo."""

import hashlib
import json
import shutil
from pathlib import Path

from conftest import run_aitk


def test_device_cuda_without_cuda_exits_4_with_one_line(wine, tmp_path):
    result = run_aitk("wine", "predict", str(wine["bundle"]), str(wine["data"] / "predict.csv"), "--out", str(tmp_path / "p.jsonl"), "--device", "cuda", plugins="wine")
    assert result.returncode == 4
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: --device cuda: CUDA cannot be used: ")
    trained = run_aitk("wine", "evaluate", str(wine["bundle"]), str(wine["data"] / "test.csv"), "--device", "cuda", plugins="wine")
    assert trained.returncode == 4


def test_auto_device_runs_on_what_is_there(wine):
    result = run_aitk("wine", "evaluate", str(wine["bundle"]), str(wine["data"] / "test.csv"), "--json", plugins="wine")
    assert result.returncode == 0
    assert json.loads(result.stdout)["accuracy"] > 0.8


def test_training_settings_from_set_and_config_files(wine, tmp_path):
    config = tmp_path / "settings.yaml"
    config.write_text("hidden_size: 16\nepochs: 40\n")
    result = run_aitk("wine", "train", str(wine["data"] / "train.csv"), "--out", str(tmp_path / "b"), "--config", str(config), "--set", "learning_rate=0.02", "--quantize", "int8", plugins="wine")
    assert result.returncode == 0, result.stderr
    info = json.loads(run_aitk("bundle", "info", str(tmp_path / "b"), "--json", plugins="wine").stdout)
    assert info["config"]["hidden_size"] == 16 and info["config"]["epochs"] == 40 and info["config"]["learning_rate"] == 0.02
    assert "model.int8.onnx" in info["files"]
    int8 = run_aitk("wine", "evaluate", str(tmp_path / "b"), str(wine["data"] / "test.csv"), "--quantize", "int8", "--json", plugins="wine")
    assert json.loads(int8.stdout)["accuracy"] > 0.8


def test_fp16_model_is_written_and_run_when_asked_for(wine, tmp_path):
    result = run_aitk("wine", "train", str(wine["data"] / "train.csv"), "--out", str(tmp_path / "b"), "--quantize", "fp16",
                      "--set", "epochs=40", "--set", "learning_rate=0.02", plugins="wine")  # enough to beat 0.8, as in the test above
    assert result.returncode == 0, result.stderr
    info = json.loads(run_aitk("bundle", "info", str(tmp_path / "b"), "--json", plugins="wine").stdout)
    assert "model.fp16.onnx" in info["files"] and "model.int8.onnx" not in info["files"]
    fp16 = run_aitk("wine", "evaluate", str(tmp_path / "b"), str(wine["data"] / "test.csv"), "--quantize", "fp16", "--json", plugins="wine")
    assert json.loads(fp16.stdout)["accuracy"] > 0.8 and "float16 is for the CUDA provider" in fp16.stderr
    missing = run_aitk("wine", "evaluate", str(wine["bundle"]), str(wine["data"] / "test.csv"), "--quantize", "fp16", "--json", plugins="wine")
    assert missing.returncode == 0 and "has no model.fp16.onnx" in missing.stderr


def test_train_help_shows_each_setting_with_type_default_and_meaning():
    result = run_aitk("wine", "train", "--help", plugins="wine", env={"COLUMNS": "120"})
    assert result.returncode == 0
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.startswith("    ") and line.split()}
    assert rows["hidden_size"][1:5] == ["integer", ">=", "1", "64"] and "Hidden units" in " ".join(rows["hidden_size"])
    assert rows["epochs"][4] == "300" and "(formerly lr)" in " ".join(rows["learning_rate"])
    assert "max_time" in rows and "seconds" in " ".join(rows["max_time"])


def test_bad_settings_get_one_line_errors(wine, tmp_path):
    train = ["wine", "train", str(wine["data"] / "train.csv"), "--out", str(tmp_path / "b")]
    unknown = run_aitk(*train, "--set", "hiden=3", plugins="wine")
    assert unknown.returncode == 1 and unknown.stderr.strip() == "error: unknown setting 'hiden'; did you mean 'hidden_size'?"
    wrong_type = run_aitk(*train, "--set", "epochs=many", plugins="wine")
    assert wrong_type.returncode == 1 and wrong_type.stderr.strip() == "error: setting epochs='many': expected an integer"
    no_label = run_aitk("wine", "train", str(wine["data"] / "predict.csv"), "--out", str(tmp_path / "b"), plugins="wine")
    assert no_label.returncode == 1 and "no label column 'label'" in no_label.stderr and "Traceback" not in no_label.stderr
    assert not (tmp_path / "b").exists()


def test_doctor_reports_versions_and_providers():
    info = json.loads(run_aitk("doctor", "--json", plugins="wine").stdout)
    assert "CPUExecutionProvider" in info["providers_available"]
    assert info["onnxruntime"] and info["torch"] and info["python"]
    assert info["cuda_provider"].startswith(("usable", "not usable"))


def test_bundle_info_shows_what_a_bundle_is_and_its_model_card(wine, tmp_path):
    result = run_aitk("bundle", "info", str(wine["bundle"]), plugins="wine")
    assert result.returncode == 0
    assert "usecase         wine" in result.stdout and "4 files verified" in result.stdout
    assert f"model card      {wine['bundle'] / 'README.md'}" in result.stdout
    train = wine["data"] / "train.csv"
    digest = hashlib.sha256(train.read_bytes()).hexdigest()
    assert f"sha256    {digest}" in result.stdout  # the training data's hash

    card = run_aitk("bundle", "info", str(wine["bundle"]), "--card", plugins="wine").stdout
    both = run_aitk("bundle", "info", str(wine["bundle"]), "--card", "--json", plugins="wine")
    assert both.returncode == 2 and "cannot go with --json" in both.stderr
    assert card == (wine["bundle"] / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: aitk\n") and "by the `wine` use case of aitk-wine 0.1.0" in card
    rows = len(train.read_text().splitlines()) - 1
    for expected in (f"| name | `{train}` |", f"| records | {rows} |", f"| sha256 | `{digest}` |",  # the data
                     "## Intended use\n\nClassifying rows", "## Limitations", "| train_accuracy |",  # plugin text, metrics
                     "| model.onnx | {\"atol\": 0.0001", "| hidden_size | 64 |", "| torch |", "aitk wine predict BUNDLE INPUT..."):
        assert expected in card, expected
    changed = shutil.copytree(wine["bundle"], tmp_path / "b")
    (changed / "README.md").write_text(card.replace("Classifying", "Approving"))
    refused = run_aitk("bundle", "info", str(changed), plugins="wine")
    assert refused.returncode == 1 and "bundle file README.md does not match its checksum" in refused.stderr


def test_demo_runs_a_use_case_end_to_end(tmp_path):
    result = run_aitk("demo", "--out", str(tmp_path / "demo"), "--only", "wine", "--json", plugins="wine")
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["status"] == "ok" and row["provider"] == "CPUExecutionProvider"
    assert (tmp_path / "demo/wine/predictions.jsonl").exists()
    assert row["report"].endswith("index.html") and Path(row["report"]).is_file()  # where the report is
    unknown = run_aitk("demo", "--only", "nope", plugins="wine")
    assert unknown.returncode == 1 and "no such use case" in unknown.stderr
