"""The `codegen` use case: train a code model (or import one), generate with a KV cache in ONNX Runtime.

Module level imports stay light (stdlib and toolkit): aitk imports every plugin to build its CLI."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from applied_aitk import AitkError, Predictor, Sample, TrainResult, UseCase, hookimpl
from applied_aitk.bundle import Bundle
from applied_aitk.console import get_logger
from applied_aitk.runtime import Runtime
from applied_aitk.settings import setting
from applied_aitk.usecase import Option

from applied_aitk.usecases.codegen.options import SAMPLING_OPTIONS, default_new_tokens, sampling_from

logger = get_logger(__name__)

SAMPLE_DATA = Path(__file__).parent / "sample_data"


def _minutes_to_seconds(minutes: Any) -> float:
    return float(minutes) * 60


@dataclass
class CodegenConfig:
    arch: Literal["gpt2", "llama"] = setting("gpt2", "Model architecture.")
    size: Literal["tiny", "mini", "small", "base"] = setting("mini", "Model size (see model.PRESETS).")
    vocab_size: int = setting(8000, "Byte-level BPE vocabulary trained on the corpus.", ge=256)
    context_length: int = setting(256, "Tokens the model sees at once; prompt + new tokens must fit in it.", ge=16)
    include: list[str] = setting(["*.py"], "File name patterns taken from corpus folders.")
    val_fraction: float = setting(0.05, "Share of files held out to measure perplexity (split by file, never inside one).", ge=0, lt=1)
    max_steps: int = setting(3000, "Optimizer steps to train (the cosine schedule ends there; 0: none, the random initial weights).", ge=0)
    max_time: float = setting(0.0, "Stop training after this many seconds (0: no limit); the schedule then decays by the clock.", ge=0)
    batch_size: int = setting(16, "Windows of context_length tokens per optimizer step.", ge=1)
    learning_rate: float = setting(1e-3, "Peak AdamW learning rate (linear warm-up, cosine decay to a tenth).", gt=0)
    warmup_steps: int = setting(100, "Steps of linear learning-rate warm-up.", ge=0)
    weight_decay: float = setting(0.1, "AdamW weight decay.", ge=0)
    dropout: float = setting(0.0, "Dropout in the transformer.", ge=0, lt=1)
    fim_rate: float = setting(0.0, "Share of training windows rewritten for fill-in-the-middle (0: none; 0.5 is the usual rate); adds FIM tokens to the tokenizer.", ge=0, le=1)
    eval_steps: int = setting(200, "Steps between held-out evaluations (early stopping, checkpoints of the best).", ge=1)
    eval_tokens: int = setting(32768, "Held-out tokens scored at each evaluation and for the bundle's perplexity.", ge=1)
    patience: int = setting(5, "Evaluations without improvement before stopping (0: never stop early).", ge=0)
    precision: Literal["auto", "bf16", "fp32"] = setting("auto", "auto: bf16 autocast where the hardware has bf16. The exported model is fp32.")
    checkpoint: str = setting("", "Checkpoint folder of an unfinished run (default: BUNDLE.ckpt next to the bundle; removed once the bundle is written).")
    save_steps: int = setting(500, "A checkpoint at the evaluation after every save_steps steps (0: no checkpoints).", ge=0)
    resume: bool = setting(False, "Continue an interrupted run from its checkpoint (same arch, size, vocabulary, context, seed and data split).")
    init: str = setting("", "Start from this codegen bundle or Hugging Face model folder (its tokenizer and architecture).")
    seed: int = setting(0, "Seed of the data split, the batches and the initial weights.")

    deprecated_names: ClassVar[dict[str, Any]] = {
        "context": "context_length", "holdout": "val_fraction", "steps": "max_steps", "lr": "learning_rate", "warmup": "warmup_steps",
        "eval_every": "eval_steps", "checkpoint_every": "save_steps", "max_minutes": ("max_time", _minutes_to_seconds),
    }


class Codegen(UseCase):
    name = "codegen"
    summary = "Code completion: a decoder-only transformer trained on your code (or imported), KV-cache generation in ONNX Runtime."
    Config = CodegenConfig
    input_suffixes = (".jsonl",)
    asset_types = {"context": int, "layers": int, "kv_heads": int, "head_dim": int, "eos_ids": list[int], "pad_id": int,
                   "attention": str | None}
    model_card = """## Intended use

Completing code in the style of the corpus it was trained on (or of the model imported), for
developers who review what it writes.

## Limitations

