"""fraud: generated transactions with planted fraud patterns, through the CLI as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import AITK, SLIM_AITK, TRAINING_COMMANDS, assert_report

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "AITK_LOAD_PLUGINS": "fraud", "NO_COLOR": "1"}
MERCHANTS = ["grocery", "fuel", "restaurant", "travel", "electronics", "gift_cards"]
COUNTRIES = ["FR", "DE", "BE", "NL", "ES", "ZZ"]


def aitk(*args: str, check: int | None = 0) -> subprocess.CompletedProcess:
    """``aitk ARGS`` (as in a slim install unless ARGS name a training command); exit ``check``."""
    command = AITK if TRAINING_COMMANDS & set(args) else SLIM_AITK
    result = subprocess.run([*command, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=120)
    if check is not None:
        assert result.returncode == check, result.stderr[-2000:]
    return result


def transactions(n: int, seed: int) -> pd.DataFrame:
    """Fraud mostly where gift cards meet country ZZ, at night, for large amounts far from home."""
    rng = np.random.default_rng(seed)
    merchant = rng.choice(MERCHANTS, n, p=[0.3, 0.2, 0.2, 0.1, 0.1, 0.1])
    country = rng.choice(COUNTRIES, n, p=[0.4, 0.2, 0.15, 0.1, 0.1, 0.05])
    amount = np.round(rng.lognormal(3.5, 1.0, n), 2)
    hour = rng.integers(0, 24, n)
    distance = np.round(rng.exponential(20, n), 1)
    logit = (
        -6.5
        + 3.5 * (merchant == "gift_cards")
        + 3.5 * (country == "ZZ")
        + 2.0 * (amount > 150)
        + 2.0 * (hour < 5)
        + 0.03 * distance
    )
    fraud = rng.random(n) < 1 / (1 + np.exp(-logit))
    frame = pd.DataFrame({
        "Time": np.sort(rng.uniform(0, 86400 * 30, n)).round(),
        "amount": amount,
        "hour": hour,
        "distance_km": distance,
        "merchant": merchant,
        "country": country,
        "Class": fraud.astype(int),
    })
    frame.loc[rng.random(n) < 0.05, "distance_km"] = np.nan  # missing values are allowed
    return frame


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fraud")
    train, test = transactions(3000, 1), transactions(1500, 2)
    train.to_csv(root / "train.csv", index=False)
    test.to_csv(root / "test.csv", index=False)
    aitk("fraud", "train", root / "train.csv", "--out", root / "bundle", "--set", "epochs=40", "--set", "patience=10",
         "--target-recall", "0.8", "--quantize", "int8")
    return {"root": root, "bundle": root / "bundle", "train": root / "train.csv", "test": root / "test.csv"}


def predictions(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def evaluated(work) -> dict:
    """``fraud evaluate --json --report`` on the test data: the metrics printed (the report is in work["root"] / "report")."""
    return json.loads(aitk("fraud", "evaluate", work["bundle"], work["test"], "--json", "--report", work["root"] / "report").stdout)


def test_model_beats_trivial_baseline(work, evaluated):
    metrics = evaluated
    base_rate = pd.read_csv(work["test"])["Class"].mean()  # PR-AUC of a constant score
    assert metrics["pr_auc"] > 2.5 * base_rate, (metrics, base_rate)
    assert metrics["roc_auc"] > 0.8
    for key in ("recall_at_1pct_fpr", "precision", "recall", "expected_cost", "threshold"):
        assert np.isfinite(metrics[key]), key
    assert metrics["recall"] > 0.5  # the threshold was chosen for recall 0.8 on validation
    assert_report(work["root"] / "report", "pr_curve.png", "threshold.png", "training_curves.png")


def test_negative_weight_lowers_precision_not_ranking(work, evaluated):
    plain = evaluated
    weighted = json.loads(aitk("fraud", "evaluate", work["bundle"], work["test"], "--json", "--negative-weight", "10").stdout)
    assert weighted["roc_auc"] == pytest.approx(plain["roc_auc"])
    assert weighted["pr_auc"] < plain["pr_auc"]
    assert weighted["precision"] < plain["precision"]
    assert weighted["recall"] == pytest.approx(plain["recall"])


def test_onnx_matches_torch(work):
    import torch

    from applied_aitk.usecases.fraud.data import Preprocessing
    from applied_aitk.usecases.fraud.model import FraudModel, build
    from applied_aitk.usecases.fraud.plugin import Fraud
    from applied_aitk.bundle import load_bundle
    from applied_aitk.runtime import Runtime

    bundle = load_bundle(work["bundle"], usecase="fraud")
    prep = Preprocessing.from_json(bundle.read_json("preprocessing.json"))
    config = Fraud().config_from(bundle.config)
    model = FraudModel(build(config.model, prep.numeric, prep.vocab_sizes, config), True, True)
    model.load_state_dict(bundle.read_weights())
    model.eval()
    numeric, categorical, bad, _ = prep.encode(pd.read_csv(work["test"], dtype=str, keep_default_na=False).head(300))
    assert not bad.any() and np.isnan(numeric).any()  # the missing distances go through the graph's imputation
    categorical[::7] = 0  # and some rows through the out-of-vocabulary bucket
    with torch.no_grad():
        want = model(torch.from_numpy(numeric), torch.from_numpy(categorical))[0].numpy()
    got = Runtime(device="cpu").session(bundle.file("model.onnx"))(numeric, categorical)[0]
    np.testing.assert_allclose(got, want, atol=1e-5)
    int8 = Runtime(device="cpu").session(bundle.file("model.int8.onnx"))(numeric, categorical)[0]
    assert np.abs(int8 - want).max() < 0.05
    assert bundle.graph()["parity"]["max_abs_diff"]["score"] <= 1e-3


def test_the_card_shows_the_pos_weight_training_chose(work):
    manifest = json.loads((work["bundle"] / "manifest.json").read_text())
    frame = pd.read_csv(work["train"])  # sorted by Time: validation is the latest val_fraction of rows
    n_train = len(frame) - max(1, round(len(frame) * manifest["config"]["val_fraction"]))
    frauds = frame["Class"].iloc[:n_train].sum()
    assert manifest["config"]["pos_weight"] == 0 and manifest["resolved"]["pos_weight"] == pytest.approx((n_train - frauds) / frauds)
    shown = f"{json.dumps(manifest['resolved']['pos_weight'])} (set: 0.0)"
    assert f"| pos_weight | {shown} |" in (work["bundle"] / "README.md").read_text()
    assert shown in aitk("bundle", "info", work["bundle"]).stdout


def test_predict_scores_flags_and_explains(work):
    test = pd.read_csv(work["test"]).head(200)
    test.insert(0, "txn_id", [f"t{i}" for i in range(len(test))])
    test.drop(columns=["Class"]).to_parquet(work["root"] / "new.parquet")
    out = work["root"] / "scores.jsonl"
    aitk("fraud", "predict", work["bundle"], work["root"] / "new.parquet", "--out", out, "--keep", "txn_id", "--batch-size", "64")
    rows = predictions(out)
    assert [r["txn_id"] for r in rows] == list(test["txn_id"])
    threshold = json.loads((work["bundle"] / "manifest.json").read_text())["assets"]["threshold"]
    for row in rows:
        assert 0 <= row["score"] <= 1 and row["flag"] == (row["score"] >= threshold)
        assert len(row["top_features"]) <= 3
    # the planted patterns are what the explanations point at on the riskiest rows
    riskiest = sorted(rows, key=lambda r: -r["score"])[:10]
    reasons = {f["feature"] for r in riskiest for f in r["top_features"][:2]}
    assert reasons & {"merchant", "country", "amount", "hour"}, reasons


def test_unseen_category_uses_oov_bucket(work):
    rows = pd.read_csv(work["test"]).head(4).drop(columns=["Class"])
    rows.loc[1] = rows.loc[0]  # rows 0 and 1: the same transaction at two merchants never seen in training
    rows["merchant"] = ["never-seen-1", "never-seen-2", "grocery", ""]
    rows.to_csv(work["root"] / "unseen.csv", index=False)
    out = work["root"] / "unseen.csv.jsonl"
    aitk("fraud", "predict", work["bundle"], work["root"] / "unseen.csv", "--out", out)
    scored = predictions(out)
    assert all("error" not in r or r["error"] is None for r in scored)
    assert scored[0]["score"] == scored[1]["score"]  # both unseen: the same out-of-vocabulary embedding


def test_non_numeric_value_becomes_error_row(work):
    rows = pd.read_csv(work["test"], dtype=str).head(6)
    rows.loc[2, "amount"] = "twelve"
    rows.to_csv(work["root"] / "bad.csv", index=False)
    out = work["root"] / "bad.csv.jsonl"
    result = aitk("fraud", "predict", work["bundle"], work["root"] / "bad.csv", "--out", out, check=3)
    scored = predictions(out)
    assert "amount" in scored[2]["error"] and "twelve" in scored[2]["error"]
    assert all(r.get("error") is None and "score" in r for i, r in enumerate(scored) if i != 2)
    assert "1 failed" in result.stderr


def test_missing_columns_are_named(work):
    pd.read_csv(work["test"]).head(5).drop(columns=["country"]).to_csv(work["root"] / "nocountry.csv", index=False)
    inputs = [work["root"] / "nocountry.csv", work["test"]]
    result = aitk("fraud", "predict", work["bundle"], *inputs, "--out", work["root"] / "x.jsonl", "--explain", "0", check=3)
    assert "missing column 'country'" in result.stderr and "Traceback" not in result.stderr
    rows = predictions(work["root"] / "x.jsonl")  # the file without the column is one error row; the other is scored
    assert rows[0] == {"id": str(inputs[0]), "error": f"{inputs[0]}: missing column 'country' (columns: Time, amount, hour, distance_km, merchant, Class)"}
    assert len(rows) == 1 + 1500 and all("score" in row for row in rows[1:])
    pd.read_csv(work["test"]).head(50).drop(columns=["Class"]).to_csv(work["root"] / "nolabel.csv", index=False)
    result = aitk("fraud", "evaluate", work["bundle"], work["root"] / "nolabel.csv", check=1)
    assert "missing column 'Class'" in result.stderr

    from applied_aitk.usecases.fraud.plugin import Fraud
    from applied_aitk import AitkError
    from applied_aitk.runtime import Runtime

    fraud = Fraud()
    with pytest.raises(AitkError, match="no label column.*model=autoencoder"):
        fraud.train(work["root"] / "nolabel.csv", work["root"] / "b2", fraud.config_from({}), Runtime(device="cpu"))
    with pytest.raises(AitkError, match="missing column 'is_fraud'"):
        fraud.train(work["train"], work["root"] / "b3", fraud.config_from({"label": "is_fraud"}), Runtime(device="cpu"))
    assert not (work["root"] / "b2").exists() and not (work["root"] / "b3").exists()


def test_extreme_amounts_are_error_rows_or_warned_never_nan(work):
    rows = pd.read_csv(work["test"], dtype=str).head(4).drop(columns=["Class"])
    rows["amount"] = ["1e39", "inf", "1e30", "12.5"]
    rows.to_csv(work["root"] / "extreme.csv", index=False)
    out = work["root"] / "extreme.jsonl"
    result = aitk("fraud", "predict", work["bundle"], work["root"] / "extreme.csv", "--out", out, check=3)
    assert "NaN" not in out.read_text()
    huge, infinite, far, normal = predictions(out)
    assert huge["error"].endswith("field 'amount': 1e39 does not fit a float32 (largest 3.4e38)")
    assert infinite["error"].endswith("field 'amount': 'inf' is not a finite number")
    assert 0 <= far["score"] <= 1 and far["warnings"][0].startswith("field 'amount': 1e+30 is far outside the training range")
    assert "warnings" not in normal and "2 failed" in result.stderr


def test_evaluate_over_zero_rows_is_an_error(work):
    (work["root"] / "header.csv").write_text(work["test"].read_text().splitlines()[0] + "\n")
    result = aitk("fraud", "evaluate", work["bundle"], work["root"] / "header.csv", check=1)
    assert result.stderr.strip() == f"error: {work['root'] / 'header.csv'}: no labelled rows to evaluate"


def test_autoencoder_without_labels(tmp_path):
    frame = transactions(1500, 3)
    frame.drop(columns=["Class"]).to_csv(tmp_path / "unlabelled.csv", index=False)
    aitk("fraud", "train", tmp_path / "unlabelled.csv", "--out", tmp_path / "ae", "--set", "model=autoencoder",
         "--set", "epochs=15", "--set", "anomaly_rate=0.05")
    aitk("fraud", "predict", tmp_path / "ae", tmp_path / "unlabelled.csv", "--out", tmp_path / "ae.jsonl", "--explain", "0")
    scored = predictions(tmp_path / "ae.jsonl")
    flagged = np.mean([r["flag"] for r in scored])
    assert 0.01 < flagged < 0.15  # about the anomaly rate asked for
    score = np.array([r["score"] for r in scored])
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(frame["Class"], score) > 0.6  # unusual rows are likelier fraud


def test_threshold_rules():
    from applied_aitk.usecases.fraud.metrics import at_threshold, choose_threshold

    rng = np.random.default_rng(0)
    y = (rng.random(2000) < 0.1).astype(float)
    score = np.clip(0.5 * y + rng.normal(0.3, 0.2, 2000), 0, 1)
    t, _ = choose_threshold(y, score, target_precision=0.8)
    assert at_threshold(y, score, t, 1.0, 0, 0)["precision"] >= 0.8
    t, _ = choose_threshold(y, score, target_recall=0.9)
    assert at_threshold(y, score, t, 1.0, 0, 0)["recall"] >= 0.9
    cheap_misses, _ = choose_threshold(y, score, cost_fn=1, cost_fp=10)
    dear_misses, _ = choose_threshold(y, score, cost_fn=10, cost_fp=1)
    assert dear_misses < cheap_misses
    weighted, _ = choose_threshold(y, score, negative_weight=10, target_precision=0.5)
    assert at_threshold(y, score, weighted, 10, 0, 0)["precision"] >= 0.5


def test_sample_is_small_real_and_attributed(tmp_path):
    from applied_aitk.usecases.fraud.plugin import SAMPLE, Fraud

    assert SAMPLE.stat().st_size < 300_000
    assert "ODbL" in (SAMPLE.parent / "ATTRIBUTION.md").read_text()
    sample = Fraud().sample(tmp_path / "s")
    train, evaluate = pd.read_csv(sample.train), pd.read_csv(sample.evaluate)
    assert train["Time"].max() <= evaluate["Time"].min()  # split by time
    assert train["Class"].sum() > 20 and evaluate["Class"].sum() > 5
    assert "Class" not in pd.read_csv(sample.predict[0]).columns


def test_serve_returns_the_rows_batch_predict_writes(work, tmp_path):
    """One transaction per request, as a payment system scores them: the rows of batch predict,
    error rows included; numbers sent as JSON numbers score the same as the CSV's text."""
    from serve_client import batch_rows, client, served_rows, slim_served_rows, without_ids

    frame = pd.read_csv(work["test"], dtype=str, keep_default_na=False).drop(columns="Class").head(40)
    frame.loc[39, "amount"] = "twelve"
    frame.to_csv(tmp_path / "in.csv", index=False)
    batch = batch_rows("fraud", work["bundle"], [tmp_path / "in.csv"], tmp_path / "out.jsonl")
    records = frame.to_dict("records")
    with client(work["bundle"]) as c:
        one_by_one = [served_rows(c, "fraud", [record])[0] for record in records]
        numbers = served_rows(c, "fraud", [{k: float(v) if k == "amount" else v for k, v in records[0].items()}])
    assert without_ids(one_by_one) == without_ids(batch)
    assert without_ids(slim_served_rows("fraud", work["bundle"], records)) == without_ids(batch)
    assert "amount" in one_by_one[-1]["error"]
    assert numbers[0]["score"] == one_by_one[0]["score"]


