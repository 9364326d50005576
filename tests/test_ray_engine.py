"""`predict --engine ray`: a local Ray instance writes the same rows as the local engine."""

import json

from conftest import run_aitk
from test_batch import csv_with_bad_rows


def test_ray_engine_writes_the_local_engines_rows_error_rows_included(wine, tmp_path):
    csv_with_bad_rows(wine, tmp_path / "in.csv")
    inputs = [str(tmp_path / "in.csv"), str(wine["data"] / "predict.csv")]
    local = run_aitk("wine", "predict", str(wine["bundle"]), *inputs, "--out", str(tmp_path / "local.jsonl"), plugins="wine")
    ray = run_aitk("wine", "predict", str(wine["bundle"]), *inputs, "--out", str(tmp_path / "ray.jsonl"), "--engine", "ray", "--actors", "2", plugins="wine")
    assert (local.returncode, ray.returncode) == (3, 3), ray.stderr
    assert (tmp_path / "ray.jsonl").read_text() == (tmp_path / "local.jsonl").read_text()


def test_without_ray_installed_a_one_line_hint(wine, tmp_path):
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    result = run_aitk("wine", "predict", str(wine["bundle"]), str(wine["data"] / "predict.csv"), "--out", str(tmp_path / "p.jsonl"), "--engine", "ray", env={"PYTHONPATH": str(tmp_path)}, plugins="wine")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: --engine ray needs Ray: pip install 'applied-aitk[ray]'"


def test_ray_engine_matches_the_local_engine_for_fraud(tmp_path):
    assert run_aitk("fraud", "sample", str(tmp_path / "data"), plugins="fraud").returncode == 0
    trained = run_aitk("fraud", "train", str(tmp_path / "data/train.csv"), "--out", str(tmp_path / "bundle"), "--set", "epochs=5", plugins="fraud")
    assert trained.returncode == 0, trained.stderr
    rows = (tmp_path / "data/predict.csv").read_text().splitlines()
    rows[3] = rows[3].replace(",", ",oops,", 1).rsplit(",", 1)[0]  # a non-number in a numeric column
    (tmp_path / "bad.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "zero_bytes.csv").write_text("")
    (tmp_path / "header_only.csv").write_text(rows[0] + "\n")
    (tmp_path / "nocolumns.csv").write_text("a,b\n1,2\n")
    inputs = [str(tmp_path / name) for name in ("zero_bytes.csv", "data/predict.csv", "header_only.csv", "nocolumns.csv", "bad.csv")]
    common = ["fraud", "predict", str(tmp_path / "bundle"), *inputs]
    local = run_aitk(*common, "--out", str(tmp_path / "local.jsonl"), plugins="fraud")
    ray = run_aitk(*common, "--out", str(tmp_path / "ray.jsonl"), "--engine", "ray", plugins="fraud")
    assert (local.returncode, ray.returncode) == (3, 3), ray.stderr
    assert (tmp_path / "ray.jsonl").read_text() == (tmp_path / "local.jsonl").read_text()
    assert "Traceback" not in ray.stderr and "ERROR" not in ray.stderr
    errors = [json.loads(line).get("error") for line in (tmp_path / "ray.jsonl").read_text().splitlines()]
    assert sum(e is not None for e in errors) == 2 and any(e and e.startswith(f"{inputs[3]}: missing column") for e in errors)


def test_a_failure_inside_ray_is_one_line():
    from applied_aitk.ray_engine import last_line

    text = "\x1b[36mray::FlatMap(<lambda>)()\x1b[39m\n  File \"x.py\", line 1\napplied_aitk.errors.InputError: a.csv: cannot read the table\n"
    assert last_line(RuntimeError(text)) == "a.csv: cannot read the table"
