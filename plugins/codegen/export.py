"""Writing a codegen bundle: export the KV-cache and token-score graphs, check them against torch
(tensor parity, and greedy tokens against HF ``generate()``), int8, held-out perplexity."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from toolkit import AitkError, __version__, onnx_export
from toolkit.bundle import Bundle, BundleWriter
from toolkit.console import get_logger
from toolkit.runtime import Runtime

from plugins.codegen.data import load_tokenizer
from plugins.codegen.evaluation import perplexity
from plugins.codegen.generate import Generator, Sampling
from plugins.codegen.model import (
    cache_shape, export_decoder, export_scorer, hf_greedy, load_pretrained, max_positions, parameter_count, special_ids, unique_state_dict,
)

logger = get_logger(__name__)


def write_bundle(out: Path, model, tokenizer, runtime: Runtime, config: Any, context: int, metrics: dict[str, Any],
                 windows: list, heldout: list[str], source: str) -> Bundle:
    """Export the KV-cache and token-score graphs, check them against torch, write the bundle."""
    shape = cache_shape(model)
    vocab = int(model.config.vocab_size)
    ids = special_ids(model, tokenizer)
    with BundleWriter(out, usecase="codegen", plugin_version=__version__, config=config) as w:
        logger.info("exporting the KV-cache graph and the token-score graph to ONNX")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on Python branches: the parity checks below are the proof
            w.manifest["model"] = export_decoder(model, w.path("model.onnx"), shape, vocab, runtime.fp16)
            w.manifest["model"]["score"] = export_scorer(model, w.path("score.onnx"), vocab)
        w.path("tokenizer.json").write_text(tokenizer.to_str())
        w.write_json("model_config.json", model.config.to_dict())
        w.write_json("heldout.json", heldout)
        w.write_weights(unique_state_dict(model))
        assets = {"source": source, "model_type": model.config.model_type, "context": context, "vocab_size": vocab,
                  "parameters": parameter_count(model), **shape, **ids}
        w.manifest["assets"] = assets
        cpu = Runtime(device="cpu", threads=runtime.threads)
        generator = Generator(cpu.session(w.path("model.onnx")), load_tokenizer(w.path("tokenizer.json")), assets)
        w.manifest["model"]["greedy_equals_hf_generate"] = _greedy_check(model, generator, windows, vocab)
        if runtime.int8:
            onnx_export.quantize_dynamic(w.path("model.onnx"), w.path("model.int8.onnx"))
            int8 = Generator(cpu.session(w.path("model.int8.onnx")), generator.tokenizer, assets)
            w.manifest["model_int8"] = {"file": "model.int8.onnx", **_agreement(generator, int8, windows, vocab)}
        if runtime.fp16:
            fp16 = Generator(cpu.session(w.path("model.fp16.onnx")), generator.tokenizer, assets)
            w.manifest["model"]["fp16"].update(_agreement(generator, fp16, windows, vocab))
        if windows:
            scored = perplexity(cpu.session(w.path("score.onnx")), windows, ids["pad_id"])
            metrics = {"heldout_perplexity": scored["perplexity"], "heldout_loss": scored["loss"], "heldout_tokens": scored["tokens"], **metrics}
        w.manifest["metrics"] = {**metrics, "parameters": assets["parameters"]}
        return w.commit()


def _probe_prompts(windows: list, vocab: int, count: int = 2, length: int = 24) -> list[list[int]]:
    prompts = [list(map(int, w[: length - 4 * i])) for i, w in enumerate(windows[:count]) if len(w) > length]
    return prompts or [list(map(int, np.random.default_rng(0).integers(2, vocab, length - 4 * i))) for i in range(count)]


def _greedy_check(model, generator, windows: list, vocab: int, new_tokens: int = 16) -> bool:
    """Greedy tokens of the ORT loop vs HF ``generate()`` on left-padded held-out snippets."""
    prompts = _probe_prompts(windows, vocab)
    new_tokens = max(1, min(new_tokens, generator.context - max(map(len, prompts)) - 1))
    sampling = Sampling(max_new_tokens=new_tokens)
    ours = generator.generate(prompts, sampling, seeds=[0] * len(prompts))
    width = max(map(len, prompts))
    ids = np.full((len(prompts), width), generator.pad, np.int64)
    mask = np.zeros_like(ids)
    for b, p in enumerate(prompts):
        ids[b, width - len(p):], mask[b, width - len(p):] = p, 1
    theirs = hf_greedy(model, ids, mask, new_tokens, generator.pad, sorted(generator.eos))
    equal = all(c.tokens == _until_eos(list(map(int, t)), generator.eos) for c, t in zip(ours, theirs))
    if not equal:
        logger.warning("ORT greedy tokens differ from HF generate() on the probe prompts (a near tie in the logits?)")
    return equal


def _until_eos(tokens: list[int], eos: set[int]) -> list[int]:
    for i, t in enumerate(tokens):
        if t in eos:
            return tokens[:i]
    return tokens


def _agreement(fp32, other, windows: list, vocab: int) -> dict[str, Any]:
    """Next-token agreement of an int8 or fp16 graph with the fp32 one on greedy continuations of probe prompts."""
    prompts = _probe_prompts(windows, vocab, count=4)
    sampling = Sampling(max_new_tokens=max(1, min(32, fp32.context - max(map(len, prompts)) - 1)))
    a = fp32.generate(prompts, sampling, seeds=[0] * len(prompts))
    b = other.generate(prompts, sampling, seeds=[0] * len(prompts))
    same = sum(_common_prefix(x.tokens, y.tokens) for x, y in zip(a, b))
    total = sum(len(x.tokens) for x in a)
    return {"greedy_tokens_equal_fp32": same / max(total, 1), "compared_tokens": total}


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def import_model(hf_dir: Path, out: Path, runtime: Runtime, context: int | None = None) -> Bundle:
    """A bundle from a local Hugging Face causal-LM folder: exported, parity-checked, ready to predict."""
    model = load_pretrained(hf_dir)
    tokenizer = load_tokenizer(Path(hf_dir) / "tokenizer.json")
    limit = max_positions(model)
    if context is not None and not 1 < context <= limit:
        raise AitkError(f"--context {context}: expected 2..{limit} (the model's maximum)")
    config = {"imported_from": str(Path(hf_dir).resolve())}
    return write_bundle(out, model, tokenizer, runtime, config, context or limit, {}, [], [], "imported")
