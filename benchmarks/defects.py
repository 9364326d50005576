"""Benchmark of the defects use case on the magnetic-tile data (grouped split.csv), printed as a markdown table.

Accuracy: the PatchCore bundle, trained on the good training images only, against a frozen-feature
linear probe (tf_efficientnet_lite0 ImageNet features + logistic regression on all training labels)
and a mask probe (a patch classifier on the same frozen features, trained on the real defect masks)
in the same run. Speed in the same run and process: torch eager vs ONNX Runtime fp32, fp16 and int8
(static, backbone only; CPU only) in images/s at one batch size, and `predict` over the test files.
``--device cuda`` runs the speed part on the GPU (torch and ONNX Runtime alike)."""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "magnetic_tile" / "split.csv"


def good_only_manifest(data: Path, out: Path, drop_types: set[str] | None = None) -> Path:
    """The manifest with the defect rows of the train split removed (absolute image paths); with
    ``drop_types``, only those types' training rows (set(): none, a type: a kind unseen in training)."""
    with open(data, newline="") as f:
        rows = list(csv.DictReader(f))
    kept = [r for r in rows if r["split"] != "train" or r["label"] == "good" or (drop_types is not None and r["defect_type"] not in drop_types)]
    for row in kept:
        row["image"] = str(data.parent / row["image"])
        row["mask"] = str(data.parent / row["mask"]) if row.get("mask") else ""
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    return out


def image_batches(items: list, size: int, batch: int = 32):
    """uint8 image batches [batch, size, size, 3] of ``items``, decoded on 4 threads."""
    from applied_aitk.usecases.defects import data as D

    with ThreadPoolExecutor(4) as pool:
        for start in range(0, len(items), batch):
            yield np.stack(list(pool.map(lambda i: D.load_image(i.image, size)[0], items[start : start + batch])))


