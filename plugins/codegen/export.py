"""What a codegen bundle is made of: the KV-cache and token-score graphs and their checks beyond
tensor parity (greedy tokens against HF ``generate()``, int8/fp16 agreement, held-out perplexity)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from applied_aitk import AitkError, TrainResult
from applied_aitk.console import get_logger
from applied_aitk.runtime import Runtime
from applied_aitk.text import pad_ids

from applied_aitk.usecases.codegen.evaluation import perplexity
from applied_aitk.usecases.codegen.generate import IN_PLACE_ATTENTION, Generator, Sampling
from applied_aitk.usecases.codegen.model import (
    cache_shape, decoder_graph, hf_greedy, load_pretrained, load_pretrained_tokenizer, max_positions, parameter_count, prompt_pass_parity, scorer_graph, special_ids,
    unique_state_dict,
)

logger = get_logger(__name__)


def train_result(model, tokenizer, context: int, metrics: dict[str, Any], windows: list, heldout: list[str], source: str,
                 threads: int | None = None) -> TrainResult:
    """The KV-cache and token-score graphs, checked beyond parity: greedy tokens of the exported loop
    against HF ``generate()``, int8/fp16 agreement with fp32, held-out perplexity of the score graph."""
    shape = cache_shape(model)
    vocab = int(model.config.vocab_size)
    ids = special_ids(model, tokenizer)
    assets = {"source": source, "model_type": model.config.model_type, "context": context, "vocab_size": vocab,
              "parameters": parameter_count(model), "attention": IN_PLACE_ATTENTION, **shape, **ids}
    result = TrainResult(
        graphs=[], weights=unique_state_dict(model), assets=assets,
        files={"tokenizer.json": tokenizer.to_str(), "model_config.json": model.config.to_dict(), "heldout.json": heldout},
        metrics={**metrics, "parameters": assets["parameters"]}, history=metrics.get("history", []),
    )
    decoder = decoder_graph(model, shape, vocab, context)
    cpu = Runtime(device="cpu", threads=threads)
    quality = windows or reference_windows(tokenizer, context)

    def generator(path: Path) -> Generator:
        return Generator(cpu.session(path), tokenizer, assets)

    def check_decoder(variant: str, path: Path, fp32: Path) -> dict[str, Any]:
        if variant != "fp32":
            return _agreement(generator(fp32), generator(path), quality, vocab)
        return {"parity_prompt_pass": prompt_pass_parity(decoder, path, shape, vocab),
                "greedy_equals_hf_generate": _greedy_check(model, generator(path), windows, vocab)}

    def check_scorer(variant: str, path: Path, fp32: Path) -> dict[str, Any]:
        if variant != "fp32":
            ours, theirs = (perplexity(cpu.session(p), quality, ids["pad_id"]) for p in (path, fp32))
            return {"perplexity": ours["perplexity"], "perplexity_fp32": theirs["perplexity"], "perplexity_tokens": ours["tokens"],
                    "perplexity_text": "held-out files" if windows else REFERENCE.name}
        if windows:
            scored = perplexity(cpu.session(path), windows, ids["pad_id"])
            result.metrics = {"heldout_perplexity": scored["perplexity"], "heldout_loss": scored["loss"], "heldout_tokens": scored["tokens"], **result.metrics}
        return {}

    decoder.check = check_decoder
    scorer = scorer_graph(model)
    scorer.check = check_scorer
    result.graphs += [decoder, scorer]
    logger.info("exporting the KV-cache graph and the token-score graph to ONNX")
    return result


REFERENCE = Path(__file__).parent / "sample_data/eval/sched.py.txt"


def reference_windows(tokenizer, context: int, max_tokens: int = 2048) -> list:
    """Windows of a standard-library file no model here trained on (the sample's evaluation file): the
    code a quantized variant's perplexity is measured on when there are no held-out files (imports)."""
    from applied_aitk.usecases.codegen.data import eval_windows, token_stream

    text = REFERENCE.read_text(encoding="utf-8")
    return eval_windows(token_stream(tokenizer, [text]), min(context, 256), max_tokens)


def _probe_prompts(windows: list, vocab: int, count: int = 2, length: int = 24) -> list[list[int]]:
    prompts = [list(map(int, w[: length - 4 * i])) for i, w in enumerate(windows[:count]) if len(w) > length]
    return prompts or [list(map(int, np.random.default_rng(0).integers(2, vocab, length - 4 * i))) for i in range(count)]


def _greedy_check(model, generator, windows: list, vocab: int, new_tokens: int = 16) -> bool:
    """Greedy tokens of the ORT loop vs HF ``generate()`` on left-padded held-out snippets."""
    prompts = _probe_prompts(windows, vocab)
    new_tokens = max(1, min(new_tokens, generator.context - max(map(len, prompts)) - 1))
    sampling = Sampling(max_new_tokens=new_tokens)
    ours = generator.generate(prompts, sampling, seeds=[0] * len(prompts))
    ids, mask = pad_ids(prompts, generator.pad, side="left")
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


def import_model(hf_dir: Path, context: int | None = None, threads: int | None = None) -> tuple[TrainResult, dict[str, Any]]:
    """What a local Hugging Face causal-LM folder makes: the result to package and the settings to record."""
    model = load_pretrained(hf_dir)
    tokenizer = load_pretrained_tokenizer(hf_dir)
    limit = max_positions(model)
    if context is not None and not 1 < context <= limit:
        raise AitkError(f"--context {context}: expected 2..{limit} (the model's maximum)")
    config = {"imported_from": str(Path(hf_dir).resolve())}
    return train_result(model, tokenizer, context or limit, {}, [], [], "imported", threads), config
