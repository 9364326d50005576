"""The decoder-only model: transformers configs by size, the ONNX wrappers (KV cache, token scores) as graphs.

The KV-cache graph (the recipe of optimum's decoder export): ``forward(input_ids, attention_mask, position_ids,
*past)`` builds a DynamicCache from the (key, value) pairs and returns the last position's logits
followed by every layer's keys and values. The prompt pass feeds empty past tensors
``[batch, kv_heads, 0, head_dim]``, so one graph serves the prompt and every new token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from applied_aitk import AitkError, Graph, onnx_export
from applied_aitk.usecases.codegen.families import check_family

PRESETS = {
    "tiny": {"layers": 2, "width": 128, "heads": 4},
    "mini": {"layers": 4, "width": 256, "heads": 4},
    "small": {"layers": 6, "width": 384, "heads": 6},
    "base": {"layers": 12, "width": 768, "heads": 12},
}
ARCHS = ("gpt2", "llama")
PARITY_ATOL = 1e-3


def build_model(arch: str, size: str, vocab_size: int, context: int, eot_id: int, pad_id: int, dropout: float = 0.0):
    """A fresh GPT-2 or Llama style causal LM of a preset size; bos/eos/pad set explicitly."""
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    quiet_transformers()
    if size not in PRESETS:
        raise AitkError(f"setting size={size!r}: expected one of {', '.join(PRESETS)}")
    preset = PRESETS[size]
    ids = {"bos_token_id": eot_id, "eos_token_id": eot_id, "pad_token_id": pad_id}
    if arch == "gpt2":
        config = GPT2Config(
            vocab_size=vocab_size, n_positions=context, n_embd=preset["width"], n_layer=preset["layers"],
            n_head=preset["heads"], resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout, **ids,
        )
    elif arch == "llama":
        config = LlamaConfig(
            vocab_size=vocab_size, max_position_embeddings=context, hidden_size=preset["width"],
            intermediate_size=_round_up(preset["width"] * 8 // 3, 64), num_hidden_layers=preset["layers"],
            num_attention_heads=preset["heads"], num_key_value_heads=preset["heads"], tie_word_embeddings=True,
            attention_dropout=dropout, **ids,
        )
    else:
        raise AitkError(f"setting arch={arch!r}: expected one of {', '.join(ARCHS)}")
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    model.generation_config.update(**ids)
    return model


def quiet_transformers() -> None:
    """transformers' info notes (default loss type, ...) are noise on a CLI's stderr."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def max_positions(model) -> int:
    """The longest sequence the model takes (learned positions or its RoPE maximum)."""
    config = model.config
    return int(getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None) or 2048)


def parameter_count(model) -> int:
    return sum(p.numel() for p in unique_state_dict(model).values())


def cache_shape(model) -> dict[str, int]:
    """Layers, key/value heads and head size, read from the cache a two-token forward pass builds."""
    with torch.no_grad():
        out = model(input_ids=torch.zeros(1, 2, dtype=torch.long), use_cache=True)
    layers = list(getattr(out.past_key_values, "layers", []))
    if not layers or any(getattr(layer, "keys", None) is None for layer in layers):
        raise AitkError(f"{type(model).__name__}: its cache is not a plain key/value cache per layer; cannot export it with a KV cache")
    keys = layers[0].keys
    return {"layers": len(layers), "kv_heads": int(keys.shape[1]), "head_dim": int(keys.shape[3])}


class KVDecoder(torch.nn.Module):
    """One decoding step (or a whole prompt) with past keys and values in and out; attention is ONNX
    Runtime's GroupQueryAttention in the exported graph (plugins/codegen/attention.py), so the cache
    is neither repeated per query head nor concatenated: bound as one buffer for past and present,
    it is written in place."""

    def __init__(self, model, context: int):
        import inspect

        from applied_aitk.usecases.codegen.attention import register
        from applied_aitk.usecases.codegen.fused import fused_attention

        super().__init__()
        self.model = model
        self.heads = int(model.config.num_attention_heads)
        self.kv_heads = cache_shape(model)["kv_heads"]  # what the model builds (a config may name heads it ignores)
        # transformers 5.x names the cache argument `cache` (`past_key_values` warns, then goes)
        self.cache_argument = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        # Llama-style attention with RoPE inside the op (plugins/codegen/fused.py); tables for `context` positions
        self.fused = fused_attention(model, context)
        if self.fused:
            self.joined = self.fused.joined  # a submodule: its weights are the graph's initializers
            self.register_buffer("rotary_cos", self.fused.cos, persistent=False)
            self.register_buffer("rotary_sin", self.fused.sin, persistent=False)
        register()

    def forward(self, input_ids, attention_mask, position_ids, *past):
        from contextlib import nullcontext

        from applied_aitk.usecases.codegen.attention import ATTENTION, PassThroughCache, Step

        rotary = (position_ids, self.rotary_cos, self.rotary_sin) if self.fused else None
        step = Step.of(self.heads, self.kv_heads, attention_mask, input_ids.shape[1], past, rotary)
        config = self.model.config
        implementation, config._attn_implementation = config._attn_implementation, ATTENTION
        try:
            with self.fused.patched() if self.fused else nullcontext():
                out = self.model(
                    input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True, logits_to_keep=1,
                    aitk_step=step, **{self.cache_argument: PassThroughCache()},
                )
        finally:
            config._attn_implementation = implementation
        return (out.logits[:, -1].float(), *step.present)