def linear_probe(data: Path, size: int, threads: int) -> float:
    """Test AUROC of logistic regression on pooled frozen ImageNet features (train split: good and defect)."""
    import timm
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from applied_aitk.usecases.defects import data as D
    from applied_aitk.usecases.defects import model as M

    torch.set_num_threads(threads)
    model = timm.create_model(M.DEFAULT_BACKBONE, pretrained=False, num_classes=0)
    M.load_matching(model, {k: v for k, v in M.read_state_dict(M.pretrained_package_weights(M.DEFAULT_BACKBONE)).items() if "classifier" not in k and "_fc" not in k}, "package")
    model.eval()

    def embed(items):
        with torch.no_grad():
            return np.concatenate([model((torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5).numpy()
                                   for images in image_batches(items, size)])

    train, test = D.load_items(data, "train"), D.load_items(data, "test")
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
    probe.fit(embed(train), [not i.good for i in train])
    return float(roc_auc_score([not i.good for i in test], probe.predict_proba(embed(test))[:, 1]))


def mask_probe(data: Path, config, threads: int) -> tuple[float, float]:
    """(image AUROC, pixel AUROC) of a per-patch classifier on the bundle's frozen patch features,
    trained on the train split's real defect masks: how well these features separate the defects
    when the labels are known, a reference for a method that learns from good images alone."""
    import torch
    import torch.nn.functional as F
    from sklearn.metrics import roc_auc_score

    from applied_aitk.usecases.defects import data as D
    from applied_aitk.usecases.defects import model as M

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    size = config.image_size
    features, _ = M.build_features(config.backbone, config.weights, config.feature_stages, size, log=lambda m: None)

    def patches(items):
        with torch.no_grad():
            return torch.cat([features(torch.from_numpy(images)) for images in image_batches(items, size)])

    train, test = D.load_items(data, "train"), D.load_items(data, "test")
    x = patches(train)
    grid = x.shape[-1]
    full = torch.from_numpy(np.stack([D.load_mask(i.mask, size) for i in train])).float()[:, None]
    y = F.adaptive_max_pool2d(full, grid).flatten()  # a patch is a defect if any of its pixels is
    x = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
    mean, std = x.mean(0), x.std(0) + 1e-6
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 256), torch.nn.ReLU(), torch.nn.Linear(256, 1))
    optimizer = torch.optim.Adam(net.parameters(), 1e-3, weight_decay=1e-4)
    positive_weight = ((1 - y.mean()) / y.mean()).sqrt()
    for _ in range(8):
        for batch in torch.randperm(len(x)).split(4096):
            loss = F.binary_cross_entropy_with_logits(net((x[batch] - mean) / std)[:, 0], y[batch], pos_weight=positive_weight)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        t = patches(test)
        logits = net((t.permute(0, 2, 3, 1) - mean) / std)[..., 0]
        maps = F.interpolate(logits[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
        scores = F.avg_pool2d(logits[:, None], 3, 1, 1)[:, 0].flatten(1).amax(1)
    labels = [not i.good for i in test]
    masks = np.stack([D.load_mask(i.mask, size) for i in test])
    return float(roc_auc_score(labels, scores.numpy())), float(roc_auc_score(masks.ravel(), maps.numpy().ravel()))


def rates(runs: dict, images: np.ndarray, rounds: int) -> dict[str, float]:
    """Images/s of each ``run(images)``: one warm-up each, then ``rounds`` rounds with the engines
    interleaved (so that load from other processes hits them alike), median per engine."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():
        run(images)
    for _ in range(rounds):
        for name, run in runs.items():
            started = time.perf_counter()
            run(images)
            times[name].append(time.perf_counter() - started)
    return {name: len(images) / statistics.median(t) for name, t in times.items()}


def speed(bundle, images: np.ndarray, threads: int, rounds: int, device: str = "cpu") -> dict[str, float]:
    import torch

    from applied_aitk.usecases.defects import model as M
    from applied_aitk.runtime import Runtime

    torch.set_num_threads(threads)
    info, weights, size = bundle.assets["backbone"], bundle.read_weights(), images.shape[1]
    features, _ = M.build_features(info["backbone"], "none", info["layers"], size, log=lambda m: None)
    classes = weights["head.classifier.linear.weight"].shape[0] if "head.classifier.linear.weight" in weights else 0  # trained with defect types
    head = M.AnomalyHead(weights["head.bank"], size, bundle.config["sigma"], classes=classes, channels=weights["head.bank"].shape[1])
    model = M.DefectModel(features, head).eval()
    model.load_state_dict(weights)
    model.to(device)
    runtime = Runtime(device=device, threads=threads)
    files = {"ORT fp32": None, "ORT fp16 (backbone)": "fp16"}
    if device == "cpu":  # int8 is the CPU path
        files["ORT int8 (static, backbone)"] = "int8"
    sessions = {name: runtime.session(bundle.model_file(variant)) for name, variant in files.items() if variant in (None, *bundle.variants())}
    print(f"{device}: torch on {device}, ONNX Runtime sessions got " + ", ".join(f"{n} {s.provider}" for n, s in sessions.items()))

    def torch_eager(x):
        with torch.no_grad():
            [output.cpu() for output in model(torch.from_numpy(x).to(device))]  # on the host, as ORT returns them

    return rates({"torch eager fp32": torch_eager, **sessions}, images, rounds)


def rebuild_ensemble(bundle, size: int):
    """The torch Ensemble (network + PatchCore) of a ``method=ensemble`` bundle, from its weights."""
    import torch

    from applied_aitk.usecases.defects import ensemble as E
    from applied_aitk.usecases.defects import model as M
    from applied_aitk.usecases.defects.network import DefectNet

    info, weights = bundle.assets["backbone"], bundle.read_weights()
    backbone, _ = M.build_backbone(info["backbone"], "none", info["layers"], size)
    net = DefectNet(backbone, info["layers"], info["channels"], info["mean"], info["std"], size, len(bundle.assets["defect_types"]))
    features, _ = M.build_features(info["backbone"], "none", info["layers"], size, log=lambda m: None)
    patchcore = M.DefectModel(features, M.AnomalyHead(weights["patchcore.head.bank"], size, bundle.config["sigma"]))
    model = E.Ensemble(net, patchcore, torch.zeros(2, 2))
    model.load_state_dict(weights)
    return model.eval()


def network_speed(bundle, images: np.ndarray, threads: int, rounds: int) -> dict[str, float]:
    """Images/s of the ensemble (fine-tuned network + PatchCore): torch eager against ONNX Runtime fp32 and int8 (CPU)."""
    import torch

    from applied_aitk.runtime import Runtime

    torch.set_num_threads(threads)
    model = rebuild_ensemble(bundle, images.shape[1])
    runtime = Runtime(device="cpu", threads=threads)

    def torch_eager(x):
        with torch.no_grad():
            model(torch.from_numpy(x))

    names = {None: "ORT fp32", "int8": "ORT int8 (backbones, 7-bit weights)"}
    sessions = {names[v]: runtime.session(bundle.model_file(v)) for v in names if v in (None, *bundle.variants())}
    return rates({"torch eager fp32": torch_eager, **sessions}, images, rounds)


def method_metrics(bundle, manifest: Path, size: int, held_out: str) -> dict[str, dict]:
    """Test figures of each method inside an ensemble bundle (torch, fp32): image AUROC, and the
    held-out type's AUROC (its defects against the good test images) and recall at 1% FPR."""
    from sklearn.metrics import roc_auc_score

    from applied_aitk.usecases.defects import data as D
    from applied_aitk.usecases.defects import ensemble as E

    test = D.load_items(manifest, "test")
    scores = E.image_scores(rebuild_ensemble(bundle, size), np.concatenate(list(image_batches(test, size))), 32)
    defective = np.array([not i.good for i in test])
    kind = np.array([i.defect_type == held_out for i in test])
    found = {}
    for method, s in scores.items():
        at = np.quantile(s[~defective], 0.99, method="higher")
        found[method] = {"image_auroc": roc_auc_score(defective, s), "held_out_auroc": roc_auc_score(kind[~defective | kind], s[~defective | kind]),
                         "held_out_recall": float(np.mean(s[kind] > at))}
    return found


def segment_runs(data: Path, work: Path, usecase, settings: dict, held_out: str, threads: int) -> dict[str, dict]:
    """Train and evaluate the ensemble (fine-tuned network + PatchCore) three ways: good images only
    (synthetic defects), with the training split's labelled defects, and with one defect type held
    out of training; each with its methods' test figures and validation AUROCs (what auto picks)."""
    from applied_aitk.bundle import load_bundle
    from applied_aitk.package import train_bundle
    from applied_aitk.runtime import Runtime

    manifests = {
        "good images only (synthetic defects)": good_only_manifest(data, work / "good_only.csv"),
        "labelled defects": good_only_manifest(data, work / "labelled.csv", drop_types=set()),
        f"labelled defects without {held_out}": good_only_manifest(data, work / f"without_{held_out}.csv", drop_types={held_out}),
    }
    runs = {}
    config = usecase.config_from({**settings, "method": "ensemble"})
    for k, (name, manifest) in enumerate(manifests.items()):
        started = time.perf_counter()
        out = work / f"segment_{k}"
        train_bundle(usecase, manifest, out, config, Runtime(device="cpu", threads=threads), ["int8"])
        seconds = time.perf_counter() - started
        bundle = load_bundle(out, usecase="defects")
        runs[name] = {"train_s": seconds, "bundle": bundle, "manifest": manifest, "epochs": bundle.metrics.get("epochs"),
                      "methods": method_metrics(bundle, manifest, config.image_size, held_out),
                      **{p: usecase.evaluate(bundle, manifest, Runtime(device="cpu", threads=threads, variant=None if p == "fp32" else p), report=None)
                         for p in ("fp32", "int8")}}
        print(f"{name}: trained in {seconds:.0f} s, ensemble image AUROC {runs[name]['fp32']['image_auroc']:.3f}", flush=True)
    return runs


def print_segment(runs: dict[str, dict], held_out: str, speeds: dict[str, float], batch: int, size: int, threads: int) -> None:
    from applied_aitk.usecases.defects import ensemble as E

    types = sorted(next(iter(runs.values()))["fp32"].get("recall_at_1pct_fpr_by_type", {}))
    print(f"\n| ensemble trained on | trained in | image AUROC | pixel AUROC | int8 image / pixel AUROC | F1 at threshold | recall at 1% FPR | " + " | ".join(types) + " |")
    print("|---|---|---|---|---|---|---|" + "---|" * len(types))
    for name, run in runs.items():
        m, q = run["fp32"], run["int8"]
        per_type = " | ".join(f"{m['recall_at_1pct_fpr_by_type'][t]:.2f}" + (" (unseen)" if t == held_out and "without" in name else "") for t in types)
        print(f"| {name} | {run['train_s']:.0f} s ({run['epochs']} epochs) | {m['image_auroc']:.3f} | {m.get('pixel_auroc', float('nan')):.3f} | "
              f"{q['image_auroc']:.3f} / {q.get('pixel_auroc', float('nan')):.3f} | {m['f1']:.3f} | {m['recall_at_1pct_fpr']:.2f} | {per_type} |")
    print(f"\n| trained on | method | validation AUROC | test image AUROC | {held_out} AUROC | {held_out} recall at 1% FPR |")
    print("|---|---|---|---|---|---|")
    for name, run in runs.items():
        validation = run["bundle"].metrics["selection"]["validation_auroc"]
        for method, m in run["methods"].items():
            pick = " (auto's pick)" if method == E.choose(validation, synthetic="synthetic" in run["bundle"].metrics["selection"]["validation"]) else ""
            unseen = " (unseen)" if "without" in name else ""
            print(f"| {name} | {method}{pick} | {validation[method]:.3f} | {m['image_auroc']:.3f} | {m['held_out_auroc']:.3f}{unseen} | {m['held_out_recall']:.2f} |")
    base = speeds["torch eager fp32"]
    print(f"\n| ensemble (cpu, batch {batch}, {size} px, {threads} threads) | images/s | vs torch eager |")
    print("|---|---|---|")
    for name, value in speeds.items():
        print(f"| {name} | {value:.1f} | {value / base:.2f}x |")


def predict_files(usecase, bundle, paths: list[Path], out: Path, runtime) -> float:
    from applied_aitk.batch import run_batch

    summary = run_batch(usecase.load(bundle, runtime), paths, out, batch_size=usecase.batch_size)
    assert summary["failed"] == 0, summary
    return summary["records_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="magnetic_tile/split.csv")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--memory-size", type=int, default=2048)
    parser.add_argument("--set", action="append", default=[], help="more training settings key=value")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda: where torch and ONNX Runtime run the speed part")
    parser.add_argument("--batch", type=int, default=32, help="images per call in the speed runs")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="keep the bundle and reports here")
    parser.add_argument("--segment-size", type=int, default=224, help="image size of the fine-tuned network (and PatchCore beside it)")
    parser.add_argument("--segment-time", type=float, default=600, help="max_time (s) of each fine-tuned network's training")
    parser.add_argument("--held-out", default="crack", help="defect type held out of one fine-tuned network's training")
    parser.add_argument("--only-segment", action="store_true", help="skip PatchCore and the probes")
    args = parser.parse_args()

    import applied_aitk.console
    from applied_aitk.usecases.defects import data as D
    from applied_aitk.usecases.defects.plugin import Defects
    from applied_aitk.package import train_bundle
    from applied_aitk.bundle import load_bundle
    from applied_aitk.runtime import Runtime

    applied_aitk.console.quiet = True
    work = Path(args.out or tempfile.mkdtemp(prefix="defects-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    manifest = good_only_manifest(args.data.resolve(), work / "good_only.csv")
    usecase = Defects()
    settings = {"image_size": args.image_size, "memory_size": args.memory_size, **dict(s.split("=", 1) for s in args.set)}
    config = usecase.config_from(settings)

    segment_settings = {"image_size": args.segment_size, "max_time": args.segment_time, "epochs": 100,
                        **{k: v for k, v in settings.items() if k not in ("image_size", "memory_size")}}
    runs = segment_runs(args.data.resolve(), work, usecase, segment_settings, args.held_out, args.threads)
    labelled = runs["labelled defects"]
    test = D.load_items(labelled["manifest"], "test")
    net_speeds = network_speed(labelled["bundle"], next(image_batches(test, args.segment_size, args.batch)), args.threads, args.rounds)
    print(f"\nmagnetic tile, grouped split.csv, fine-tuned network: settings {segment_settings}; threads {args.threads}; "
          f"validation groups carved out of the training split")
    print_segment(runs, args.held_out, net_speeds, args.batch, args.segment_size, args.threads)
    if args.only_segment:
        return

    started = time.perf_counter()
    train_bundle(usecase, manifest, work / "bundle", config, Runtime(device="cpu", threads=args.threads), ["int8", "fp16"])
    train_s = time.perf_counter() - started
    bundle = load_bundle(work / "bundle", usecase="defects")
    results = {}
    for p in ("fp32", "int8", "fp16"):  # on the CPU: the same numbers a GPU gives, up to rounding
        runtime = Runtime(device="cpu", threads=args.threads, variant=None if p == "fp32" else p)
        results[f"PatchCore {p} (ORT)"] = usecase.evaluate(bundle, manifest, runtime, report=work / f"report_{p}")
    probe = linear_probe(args.data.resolve(), args.image_size, args.threads)
    ceiling = mask_probe(args.data.resolve(), config, args.threads)

    test = D.load_items(manifest, "test")
    images = next(image_batches(test, args.image_size, args.batch))
    speeds = speed(bundle, images, args.threads, args.rounds, args.device)
    paths = [i.image for i in test]
    files = {p: predict_files(usecase, bundle, paths, work / f"pred_{p}.jsonl", Runtime(device=args.device, threads=args.threads, variant=None if p == "fp32" else p))
             for p in ("fp32", "int8" if args.device == "cpu" else "fp16")}

    fp32, int8 = results["PatchCore fp32 (ORT)"], results["PatchCore int8 (ORT)"]
    print(f"\nmagnetic tile, grouped split.csv: {bundle.metrics['bank_images']} good train images in the bank, "
          f"{bundle.metrics['validation_images']} held out for the threshold; test {fp32['images']} images ({fp32['defects']} defects); "
          f"settings {settings}; trained in {train_s:.0f} s; threads {args.threads}\n")
    print("| model | image AUROC | pixel AUROC | F1 at threshold | threshold |")
    print("|---|---|---|---|---|")
    for name, m in results.items():
        print(f"| {name} | {m['image_auroc']:.3f} | {m.get('pixel_auroc', float('nan')):.3f} | {m['f1']:.3f} | {m['threshold']:.3g} |")
    print(f"| linear probe (frozen lite0 features, trained on good and defect labels) | {probe:.3f} | - | - | - |")
    print(f"| mask probe (patch classifier on the same frozen patch features, trained on the real defect masks) | {ceiling[0]:.3f} | {ceiling[1]:.3f} | - | - |")
    print(f"\nint8 AUROC loss: {fp32['image_auroc'] - int8['image_auroc']:+.4f} image, {fp32.get('pixel_auroc', 0) - int8.get('pixel_auroc', 0):+.4f} pixel")
    print("\nAUROC by defect type (fp32): " + ", ".join(f"{k} {v:.3f}" for k, v in fp32.get("auroc_by_type", {}).items()))
    base = speeds["torch eager fp32"]
    print(f"\n| engine ({args.device}, batch {args.batch}, {args.image_size} px, {args.threads} threads) | images/s | vs torch eager |")
    print("|---|---|---|")
    for name, value in speeds.items():
        print(f"| {name} | {value:.1f} | {value / base:.2f}x |")
    for precision, value in files.items():
        print(f"| predict over {len(paths)} files, {precision} (decode + resize + model + rows) | {value:.1f} | {value / base:.2f}x |")


if __name__ == "__main__":
    main()
