"""The `wine` plugin end to end through the aitk CLI: sample, train, evaluate, predict."""

import json
import subprocess
import sys
from pathlib import Path

AITK = [sys.executable, "-c", "from toolkit.cli import main; main()"]


def aitk(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*AITK, *args], capture_output=True, text=True)


def test_trains_beats_majority_and_predicts(tmp_path: Path):
    assert aitk("wine", "sample", str(tmp_path / "data")).returncode == 0
    trained = aitk("wine", "train", str(tmp_path / "data/train.csv"), "--out", str(tmp_path / "bundle"))
    assert trained.returncode == 0, trained.stderr

    evaluated = aitk("wine", "evaluate", str(tmp_path / "bundle"), str(tmp_path / "data/test.csv"), "--json")
    metrics = json.loads(evaluated.stdout)
    assert metrics["accuracy"] > metrics["majority_baseline_accuracy"] + 0.2

    out = tmp_path / "predictions.jsonl"
    predicted = aitk("wine", "predict", str(tmp_path / "bundle"), str(tmp_path / "data/predict.csv"), "--out", str(out))
    assert predicted.returncode == 0, predicted.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == metrics["rows"] and all(row["label"].startswith("cultivar_") for row in rows)
