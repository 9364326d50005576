"""Batch inference over files: error rows, exit 3, formats, inputs, and resume after a kill."""

import csv
import json
import os
import signal
import subprocess
import time

import pandas as pd
import pytest

from conftest import AITK, run_aitk


def predict(wine, out, *inputs, extra=(), stdin=None):
    return run_aitk("wine", "predict", str(wine["bundle"]), *map(str, inputs), "--out", str(out), *extra, plugins="wine", stdin=stdin)


def rows_of(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def csv_with_bad_rows(wine, path):
    rows = list(csv.DictReader(open(wine["data"] / "predict.csv")))
    rows[1]["alcohol"] = "abc"
    rows[3]["proline"] = ""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def test_a_corrupt_record_becomes_an_error_row_and_the_run_goes_on(wine, tmp_path):
    count = csv_with_bad_rows(wine, tmp_path / "in.csv")
    result = predict(wine, tmp_path / "out.jsonl", tmp_path / "in.csv")
    assert result.returncode == 3, result.stderr
    rows = rows_of(tmp_path / "out.jsonl")
    assert len(rows) == count
    errors = {row["id"]: row["error"] for row in rows if row.get("error")}
    assert errors == {"in.csv:3": "field 'alcohol': 'abc' is not a number", "in.csv:5": "field 'proline': missing, expected a number"}
    assert all(row["label"].startswith("cultivar_") for row in rows if not row.get("error"))
    assert "2 failed" in result.stderr


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_csv_and_parquet_hold_the_same_rows_as_jsonl(wine, tmp_path, suffix):
    csv_with_bad_rows(wine, tmp_path / "in.csv")
    predict(wine, tmp_path / "out.jsonl", tmp_path / "in.csv")
    assert predict(wine, tmp_path / f"out{suffix}", tmp_path / "in.csv").returncode == 3
    frame = pd.read_csv(tmp_path / "out.csv") if suffix == ".csv" else pd.read_parquet(tmp_path / "out.parquet")
    expected = rows_of(tmp_path / "out.jsonl")
    assert list(frame.columns) == ["id", "label", "probability", "probabilities", "error"]
    assert frame["id"].tolist() == [row["id"] for row in expected]
    assert frame["label"].fillna("").tolist() == [row.get("label") or "" for row in expected]
    assert frame["error"].notna().sum() == 2


def test_inputs_from_folders_globs_and_stdin(wine, tmp_path):
    (tmp_path / "in").mkdir()
    text = (wine["data"] / "predict.csv").read_text()
    for name in ("a.csv", "b.csv"):
        (tmp_path / "in" / name).write_text(text)
    (tmp_path / "in" / "notes.txt").write_text("not a table")
    n = len(text.splitlines()) - 1
    assert predict(wine, tmp_path / "folder.jsonl", tmp_path / "in").returncode == 0
    assert len(rows_of(tmp_path / "folder.jsonl")) == 2 * n
    assert predict(wine, tmp_path / "glob.jsonl", str(tmp_path / "in" / "*.csv")).returncode == 0
    assert len(rows_of(tmp_path / "glob.jsonl")) == 2 * n
    assert predict(wine, tmp_path / "stdin.jsonl", "-", stdin=text).returncode == 0
    assert len(rows_of(tmp_path / "stdin.jsonl")) == n
    missing = predict(wine, tmp_path / "x.jsonl", tmp_path / "nope.csv")
    assert missing.returncode == 1 and missing.stderr.strip() == f"error: {tmp_path / 'nope.csv'}: no such file or directory"
    wrong = predict(wine, tmp_path / "x.txt", tmp_path / "in")
    assert wrong.returncode == 1 and "expected a file ending in .jsonl, .csv, .parquet" in wrong.stderr


def test_killed_run_resumed_gives_exactly_the_rows_of_an_uninterrupted_run(wine, tmp_path):
    lines = (wine["data"] / "predict.csv").read_text().splitlines()
    big = tmp_path / "big.csv"
    big.write_text("\n".join([lines[0], *(lines[1:] * 1500)]) + "\n")
    args = ["--batch-size", "4"]
    assert predict(wine, tmp_path / "full.jsonl", big, extra=args).returncode == 0

    out = tmp_path / "resumed.jsonl"
    journal = tmp_path / "resumed.jsonl.partial.jsonl"
    env = {**os.environ, "AITK_LOAD_PLUGINS": "wine"}
    process = subprocess.Popen([*AITK, "wine", "predict", str(wine["bundle"]), str(big), "--out", str(out), *args], env=env, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and (not journal.exists() or journal.stat().st_size < 200_000):
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert not out.exists(), "a killed run leaves no half-written output"
    done_before = len(journal.read_text().splitlines())
    assert 0 < done_before < 1500 * (len(lines) - 1)

    resumed = predict(wine, out, big, extra=[*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert f"{done_before} resumed" in resumed.stderr or f"{done_before - 1} resumed" in resumed.stderr
    assert out.read_text().splitlines() == (tmp_path / "full.jsonl").read_text().splitlines()
    assert not journal.exists()