def test_a_rows_impacts_do_not_depend_on_the_rows_scored_with_it(work):
    """ONNX Runtime's float32 results depend on a call's batch size: the impacts of a row alone
    (a request of one) and in a batch of 50 are the same to the last bit, so rounding cannot differ."""
    from applied_aitk.bundle import load_bundle
    from applied_aitk.runtime import Runtime
    from applied_aitk.tables import read_records, stacked
    from applied_aitk.usecases.fraud.plugin import Fraud

    predictor = Fraud().load(load_bundle(work["bundle"]), Runtime(device="cpu"))
    data = stacked([r.data for r in read_records([work["test"]], predictor.schema()) if r.error is None][:50], predictor.schema())
    numeric = predictor.ranges.clip(data["numbers"])[0]
    categorical = predictor.scorer.prep.category_ids(data["texts"])
    together = predictor.scorer.impacts(numeric, categorical)
    alone = np.concatenate([predictor.scorer.impacts(numeric[k : k + 1], categorical[k : k + 1]) for k in range(len(numeric))])
    assert together.shape == (50, numeric.shape[1] + categorical.shape[1]) and np.array_equal(alone, together)
    assert np.array_equal(predictor.scorer.impacts(numeric[3:16], categorical[3:16]), together[3:16])


def test_settings_are_typed_and_checked_before_any_data_is_read():
    from applied_aitk.usecases.fraud.plugin import Fraud
    from applied_aitk.errors import AitkError

    config = Fraud().config_from({"width": "64", "numeric": "V1,V2", "target_recall": "0.9"})
    assert config.hidden_size == 64 and config.numeric == ["V1", "V2"] and config.target_recall == 0.9
    with pytest.raises(AitkError, match="^choose the threshold by one rule"):
        Fraud().config_from({"target_precision": 0.9, "target_recall": 0.5})
    with pytest.raises(AitkError, match=r"^setting target_precision=1.5: expected a value <= 1$"):
        Fraud().config_from({"target_precision": 1.5})
    with pytest.raises(AitkError, match=r"^setting model='gbm': expected one of mlp, ft_transformer, autoencoder$"):
        Fraud().config_from({"model": "gbm"})


