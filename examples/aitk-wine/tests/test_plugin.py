"""The `wine` plugin end to end through the aitk CLI: sample, train, evaluate, predict."""

import json
import subprocess
import sys
from pathlib import Path

AITK = [sys.executable, "-c", "from applied_aitk.cli import main; main()"]


def aitk(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*AITK, *args], capture_output=True, text=True)


def test_trains_beats_majority_and_predicts(tmp_path: Path):
    assert aitk("wine", "sample", str(tmp_path / "data")).returncode == 0
    trained = aitk("wine", "train", str(tmp_path / "data/train.csv"), "--out", str(tmp_path / "bundle"))
    assert trained.returncode == 0, trained.stderr

    evaluated = aitk("wine", "evaluate", str(tmp_path / "bundle"), str(tmp_path / "data/test.csv"), "--json",
                     "--report", str(tmp_path / "report"))
    metrics = json.loads(evaluated.stdout)
    assert metrics["accuracy"] > metrics["majority_baseline_accuracy"] + 0.2
    history = (tmp_path / "bundle/history.csv").read_text().splitlines()
    assert history[0].split(",")[:2] == ["epoch", "steps"] and len(history) > 2
    assert (tmp_path / "report/training_curves.png").is_file()

    out = tmp_path / "predictions.jsonl"
    predicted = aitk("wine", "predict", str(tmp_path / "bundle"), str(tmp_path / "data/predict.csv"), "--out", str(out))
    assert predicted.returncode == 0, predicted.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == metrics["rows"] and all(row["label"].startswith("cultivar_") for row in rows)


def test_a_malformed_row_is_an_error_row_and_the_others_are_scored(tmp_path: Path):
    assert aitk("wine", "sample", str(tmp_path / "data")).returncode == 0
    assert aitk("wine", "train", str(tmp_path / "data/train.csv"), "--out", str(tmp_path / "bundle")).returncode == 0
    header, first, *rest = (tmp_path / "data/predict.csv").read_text().splitlines()
    (tmp_path / "in.csv").write_text("\n".join([header, first + ",extra", first, "nan" + first[first.index(","):]]) + "\n")
    out = tmp_path / "rows.jsonl"
    predicted = aitk("wine", "predict", str(tmp_path / "bundle"), str(tmp_path / "in.csv"), "--out", str(out))
    assert predicted.returncode == 3, predicted.stderr
    extra, good, not_finite = [json.loads(line) for line in out.read_text().splitlines()]
    assert extra["error"].endswith(":2: expected 13 fields, got 14")
    assert good["label"].startswith("cultivar_") and "error" not in good
    assert not_finite["error"].endswith("is not a finite number")
