"""The speed part of `benchmarks/gpu_check.py`: torch against ONNX Runtime fp32 and fp16 on one device,
in the same process, through the use-case benchmarks' own speed functions.

    python benchmarks/gpu_speed.py defects|codegen BUNDLE INPUT DEVICE OUT.json [--rounds N]

defects: images/s of torch eager and ORT fp32 / fp16 on one batch of 32 images read from INPUT (the
sample's predict folder), via ``benchmarks/defects.py``'s ``speed``. codegen: tokens/s of greedy
generation at batch 1 and 8, Hugging Face ``generate()`` on torch against ORT with its KV cache kept
on the device by IO binding (fp32, fp16), via ``benchmarks/codegen.py``'s ``speed``. Every ORT
session is recorded by ``gpu_spy`` (OUT's name + ``-spy``) so the caller can check its provider."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import gpu_spy  # noqa: E402  (after the path is set)


def defects_speed(bundle, inputs: Path, device: str, rounds: int) -> list[dict]:
    import numpy as np

    import defects as bench
    from applied_aitk.usecases.defects import data as D

    size = int(bundle.config.get("image_size", 224))
    paths = sorted(p for p in inputs.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
    images = np.stack([D.load_image(p, size)[0] for p in (paths * 32)[:32]])
    rates = bench.speed(bundle, images, os.cpu_count() or 1, rounds, device)
    base = rates["torch eager fp32"]
    return [{"engine": name, "result": f"{rate:.1f} images/s at batch 32, {rate / base:.2f}x torch", "images_per_s": round(rate, 1)}
            for name, rate in rates.items()]


def codegen_speed(bundle, device: str, rounds: int) -> list[dict]:
    import codegen as bench

    context = int(bundle.assets["context"])
    prompt = min(64, context // 4)
    args = SimpleNamespace(device=device, threads=None, rounds=rounds, prompt_tokens=prompt, new_tokens=min(128, context - prompt))
    rows = bench.speed(bundle, args, Path(tempfile.mkdtemp(prefix="gpu-check-codegen-")))
    return [{"engine": name, "result": f"{b1} / {b8} tokens/s at batch 1 / 8 ({r1} / {r8} torch), {args.prompt_tokens}-token prompts + "
             f"{args.new_tokens} new; greedy tokens as torch: {same}", "tokens_per_s": {"1": float(b1), "8": float(b8)}} for name, b1, b8, r1, r8, same in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("usecase", choices=("defects", "codegen"))
    parser.add_argument("bundle", type=Path)
    parser.add_argument("inputs", type=Path)
    parser.add_argument("device", choices=("cpu", "cuda"))
    parser.add_argument("out", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import applied_aitk.console
    from applied_aitk.bundle import load_bundle

    applied_aitk.console.quiet = True
    gpu_spy.install(args.out.with_name(args.out.stem + "-spy"))
    bundle = load_bundle(args.bundle, usecase=args.usecase)
    if args.usecase == "defects":
        rows = defects_speed(bundle, args.inputs, args.device, args.rounds)
    else:
        rows = codegen_speed(bundle, args.device, args.rounds)
    args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
