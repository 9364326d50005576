"""The attention of Llama-style layers as three ONNX Runtime ops: RoPE on the queries and on the keys
(``com.microsoft`` RotaryEmbedding) and GroupQueryAttention.

transformers' attention reshapes the q/k/v projections to ``[batch, heads, length, head_dim]`` (the
shape arithmetic: Shape, Gather, Unsqueeze, Concat per reshape), applies RoPE as a dozen elementwise
ops and reshapes back, in every layer, every step; at batch 1 in int4 those small ops took half of a
decoding step. Here the projections go to the ops as they come (``[batch, length, heads x head_dim]``),
RoPE reads cos/sin tables of every position (computed once, at export, by the model's own rotary
embedding) at the position ids the graph is fed, as transformers does: in the graph an attention
layer is one matrix product for q, k and v together, a Split, two RotaryEmbedding nodes, one
GroupQueryAttention node and the output projection; the MLP's gate and up projections are one matrix
product too (in int4, 4 MatMulNBits per layer instead of 7: fewer, larger calls).
(GroupQueryAttention's own ``do_rotary`` would save the two RoPE nodes, but in ONNX Runtime 1.31 on
the CPU it counts a prompt's positions from the row's first slot, padding included, and a decoding
step's from the position ids: left-padded rows would drift.)

Layers are taken when their attention class is one of ``FUSED`` and the rotary embedding depends on
the position alone (not ``dynamic`` or ``longrope``, whose tables change with the sequence length) and
covers the whole head; other models keep transformers' attention code (plugins/codegen/attention.py)."""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from applied_aitk.usecases.codegen.attention import Step, attend

# Attention classes whose forward is q/k/v projections (or Phi-3's packed qkv_proj), RoPE in the
# rotate-half layout over the whole head, attention, o_proj; nothing else.
FUSED = ("LlamaAttention", "MistralAttention", "Qwen2Attention", "Starcoder2Attention", "GemmaAttention", "Phi3Attention")
# MLPs computing down_proj(act_fn(gate_proj(x)) * up_proj(x)): gate and up become one matrix product
FUSED_MLP = ("LlamaMLP", "MistralMLP", "Qwen2MLP", "GemmaMLP")
POSITION_ONLY_ROPE = ("default", "linear", "llama3", "yarn")


@dataclass
class Fused:
    """What the fused layers share: their attention modules and the cos/sin tables ``[positions, head_dim / 2]``."""

    modules: list[torch.nn.Module]
    mlps: list[torch.nn.Module]
    joined: torch.nn.ModuleList
    """the joined q/k/v and gate/up projections (``_join``), for the export wrapper to hold"""
    cos: torch.Tensor
    sin: torch.Tensor

    @contextmanager
    def patched(self) -> Iterator[None]:
        """The modules' forward replaced by ``_forward`` and ``_mlp_forward`` while the block runs (export and parity checks)."""
        patches = [(m, _forward) for m in self.modules] + [(m, _mlp_forward) for m in self.mlps]
        for module, forward in patches:
            module.forward = types.MethodType(forward, module)
        try:
            yield
        finally:
            for module, _ in patches:
                del module.forward


def fused_attention(model, positions: int) -> Fused | None:
    """The fused layers of ``model`` with tables for ``positions`` positions, or None when any layer's
    attention cannot be fused (then none is)."""
    modules = [m for m in model.modules() if hasattr(m, "o_proj") and hasattr(m, "layer_idx")]
    if not modules or any(type(m).__name__ not in FUSED for m in modules):
        return None
    rotary = getattr(model.get_decoder(), "rotary_emb", None)
    if rotary is None or getattr(rotary, "rope_type", "default") not in POSITION_ONLY_ROPE:
        return None
    head_dim = int(modules[0].head_dim)
    with torch.no_grad():
        cos, sin = rotary(torch.zeros(1, dtype=torch.float32), torch.arange(positions)[None])
    half = head_dim // 2
    if cos.shape[-1] != head_dim or not (torch.equal(cos[..., :half], cos[..., half:]) and torch.equal(sin[..., :half], sin[..., half:])):
        return None  # partial rotary, or not the rotate-half layout
    joined = [_join(m, "aitk_qkv", [m.q_proj, m.k_proj, m.v_proj]) for m in modules if not hasattr(m, "qkv_proj")]
    mlps = [m for m in model.modules() if type(m).__name__ in FUSED_MLP]
    joined += [_join(m, "aitk_gate_up", [m.gate_proj, m.up_proj]) for m in mlps]
    return Fused(modules, mlps, torch.nn.ModuleList(joined), cos[0, :, :half].float().contiguous(), sin[0, :, :half].float().contiguous())


