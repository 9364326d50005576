"""The forecast use case as a user runs it: train, evaluate, predict, bad input, covariates, wide tables."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_report, run_aitk

from applied_aitk.usecases.forecast.predictor import long_rows

TINY = ["--set", "hidden_size=16", "--set", "num_layers=1", "--set", "epochs=25", "--set", "patience=5", "--set", "batch_size=32"]


def seasonal_frame(n: int = 240, series: tuple[str, ...] = ("a", "b", "c", "d"), seed: int = 0) -> pd.DataFrame:
    """Daily series with a weekly cycle, a slow trend and noise, in long format with the default column names."""
    rng = np.random.default_rng(seed)
    days = pd.date_range("2023-01-01", periods=n, freq="D")
    parts = []
    for k, sid in enumerate(series):
        t = np.arange(n)
        value = 50 + 10 * k + 8 * np.sin(2 * np.pi * t / 7 + k) + 0.05 * t + rng.normal(0, 1, n)
        parts.append(pd.DataFrame({"series": sid, "date": days.strftime("%Y-%m-%d"), "value": value.round(3)}))
    return pd.concat(parts, ignore_index=True)


def predictions(path: Path) -> dict[str, dict]:
    return {row["id"]: row for row in map(json.loads, path.read_text().splitlines())}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("forecast")
    frame = seasonal_frame()
    frame.to_csv(root / "series.csv", index=False)
    frame.groupby("series").head(200).to_csv(root / "train.csv", index=False)
    tiny = pd.DataFrame({"series": "tiny", "date": pd.date_range("2023-01-01", periods=10, freq="D").strftime("%Y-%m-%d"), "value": 1.0})
    pd.concat([frame, tiny]).to_csv(root / "predict.csv", index=False)
    result = run_aitk("forecast", "train", str(root / "train.csv"), "--out", str(root / "bundle"), "--horizon", "7",
                      "--set", "context_length=28", *TINY, "--quantize", "int8", "--threads", "1", plugins="forecast")
    assert result.returncode == 0, result.stderr
    return {"root": root, "bundle": root / "bundle", "series": root / "series.csv", "predict": root / "predict.csv"}


def test_trained_model_beats_naive_in_a_rolling_backtest(trained):
    report = trained["bundle"].parent / "report"
    result = run_aitk("forecast", "evaluate", str(trained["bundle"]), str(trained["series"]), "--json", "--report", str(report), plugins="forecast")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["windows"] == 4 * 3 and metrics["horizon"] == 7 and metrics["season"] == 7
    assert metrics["mse"] < 0.5 * metrics["naive"]["mse"]
    assert metrics["smape"] < metrics["naive"]["smape"] and metrics["mase"] < metrics["naive"]["mase"]
    assert set(metrics["seasonal_naive"]) == {"smape", "mase", "mse", "mae"}
    assert 0.5 <= metrics["coverage"] <= 1.0 and metrics["coverage_nominal"] == 0.8
    assert (trained["bundle"] / "history.csv").read_text().startswith("epoch,steps,seconds,loss,")
    assert_report(report, "training_curves.png")
    page = (report / "index.html").read_text()
    assert "<h2>backtest.csv</h2>" in page  # the per-series metric table


def test_onnx_matches_torch_on_a_real_window(trained):
    import torch

    from applied_aitk.usecases.forecast.fit import torch_model
    from applied_aitk.usecases.forecast.plugin import Forecast
    from applied_aitk.bundle import load_bundle
    from applied_aitk.runtime import Runtime

    bundle = load_bundle(trained["bundle"], usecase="forecast")
    assert bundle.graph()["parity"]["max_abs_diff"]["quantiles"] <= 1e-4
    usecase = Forecast()
    predictor = usecase.load(bundle, Runtime(device="cpu", threads=1))
    assert predictor.count([trained["predict"], trained["series"].parent / "missing.csv"]) == 5 + 1  # series, for the bar's total
    window = predictor.decode(next(iter(predictor.read([trained["series"]]))))
    model = torch_model(bundle)
    with torch.no_grad():
        expected = model(*(torch.from_numpy(np.stack([f])) for f in window.feeds)).numpy()
    np.testing.assert_allclose(predictor.run([window.feeds]), expected, rtol=1e-5, atol=1e-4)


def test_predict_gives_ordered_quantiles_plots_and_an_error_row_for_a_short_series(trained, tmp_path):
    out, plots = tmp_path / "forecast.jsonl", tmp_path / "plots"
    result = run_aitk("forecast", "predict", str(trained["bundle"]), str(trained["predict"]), "--out", str(out), "--plot", str(plots), plugins="forecast")
    assert result.returncode == 3, result.stderr  # a batch with a failed record
    rows = predictions(out)
    assert "needs at least 28" in rows["tiny"]["error"]
    for sid in "abcd":
        row = rows[sid]
        assert row.get("error") is None and row["series"] == sid
        assert row["timestamp"] == list(pd.date_range("2023-08-29", periods=7, freq="D").strftime("%Y-%m-%d"))
        p10, p50, p90 = (np.array(row[k]) for k in ("p10", "p50", "p90"))
        assert len(p50) == 7 and (p10 <= p50).all() and (p50 <= p90).all() and (p10 < p90).any()
    assert sorted(p.name for p in plots.iterdir()) == ["a.png", "b.png", "c.png", "d.png"]
    assert (plots / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("out", ["long.parquet", "long.csv", "-"])
def test_layout_long_writes_a_row_per_series_and_step_that_pandas_reads(trained, tmp_path, out):
    path = tmp_path / out
    result = run_aitk("forecast", "predict", str(trained["bundle"]), str(trained["predict"]), "--out", str(path) if out != "-" else "-",
                      "--layout", "long", plugins="forecast")
    assert result.returncode == 3, result.stderr  # the short series is still an error row
    readers = {".parquet": pd.read_parquet, ".csv": pd.read_csv, "": lambda _: pd.read_json(io.StringIO(result.stdout), lines=True, dtype=False)}
    frame = readers[path.suffix](path)
    assert list(frame.columns) == ["id", "series", "timestamp", "p10", "p50", "p90", "error"]
    errors = frame[frame["error"].notna()]
    assert errors["id"].tolist() == ["tiny"] and "needs at least 28" in errors["error"].iloc[0]
    rows = frame[frame["error"].isna()]
    assert rows["series"].tolist() == [s for s in "abcd" for _ in range(7)]
    assert rows["timestamp"].tolist() == 4 * list(pd.date_range("2023-08-29", periods=7, freq="D").strftime("%Y-%m-%d"))
    assert all(rows[q].dtype == np.float64 for q in ("p10", "p50", "p90"))
    assert (rows["p10"] <= rows["p50"]).all() and (rows["p50"] <= rows["p90"]).all()
    if out == "long.parquet":  # the same forecast as the default, wide layout
        wide = run_aitk("forecast", "predict", str(trained["bundle"]), str(trained["series"]), "--out", "-", "--quiet", plugins="forecast")
        first = json.loads(wide.stdout.splitlines()[0])
        assert rows["p50"].tolist()[:7] == first["p50"]
        assert long_rows(rows.iloc[0].to_dict()) == [rows.iloc[0].to_dict()]  # a row already long stays (--resume of a long file)


def test_bad_series_become_error_rows_that_say_what_is_wrong(trained, tmp_path):
    frame = seasonal_frame()
    frame.loc[5, "date"] = "not a date"  # series a
    frame.loc[250, "date"] = frame.loc[251, "date"]  # series b
    frame = frame.drop(index=[500, 501])  # series c: two missing days
    frame.loc[800, "value"] = np.nan  # series d
    frame.to_csv(tmp_path / "bad.csv", index=False)
    out = tmp_path / "bad.jsonl"
    refused = run_aitk("forecast", "predict", str(trained["bundle"]), str(tmp_path / "bad.csv"), "--out", str(out), plugins="forecast")
    assert refused.returncode == 3
    rows = predictions(out)
    name = tmp_path / "bad.csv"  # messages name the file and its line as an editor counts it (the header is line 1)
    assert rows["a"]["error"] == f"{name}:7: series a: unparseable timestamp 'not a date' in column 'date'"
    assert rows["b"]["error"] == f"{name}:253: series b: duplicate timestamp 2023-01-12 (also on line 252)"
    assert rows["c"]["error"] == f"{name}:501: series c: 2 missing timestamp(s), the first 2023-01-21 (after this line); set fill_gaps=true to interpolate them"
    assert rows["d"]["error"] == f"{name}:800: series d: column 'value': missing value at 2023-03-22; set fill_gaps=true to interpolate"
    assert {sid: row["series"] for sid, row in rows.items()} == {s: s for s in "abcd"}
    long = run_aitk("forecast", "predict", str(trained["bundle"]), str(name), "--out", str(tmp_path / "long.csv"), "--layout", "long", plugins="forecast")
    errors = pd.read_csv(tmp_path / "long.csv", keep_default_na=False).query("error != ''")  # error rows join back on series and timestamp
    assert long.returncode == 3 and errors[["id", "series", "timestamp"]].values.tolist() == [
        ["a", "a", ""], ["b", "b", "2023-01-12"], ["c", "c", "2023-01-21"], ["d", "d", "2023-03-22"]]
    filled = run_aitk("forecast", "predict", str(trained["bundle"]), str(tmp_path / "bad.csv"), "--out", str(out), "--fill-gaps", plugins="forecast")
    rows = predictions(out)
    assert [sid for sid, row in rows.items() if not row.get("error")] == ["c", "d"] and filled.returncode == 3


def test_a_line_that_cannot_be_a_row_is_its_own_error_row_and_the_other_series_are_scored(trained, tmp_path):
    lines = seasonal_frame().to_csv(index=False).encode().splitlines()
    lines[300] += b",9"  # series b, file line 301: an extra field
    lines[301] = lines[301].replace(b"2023", b"2\xff23")  # not UTF-8
    lines[302] = lines[302].replace(b"b,", b'"b,', 1)  # an unbalanced quote
    (tmp_path / "bad.csv").write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "bad.jsonl"
    result = run_aitk("forecast", "predict", str(trained["bundle"]), str(tmp_path / "bad.csv"), "--out", str(out), plugins="forecast")
    rows = predictions(out)
    name = tmp_path / "bad.csv"
    assert result.returncode == 3 and [sid for sid, row in rows.items() if not row.get("error")] == ["a", "c", "d"]
    assert rows[f"{name}:301"]["error"] == f"{name}:301: expected 3 fields, got 4"
    assert rows[f"{name}:302"]["error"].startswith(f"{name}:302: not valid UTF-8 (byte ")
    assert rows[f"{name}:303"]["error"] == f"{name}:303: unbalanced quote (a quoted field never closes on this line)"
    assert rows["b"]["error"].startswith(f"{name}:300: series b: 3 missing timestamp(s), the first 2023-03-01 (after this line)")


def test_unknown_or_missing_columns_get_one_line_errors(trained, tmp_path):
    unknown = run_aitk("forecast", "train", str(trained["series"]), "--out", str(tmp_path / "b"), "--target", "sales", plugins="forecast")
    assert unknown.returncode == 1 and "Traceback" not in unknown.stderr
    assert unknown.stderr.strip().splitlines()[-1].startswith("error: ") and "unknown column 'sales' (columns: series, date, value)" in unknown.stderr
    seasonal_frame().rename(columns={"value": "sales"}).to_csv(tmp_path / "renamed.csv", index=False)
    out = tmp_path / "p.jsonl"
    missing = run_aitk("forecast", "predict", str(trained["bundle"]), str(tmp_path / "renamed.csv"), "--out", str(out), plugins="forecast")
    assert missing.returncode == 3
    (row,) = predictions(out).values()
    assert "no column 'value', which the model was trained with" in row["error"]


def test_the_bundle_carries_a_model_card_with_its_data_limits_and_checks(trained):
    import hashlib

    card = (trained["bundle"] / "README.md").read_text()
    manifest = json.loads((trained["bundle"] / "manifest.json").read_text())
    assert manifest["files"]["README.md"] == hashlib.sha256(card.encode()).hexdigest()  # the checksum covers it
    train = trained["root"] / "train.csv"
    assert f"| name | `{train}` |" in card and "| records | 800 |" in card
    assert f"| sha256 | `{hashlib.sha256(train.read_bytes()).hexdigest()}` |" in card
    assert "## Intended use\n\nForecasting the next `horizon` steps" in card and "- A series needs at least `context_length`" in card
    assert "| horizon | 7 |" in card and "| context_length | 28 |" in card and "| quantiles | [0.1, 0.5, 0.9] |" in card
    assert "| model.onnx | {" in card and "| model.int8.onnx | {" in card  # parity, and int8 against fp32
    assert "| season | 7 (set: 0) |" in card and "| format | long (set: auto) |" in card and '| freq | D (set: "") |' in card  # what training used
    manifest = json.loads(run_aitk("bundle", "info", str(trained["bundle"]), "--json", plugins="forecast").stdout)
    assert manifest["config"]["season"] == 0 and manifest["resolved"] == {"format": "long", "time_column": "date", "id_column": "series",
                                                                         "target": "value", "freq": "D", "season": 7}
    info = run_aitk("bundle", "info", str(trained["bundle"]), plugins="forecast").stdout
    assert "7 (set: 0)" in info and "long (set: auto)" in info
    assert "aitk forecast predict BUNDLE INPUT... --out predictions.jsonl" in card


def test_int8_model_is_written_checked_and_used(trained):
    manifest = json.loads((trained["bundle"] / "manifest.json").read_text())
    int8 = manifest["graphs"]["model"]["variants"]["int8"]
    assert int8["quantiles_ordered"] and int8["pinball_int8"] < 1.2 * int8["pinball_fp32"]
    import onnx

    ops = {node.op_type for node in onnx.load(str(trained["bundle"] / "model.int8.onnx")).graph.node}
    assert "DynamicQuantizeLSTM" in ops
    result = run_aitk("forecast", "evaluate", str(trained["bundle"]), str(trained["series"]), "--quantize", "int8", "--json", plugins="forecast")
    metrics = json.loads(result.stdout)
    assert metrics["mse"] < 0.5 * metrics["naive"]["mse"]


def test_multivariate_gru_with_known_and_past_covariates_needs_the_future_rows(tmp_path):
    rng = np.random.default_rng(1)
    n, ahead = 160, 7
    parts = []
    for sid in ("x", "y"):
        promo = np.concatenate([(rng.random(n) < 0.25).astype(int), [0, 1, 0, 0, 1, 0, 0]])
        sales = 30 + 15 * promo + rng.normal(0, 1, n + ahead)
        visits = 200 + 60 * promo + rng.normal(0, 5, n + ahead)
        known = np.arange(n + ahead) < n
        parts.append(pd.DataFrame({
            "shop": sid, "ds": pd.date_range("2024-01-01", periods=n + ahead, freq="D"), "sales": np.where(known, sales, np.nan),
            "visits": np.where(known, visits, np.nan), "promo": promo, "temp": rng.normal(20, 5, n + ahead),
        }))
    frame = pd.concat(parts, ignore_index=True)
    frame.to_parquet(tmp_path / "future.parquet")
    frame[frame["sales"].notna()].to_csv(tmp_path / "history.csv", index=False)
    trained = run_aitk("forecast", "train", str(tmp_path / "history.csv"), "--out", str(tmp_path / "b"), "--target", "sales,visits", "--horizon", str(ahead),
                       "--set", "id_column=shop", "--set", "known_covariates=promo", "--set", "past_covariates=temp", "--set", "cell=gru",
                       "--set", "context_length=21", *TINY, "--threads", "1", plugins="forecast")
    assert trained.returncode == 0, trained.stderr
    out = tmp_path / "p.jsonl"
    assert run_aitk("forecast", "predict", str(tmp_path / "b"), str(tmp_path / "future.parquet"), "--out", str(out), plugins="forecast").returncode == 0
    for sid, row in predictions(out).items():
        promo = frame[frame["shop"] == sid]["promo"].to_numpy()[n:]
        for target in ("sales", "visits"):
            p10, p50, p90 = (np.array(row[f"{target}_{q}"]) for q in ("p10", "p50", "p90"))
            assert (p10 <= p50).all() and (p50 <= p90).all()
            assert p50[promo == 1].min() > p50[promo == 0].max()  # the model read the promotions ahead
    assert run_aitk("forecast", "predict", str(tmp_path / "b"), str(tmp_path / "history.csv"), "--out", str(out), plugins="forecast").returncode == 3
    assert "known covariates are needed for the 7 steps after the last value" in predictions(out)["x"]["error"]


def test_wide_table_as_m4_ships_it(tmp_path):
    rng = np.random.default_rng(2)
    lengths = [90, 120, 100]
    rows = [[f"W{i + 1}", *(100 + 10 * np.sin(np.arange(m) / 3) + rng.normal(0, 1, m)).round(2), *[np.nan] * (max(lengths) - m)]
            for i, m in enumerate(lengths)]
    pd.DataFrame(rows, columns=[f"V{i + 1}" for i in range(max(lengths) + 1)]).to_csv(tmp_path / "wide.csv", index=False)
    trained = run_aitk("forecast", "train", str(tmp_path / "wide.csv"), "--out", str(tmp_path / "b"), "--horizon", "6",
                       "--set", "context_length=24", *TINY, "--set", "epochs=3", "--threads", "1", plugins="forecast")  # layout only: few epochs
    assert trained.returncode == 0, trained.stderr
    out = tmp_path / "p.csv"
    assert run_aitk("forecast", "predict", str(tmp_path / "b"), str(tmp_path / "wide.csv"), "--out", str(out), plugins="forecast").returncode == 0
    result = pd.read_csv(out)
    assert result["id"].tolist() == ["W1", "W2", "W3"]
    assert [json.loads(t)[0] for t in result["timestamp"]] == lengths  # integer steps continue after each series


def test_sample_is_real_public_domain_data_in_long_format(tmp_path):
    result = run_aitk("forecast", "sample", str(tmp_path / "s"), plugins="forecast")
    assert result.returncode == 0, result.stderr
    frame = pd.read_csv(tmp_path / "s" / "series.csv")
    assert list(frame.columns) == ["series", "date", "value"]
    assert frame.groupby("series").size().to_dict() == {"co2": 526, "elec_equip": 257, "elnino_sst": 732}
    assert "public domain" in (tmp_path / "s" / "SOURCES.md").read_text()


def test_bad_settings_fail_before_the_data_is_read(tmp_path):
    (tmp_path / "broken.csv").write_text("not,a\nforecast")
    cell = run_aitk("forecast", "train", str(tmp_path / "broken.csv"), "--out", str(tmp_path / "b"), "--set", "cell=transformer", plugins="forecast")
    assert cell.returncode == 1 and cell.stderr.strip() == "error: setting cell='transformer': expected one of lstm, gru"
    levels = run_aitk("forecast", "train", str(tmp_path / "broken.csv"), "--out", str(tmp_path / "b"), "--set", "quantiles=0.1,0.9", plugins="forecast")
    assert levels.returncode == 1 and "including 0.5" in levels.stderr and len(levels.stderr.strip().splitlines()) == 1


def test_serve_returns_the_rows_batch_predict_writes(trained, tmp_path):
    """One series per record as its table rows: the rows of batch predict, error rows included."""
    from serve_client import batch_rows, client, served_rows, slim_served_rows, without_ids

    frame = pd.read_csv(trained["predict"])
    batch = batch_rows("forecast", trained["bundle"], [trained["predict"]], tmp_path / "out.jsonl")
    records = [{"rows": part.to_dict("records")} for _, part in frame.groupby("series", sort=False)]
    with client(trained["bundle"]) as c:
        served = served_rows(c, "forecast", [*records, {"rows": "none"}, {"rows": [{"series": "x", "day": 1}]}])
    assert [row["id"] for row in served[:len(records)]] == [row["id"] for row in batch]
    def unlocated(rows):  # a file names a line PATH:LINE, a served series its place in rows: rows[K]
        return [{**row, "error": re.sub(r"^(rows\[\d+\]|.+?:\d+): ", "", row["error"])} if "error" in row else row for row in rows]

    assert unlocated(without_ids(served[:len(records)])) == unlocated(without_ids(batch))
    assert served[len(records) - 1]["error"].startswith("rows[0]: series tiny: ")
    assert slim_served_rows("forecast", trained["bundle"], records) == served[:len(records)]
    assert "context_length" in served[len(records) - 1]["error"]  # the 10-value series, as in batch
    assert "field rows" in served[-2]["error"] and "no column 'date'" in served[-1]["error"]


def test_non_finite_and_overflowing_values_are_error_rows_and_far_values_warn(trained, tmp_path):
    frame = seasonal_frame()
    frame["value"] = frame["value"].astype(object)
    frame.loc[230, "value"] = "inf"  # series a, line 232
    frame.loc[470, "value"] = "-inf"  # series b
    frame.loc[710, "value"] = "1e300"  # series c: finite, but past float32
    frame.loc[950:959, "value"] = 5000.0  # series d: finite, far outside what training saw
    frame.to_csv(tmp_path / "extreme.csv", index=False)
    out = tmp_path / "extreme.jsonl"
    result = run_aitk("forecast", "predict", str(trained["bundle"]), str(tmp_path / "extreme.csv"), "--out", str(out), plugins="forecast")
    assert result.returncode == 3, result.stderr
    assert "nan" not in out.read_text().lower()
    rows = predictions(out)
    name = tmp_path / "extreme.csv"
    assert rows["a"]["error"] == f"{name}:232: series a: column 'value': inf is not a finite number"
    assert rows["b"]["error"] == f"{name}:472: series b: column 'value': -inf is not a finite number"
    assert rows["c"]["error"].startswith(f"{name}:712: series c: column 'value': 1e+300 is too large (the model computes in float32")
    assert "error" not in rows["d"] and np.isfinite(rows["d"]["p50"]).all()
    assert len(rows["d"]["warnings"]) == 1 and "value: 5000 is" in rows["d"]["warnings"][0] and "extrapolates" in rows["d"]["warnings"][0]


def test_semicolon_decimal_comma_and_tab_separated_tables_read_like_csv(trained, tmp_path):
    frame = seasonal_frame()
    frame.to_csv(tmp_path / "plain.csv", index=False)
    frame.to_csv(tmp_path / "excel.csv", index=False, sep=";", decimal=",")
    frame.to_csv(tmp_path / "tabs.tsv", index=False, sep="\t")
    outs = {}
    for name in ("plain.csv", "excel.csv", "tabs.tsv"):
        outs[name] = tmp_path / f"{name}.jsonl"
        result = run_aitk("forecast", "predict", str(trained["bundle"]), str(tmp_path / name), "--out", str(outs[name]), plugins="forecast")
        assert result.returncode == 0, result.stderr
    assert predictions(outs["excel.csv"]) == predictions(outs["plain.csv"]) == predictions(outs["tabs.tsv"])


def test_excels_sep_hint_line_is_honoured_in_forecast_tables(tmp_path):
    from applied_aitk.usecases.forecast.table import read_table

    (tmp_path / "excel.csv").write_text("sep=;\nseries;date;value\na;2020-01-01;1,5\na;2020-02-01;-2,25\n")
    frame = read_table(tmp_path / "excel.csv")
    assert list(frame.columns) == ["series", "date", "value"] and frame["value"].tolist() == [1.5, -2.25]


def test_an_empty_file_and_a_header_only_table_are_one_warning_each_and_no_rows(trained, tmp_path):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("series,date,value\n")
    result = run_aitk("forecast", "predict", str(trained["bundle"]), str(tmp_path / "empty.csv"), str(tmp_path / "header.csv"),
                      str(trained["series"]), "--out", str(tmp_path / "out.jsonl"), plugins="forecast")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("empty.csv: empty, no records") == 1 and result.stderr.count("header.csv: no rows, nothing to predict") == 1
    assert sorted(predictions(tmp_path / "out.jsonl")) == list("abcd")


def test_a_bad_cell_in_a_decimal_comma_table_is_named_and_its_neighbours_read_as_numbers(tmp_path):
    from applied_aitk.usecases.forecast.data import _numeric
    from applied_aitk.usecases.forecast.table import read_table
    from applied_aitk import InputError

    (tmp_path / "excel.csv").write_text("series;date;value\na;2020-01-01;1,5\na;2020-02-01;-2,25\na;2020-03-01;abc\n")
    frame = read_table(tmp_path / "excel.csv")
    assert frame["series"].tolist() == ["a"] * 3
    assert pd.to_numeric(frame["value"], errors="coerce").tolist()[:2] == [1.5, -2.25]
    with pytest.raises(InputError, match=r"^series a: column 'value': 'abc' is not a number"):
        _numeric("a", frame, "value")


def test_timestamps_with_changing_utc_offsets_go_to_one_zone_and_a_naive_mix_is_refused():
    from applied_aitk.usecases.forecast.data import parse_times
    from applied_aitk import InputError

    hours = pd.date_range("2024-03-30 22:00", periods=8, freq="h", tz="Europe/Berlin")  # crosses the 31 March change
    iso = pd.Series([t.isoformat() for t in hours], index=pd.RangeIndex(1, 9))
    utc = parse_times(iso, "m")
    assert str(utc.tz) == "UTC" and (np.diff(utc.asi8) == 3600 * 10**6).all()
    days = pd.Series([t.isoformat() for t in pd.date_range("2024-03-28", periods=6, freq="D", tz="Europe/Berlin")])
    assert parse_times(days, "d").strftime("%Y-%m-%d").tolist() == ["2024-03-28", "2024-03-29", "2024-03-30", "2024-03-31", "2024-04-01", "2024-04-02"]
    mixed = pd.Series(["2024-01-01T00:00:00+01:00", "2024-01-02T00:00:00", "2024-01-03T00:00:00+01:00"], index=pd.RangeIndex(1, 4), name="date")
    with pytest.raises(InputError, match=r"series s: column 'date' mixes timestamps with and without a UTC offset: .*\(line 1\), .*\(this line\)"):
        parse_times(mixed, "s")


def test_training_reads_a_composite_key_in_a_european_table_and_names_bad_series(tmp_path):
    frame = seasonal_frame(n=120, series=("a", "b", "c"))
    frame[["store", "item"]] = frame["series"].map({"a": ("1", "x"), "b": ("1", "y"), "c": ("2", "x")}).tolist()
    frame = frame.drop(columns="series")[["store", "item", "date", "value"]]
    frame.loc[frame.index[-1], "value"] = np.inf  # store 2, item x: line 361
    frame.to_csv(tmp_path / "sales.csv", index=False, sep=";", decimal=",")
    result = run_aitk("forecast", "train", str(tmp_path / "sales.csv"), "--out", str(tmp_path / "b"), "--set", "id_column=store,item",
                      "--horizon", "7", "--set", "context_length=14", *TINY, "--set", "epochs=3", "--threads", "1", plugins="forecast")
    assert result.returncode == 0, result.stderr
    assert f"skipped {tmp_path / 'sales.csv'}:361: series 2/x: column 'value': inf is not a finite number" in result.stderr
    out = tmp_path / "p.jsonl"
    frame.iloc[:-1].to_csv(tmp_path / "new.csv", index=False, sep=";", decimal=",")
    assert run_aitk("forecast", "predict", str(tmp_path / "b"), str(tmp_path / "new.csv"), "--out", str(out), plugins="forecast").returncode == 0
    assert sorted(predictions(out)) == ["1/x", "1/y", "2/x"]
