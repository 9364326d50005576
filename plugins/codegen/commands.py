"""`aitk codegen complete` (streams a completion to the terminal), `aitk codegen import` (a local HF model)
and `aitk codegen export-hf` (a bundle back to a HF folder)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from applied_aitk import AitkError
from applied_aitk.cli_options import (AsJson, BundleArg, BundleOut, Command, Device, Force, QuantizeRun, QuantizeTrain, Threads, ThreadsTrain,
                                 check_replaceable, examples, make_runtime, with_options)
from applied_aitk.console import get_logger
from applied_aitk.manifest import VARIANTS

from applied_aitk.usecases.codegen.options import SAMPLING_OPTIONS, sampling_from

logger = get_logger(__name__)
QuantizeImport = Annotated[Optional[list[str]], typer.Option(
    "--quantize", metavar="int8|fp16|int4", help="Also write a reduced-precision model, checked against torch: int8 (for the CPU), "
    "fp16 (for CUDA) or int4 (weight-only); repeat for several (one export serves them all).")]


def read_prompt(prompt: str, name: str = "prompt", empty: bool = False) -> str:
    """The prompt argument, or stdin for ``-`` (UTF-8 with or without a byte-order mark, UTF-16 with
    one); bytes that are not UTF-8, on stdin or in the argument, are an AitkError naming the byte offset
    (and ``name``); an empty text too unless ``empty``."""
    if prompt == "-":
        from applied_aitk.io import open_text

        with open_text("-") as f:
            prompt = f.read()
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as e:
        raise AitkError(f"{name}: {_not_utf8(prompt, e.start)}") from None
    if not empty and not prompt.strip():
        raise AitkError(f"{name}: expected a non-empty string")
    return prompt


def _not_utf8(prompt: str, character: int) -> str:
    """Why a prompt with lone surrogates is refused: the shell's bytes that were not UTF-8 (Python
    keeps them as surrogates), named by byte offset, or a surrogate that came some other way."""
    try:
        prompt.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeEncodeError:
        pass
    except UnicodeDecodeError as e:
        return f"not valid UTF-8 at byte {e.start}"  # as stdin's reader words it
    return f"not valid Unicode (lone surrogate at character {character})"


def add_commands(group: typer.Typer, usecase) -> None:
    def complete(
        bundle: BundleArg,
        prompt: Annotated[str, typer.Argument(metavar="PROMPT", help='The code to complete, e.g. "def fib(n):"; - reads it from stdin.', show_default=False)],
        suffix: Annotated[Optional[str], typer.Option(metavar="TEXT", show_default=False, help=(
            "Fill in the middle: the code after the gap (PROMPT is the code before it; - reads it from stdin); needs a model whose tokenizer has FIM tokens."))] = None,
        echo: Annotated[bool, typer.Option("--echo", help="Print the prompt before the completion (and the suffix after it).")] = False,
        device: Device = "auto",
        threads: Threads = None,
        quantize: QuantizeRun = None,
        **options: Any,
    ) -> None:
        """Complete code, streaming the new tokens to stdout as they are generated; with --suffix, write
        the code between PROMPT and the suffix (fill-in-the-middle)."""
        from applied_aitk.bundle import load_bundle

        from applied_aitk.usecases.codegen.fim import Infill, no_fim_message

        if prompt == "-" and suffix == "-":
            raise AitkError("PROMPT and --suffix: only one of them can be - (stdin)")
        text = read_prompt(prompt, empty=suffix is not None)
        after = None if suffix is None else read_prompt(suffix, "--suffix", empty=True)
        if after is not None and not (text + after).strip():
            raise AitkError("prompt and --suffix: expected code in at least one of them")
        loaded = load_bundle(bundle, usecase="codegen")
        sampling = sampling_from(options, loaded)
        generator = usecase.generator(loaded, make_runtime(device, threads, quantize))
        if after is not None and generator.fim is None:
            raise AitkError(no_fim_message(str(loaded.path)))
        if echo:
            sys.stdout.write(text)
        started = time.perf_counter()
        request = text if after is None else Infill(text, after)
        (result,) = generator.complete([request], sampling, on_text=lambda _, piece: (sys.stdout.write(piece), sys.stdout.flush()))
        if result.error:
            raise AitkError(result.error)
        seconds = time.perf_counter() - started
        sys.stdout.write((after if echo and after is not None else "") + "\n")
        logger.info(f"{len(result.tokens)} tokens in {seconds:.2f} s ({len(result.tokens) / seconds:.1f} tokens/s), "
                    f"finished by {result.finish_reason}, on {generator.session.provider}")

    group.command("complete", cls=Command, epilog=examples(
        'aitk codegen complete bundle "def fib(n):"',
        'aitk codegen complete bundle "def fib(n):" --temperature 0.8 --top-p 0.95 --stop "\\n\\n"',
        "cat prompt.py | aitk codegen complete bundle - --echo",
        "aitk codegen complete bundle $'def area(r):\\n    ' --suffix $'\\n    return a\\n'",
    ))(with_options(complete, SAMPLING_OPTIONS))

    @group.command("import", cls=Command, epilog=examples(
        "aitk codegen import ./gpt2-local --out bundle", "aitk codegen import ./gpt2-local --out bundle --context 512 --quantize int8 --force",
        "aitk codegen import ./qwen-coder --out bundle --quantize int8 --quantize int4"))
    def import_(
        hf_dir: Annotated[Path, typer.Argument(metavar="MODEL_DIR", help="A local Hugging Face causal-LM folder: config.json, *.safetensors, tokenizer.json.", show_default=False)],
        out: BundleOut,
        force: Force = False,
        context: Annotated[Optional[int], typer.Option(min=1, metavar="N", help="Tokens of context to allow (default: the model's maximum).")] = None,
        device: Device = "auto",
        threads: ThreadsTrain = None,
        quantize: QuantizeImport = None,
        as_json: AsJson = False,
    ) -> None:
        """Export a local Hugging Face causal LM to a codegen bundle (KV-cache ONNX graph, parity-checked)."""
        from applied_aitk.usecases.codegen.families import check_family

        variants = [q for q in quantize or [] if q != "none"]
        unknown = [q for q in variants if q not in VARIANTS]
        if unknown:
            raise AitkError(f"--quantize {unknown[0]!r}: expected {', '.join(VARIANTS)} or none")
        if not hf_dir.is_dir():
            raise AitkError(f"{hf_dir}: no such directory")
        check_replaceable(out, force)
        check_family(hf_dir)  # before torch and transformers are imported: an unsupported model is refused at once
        from applied_aitk.package import package

        from applied_aitk.usecases.codegen.export import import_model

        result, config = import_model(hf_dir, context, threads)
        bundle = package(result, out, usecase, config, variants)
        logger.info(f"bundle written to {bundle.path}")
        summary = {"bundle": str(bundle.path), **bundle.assets, "parity": bundle.graph()["parity"]["max_abs_diff"]["logits"],
                   "greedy_equals_hf_generate": bundle.graph()["greedy_equals_hf_generate"]}
        print(json.dumps(summary, indent=2) if as_json else "\n".join(f"{k:<26} {v}" for k, v in summary.items()))

    @group.command("export-hf", cls=Command, epilog=examples("aitk codegen export-hf bundle ./hf-model", "aitk codegen export-hf bundle ./hf-model --force"))
    def export_hf_(
        bundle: BundleArg,
        out: Annotated[Path, typer.Argument(metavar="OUT", file_okay=False, help="The Hugging Face model folder to write.", show_default=False)],
        force: Annotated[bool, typer.Option("--force", help="Replace OUT when a Hugging Face model folder is already there.")] = False,
    ) -> None:
        """Write a bundle's model and tokenizer as a Hugging Face folder that from_pretrained loads."""
        from applied_aitk.bundle import load_bundle

        from applied_aitk.usecases.codegen.hf_export import check_target, export_hf

        loaded = load_bundle(bundle, usecase="codegen")
        check_target(out, force)
        logger.info(f"Hugging Face model written to {export_hf(loaded, out)}")
