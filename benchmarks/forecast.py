"""Forecast benchmark: ETTh1 (multivariate, standard 12/4/4-month split), M4 Weekly, and one-series latency.

ETTh1: one model per horizon trained on the first 16 months (the last 4 validate and stop early),
tested on every window of the next 4 months; MSE and MAE on data z-normalised with the training
months' statistics, beside a last-value forecast on the same windows and the published figures.
M4 Weekly: trained on the 359 training series, scored on the 13 test weeks with the official
sMAPE and MASE (lag 1 for weekly data), beside Naive2 (which is Naive1 for weekly data).
Latency: one series through the predictor (ONNX Runtime) beside the same model in torch.

    python benchmarks/forecast.py --data ../shared/data            # the full run (about 15 min on 2 cores)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PUBLISHED_ETTH1 = {  # multivariate, z-normalised; (MSE, MAE) from the PatchTST/64, DLinear and Informer papers
    96: {"PatchTST": (0.370, 0.400), "DLinear": (0.375, 0.399), "Informer": (0.865, 0.713)},
    192: {"PatchTST": (0.413, 0.429), "DLinear": (0.405, 0.416), "Informer": (1.008, 0.792)},
    336: {"PatchTST": (0.422, 0.440), "DLinear": (0.439, 0.443), "Informer": (1.107, 0.809)},
    720: {"PatchTST": (0.447, 0.468), "DLinear": (0.472, 0.490), "Informer": (1.181, 0.865)},
}
ETT_TRAIN, ETT_VAL, ETT_TEST = 12 * 30 * 24, 4 * 30 * 24, 4 * 30 * 24


def ett(args, work: Path) -> list[dict]:
    import numpy as np
    import pandas as pd

    from applied_aitk.usecases.forecast import data
    from applied_aitk.usecases.forecast.backtest import run_backtest
    from applied_aitk.usecases.forecast.plugin import Forecast
    from applied_aitk.package import train_bundle
    from applied_aitk.bundle import load_bundle
    from applied_aitk.runtime import Runtime

    frame = pd.read_csv(args.data / "ett" / "ETTh1.csv").iloc[: ETT_TRAIN + ETT_VAL + ETT_TEST]
    train_file = work / "ETTh1.csv"  # same name: the test series is the one the model was trained on
    frame.iloc[: ETT_TRAIN + ETT_VAL].to_csv(train_file, index=False)
    columns = [c for c in frame.columns if c != "date"]
    values = frame[columns].to_numpy(np.float64)
    mean, std = values[:ETT_TRAIN].mean(0), values[:ETT_TRAIN].std(0)
    usecase, runtime = Forecast(), Runtime(device="cpu", threads=args.threads)
    rows = []
    for horizon in args.horizons:
        started = time.perf_counter()
        config = usecase.config_from({
            "target": "*", "horizon": horizon, "context_length": args.ett_context, "val_fraction": ETT_VAL / (ETT_TRAIN + ETT_VAL),
            "hidden_size": args.hidden, "num_layers": args.layers, "epochs": args.epochs, "patience": args.patience,
            "samples_per_epoch": args.samples, "batch_size": 64, "learning_rate": args.lr,
        })
        bundle = load_bundle(train_bundle(usecase, train_file, work / f"ett{horizon}", config, runtime).path)
        trained = time.perf_counter() - started
        predictor = usecase.load(bundle, runtime)
        series = data.prepare("ETTh1", frame.set_axis(pd.RangeIndex(1, len(frame) + 1)), predictor.schema, predictor.schema.freq, False)
        test_windows = ETT_TEST - horizon + 1
        (result,) = run_backtest(predictor, [series], windows=test_windows, stride=1)
        assert len(result.origins) == test_windows and result.origins[0] == ETT_TRAIN + ETT_VAL
        z = lambda v: (v - mean) / std  # noqa: E731
        model, naive, actual = z(result.quantiles[..., predictor.median]), z(result.naive), z(result.actual)
        row = {
            "horizon": horizon, "windows": test_windows,
            "model_mse": ((model - actual) ** 2).mean(), "model_mae": np.abs(model - actual).mean(),
            "naive_mse": ((naive - actual) ** 2).mean(), "naive_mae": np.abs(naive - actual).mean(),
            "epochs": bundle.metrics["epochs"], "train_s": trained,
        }
        print(f"ETTh1 {horizon}: {row}", file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def m4(args, work: Path) -> dict:
    import numpy as np
    import pandas as pd

    from applied_aitk.usecases.forecast import data
    from applied_aitk.usecases.forecast.plugin import Forecast
    from applied_aitk.package import train_bundle
    from applied_aitk.bundle import load_bundle
    from applied_aitk.runtime import Runtime

    train_file = args.data / "m4" / "Weekly-train.csv"
    test = pd.read_csv(args.data / "m4" / "Weekly-test.csv", index_col=0)
    usecase, runtime = Forecast(), Runtime(device="cpu", threads=args.threads)
    config = usecase.config_from({
        "format": "wide", "freq": "W", "horizon": 13, "context_length": args.m4_context, "season": 52,
        "hidden_size": args.hidden, "num_layers": args.layers, "epochs": args.epochs, "patience": args.patience,
        "samples_per_epoch": args.samples, "batch_size": 64, "learning_rate": args.lr, "val_fraction": 0.1,
    })
    started = time.perf_counter()
    bundle = load_bundle(train_bundle(usecase, train_file, work / "m4", config, runtime).path)
    trained = time.perf_counter() - started
    predictor = usecase.load(bundle, runtime)
    records = list(predictor.read([train_file]))
    rows = predictor.predict([predictor.decode(r) for r in records])
    smape, mase, naive_smape, naive_mase = [], [], [], []
    for record, row in zip(records, rows):
        sid, part, _ = record.data
        history = data.prepare(sid, part, predictor.schema, None, False).y[:, 0]
        actual = test.loc[sid].to_numpy(np.float64)
        insample = np.abs(np.diff(history)).mean()  # MASE scale: lag 1 for weekly data, as in M4
        for forecast, s, m in ((np.asarray(row["p50"]), smape, mase), (np.full(13, history[-1]), naive_smape, naive_mase)):
            s.append(np.mean(200 * np.abs(forecast - actual) / (np.abs(forecast) + np.abs(actual))))
            m.append(np.mean(np.abs(forecast - actual)) / insample)
    return {
        "series": len(records), "smape": np.mean(smape), "mase": np.mean(mase),
        "naive2_smape": np.mean(naive_smape), "naive2_mase": np.mean(naive_mase),
        "epochs": bundle.metrics["epochs"], "train_s": trained,
    }


def latency(args, work: Path) -> dict:
    """One series, 2x128 LSTM over 168 hourly steps to 24: torch forward vs ORT, and the predictor end to end."""
    import numpy as np
    import pandas as pd
    import torch

    from applied_aitk.usecases.forecast.fit import torch_model
    from applied_aitk.usecases.forecast.plugin import Forecast
    from applied_aitk.package import train_bundle
    from applied_aitk.bundle import load_bundle
    from applied_aitk.runtime import Runtime

    torch.set_num_threads(args.latency_threads)
    frame = pd.read_csv(args.data / "ett" / "ETTh1.csv")[["date", "OT"]]
    path = work / "ot.csv"
    frame.iloc[:4000].to_csv(path, index=False)
    usecase, runtime = Forecast(), Runtime(device="cpu", threads=args.latency_threads)
    config = usecase.config_from({"target": "OT", "horizon": 24, "context_length": 168, "hidden_size": 128, "num_layers": 2,
                                  "epochs": 1, "samples_per_epoch": 256})
    bundle = load_bundle(train_bundle(usecase, path, work / "latency", config, runtime).path)
    predictor = usecase.load(bundle, runtime)
    (record,) = list(predictor.read([path]))
    window = predictor.decode(record)
    model = torch_model(bundle)
    feeds = [np.stack([f]) for f in window.feeds]
    tensors = [torch.from_numpy(f) for f in feeds]
    with torch.no_grad():
        np.testing.assert_allclose(model(*tensors).numpy(), predictor.session(*feeds)[0], atol=1e-3, rtol=1e-4)
    with torch.inference_mode():
        torch_ms = _median_ms(lambda: model(*tensors), args.rounds)
    ort_ms = _median_ms(lambda: predictor.session(*feeds), args.rounds)
    predict_ms = _median_ms(lambda: predictor.predict([window]), args.rounds)
    end_to_end_ms = _median_ms(lambda: predictor.predict([predictor.decode(record)]), args.rounds)
    return {"torch_ms": torch_ms, "ort_ms": ort_ms, "predict_ms": predict_ms, "decode_predict_ms": end_to_end_ms, "threads": args.latency_threads}


def _median_ms(call, rounds: int) -> float:
    for _ in range(20):
        call()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def print_tables(ett_rows: list[dict], m4_row: dict | None, speed: dict | None) -> None:
    if ett_rows:
        print("\n### ETTh1 multivariate (7 variables), test months 17-20, z-normalised\n")
        print("| horizon | windows | this model MSE | MAE | naive MSE | MAE | PatchTST MSE | DLinear MSE | Informer MSE | epochs | train s |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in ett_rows:
            pub = PUBLISHED_ETTH1[r["horizon"]]
            print(f"| {r['horizon']} | {r['windows']} | **{r['model_mse']:.3f}** | {r['model_mae']:.3f} | {r['naive_mse']:.3f} | {r['naive_mae']:.3f} | "
                  f"{pub['PatchTST'][0]:.3f} | {pub['DLinear'][0]:.3f} | {pub['Informer'][0]:.3f} | {r['epochs']} | {r['train_s']:.0f} |")
    if m4_row:
        print("\n### M4 Weekly (359 series, horizon 13)\n")
        print("| | sMAPE | MASE |")
        print("|---|---|---|")
        print(f"| this model | **{m4_row['smape']:.3f}** | {m4_row['mase']:.3f} |")
        print(f"| Naive2, this run | {m4_row['naive2_smape']:.3f} | {m4_row['naive2_mase']:.3f} |")
        print("| Naive2, published | 9.161 | 2.777 |")
        print("| winner (Smyl), published | 7.817 | 2.356 |")
        print(f"\n{m4_row['epochs']} epochs, trained in {m4_row['train_s']:.0f} s")
    if speed:
        print(f"\n### One-series latency (2x128 LSTM, 168 hourly steps in, 24 out, 3 quantiles; {speed['threads']} threads, median ms)\n")
        print("| torch forward | ORT run | predictor.predict (ORT + output row) | decode + predict (from the parsed table) |")
        print("|---|---|---|---|")
        print(f"| {speed['torch_ms']:.2f} | {speed['ort_ms']:.2f} | {speed['predict_ms']:.2f} | {speed['decode_predict_ms']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--horizons", type=lambda s: [int(h) for h in s.split(",")], default=[96, 192, 336, 720])
    parser.add_argument("--only", choices=["ett", "m4", "latency"], action="append")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--samples", type=int, default=2048, help="training windows per epoch")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--ett-context", type=int, default=336)
    parser.add_argument("--m4-context", type=int, default=52)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training, ORT threads for the backtests")
    parser.add_argument("--latency-threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    os.environ.setdefault("AITK_LOAD_PLUGINS", "forecast")
    only = set(args.only or ["ett", "m4", "latency"])
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ett_rows = ett(args, work) if "ett" in only else []
        m4_row = m4(args, work) if "m4" in only else None
        speed = latency(args, work) if "latency" in only else None
    print_tables(ett_rows, m4_row, speed)
    print(f"\ntotal {time.perf_counter() - started:.0f} s; settings: {vars(args)}")


if __name__ == "__main__":
    main()
