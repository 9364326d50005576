"""`predict --engine ray`: a local Ray instance writes the same rows as the local engine."""

import json

from conftest import run_aitk
from test_batch import csv_with_bad_rows


def test_ray_engine_writes_the_local_engines_rows_error_rows_and_resume_included(wine, tmp_path):
    """A third-party plugin under Ray: bad rows, an empty file, a header-only file and a table without
    the model's columns give the local engine's error rows and warnings; --resume after two rows writes the rest."""
    csv_with_bad_rows(wine, tmp_path / "bad_rows.csv")
    header = (wine["data"] / "predict.csv").read_text().splitlines()[0]
    (tmp_path / "zero_bytes.csv").write_text("")
    (tmp_path / "header_only.csv").write_text(header + "\n")
    (tmp_path / "no_columns.csv").write_text("a,b\n1,2\n")
    inputs = [str(tmp_path / name) for name in ("zero_bytes.csv", "bad_rows.csv", "header_only.csv", "no_columns.csv")]
    inputs.append(str(wine["data"] / "predict.csv"))
    common = ["wine", "predict", str(wine["bundle"]), *inputs]
    local = run_aitk(*common, "--out", str(tmp_path / "local.jsonl"), plugins="wine")
    lines = (tmp_path / "local.jsonl").read_text().splitlines()
    (tmp_path / "ray.jsonl").write_text("\n".join(lines[:2]) + "\n")
    ray = run_aitk(*common, "--out", str(tmp_path / "ray.jsonl"), "--engine", "ray", "--actors", "2", "--resume", plugins="wine")
    assert (local.returncode, ray.returncode) == (3, 3), ray.stderr
    assert (tmp_path / "ray.jsonl").read_text() == (tmp_path / "local.jsonl").read_text()
    assert "Traceback" not in ray.stderr and "ERROR" not in ray.stderr
    for name, warning in (("zero_bytes.csv", "no rows"), ("header_only.csv", "no rows"), ("no_columns.csv", "missing column")):
        assert f"warning: {tmp_path / name}: {warning}" in local.stderr and f"warning: {tmp_path / name}: {warning}" in ray.stderr
    errors = [json.loads(line).get("error") for line in lines]
    assert sum(e is not None for e in errors) == 3 and any(e and e.startswith(f"{inputs[3]}: missing column") for e in errors)


def test_without_ray_installed_a_one_line_hint(wine, tmp_path):
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    result = run_aitk("wine", "predict", str(wine["bundle"]), str(wine["data"] / "predict.csv"), "--out", str(tmp_path / "p.jsonl"), "--engine", "ray", env={"PYTHONPATH": str(tmp_path)}, plugins="wine")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: --engine ray needs Ray: pip install 'applied-aitk[ray]'"


def test_a_failure_inside_ray_is_one_line():
    from applied_aitk.ray_engine import last_line

    text = "\x1b[36mray::FlatMap(<lambda>)()\x1b[39m\n  File \"x.py\", line 1\napplied_aitk.errors.InputError: a.csv: cannot read the table\n"
    assert last_line(RuntimeError(text)) == "a.csv: cannot read the table"

    advice = ("TypeError: bad input\nFailed to apply UDF transform after 1/1 attempts (total backoff 0.0s).\n"
              "To change retry attempts, backoff, or which errors are retried, configure `ray.data.DataContext.get_current()`.\n")
    assert last_line(RuntimeError(advice)) == "TypeError: bad input"  # Ray Data's advice after the error is not the error


def test_forecast_series_errors_travel_to_ray_tasks_whole():
    import pickle

    from applied_aitk.usecases.forecast.data import NO_ID, SeriesError

    for error in (SeriesError("a", "also in b.csv", 7, "2024-01-01"), SeriesError(NO_ID, "no series id", 2)):
        copy = pickle.loads(pickle.dumps(error))  # was: TypeError: SeriesError.__init__() missing 1 required positional argument
        assert (copy.located("in.csv"), copy.line, copy.timestamp) == (error.located("in.csv"), error.line, error.timestamp)
