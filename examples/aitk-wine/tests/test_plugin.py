"""The `wine` plugin end to end through the aitk CLI: sample, train, evaluate, predict."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

AITK = [sys.executable, "-c", "from applied_aitk.cli import main; main()"]


def aitk(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*AITK, *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The sample data and a bundle trained on it (once for the module: training is the slow part)."""
    root = tmp_path_factory.mktemp("wine")
    assert aitk("wine", "sample", str(root / "data")).returncode == 0
    result = aitk("wine", "train", str(root / "data/train.csv"), "--out", str(root / "bundle"))
    assert result.returncode == 0, result.stderr
    return root


def test_trains_beats_majority_and_predicts(trained: Path, tmp_path: Path):
    evaluated = aitk("wine", "evaluate", str(trained / "bundle"), str(trained / "data/test.csv"), "--json",
                     "--report", str(tmp_path / "report"))
    metrics = json.loads(evaluated.stdout)
    assert metrics["accuracy"] > metrics["majority_baseline_accuracy"] + 0.2
    history = (trained / "bundle/history.csv").read_text().splitlines()
    assert history[0].split(",")[:2] == ["epoch", "steps"] and len(history) > 2
    assert (tmp_path / "report/training_curves.png").is_file()

    out = tmp_path / "predictions.jsonl"
    predicted = aitk("wine", "predict", str(trained / "bundle"), str(trained / "data/predict.csv"), "--out", str(out))
    assert predicted.returncode == 0, predicted.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == metrics["rows"] and all(row["label"].startswith("cultivar_") for row in rows)


def test_a_malformed_row_is_an_error_row_and_the_others_are_scored(trained: Path, tmp_path: Path):
    header, first, *rest = (trained / "data/predict.csv").read_text().splitlines()
    (tmp_path / "in.csv").write_text("\n".join([header, first + ",extra", first, "nan" + first[first.index(","):]]) + "\n")
    out = tmp_path / "rows.jsonl"
    predicted = aitk("wine", "predict", str(trained / "bundle"), str(tmp_path / "in.csv"), "--out", str(out))
    assert predicted.returncode == 3, predicted.stderr
    extra, good, not_finite = [json.loads(line) for line in out.read_text().splitlines()]
    assert extra["error"].endswith(":2: expected 13 fields, got 14")
    assert good["label"].startswith("cultivar_") and "error" not in good
    assert not_finite["error"].endswith("is not a finite number")
