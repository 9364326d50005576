"""Forecast inputs a user gets wrong: rows with no series id, a year typed as 0000, data with no series."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_aitk
from test_forecast import seasonal_frame


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("forecast_input")
    seasonal_frame(n=80, series=("a", "b")).to_csv(root / "train.csv", index=False)
    trained = run_aitk("forecast", "train", str(root / "train.csv"), "--out", str(root / "bundle"), "--horizon", "7",
                       "--set", "context_length=14", "--set", "hidden_size=8", "--set", "epochs=1", "--threads", "1", plugins="forecast")
    assert trained.returncode == 0, trained.stderr
    return root / "bundle"


def rows_of(path: Path) -> dict[str, dict]:
    return {row["id"]: row for row in map(json.loads, path.read_text().splitlines())}


def test_rows_without_a_series_id_are_an_error_row_never_dropped(bundle, tmp_path):
    frame = seasonal_frame(n=40, series=("a", "b", "c"))
    frame.loc[frame.series == "c", "series"] = ""  # 40 rows from file line 82 on; pandas' groupby dropped them: 0 rows, exit 0
    frame.loc[5, "series"] = "  "  # one row of a: blank
    frame.to_csv(tmp_path / "in.csv", index=False)
    out = tmp_path / "out.jsonl"
    result = run_aitk("forecast", "predict", str(bundle), str(tmp_path / "in.csv"), "--out", str(out), plugins="forecast")
    rows = rows_of(out)
    name = tmp_path / "in.csv"
    assert result.returncode == 3 and list(rows) == ["a", "b", f"{name}:7"]
    assert rows[f"{name}:7"]["error"] == f"{name}:7: no series id: column 'series' is empty (41 rows, the first on this line)"
    assert rows["a"]["error"].startswith(f"{name}:6: series a: 1 missing timestamp(s), the first 2023-01-06")  # its blank row is not a
    assert "error" not in rows["b"] and len(rows["b"]["p50"]) == 7
    trained = run_aitk("forecast", "train", str(name), "--out", str(tmp_path / "b2"), "--horizon", "7", "--set", "context_length=14",
                       "--set", "hidden_size=8", "--set", "epochs=1", "--set", "fill_gaps=true", "--threads", "1", plugins="forecast")
    assert trained.returncode == 0 and f"{name}:7: no series id: column 'series' is empty" in trained.stderr  # left out, said so


def test_evaluate_and_train_with_no_series_name_the_data(bundle, tmp_path):
    """`forecast evaluate` on a header-only table said "no series to evaluate (0 left out; the first: none)"."""
    (tmp_path / "header.csv").write_text("series,date,value\n")
    seasonal_frame(n=10, series=("a",)).to_csv(tmp_path / "short.csv", index=False)
    for name, why in (("header.csv", "no rows"), ("short.csv", "1 left out; the first: ")):
        data = tmp_path / name
        evaluated = run_aitk("forecast", "evaluate", str(bundle), str(data), plugins="forecast")
        assert evaluated.returncode == 1 and evaluated.stderr.strip().splitlines()[-1].startswith(f"error: {data}: no series to evaluate ({why}")
        trained = run_aitk("forecast", "train", str(data), "--out", str(tmp_path / "b"), "--horizon", "7", "--set", "context_length=14",
                           "--threads", "1", plugins="forecast")
        assert trained.returncode == 1 and trained.stderr.strip().splitlines()[-1].startswith(f"error: {data}: no series to train on ({why}")


def test_a_year_typed_as_0000_is_an_error_row_naming_the_gap(bundle, tmp_path):
    frame = seasonal_frame(n=40, series=("a", "b"))
    frame.loc[0, "date"] = "0000-12-31"  # was: TypeError: '<' not supported between instances of 'int' and 'Timestamp'
    frame.to_csv(tmp_path / "in.csv", index=False)
    out = tmp_path / "out.jsonl"
    result = run_aitk("forecast", "predict", str(bundle), str(tmp_path / "in.csv"), "--out", str(out), plugins="forecast")
    rows = rows_of(out)
    assert result.returncode == 3 and "error" not in rows["b"]
    assert rows["a"]["error"] == (f"{tmp_path / 'in.csv'}:2: series a: 738521 missing timestamp(s), the first 0001-01-01 "
                                  "(after this line); set fill_gaps=true to interpolate them")


def test_a_served_series_with_true_false_a_list_or_an_object_in_a_column_is_refused_by_field(bundle):
    from applied_aitk.bundle import load_bundle
    from applied_aitk.errors import InputError
    from applied_aitk.plugins import get_usecases
    from applied_aitk.runtime import Runtime

    predictor = get_usecases()["forecast"].load(load_bundle(bundle, usecase="forecast"), Runtime(device="cpu"))
    rows = seasonal_frame(n=20, series=("a",)).to_dict("records")
    rows[3]["value"] = True  # pandas read it as 1.0, scored without a word
    with pytest.raises(InputError, match=r"^rows\[3\]: field 'value': expected a number or text, got true/false$"):
        predictor.from_json({"rows": rows}, "0")
    rows[3]["value"], rows[0]["series"] = 1.0, ["a"]
    with pytest.raises(InputError, match=r"^rows\[0\]: field 'series': expected a number or text, got a list$"):
        predictor.from_json({"rows": rows}, "0")
    rows[0]["series"], rows[0]["note"] = "a", {"any": True}  # a column the model does not read may hold anything
    assert predictor.from_json({"rows": rows}, "0").id == "a"
    for row in rows:  # served as records[0]: "records[0]: 0: no column 'series'", the position taken for a file name
        del row["series"]
    with pytest.raises(InputError, match=r"^field rows: no column 'series', which the model was trained with \(columns: date, value, note\)$"):
        predictor.from_json({"rows": rows}, "0")