- Generated code can be wrong, insecure or copy its training data; review and test it, and run
  it only in a sandbox (`aitk codegen evaluate` runs it under bubblewrap).
- A small model trained on a small corpus knows only that corpus' languages, libraries and style.
- Prompts longer than the context length are cut or refused.
"""
    batch_size = 16
    train_data_spec = True  # globs, comma-separated lists and `stdlib` (data.corpus_files)
    options = {
        "predict": [
            *SAMPLING_OPTIONS,
            Option("on_long", str, "truncate", "A prompt longer than context - max_new_tokens: truncate (keep its end) or error."),
        ],
        "evaluate": [
            Option("tasks", str, None, "Problem numbers to use, e.g. 11-510 (MBPP's test split)."),
            Option("samples", int, 1, "Completions per problem (pass@k needs k or more).", min=1),
            Option("k", str, "1", "Comma-separated k values for pass@k."),
            Option("max_new_tokens", int, None, "Most tokens per completion (default: 128, at most half the context)."),
            Option("temperature", float, None, "Default: 0 (greedy) for 1 sample, 0.8 for more."),
            Option("top_p", float, 0.95, "Nucleus sampling when temperature > 0.", min=0, max=1),
            Option("timeout", float, 5.0, "Seconds each program may run in the sandbox.", min=0),
            Option("memory_mb", int, 512, "Address-space limit of each sandboxed program.", min=1),
            Option("unsafe_no_sandbox", bool, False, "DANGEROUS: where bubblewrap cannot isolate generated code, run it "
                   "anyway, unisolated, as you, with your files and network."),
            Option("heldout", bool, False, "Perplexity only on the files held out at training."),
            Option("max_tokens", int, 0, "Score at most this many tokens for perplexity (0: all).", min=0),
        ],
    }

    def sample(self, out: Path) -> Sample:
        out = Path(out)
        shutil.copytree(SAMPLE_DATA, out, dirs_exist_ok=True)
        for text in list(out.rglob("*.py.txt")):
            text.replace(text.with_suffix(""))
        return Sample(
            train=out / "corpus",
            evaluate=out / "eval",
            predict=[out / "prompts.jsonl"],
            settings={"size": "tiny", "vocab_size": 1024, "context_length": 128, "max_steps": 200, "batch_size": 16, "learning_rate": 3e-3,
                      "warmup_steps": 20, "eval_steps": 50, "eval_tokens": 8192, "save_steps": 0},
        )

    def train(self, data: Path, out: Path, config: CodegenConfig, runtime: Runtime) -> TrainResult:
        import torch

        from applied_aitk.train import seed_everything

        from applied_aitk.usecases.codegen import data as corpus
        from applied_aitk.usecases.codegen.model import build_model, max_positions
        from applied_aitk.usecases.codegen.trainer import Checkpoint, train_steps

        seed_everything(config.seed)
        if runtime.threads:
            torch.set_num_threads(runtime.threads)
        checkpoint = Checkpoint(Path(config.checkpoint) if config.checkpoint else Path(out).with_name(Path(out).name + ".ckpt"))
        if config.resume:
            checkpoint.check(config)
        elif checkpoint.exists():
            logger.warning(f"{checkpoint.folder}: an interrupted run is there; this run starts over and replaces it "
                           f"(--set resume=true continues it)")
        files, texts = corpus.read_sources(corpus.corpus_files(data, config.include))
        train_idx, held_idx = corpus.split_files(files, texts, config.val_fraction, config.seed)
        logger.info(f"corpus: {len(files)} files ({len(train_idx)} train, {len(held_idx)} held out), {sum(map(len, texts)) / 1e6:.1f} M characters")
        model, tokenizer = None, None
        if config.init:
            model, tokenizer = _init_model(Path(config.init))
        if config.resume:
            tokenizer = corpus.load_tokenizer(checkpoint.tokenizer_path())
        elif tokenizer is None:
            started = time.perf_counter()
            tokenizer = corpus.train_tokenizer([texts[i] for i in train_idx], config.vocab_size, fim=config.fim_rate > 0)
            logger.info(f"tokenizer: {tokenizer.get_vocab_size()} tokens, trained in {time.perf_counter() - started:.1f} s")
        eot, pad = tokenizer.token_to_id(corpus.EOT), tokenizer.token_to_id(corpus.PAD)
        if model is None:
            model = build_model(config.arch, config.size, tokenizer.get_vocab_size(), config.context_length, eot, pad, config.dropout)
        pad_id = model.generation_config.pad_token_id if model.generation_config.pad_token_id is not None else eot
        context = min(config.context_length, max_positions(model))
        stream = corpus.token_stream(tokenizer, [texts[i] for i in train_idx])
        windows = corpus.eval_windows(corpus.token_stream(tokenizer, [texts[i] for i in held_idx]), context, config.eval_tokens)
        fim = _fim_tokens(model, tokenizer, config, checkpoint)
        device = runtime.torch_device()
        fitted = train_steps(model, stream, windows, _with_context(config, context), device, pad_id, checkpoint, tokenizer.to_str(), fim)
        metrics = {"train_tokens": int(len(stream)), "steps": fitted.steps, "train_minutes": round(fitted.seconds / 60, 2),
                   "stopped": fitted.stopped, "history": fitted.history}
        heldout = [str(files[i]) for i in held_idx]
        from applied_aitk.usecases.codegen.export import train_result

        result = train_result(model.float().cpu().eval(), tokenizer, context, metrics, windows, heldout, "trained", runtime.threads)
        result.checkpoint = checkpoint.folder if config.save_steps or config.resume else None
        return result

    def evaluate(self, bundle: Bundle, data: Path, runtime: Runtime, report: Path | None = None, **options: Any) -> dict[str, Any]:
        from applied_aitk.usecases.codegen import data as corpus
        import numpy as np

        from applied_aitk.usecases.codegen.evaluation import evaluate_problems, per_file, summarize, token_losses, write_per_file
        from applied_aitk.usecases.codegen.generate import Sampling

        data = Path(data)
        problem_files, sources = _evaluation_inputs(data, bundle.config.get("include", "*.py"))
        if problem_files:
            from applied_aitk.usecases.codegen.sandbox import require

            require(bool(options.get("unsafe_no_sandbox")))  # refuse before generating anything
        if options.get("heldout"):
            held = {str(Path(p).resolve()) for p in bundle.read_json("heldout.json")}
            sources = [s for s in sources if str(s.resolve()) in held]
            if not sources:
                raise AitkError(f"{data}: none of its files were held out when {bundle.path} was trained")
        metrics: dict[str, Any] = {}
        started = time.perf_counter()
        if sources:
            files, texts = corpus.read_sources(sources)
            tokenizer = corpus.load_tokenizer(bundle.file("tokenizer.json"))
            encoded = corpus.file_tokens(tokenizer, texts)
            stream = np.concatenate(encoded) if encoded else np.zeros(0, np.int32)
            windows = corpus.eval_windows(stream, bundle.assets["context"], options.get("max_tokens") or 0)
            score = runtime.model_file(bundle, "score") if runtime.variant in bundle.variants("score") else bundle.file("score.onnx")
            losses = token_losses(runtime.session(score), windows, bundle.assets["pad_id"])
            scored = summarize(losses)
            metrics.update({"perplexity": scored["perplexity"], "loss": scored["loss"], "tokens": scored["tokens"], "files": len(files)})
            if report:
                tokens, loss = per_file(losses, [len(e) for e in encoded])
                write_per_file(Path(report), [_shown_name(f, data) for f in files], tokens, loss, scored["perplexity"])
        if problem_files:
            samples = options.get("samples") or 1
            temperature = options.get("temperature")
            temperature = (0.0 if samples == 1 else 0.8) if temperature is None else temperature
            new_tokens = options.get("max_new_tokens")
            sampling = Sampling(max_new_tokens=default_new_tokens(bundle) if new_tokens is None else new_tokens, temperature=temperature, top_p=options.get("top_p") or 0.95)
            problems = [p for f in problem_files for p in corpus.read_problems(f, options.get("tasks"))]
            if not problems:
                raise AitkError(f"{data}: no problems{' in tasks ' + options['tasks'] if options.get('tasks') else ''}")
            generator = self.generator(bundle, runtime)
            metrics.update(evaluate_problems(
                generator, problems, sampling, samples, _ks(options.get("k") or "1"),
                options.get("timeout") or 5.0, options.get("memory_mb") or 512, report=Path(report) if report else None,
                unsafe=bool(options.get("unsafe_no_sandbox")),
            ))
        if not metrics:
            raise AitkError(f"{data}: no source files ({bundle.config.get('include', '*.py')}) and no MBPP/HumanEval problem files (.jsonl)")
        metrics["seconds"] = round(time.perf_counter() - started, 1)
        headline = [k for k in metrics if k == "perplexity" or k.startswith("pass@")]
        return {**{k: metrics[k] for k in headline}, **metrics}

    def load(self, bundle: Bundle, runtime: Runtime, **options: Any) -> Predictor:
        from applied_aitk.usecases.codegen.generate import CodegenPredictor

        generator = self.generator(bundle, runtime)
        return CodegenPredictor(generator, sampling_from(options, bundle), generator.session.provider)

    def serve_routes(self, app, model) -> None:
        """`aitk serve`: OpenAI-compatible POST /v1/completions (plugins/codegen/serve.py)."""
        from applied_aitk.usecases.codegen.serve import add_routes

        add_routes(app, model)

    def generator(self, bundle: Bundle, runtime: Runtime):
        """The KV-cache generator of a bundle (the int8 graph when the runtime asks for it). Its session's
        idle threads sleep (``Runtime.sleeping``): on the shared 2-core machine, a model of Qwen2.5-Coder-0.5B's
        widths (4 layers) decoded at 123 ms/step against 220 with spinning threads (fp32, batch 1,
        alternating runs at load average 9-11; int4 with blocks of 128: 16 against 24 ms), its prompt pass no slower."""
        from applied_aitk.usecases.codegen.data import load_tokenizer
        from applied_aitk.usecases.codegen.generate import Generator

        session = runtime.sleeping().session(runtime.model_file(bundle))
        return Generator(session, load_tokenizer(bundle.file("tokenizer.json")), bundle.assets, name=str(bundle.path))

    def commands(self, group) -> None:
        from applied_aitk.usecases.codegen.commands import add_commands

        add_commands(group, self)


def _init_model(path: Path):
    """The model and tokenizer to fine-tune: a codegen bundle or a Hugging Face folder."""
    from applied_aitk.bundle import load_bundle

    from applied_aitk.usecases.codegen import data as corpus
    from applied_aitk.usecases.codegen.model import load_bundle_model, load_pretrained, load_pretrained_tokenizer

    if (path / "manifest.json").is_file():
        bundle = load_bundle(path, usecase="codegen")
        return load_bundle_model(bundle).train(), corpus.load_tokenizer(bundle.file("tokenizer.json"))
    return load_pretrained(path).train(), load_pretrained_tokenizer(path)


def _fim_tokens(model, tokenizer, config: CodegenConfig, checkpoint):
    """``(fim, end_id)`` for training with ``fim_rate`` > 0 (None without): the tokenizer's FIM tokens and
    the model's end of sequence; AitkError when the tokenizer (of ``init`` or of the checkpoint) has none."""
    from applied_aitk.usecases.codegen.fim import find_fim
    from applied_aitk.usecases.codegen.model import special_ids

    if not config.fim_rate:
        return None
    fim = find_fim(tokenizer)
    if fim is None:
        source = checkpoint.folder if config.resume else config.init
        raise AitkError(f"{source}: its tokenizer has no fill-in-the-middle tokens to train fim_rate={config.fim_rate:g} with")
    return fim, special_ids(model, tokenizer)["eos_ids"][0]