def _join(module: torch.nn.Module, name: str, linears: list[torch.nn.Linear]) -> torch.nn.Linear:
    """``linears`` (on the same input) as one ``torch.nn.Linear``, their outputs side by side: one matrix
    product (one MatMulNBits in int4) instead of several. Kept in ``module``'s ``__dict__`` as ``name``,
    not as a submodule: the model's state dict (the bundle's weights) stays transformers' own; the
    export wrapper holds it as a module, so its weights are initializers the quantizers see."""
    weight = torch.cat([x.weight.detach() for x in linears])
    joined = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=any(x.bias is not None for x in linears))
    with torch.no_grad():
        joined.weight.copy_(weight)
        if joined.bias is not None:
            joined.bias.copy_(torch.cat([x.bias.detach() if x.bias is not None else torch.zeros(x.out_features) for x in linears]))
    joined.requires_grad_(False)
    module.__dict__[name] = joined
    return joined


def _forward(self, hidden_states: torch.Tensor, *args, aitk_step: Step | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """A fused layer's attention: ``hidden_states`` ``[batch, new, hidden]`` -> ``([batch, new, hidden], None)``."""
    if aitk_step is None or aitk_step.rotary is None:
        raise RuntimeError("fused attention runs only inside the KV-cache export wrapper")
    heads, kv_heads, head_dim = aitk_step.heads, aitk_step.kv_heads, int(self.head_dim)
    joined = self.qkv_proj(hidden_states) if hasattr(self, "qkv_proj") else self.aitk_qkv(hidden_states)
    query, key, value = joined.split([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], dim=-1)
    positions, cos, sin = aitk_step.rotary
    query, key = _Rotary.apply(query, positions, cos, sin, heads), _Rotary.apply(key, positions, cos, sin, kv_heads)
    window = self.sliding_window if hasattr(self, "sliding_window") else getattr(self.config, "sliding_window", None)
    output = attend(aitk_step, self.layer_idx, query, key, value, float(self.scaling), int(window or 0))
    return self.o_proj(output), None


def _mlp_forward(self, x: torch.Tensor) -> torch.Tensor:
    """A fused MLP: ``down_proj(act_fn(gate) * up)`` with gate and up from one matrix product."""
    width = self.down_proj.in_features
    gate, up = self.aitk_gate_up(x).split([width, width], dim=-1)
    return self.down_proj(self.act_fn(gate) * up)


class _Rotary(torch.autograd.Function):
    """RoPE in the rotate-half layout on ``[batch, new, heads * head_dim]`` at ``positions`` ``[batch, new]``
    (int64), tables ``[positions, head_dim / 2]``. ``forward``: the reference (transformers'
    ``apply_rotary_pos_emb``); ``symbolic``: ONNX Runtime's RotaryEmbedding node."""

    @staticmethod
    def forward(ctx, states, positions, cos, sin, heads: int):
        batch, new, _ = states.shape
        x = states.view(batch, new, heads, -1)
        x1, x2 = x.chunk(2, dim=-1)
        c, s = cos[positions][:, :, None, :], sin[positions][:, :, None, :]
        return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).reshape(batch, new, -1)

    @staticmethod
    def symbolic(g, states, positions, cos, sin, heads):
        output = g.op("com.microsoft::RotaryEmbedding", states, positions, cos, sin, interleaved_i=0)
        output.setType(states.type())
        return output
