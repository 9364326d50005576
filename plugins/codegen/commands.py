"""`aitk codegen complete` (streams a completion to the terminal) and `aitk codegen import` (a local HF model)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from toolkit import AitkError
from toolkit.console import log
from toolkit.runtime import Runtime

Device = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
Threads = Annotated[Optional[int], typer.Option("--threads", help="ONNX Runtime intra-op threads (default: all cores).")]
Quantize = Annotated[Optional[str], typer.Option("--quantize", help="int8: write (import) or run (complete) the int8 model.")]


def _runtime(device: str, threads: int | None, quantize: str | None) -> Runtime:
    if quantize not in (None, "int8", "none"):
        raise AitkError(f"--quantize {quantize!r}: expected int8 or none")
    return Runtime(device=device, threads=threads, int8=quantize == "int8")


def read_prompt(prompt: str) -> str:
    if prompt == "-":
        data = sys.stdin.buffer.read()
        try:
            prompt = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise AitkError(f"stdin: invalid UTF-8 at byte {e.start}") from None
    if not prompt.strip():
        raise AitkError("prompt: expected a non-empty string")
    return prompt


def add_commands(group: typer.Typer, usecase) -> None:
    @group.command("complete")
    def complete(
        prompt: Annotated[str, typer.Argument(help='The code to complete, e.g. "def fib(n):"; - reads it from stdin.')],
        bundle: Annotated[Path, typer.Option("--bundle", "-b", envvar="AITK_CODEGEN_BUNDLE", help="A codegen bundle (or set AITK_CODEGEN_BUNDLE).")],
        max_new_tokens: Annotated[Optional[int], typer.Option(help="Most tokens to generate (default: 128, at most half the context).")] = None,
        temperature: Annotated[float, typer.Option(help="0 = greedy; above 0 samples.")] = 0.0,
        top_k: Annotated[int, typer.Option(help="Sample among the k most likely tokens (0: off).")] = 0,
        top_p: Annotated[float, typer.Option(help="Sample among the most likely tokens holding this much probability.")] = 1.0,
        repetition_penalty: Annotated[float, typer.Option(help="Above 1 discourages tokens already present.")] = 1.0,
        stop: Annotated[Optional[str], typer.Option(help='Stop sequence ("\\n\\n") or a JSON list of them.')] = None,
        seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
        echo: Annotated[bool, typer.Option("--echo", help="Print the prompt before the completion.")] = False,
        device: Device = "auto",
        threads: Threads = None,
        quantize: Quantize = None,
    ) -> None:
        """Complete code, streaming the new tokens to stdout as they are generated."""
        from toolkit.bundle import load_bundle

        from plugins.codegen.generate import Sampling, parse_stop

        from plugins.codegen.plugin import default_new_tokens

        text = read_prompt(prompt)
        loaded = load_bundle(bundle, usecase="codegen")
        sampling = Sampling(max_new_tokens or default_new_tokens(loaded), temperature, top_k, top_p, repetition_penalty, parse_stop(stop), seed)
        generator = usecase.generator(loaded, _runtime(device, threads, quantize))
        if echo:
            sys.stdout.write(text)
        started = time.perf_counter()
        (result,) = generator.complete([text], sampling, on_text=lambda _, piece: (sys.stdout.write(piece), sys.stdout.flush()))
        if result.error:
            raise AitkError(result.error)
        seconds = time.perf_counter() - started
        sys.stdout.write("\n")
        log(f"{len(result.tokens)} tokens in {seconds:.2f} s ({len(result.tokens) / seconds:.1f} tokens/s), "
            f"finished by {result.finish_reason}, on {generator.session.provider}")

    @group.command("import")
    def import_(
        hf_dir: Annotated[Path, typer.Argument(help="A local Hugging Face causal-LM folder: config.json, *.safetensors, tokenizer.json.")],
        out: Annotated[Path, typer.Option("--out", "-o", help="The bundle directory to write.")],
        context: Annotated[Optional[int], typer.Option(help="Tokens of context to allow (default: the model's maximum).")] = None,
        device: Device = "auto",
        threads: Threads = None,
        quantize: Quantize = None,
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")] = False,
    ) -> None:
        """Export a local Hugging Face causal LM to a codegen bundle (KV-cache ONNX graph, parity-checked)."""
        from plugins.codegen.export import import_model

        if not hf_dir.is_dir():
            raise AitkError(f"{hf_dir}: no such directory")
        bundle = import_model(hf_dir, out, _runtime(device, threads, quantize), context)
        log(f"bundle written to {bundle.path}")
        summary = {"bundle": str(bundle.path), **bundle.assets, "parity": bundle.manifest["model"]["parity"]["max_abs_diff"]["logits"],
                   "greedy_equals_hf_generate": bundle.manifest["model"]["greedy_equals_hf_generate"]}
        print(json.dumps(summary, indent=2) if as_json else "\n".join(f"{k:<26} {v}" for k, v in summary.items()))