def _with_context(config: CodegenConfig, context: int) -> CodegenConfig:
    import dataclasses

    return config if context == config.context_length else dataclasses.replace(config, context_length=context)


def _evaluation_inputs(data: Path, include: str | list[str]) -> tuple[list[Path], list[Path]]:
    """Problem files (MBPP/HumanEval JSONL) and source files under ``data``."""
    from applied_aitk.usecases.codegen import data as corpus

    if data.is_file():
        if corpus.is_problem_file(data):
            return [data], []
        if data.suffix.lower() in corpus.PROBLEM_SUFFIXES:
            raise AitkError(f"{data}: expected MBPP (text, test_list) or HumanEval (prompt, test, entry_point) problems, one JSON object a line")
        return [], [data]
    problems = sorted(p for p in data.rglob("*") if p.is_file() and corpus.is_problem_file(p))
    try:
        sources = corpus.corpus_files(data, include)
    except AitkError:
        sources = []
    return problems, sources


def _shown_name(path: Path, data: Path) -> str:
    """A file's name in reports: its path under the evaluated folder, else as given."""
    try:
        return str(Path(path).resolve().relative_to(Path(data).resolve()))
    except ValueError:
        return str(path)


def _ks(text: str) -> list[int]:
    try:
        ks = sorted({int(k) for k in text.split(",") if k.strip()})
    except ValueError:
        ks = []
    if not ks or ks[0] < 1:
        raise AitkError(f"--k {text!r}: expected positive integers like 1,10")
    return ks


@hookimpl
def register_usecases(register):
    register(Codegen())