def test_training_folder_errors_name_the_file_and_line(tmp_path):
    from applied_aitk import AitkError
    from applied_aitk.runtime import Runtime
    from applied_aitk.usecases.fraud.plugin import Fraud

    frame = transactions(400, 4).astype(str)
    (tmp_path / "folder").mkdir()
    frame.iloc[:200].to_csv(tmp_path / "folder" / "a.csv", index=False)
    frame.loc[204, "amount"] = "twelve"  # the 5th data row of b.csv: line 6, as an editor shows it
    frame.loc[210, "Class"] = "maybe"
    frame.iloc[200:].to_csv(tmp_path / "folder" / "b.csv", index=False)
    fraud = Fraud()
    with pytest.raises(AitkError, match=f"^{tmp_path / 'folder' / 'b.csv'}:6: column 'amount': expected a number, got 'twelve'"):
        fraud.train(tmp_path / "folder", tmp_path / "b", fraud.config_from({}), Runtime(device="cpu"))
    with pytest.raises(AitkError, match=f"^{tmp_path / 'folder' / 'b.csv'}:12: label column 'Class': expected 0 or 1, got 'maybe'"):
        fraud.train(tmp_path / "folder", tmp_path / "b", fraud.config_from({"categorical": "amount"}), Runtime(device="cpu"))


def test_only_ascii_number_text_is_a_number_in_training_and_evaluation_tables():
    """float()'s syntax (numpy's astype) would read 1_000, ١٢ and １３ as numbers: they are bad cells."""
    from applied_aitk.usecases.fraud.data import parse_numeric

    values, bad = parse_numeric(np.array(["١٢", "１３", "1_000", "4", " 2.5e1 ", "NA", "inf"], dtype=object))
    assert bad.tolist() == [True, True, True, False, False, False, True]
    assert values[3:5].tolist() == [4.0, 25.0]
