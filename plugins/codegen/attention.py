"""Attention as ONNX Runtime's ``com.microsoft`` GroupQueryAttention in the exported KV-cache graph.

The plain export concatenates every layer's past keys and values with the new ones each step, and for
grouped-query models also repeats them per query head (``repeat_kv``): at batch 1 those copies cost more
than the attention itself. GroupQueryAttention reads the key/value heads as they are, and when the
caller binds one buffer as both ``past`` and ``present`` (ONNX Runtime's IO binding, ``KVBuffers``
in plugins/codegen/generate.py) it writes the new token's keys and values into it in place: nothing is
copied per step. (Ainslie et al. 2023, "GQA: Training Generalized Multi-Query Transformer Models from
Multi-Head Checkpoints".)

How: transformers calls the attention function registered under ``ATTENTION`` in place of sdpa; a
cache that hands the new keys and values back unchanged keeps transformers from concatenating them;
the function calls ``_GroupQueryAttention``, whose torch ``forward`` is the reference (the parity check
runs it) and whose ``symbolic`` is the one node the ONNX exporter writes. Left padding stays as in
transformers: all rows have the same length, and the attention mask becomes the op's additive
``attention_bias`` (padding keys get ``MASKED``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

ATTENTION = "aitk_gqa"
# exp(-1e4) is 0 in float32 and -1e4 fits float16: padding keys get no weight, and a padding query
# (which sees only padding) gets a finite average instead of NaN, which would reach the cache.
MASKED = -1e4


@dataclass
class Step:
    """What every layer's attention shares in one call of the KV-cache graph: the past keys and values
    (``[batch, kv_heads, past, head_dim]`` per layer, key then value), the op's ``seqlens_k``
    (``[batch]`` int32, total length - 1), ``total_sequence_length`` (int32 scalar) and the additive
    mask ``[batch, 1, new, total]``; each layer appends its present key and value."""

    heads: int
    kv_heads: int
    past: list[torch.Tensor]
    seqlens_k: torch.Tensor
    total: torch.Tensor
    bias: torch.Tensor
    rotary: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    """position ids ``[batch, new]`` and cos, sin tables ``[positions, head_dim / 2]``, for layers that
    apply RoPE as one op (plugins/codegen/fused.py)"""
    present: list[torch.Tensor] = field(default_factory=list)

    @classmethod
    def of(cls, heads: int, kv_heads: int, attention_mask: torch.Tensor, new: int, past: list[torch.Tensor],
           rotary: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> Step:
        ones = torch.ones_like(attention_mask, dtype=torch.int32)
        seqlens_k = ones.sum(1, dtype=torch.int32) - 1
        total = ones[0].sum(dtype=torch.int32)
        bias = (1.0 - attention_mask.to(torch.float32))[:, None, None, :] * MASKED
        return cls(heads, kv_heads, list(past), seqlens_k, total, bias.expand(-1, -1, new, -1), rotary)


class PassThroughCache(DynamicCache):
    """Hands each layer's new keys and values back as they are: ``group_query_attention`` joins them
    to the past itself."""

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        return key_states, value_states


def register() -> None:
    """Make ``ATTENTION`` a transformers attention implementation (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION, group_query_attention)


def group_query_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, aitk_step: Step | None = None, **kwargs):
    """transformers' attention-function signature: ``query`` ``[batch, heads, new, head_dim]``, ``key``
    and ``value`` ``[batch, kv_heads, new, head_dim]`` (this step's only, after RoPE); returns
    ``([batch, new, heads, head_dim], None)``. The past comes from ``aitk_step``, where the present goes."""
    if aitk_step is None:
        raise RuntimeError(f"attention {ATTENTION!r} runs only inside the KV-cache export wrapper")
    batch, _, new, head_dim = query.shape
    heads, kv_heads = aitk_step.heads, aitk_step.kv_heads  # plain ints: traced shapes cannot be attributes
    window = kwargs.get("sliding_window") or getattr(module, "sliding_window", None) or 0
    softcap = kwargs.get("softcap") or 0.0
    scale = float(scaling) if scaling is not None else head_dim ** -0.5
    output = attend(aitk_step, module.layer_idx, _flat(query), _flat(key), _flat(value), scale, int(window), float(softcap))
    return output.view(batch, new, heads, head_dim), None


def attend(step: Step, layer: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float, window: int = 0,
           softcap: float = 0.0) -> torch.Tensor:
    """One layer's attention on ``[batch, new, heads * head_dim]`` queries and ``[batch, new, kv_heads * head_dim]``
    keys and values (after RoPE); the layer's present keys and values go to ``step``. Returns ``[batch, new, heads * head_dim]``."""
    i = 2 * layer
    output, present_key, present_value = _GroupQueryAttention.apply(
        query, key, value, step.past[i], step.past[i + 1], step.seqlens_k, step.total, step.bias, step.heads, step.kv_heads, scale, window, softcap)
    step.present[i:i + 2] = [present_key, present_value]
    return output


def _flat(states: torch.Tensor) -> torch.Tensor:
    """``[batch, heads, length, head_dim]`` -> ``[batch, length, heads * head_dim]`` (the op's layout)."""
    batch, heads, length, head_dim = states.shape
    return states.transpose(1, 2).reshape(batch, length, heads * head_dim)


class _GroupQueryAttention(torch.autograd.Function):
    """``forward``: the reference in torch (past exactly as long as the past); ``symbolic``: the ONNX node."""

    @staticmethod
    def forward(ctx, query, key, value, past_key, past_value, seqlens_k, total, bias, heads: int, kv_heads: int, scale: float,
                window: int, softcap: float):
        batch, new, _ = query.shape
        head_dim = query.shape[2] // heads
        q = query.view(batch, new, heads, head_dim).transpose(1, 2)
        present_key = torch.cat([past_key, key.view(batch, new, kv_heads, head_dim).transpose(1, 2)], dim=2)
        present_value = torch.cat([past_value, value.view(batch, new, kv_heads, head_dim).transpose(1, 2)], dim=2)
        k = present_key.repeat_interleave(heads // kv_heads, dim=1)
        v = present_value.repeat_interleave(heads // kv_heads, dim=1)
        scores = (q @ k.transpose(2, 3)) * scale
        if softcap:
            scores = softcap * torch.tanh(scores / softcap)
        length = k.shape[2]
        rows = torch.arange(length - new, length)[:, None]
        columns = torch.arange(length)[None, :]
        hidden = columns > rows
        if window:
            hidden |= columns <= rows - window
        scores = scores + bias + torch.where(hidden, float("-inf"), 0.0)
        output = torch.softmax(scores, dim=-1) @ v
        return output.transpose(1, 2).reshape(batch, new, heads * head_dim), present_key, present_value

    @staticmethod
    def symbolic(g, query, key, value, past_key, past_value, seqlens_k, total, bias, heads, kv_heads, scale, window, softcap):
        absent = g.op("prim::Constant")
        absent.setType(torch._C.OptionalType.ofTensor())
        attributes = {"num_heads_i": heads, "kv_num_heads_i": kv_heads, "scale_f": scale}
        if window:
            attributes["local_window_size_i"] = window  # keys within `window` positions, the query's own included (as transformers)
        if softcap:
            attributes["softcap_f"] = softcap
        outputs = g.op("com.microsoft::GroupQueryAttention", query, key, value, past_key, past_value, seqlens_k, total,
                       absent, absent, absent, bias, outputs=3, **attributes)
        for output, like in zip(outputs, (query, past_key, past_value)):  # types given: no "shape inference missing" warnings
            output.setType(like.type().with_sizes([None] * 3 if like is query else [None] * 4))
        return outputs
