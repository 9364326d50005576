"""fraud benchmark: the aitk fraud model beside LightGBM on the ULB credit-card data, split by Time 70/30.

Accuracy: PR-AUC with legitimate rows weighted by 115.6 (the data keeps every fraud but only 1 in
115.6 legitimate rows, so this is PR-AUC at the real fraud rate) and ROC-AUC, over several seeds,
both models trained on the same rows and features. Speed, in the same run: rows/s at batch 4096
for ONNX Runtime (fp32, int8), torch (the same model in eager mode) and LightGBM's predict, plus
the whole `predict` path (parsing raw rows, scoring, explanations). Prints markdown tables.

    python benchmarks/fraud.py [--data CSV] [--seeds 3] [--threads 1,2] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ulb_creditcard" / "creditcard_stratified_all_frauds.csv"
NEGATIVE_WEIGHT = 115.6
BATCH = 4096
TORCH = "torch fp32 (eager, inference_mode)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", default="1,2", help="thread counts to time every engine at (torch, ORT, LightGBM); training uses the first")
    parser.add_argument("--set", dest="settings", action="append", default=[], help="a fraud training setting key=value")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds (the median is reported)")
    args = parser.parse_args()

    import torch

    from applied_aitk import console

    threads = [int(t) for t in args.threads.split(",")]
    torch.set_num_threads(threads[0])
    console.quiet = True
    frame = pd.read_csv(args.data, dtype=str, keep_default_na=False)
    frame = frame.iloc[np.argsort(pd.to_numeric(frame["Time"]).to_numpy(), kind="stable")].reset_index(drop=True)
    cut = int(len(frame) * 0.7)
    train, test = frame.iloc[:cut], frame.iloc[cut:]
    settings = dict(s.split("=", 1) for s in args.settings)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train.to_csv(tmp / "train.csv", index=False)
        test.to_csv(tmp / "test.csv", index=False)
        results, bundle, booster, features = accuracy(tmp, settings, args.seeds, threads[0])
        speed = {t: rates(engines(bundle, booster, test, t), BATCH, args.rounds) for t in threads}
        print_header(args, train, test, settings)
        print_accuracy(results, features)
        print_speed(speed)


def accuracy(tmp: Path, settings: dict[str, str], seeds: int, threads: int):
    """Per seed: the aitk model (fp32 and its int8 twin) and LightGBM, trained on the same rows and features."""
    import lightgbm as lgb

    from applied_aitk.usecases.fraud import data as fdata
    from applied_aitk.usecases.fraud import metrics
    from applied_aitk.usecases.fraud.plugin import Fraud
    from applied_aitk.package import train_bundle
    from applied_aitk.bundle import load_bundle
    from applied_aitk.runtime import Runtime

    fraud = Fraud()
    train_frame, test_frame = pd.read_csv(tmp / "train.csv"), pd.read_csv(tmp / "test.csv")
    y_train, y_test = train_frame["Class"].to_numpy(), test_frame["Class"].to_numpy().astype(float)
    results: dict[str, list[dict[str, float]]] = {"aitk": [], "aitk int8": [], "LightGBM": []}
    bundle = None
    for seed in range(seeds):
        config = fraud.config_from({**settings, "seed": seed, "negative_weight": NEGATIVE_WEIGHT})
        started = time.perf_counter()
        bundle = load_bundle(train_bundle(fraud, tmp / "train.csv", tmp / f"bundle{seed}", config, Runtime(device="cpu", threads=threads), ["int8"]).path)
        seconds = time.perf_counter() - started
        for name, int8 in (("aitk", False), ("aitk int8", True)):
            m = fraud.evaluate(bundle, tmp / "test.csv", Runtime(device="cpu", threads=threads, variant="int8" if int8 else None))
            results[name].append({"pr_auc": m["pr_auc"], "roc_auc": m["roc_auc"], "recall_at_1pct_fpr": m["recall_at_1pct_fpr"], "train_s": seconds})
        features = fdata.Preprocessing.from_json(bundle.read_json("preprocessing.json")).columns.features
        started = time.perf_counter()
        booster = lgb.LGBMClassifier(random_state=seed, n_jobs=threads, verbose=-1).fit(train_frame[features], y_train)
        seconds = time.perf_counter() - started
        p = booster.predict_proba(test_frame[features])[:, 1]
        results["LightGBM"].append({
            "pr_auc": metrics.pr_auc(y_test, p, NEGATIVE_WEIGHT),
            "roc_auc": metrics.roc_auc(y_test, p),
            "recall_at_1pct_fpr": metrics.recall_at_fpr(y_test, p, 0.01),
            "train_s": seconds,
        })
    return results, bundle, booster, features


def rates(engines: dict[str, object], rows: int, rounds: int) -> dict[str, float]:
    """Median rows/s per engine; the engines take turns in every round (each call at least 0.3 s of
    repeated calls, after a warm-up) so that load from other processes falls on all of them alike."""
    for fn in engines.values():
        for _ in range(3):
            fn()
    measured: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(rounds):
        for name, fn in engines.items():
            calls, started = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - started) < 0.3:
                fn()
                calls += 1
            measured[name].append(calls * rows / elapsed)
    return {name: statistics.median(values) for name, values in measured.items()}


def engines(bundle, booster, test: pd.DataFrame, threads: int) -> dict[str, object]:
    """Callables that score one batch of BATCH test rows, every engine limited to ``threads``."""
    import torch

    from applied_aitk.usecases.fraud.data import Preprocessing
    from applied_aitk.usecases.fraud.model import FraudModel, build
    from applied_aitk.usecases.fraud.plugin import Fraud
    from applied_aitk.usecases.fraud.scoring import FraudPredictor, Scorer
    from applied_aitk.runtime import Runtime

    prep = Preprocessing.from_json(bundle.read_json("preprocessing.json"))
    batch = test.iloc[np.arange(BATCH) % len(test)].reset_index(drop=True)
    numeric, categorical, _, _ = prep.encode(batch)
    feeds = {"numeric": numeric} | ({"categorical": categorical} if categorical.shape[1] else {})
    runtime = Runtime(device="cpu", threads=threads)
    fp32 = runtime.session(bundle.model_file())
    int8 = runtime.session(bundle.model_file("int8"))

    config = Fraud().config_from(bundle.config)
    model = FraudModel(build(config.model, prep.numeric, prep.vocab_sizes, config), bool(prep.numeric), bool(prep.categorical))
    model.load_state_dict(bundle.read_weights())
    model.eval()
    inputs = [torch.from_numpy(v) for v in feeds.values()]

    def run_torch():
        torch.set_num_threads(threads)
        with torch.inference_mode():
            model(*inputs)

    features = prep.columns.features
    lgb_batch = batch[features].astype(float)
    scorer = Scorer(bundle, runtime)
    records = batch[features].to_dict("records")
    explained, plain = FraudPredictor(scorer, 3, None, []), FraudPredictor(scorer, 0, None, [])
    return {
        "ONNX Runtime fp32": lambda: fp32.run(feeds),
        "ONNX Runtime int8 (dynamic)": lambda: int8.run(feeds),
        TORCH: run_torch,
        "LightGBM predict_proba": lambda: booster.predict_proba(lgb_batch, num_threads=threads),
        "aitk predict path: raw rows -> score, flag (ORT fp32)": lambda: plain.predict(records),
        "aitk predict path + top-3 explanations (ORT fp32)": lambda: explained.predict(records),
    }


def print_header(args, train: pd.DataFrame, test: pd.DataFrame, settings: dict[str, str]) -> None:
    frauds = lambda f: int((f["Class"] == "1").sum())  # noqa: E731
    print(f"data: {args.data.name}: train {len(train)} rows ({frauds(train)} frauds), test {len(test)} rows ({frauds(test)} frauds), split by Time 70/30")
    print(f"settings: {settings or 'defaults'}; negative_weight {NEGATIVE_WEIGHT}; seeds {args.seeds}; threads {args.threads} (training: the first)")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end of the run (other processes share the cores)")
    print()


def print_accuracy(results: dict[str, list[dict[str, float]]], features: list[str]) -> None:
    print(f"Accuracy on the test 30% ({len(features)} features: {', '.join(features[:3])}, ..., {features[-1]}); mean ± std over seeds")
    print()
    print("| model | PR-AUC (legit x115.6) | ROC-AUC | recall @ 1% FPR | train s | PR-AUC per seed |")
    print("|---|---|---|---|---|---|")
    for name, runs in results.items():
        pr = [r["pr_auc"] for r in runs]
        cell = lambda key: f"{np.mean([r[key] for r in runs]):.4f} ± {np.std([r[key] for r in runs]):.4f}"  # noqa: E731
        print(f"| {name} | {cell('pr_auc')} | {cell('roc_auc')} | {cell('recall_at_1pct_fpr')} | {np.mean([r['train_s'] for r in runs]):.1f} | {', '.join(f'{v:.4f}' for v in pr)} |")
    print()


def print_speed(speed: dict[int, dict[str, float]]) -> None:
    print(f"Speed at batch {BATCH}: median rows/s, and the ratio to torch at the same thread count in the same run")
    print()
    print("| engine | " + " | ".join(f"{t} thread{'s' * (t > 1)} rows/s | vs torch" for t in speed) + " |")
    print("|---" * (1 + 2 * len(speed)) + "|")
    for name in next(iter(speed.values())):
        cells = [f"{rates[name]:,.0f} | {rates[name] / rates[TORCH]:.2f}x" for rates in speed.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