class TokenScorer(torch.nn.Module):
    """Negative log-likelihood of each next token of right-padded windows (for perplexity)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1]
        logp = torch.log_softmax(logits.float(), dim=-1)
        return -logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)


def past_names(layers: int) -> tuple[list[str], list[str]]:
    inputs = [f"past.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    return inputs, [n.replace("past.", "present.") for n in inputs]


def decoder_graph(model, shape: dict[str, int], vocab_size: int, context: int) -> Graph:
    """The KV-cache graph ("model") for sequences of up to ``context`` tokens: parity against torch for a
    decoding step with a left-padded row, and (``prompt_pass_parity``) for a prompt pass with an empty past."""
    wrapper = KVDecoder(model, context).eval()
    past_in, past_out = past_names(shape["layers"])
    axes = {"input_ids": {0: "batch", 1: "new"}, "attention_mask": {0: "batch", 1: "total"}, "position_ids": {0: "batch", 1: "new"}, "logits": {0: "batch"}}
    axes.update({n: {0: "batch", 2: "past"} for n in past_in})
    axes.update({n: {0: "batch", 2: "total"} for n in past_out})
    step = _decoder_inputs(shape, vocab_size, batch=3, new=1, past=7)
    step[1][0, :2] = 0  # a left-padded row
    return Graph(wrapper, _decoder_inputs(shape, vocab_size, batch=2, new=3, past=5), ["input_ids", "attention_mask", "position_ids", *past_in],
                 ["logits", *past_out], dynamic_axes=axes, parity_inputs=step, atol=PARITY_ATOL, variants=("int8", "fp16", "int4"),
                 custom_opsets={"com.microsoft": 1})


def prompt_pass_parity(graph: Graph, path: Path, shape: dict[str, int], vocab_size: int) -> dict[str, Any]:
    prompt = _decoder_inputs(shape, vocab_size, batch=2, new=6, past=0)
    return onnx_export.check_parity(graph.module, path, prompt, graph.output_names, PARITY_ATOL)


def _decoder_inputs(shape: dict[str, int], vocab_size: int, batch: int, new: int, past: int) -> tuple:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab_size, (batch, new), generator=generator)
    mask = torch.ones(batch, past + new, dtype=torch.long)
    positions = torch.arange(past, past + new).repeat(batch, 1)
    kv = [torch.randn(batch, shape["kv_heads"], past, shape["head_dim"], generator=generator) for _ in range(2 * shape["layers"])]
    return (ids, mask, positions, *kv)


def scorer_graph(model) -> Graph:
    """The token-score graph ("score"; int8 and int4 variants, for their perplexity): per-token negative log-likelihood, for perplexity."""
    vocab_size = int(model.config.vocab_size)
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab_size, (2, 8), generator=generator)
    parity_ids = torch.randint(0, vocab_size, (3, 5), generator=generator)
    parity_mask = torch.ones(3, 5, dtype=torch.long)
    parity_mask[1, 3:] = 0
    return Graph(
        TokenScorer(model).eval(), (ids, torch.ones_like(ids)), ["input_ids", "attention_mask"], ["nll"], name="score", variants=("int8", "int4"),
        dynamic_axes={"input_ids": {0: "batch", 1: "length"}, "attention_mask": {0: "batch", 1: "length"}, "nll": {0: "batch", 1: "predicted"}},
        parity_inputs=(parity_ids, parity_mask), atol=PARITY_ATOL,
    )


def unique_state_dict(model) -> dict[str, torch.Tensor]:
    """The state dict without the second name of tied tensors (safetensors refuses shared memory)."""
    seen: set[tuple[int, tuple]] = set()
    unique = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tuple(tensor.shape))
        if tensor.numel() and key in seen:
            continue
        seen.add(key)
        unique[name] = tensor
    return unique


def model_from_parts(config_dict: dict[str, Any], weights: dict[str, torch.Tensor]):
    """A transformers model from its config dict and a (deduplicated) state dict; tied weights re-tied."""
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM

    config_dict = dict(config_dict)
    config = CONFIG_MAPPING[config_dict.pop("model_type")].from_dict(config_dict)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    model.tie_weights()
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    if unexpected or set(missing) - tied:
        raise AitkError(f"weights do not fit the model: missing {sorted(set(missing) - tied)[:3]}, unexpected {sorted(unexpected)[:3]}")
    return model.eval()


def load_bundle_model(bundle):
    """The bundle's torch model (for fine-tuning, tests and benchmarks; prediction never uses it)."""
    return model_from_parts(bundle.read_json("model_config.json"), bundle.read_weights())


