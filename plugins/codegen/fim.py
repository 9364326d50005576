"""Fill-in-the-middle (FIM): the model writes the code between a prefix and a suffix.

The method is Bavarian et al. 2022, "Efficient Training of Language Models to Fill in the Middle"
(arXiv:2207.14255): a text is cut at two random points into prefix, middle and suffix and trained
as ``<PRE> prefix <SUF> suffix <MID> middle <EOT>`` (the PSM order); at inference the prompt is
``<PRE> prefix <SUF> suffix <MID>`` and the model writes the middle, ending it with end-of-text.
The sentinel tokens are the tokenizer's own special tokens, in one of the styles code models use
(StarCoder, Qwen2.5-Coder, DeepSeek-Coder); a tokenizer without them cannot fill in the middle.

Module level imports stay light (stdlib and toolkit): the CLI imports the plugin."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from applied_aitk import AitkError


@dataclass(frozen=True)
class FimStyle:
    """The sentinel tokens of one model family: ``prefix``, ``suffix`` and ``middle`` mark the parts;
    ``ends`` are further special tokens after which a middle is over (padding, file separators)."""

    name: str
    prefix: str
    suffix: str
    middle: str
    ends: tuple[str, ...] = ()


STYLES = (
    FimStyle("starcoder", "<fim_prefix>", "<fim_suffix>", "<fim_middle>", ("<fim_pad>", "<file_sep>")),
    FimStyle("qwen", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", ("<|fim_pad|>", "<|file_sep|>", "<|repo_name|>")),
    FimStyle("deepseek", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>", ("<｜EOT｜>",)),
)
TRAINED_STYLE = STYLES[0]  # the tokens `codegen train` adds when fim_rate > 0


@dataclass(frozen=True)
class Infill:
    """A fill-in-the-middle request: the code before the gap and the code after it."""

    prefix: str
    suffix: str


@dataclass(frozen=True)
class Fim:
    """A tokenizer's FIM tokens: ``prefix_id``, ``suffix_id``, ``middle_id``; ``end_ids`` end a middle
    (the sentinels themselves and the style's ``ends`` present in the vocabulary); ``head`` is what
    the tokenizer puts before any text (a beginning-of-sequence or end-of-text token, or nothing)."""

    style: str
    prefix_id: int
    suffix_id: int
    middle_id: int
    end_ids: frozenset[int]
    head: tuple[int, ...]


def find_fim(tokenizer: Any) -> Fim | None:
    """The FIM tokens of a ``tokenizers.Tokenizer``: the first style of ``STYLES`` whose three sentinels
    are among its added (special) tokens; None when no style's are."""
    added = {token.content: index for index, token in tokenizer.get_added_tokens_decoder().items()}
    for style in STYLES:
        if all(t in added for t in (style.prefix, style.suffix, style.middle)):
            ids = (added[style.prefix], added[style.suffix], added[style.middle])
            ends = frozenset(ids) | {added[t] for t in style.ends if t in added}
            return Fim(style.name, *ids, ends, tuple(tokenizer.encode("").ids))
    return None


def no_fim_message(name: str) -> str:
    return (f"{name}: its tokenizer has no fill-in-the-middle tokens ({', '.join(s.prefix for s in STYLES)} ...), so it cannot "
            "complete with a suffix; train with --set fim_rate=0.5 or import a FIM code model (StarCoder, Qwen2.5-Coder, DeepSeek-Coder)")


def infill_ids(fim: Fim, tokenizer: Any, infill: Infill, room: int) -> tuple[list[int], int, int]:
    """``(ids, prefix_cut, suffix_cut)``: the PSM prompt ``head <PRE> prefix <SUF> suffix <MID>`` in at
    most ``room`` tokens. When it does not fit, the prefix loses tokens from its start and the suffix
    from its end (the code nearest the gap is kept; each keeps at least half the room it needs);
    ``prefix_cut`` and ``suffix_cut`` count the tokens dropped. AitkError when not even the
    sentinels fit."""
    prefix = tokenizer.encode(infill.prefix, add_special_tokens=False).ids
    suffix = tokenizer.encode(infill.suffix, add_special_tokens=False).ids
    budget = room - len(fim.head) - 3
    if budget < 0:
        raise AitkError(f"room for {room} prompt tokens: too little for a fill-in-the-middle prompt")
    keep_suffix = min(len(suffix), max(budget // 2, budget - len(prefix)))
    keep_prefix = min(len(prefix), budget - keep_suffix)
    ids = [*fim.head, fim.prefix_id, *prefix[len(prefix) - keep_prefix:], fim.suffix_id, *suffix[:keep_suffix], fim.middle_id]
    return ids, len(prefix) - keep_prefix, len(suffix) - keep_suffix


def fim_rows(rows, fim: Fim, end_id: int, rate: float, rng) -> Any:
    """Context-level FIM on a batch of training windows (``rows``: int array [batch, n + 4]; the
    windows' first n tokens are the text): each row is, with probability ``rate``, cut at two
    uniformly random token positions and rewritten as ``<PRE> prefix <SUF> suffix <MID> middle
    <EOT>``, the same length (Bavarian et al. 2022, section 3, in PSM order; the end-of-text
    ``end_id`` teaches the model where a middle stops). Other rows are left as they are. Draws from
    ``rng`` (numpy Generator) only when ``rate`` > 0. Returns ``rows``, changed in place."""
    import numpy as np

    if rate <= 0:
        return rows
    n = rows.shape[1] - 4
    chosen = rng.random(len(rows)) < rate
    cuts = np.sort(rng.integers(0, n + 1, (len(rows), 2)), axis=1)
    for row, take, (a, b) in zip(rows, chosen, cuts):
        if take:
            text = row[:n].copy()
            row[:] = np.concatenate([[fim.prefix_id], text[:a], [fim.suffix_id], text[b:], [fim.middle_id], text[a:b], [end_id]])
    return rows
