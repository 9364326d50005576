"""Text generation in ONNX Runtime with a KV cache, in numpy only (no torch at predict time).

Prompts are left-padded into one batch: the attention mask hides the padding and position ids
count real tokens only, as Hugging Face ``generate()`` does, so greedy tokens equal its own."""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from applied_aitk import AitkError, InputError, Predictor, Record
from applied_aitk.console import get_logger
from applied_aitk.text import pad_ids

from applied_aitk.usecases.codegen.data import id_problem, prompt_of, read_prompt_records
from applied_aitk.usecases.codegen.fim import Infill, find_fim, infill_ids, no_fim_message

logger = get_logger(__name__)

ON_LONG = ("truncate", "error")
IN_PLACE_ATTENTION = "GroupQueryAttention"  # the bundle asset "attention" of graphs whose cache is updated in place


@dataclass
class Sampling:
    """How to pick tokens: temperature 0 is greedy; top-k, top-p and the penalty as in transformers."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int = 0
    on_long: str = "truncate"

    def check(self, context: int) -> None:
        problems = [
            (self.max_new_tokens < 1, f"max_new_tokens {self.max_new_tokens}: expected at least 1"),
            (self.max_new_tokens >= context, f"max_new_tokens {self.max_new_tokens}: expected less than the model's context of {context} tokens"),
            (not 0 <= self.temperature < float("inf"), f"temperature {self.temperature}: expected 0 (greedy) or a finite number above it"),
            (self.top_k < 0, f"top_k {self.top_k}: expected 0 (off) or more"),
            (not 0 < self.top_p <= 1, f"top_p {self.top_p}: expected a value in (0, 1]"),
            (not 0 < self.repetition_penalty < float("inf"), f"repetition_penalty {self.repetition_penalty}: expected a finite positive value (1 = off)"),
            (self.on_long not in ON_LONG, f"on_long {self.on_long!r}: expected truncate or error"),
        ]
        for failed, message in problems:
            if failed:
                raise AitkError(message)


@dataclass
class Completion:
    text: str
    tokens: list[int]
    finish_reason: str
    prompt_tokens: int
    warning: str | None = None
    error: str | None = None

    def row(self) -> dict[str, Any]:
        if self.error:
            return {"error": self.error}
        row = {"completion": self.text, "finish_reason": self.finish_reason, "prompt_tokens": self.prompt_tokens, "new_tokens": len(self.tokens)}
        return {**row, "warning": self.warning} if self.warning else row


def parse_stop(value: str | None) -> tuple[str, ...]:
    """Stop sequences from the command line: a JSON list, or one string where \\n, \\t and \\\\ are escapes."""
    import json

    if not value:
        return ()
    if value.lstrip().startswith("["):
        try:
            stops = json.loads(value)
        except json.JSONDecodeError as e:
            raise AitkError(f"--stop {value!r}: not a JSON list ({e.msg})") from None
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
            raise AitkError(f"--stop {value!r}: expected a JSON list of non-empty strings")
        return tuple(stops)
    return (re.sub(r"\\([ntr\\])", lambda m: {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}[m.group(1)], value),)


@dataclass
class _Row:
    prompt: list[int]
    budget: int
    rng: np.random.Generator
    anchor: list[int]
    prefix: str
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    emitted: int = 0
    reason: str | None = None


class Generator:
    """Runs the bundle's KV-cache graph; ``assets`` are the bundle's (cache shape, context, special ids);
    ``name`` (the bundle's path) names it in messages. Generation stops at an end-of-sequence id, or
    at a fill-in-the-middle token when the tokenizer has them (``fim``, plugins/codegen/fim.py)."""

    def __init__(self, session, tokenizer, assets: dict[str, Any], name: str = "model"):
        self.session = session
        self.tokenizer = tokenizer
        self.name = name
        self.context = int(assets["context"])
        self.layers, self.kv_heads, self.head_dim = int(assets["layers"]), int(assets["kv_heads"]), int(assets["head_dim"])
        self.fim = find_fim(tokenizer)
        self.eos = set(assets["eos_ids"]) | (self.fim.end_ids if self.fim else set())
        self.pad = int(assets["pad_id"])
        self.past_names = [f"past.{i}.{kv}" for i in range(self.layers) for kv in ("key", "value")]
        # graphs exported with GroupQueryAttention update a cache buffer in place; older bundles' graphs
        # return past + new as new tensors
        self.in_place = assets.get("attention") == IN_PLACE_ATTENTION

    def encode(self, prompt: str) -> list[int]:
        return self.tokenizer.encode(prompt).ids

    def prepare(self, prompt: str | Infill, sampling: Sampling, where: str = "prompt") -> tuple[list[int], str | None, str | None]:
        """``(ids, warning, error)`` of a text prompt (``fit``) or a fill-in-the-middle one (PSM order,
        cut around the gap when long; an error when the tokenizer has no FIM tokens)."""
        if isinstance(prompt, str):
            return self.fit(self.encode(prompt), sampling, where)
        if self.fim is None:
            return [], None, no_fim_message(self.name)
        room = self.context - sampling.max_new_tokens
        ids, prefix_cut, suffix_cut = infill_ids(self.fim, self.tokenizer, prompt, room)
        if not prefix_cut and not suffix_cut:
            return ids, None, None
        message = (f"{where}: prefix + suffix longer than {room} tokens (context {self.context} - max_new_tokens {sampling.max_new_tokens})")
        if sampling.on_long == "error":
            return ids, None, message
        return ids, f"{message}: dropped {prefix_cut} tokens from the start of the prefix and {suffix_cut} from the end of the suffix", None

    def fit(self, ids: list[int], sampling: Sampling, where: str = "prompt") -> tuple[list[int], str | None, str | None]:
        """``(ids, warning, error)``: a prompt longer than context - max_new_tokens is left-truncated, or an error."""
        room = self.context - sampling.max_new_tokens
        if len(ids) <= room:
            return ids, None, None
        message = f"{where}: {len(ids)} tokens, longer than {room} (context {self.context} - max_new_tokens {sampling.max_new_tokens})"
        if sampling.on_long == "error":
            return ids, None, message
        return ids[-room:], f"{message}: kept its last {room} tokens", None

    def complete(self, prompts: list[str | Infill], sampling: Sampling, seeds: list[int] | None = None,
                 on_text: Callable[[int, str], None] | None = None, where: list[str] | None = None) -> list[Completion]:
        """Complete text prompts, or fill in the middle of ``Infill`` ones: encode, fit to the context,
        generate, decode. ``where`` names them in messages."""
        sampling.check(self.context)
        where = where or ["prompt"] * len(prompts)
        fitted = [self.prepare(p, sampling, w) for p, w in zip(prompts, where)]
        good = [i for i, (_, _, error) in enumerate(fitted) if error is None]
        results: list[Completion] = [Completion("", [], "error", len(ids), error=error) for ids, _, error in fitted]
        if good:
            seeds = seeds if seeds is not None else [_seed_of(p) for p in prompts]
            callback = (lambda i, text: on_text(good[i], text)) if on_text else None
            done = self.generate([fitted[i][0] for i in good], sampling, [seeds[i] for i in good], callback)
            for i, completion in zip(good, done):
                completion.warning = fitted[i][1]
                if completion.warning:
                    logger.warning(completion.warning)
                results[i] = completion
        return results

    def generate(self, prompts: list[list[int]], sampling: Sampling, seeds: list[int],
                 on_text: Callable[[int, str], None] | None = None) -> list[Completion]:
        """Generate from token-id prompts (already fitted by ``fit``) in one left-padded batch."""
        if max(len(p) for p in prompts) > self.context - sampling.max_new_tokens:
            raise AitkError(f"a prompt is longer than context {self.context} - max_new_tokens {sampling.max_new_tokens}")
        batch = len(prompts)
        ids, mask = pad_ids(prompts, self.pad, side="left")
        positions = np.maximum(mask.cumsum(1) - 1, 0)
        rows = [self._row(p, sampling, seed) for p, seed in zip(prompts, seeds)]
        seen = None
        steps = max(r.budget for r in rows)
        step = self._cache(batch, ids.shape[1] + steps)
        feed = ids
        for _ in range(steps):
            logits = step({"input_ids": feed, "attention_mask": mask, "position_ids": positions}).numpy()
            if sampling.repetition_penalty != 1.0:
                seen = _mark(seen, ids if seen is None else feed, logits.shape[1])
                logits = _penalize(logits, seen, sampling.repetition_penalty)
            chosen = self._choose(logits, sampling, rows)
            for b, row in enumerate(rows):
                if row.reason is None:
                    self._advance(b, row, int(chosen[b]), sampling.stop, on_text)
                else:
                    chosen[b] = self.pad
            if all(r.reason for r in rows):
                break
            feed = chosen[:, None].astype(np.int64)
            mask = np.concatenate([mask, np.ones((batch, 1), np.int64)], axis=1)
            positions = positions[:, -1:] + 1
        for b, row in enumerate(rows):
            if on_text and row.emitted < len(row.text):
                on_text(b, row.text[row.emitted:])
        return [Completion(r.text, r.tokens, r.reason or "length", len(r.prompt)) for r in rows]

    def _cache(self, batch: int, capacity: int) -> Callable[[dict[str, np.ndarray]], Any]:
        """One step of the graph: ``step(feeds)`` runs it with the cache and returns the logits (an
        OrtValue). In place: one buffer per layer's keys and values of ``capacity`` positions, bound as
        both past and present, so each step writes only the new token's keys and values; otherwise
        the past grows by a copy each step (the cache stays in the session's memory either way)."""
        if self.in_place:
            buffers = {n: self.session.buffer((batch, self.kv_heads, capacity, self.head_dim)) for n in self.past_names}
            into = {n.replace("past.", "present."): b for n, b in buffers.items()}
            return lambda feeds: self.session.run_on_device({**feeds, **buffers}, into=into)[0]
        past = {n: np.zeros((batch, self.kv_heads, 0, self.head_dim), np.float32) for n in self.past_names}

        def step(feeds: dict[str, np.ndarray]):
            logits, *present = self.session.run_on_device({**feeds, **past})
            past.update(zip(self.past_names, present))
            return logits

        return step

    def _row(self, prompt: list[int], sampling: Sampling, seed: int) -> _Row:
        # Decoding from the last prompt token keeps a leading space that some decoders drop at the start.
        anchor = prompt[-1:]
        prefix = self.tokenizer.decode(anchor, skip_special_tokens=True)
        budget = min(sampling.max_new_tokens, self.context - len(prompt))
        return _Row(prompt, budget, np.random.default_rng([sampling.seed, seed & 0xFFFFFFFF]), anchor, prefix)

    def _advance(self, b: int, row: _Row, token: int, stops: tuple[str, ...], on_text) -> None:
        if token in self.eos:
            row.reason = "eos"
            return
        row.tokens.append(token)
        full = self.tokenizer.decode(row.anchor + row.tokens, skip_special_tokens=True)
        row.text = full[len(row.prefix):] if full.startswith(row.prefix) else self.tokenizer.decode(row.tokens, skip_special_tokens=True)
        cut = min((i for i in (row.text.find(s) for s in stops) if i >= 0), default=-1)
        if cut >= 0:
            row.text, row.reason = row.text[:cut], "stop"
        elif len(row.tokens) >= row.budget:
            row.reason = "length"
        if on_text and row.reason is None:
            safe = _safe_length(row.text, stops)
            if safe > row.emitted:
                on_text(b, row.text[row.emitted:safe])
                row.emitted = safe

    def _choose(self, logits: np.ndarray, sampling: Sampling, rows: list[_Row]) -> np.ndarray:
        if sampling.temperature == 0:
            return logits.argmax(-1)
        logits = logits.astype(np.float64) / sampling.temperature
        if sampling.top_k:
            logits = _top_k(logits, sampling.top_k)
        if sampling.top_p < 1.0:
            logits = _top_p(logits, sampling.top_p)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        return np.array([row.rng.choice(probs.shape[1], p=p) for row, p in zip(rows, probs)])


def _seed_of(prompt: str | Infill) -> int:
    text = prompt if isinstance(prompt, str) else f"{prompt.prefix}\0{prompt.suffix}"
    return zlib.crc32(text.encode("utf-8", "replace"))


def _mark(seen: np.ndarray | None, ids: np.ndarray, vocab: int) -> np.ndarray:
    if seen is None:
        seen = np.zeros((ids.shape[0], vocab), bool)
    np.put_along_axis(seen, np.clip(ids, 0, vocab - 1), True, axis=1)
    return seen


def _penalize(logits: np.ndarray, seen: np.ndarray, penalty: float) -> np.ndarray:
    """transformers' RepetitionPenaltyLogitsProcessor: seen tokens' logits divided (>0) or multiplied (<0)."""
    penalized = np.where(logits > 0, logits / penalty, logits * penalty)
    return np.where(seen, penalized, logits)


def _top_k(logits: np.ndarray, k: int) -> np.ndarray:
    k = min(k, logits.shape[-1])
    kth = np.partition(logits, -k, axis=-1)[:, -k][:, None]
    return np.where(logits < kth, -np.inf, logits)


def _top_p(logits: np.ndarray, top_p: float) -> np.ndarray:
    """transformers' TopPLogitsWarper: drop the least likely tokens whose total probability is at most 1 - top_p."""
    order = np.argsort(logits, axis=-1)
    ordered = np.take_along_axis(logits, order, axis=-1)
    probs = np.exp(ordered - ordered.max(-1, keepdims=True))
    cumulative = np.cumsum(probs / probs.sum(-1, keepdims=True), axis=-1)
    remove = cumulative <= 1 - top_p
    remove[:, -1] = False
    drop = np.zeros_like(remove)
    np.put_along_axis(drop, order, remove, axis=-1)
    return np.where(drop, -np.inf, logits)


def _safe_length(text: str, stops: tuple[str, ...]) -> int:
    """How much of ``text`` can be shown: not a tail that may begin a stop sequence or an unfinished character."""
    end = len(text.rstrip("\ufffd"))
    for k in range(min(end, max((len(s) for s in stops), default=1) - 1), 0, -1):
        if any(s.startswith(text[end - k:end]) for s in stops):
            return end - k
    return end


class CodegenPredictor(Predictor):
    """Completes a batch of prompts; a prompt that cannot be taken gets an error row."""

    def __init__(self, generator: Generator, sampling: Sampling, provider: str):
        sampling.check(generator.context)
        self.generator, self.sampling, self.provider = generator, sampling, provider

    def read(self, paths: Iterable[Path]) -> Iterator[Record]:
        return read_prompt_records(paths)

    def from_json(self, value: Any, id: str) -> Record:
        """``{"prompt": ...}`` (a JSONL line of `predict`'s input); its ``id`` or ``task_id`` names the row."""
        key = value.get("id", value.get("task_id")) if isinstance(value, dict) else None
        if id_problem(key):
            raise InputError(id_problem(key))
        return Record(id if key is None else str(key), data={"where": f"records[{id}]", "value": value})

    def decode(self, record: Record) -> tuple[str | Infill, str]:
        """``(prompt, where)``: a text prompt or a prefix/suffix pair; where names the file and line
        for messages about the prompt."""
        return prompt_of(record.data), record.data["where"]

    def predict(self, inputs: list[tuple[str | Infill, str] | str | Infill]) -> list[dict[str, Any]]:
        pairs = [x if isinstance(x, tuple) else (x, "prompt") for x in inputs]
        completions = self.generator.complete([text for text, _ in pairs], self.sampling, where=[w for _, w in pairs])
        return [c.row() for c in completions]