TOKENIZER_FILES = ("tokenizer.json", "vocab.json + merges.txt", "tokenizer.model")


def load_pretrained(hf_dir: Path):
    """A local Hugging Face causal-LM directory (config.json, safetensors) of one of ``families.IMPORT_FAMILIES``,
    in float32. AitkError naming the architecture when it is not among them."""
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    hf_dir = Path(hf_dir)
    check_family(hf_dir)
    if not any(hf_dir.glob("*.safetensors")):
        raise AitkError(f"{hf_dir}: no .safetensors weights (pickled .bin checkpoints are not loaded)")
    try:
        model = AutoModelForCausalLM.from_pretrained(hf_dir, local_files_only=True, use_safetensors=True, dtype=torch.float32, attn_implementation="sdpa")
    except Exception as e:
        raise AitkError(f"{hf_dir}: cannot load as a causal language model ({type(e).__name__}: {e})") from None
    return model.eval()


def load_pretrained_tokenizer(hf_dir: Path):
    """The folder's tokenizer as a ``tokenizers.Tokenizer``: its tokenizer.json, or a slow tokenizer
    (GPT-2 style vocab.json + merges.txt, or a SentencePiece tokenizer.model) converted to a fast one
    by transformers' ``AutoTokenizer`` (``use_fast=True``)."""
    hf_dir = Path(hf_dir)
    if (hf_dir / "tokenizer.json").is_file():
        from applied_aitk.usecases.codegen.data import load_tokenizer

        return load_tokenizer(hf_dir / "tokenizer.json")
    if not ((hf_dir / "vocab.json").is_file() and (hf_dir / "merges.txt").is_file()) and not (hf_dir / "tokenizer.model").is_file():
        raise AitkError(f"{hf_dir}: no tokenizer; expected one of {', '.join(TOKENIZER_FILES)}")
    from transformers import AutoTokenizer

    quiet_transformers()
    try:
        converted = AutoTokenizer.from_pretrained(hf_dir, use_fast=True, local_files_only=True)
    except Exception as e:
        raise AitkError(f"{hf_dir}: cannot convert its slow tokenizer to a fast one ({type(e).__name__}: {e})") from None
    if not getattr(converted, "is_fast", False):
        raise AitkError(f"{hf_dir}: transformers could not convert its slow tokenizer to a fast one")
    return converted.backend_tokenizer


def special_ids(model, tokenizer) -> dict[str, Any]:
    """End-of-sequence ids (one or more) and the padding id, from the generation config, config or tokenizer."""
    gen, config = model.generation_config, model.config
    eos = gen.eos_token_id if gen.eos_token_id is not None else config.eos_token_id
    eos_ids = [int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None]
    if not eos_ids:
        found = [tokenizer.token_to_id(t) for t in ("<|endoftext|>", "</s>", "<eos>")]
        eos_ids = [i for i in found if i is not None][:1]
    pad = gen.pad_token_id if gen.pad_token_id is not None else config.pad_token_id
    if isinstance(pad, list):
        pad = pad[0] if pad else None
    if pad is None:
        pad = eos_ids[0] if eos_ids else 0
    return {"eos_ids": eos_ids, "pad_id": int(pad)}


def hf_greedy(model, ids, mask, max_new_tokens: int, pad_id: int, eos_ids: list[int]):
    """HF ``generate()`` greedy tokens for left-padded ``ids`` (numpy), on the model's device; the
    reference the ORT loop must equal."""
    import numpy as np
    from transformers import GenerationConfig

    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id, eos_token_id=eos_ids or None)
    device = next(model.parameters()).device
    with torch.no_grad():
        out = model.generate(
            input_ids=torch.from_numpy(np.asarray(ids, np.int64)).to(device), attention_mask=torch.from_numpy(np.asarray(mask, np.int64)).to(device),
            generation_config=config,
        )
    return out[:, ids.shape[1]:].cpu().numpy()
