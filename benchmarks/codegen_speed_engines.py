"""The engines of benchmarks/codegen_speed.py, each a ``generate(prompts, new_tokens)`` over token-id
prompts (greedy, a list of new token ids per prompt, cut at ``eos``): HF ``generate()`` (torch fp32),
the codegen bundle's ONNX Runtime generator, llama.cpp through llama-cpp-python's C API; and what
one decoding step reads (``weight_bytes``) and a process's peak memory (``peak_rss``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def peak_rss() -> int:
    """This process's peak resident memory in bytes (VmHWM: the high-water mark of its own memory map,
    unlike ru_maxrss, which a child also takes over from the parent it was forked from)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def hf_engine(path: Path, variant, threads: int, eos: int):
    import torch
    from transformers import AutoModelForCausalLM

    from applied_aitk.usecases.codegen.model import hf_greedy

    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    
    def generate(prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
        ids = np.array(prompts, np.int64)
        return [_until(row.tolist(), eos) for row in hf_greedy(model, ids, np.ones_like(ids), new_tokens, eos, [eos])]

    return generate


def ort_engine(path: Path, variant, threads: int, eos: int):
    from applied_aitk.bundle import load_bundle
    from applied_aitk.runtime import Runtime

    from applied_aitk.usecases.codegen.generate import Sampling
    from applied_aitk.usecases.codegen.plugin import Codegen

    generator = Codegen().generator(load_bundle(path, usecase="codegen"), Runtime(device="cpu", threads=threads, variant=variant))

    def generate(prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
        return [c.tokens for c in generator.generate(prompts, Sampling(max_new_tokens=new_tokens), seeds=[0] * len(prompts))]

    return generate


def llama_engine(path: Path, variant, threads: int, eos: int):
    """Greedy batched decoding through llama.cpp's C API (llama-cpp-python's bindings): every sequence's
    prompt in one decode call, then one call per step for all sequences."""
    import llama_cpp as L

    quiet = L.llama_log_callback(_quiet)
    L.llama_log_set(quiet, None)  # llama.cpp logs every tensor it loads
    L.llama_backend_init()
    model = L.llama_model_load_from_file(str(path).encode(), L.llama_model_default_params())
    n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))
    params = L.llama_context_default_params()
    params.n_seq_max, params.n_ctx, params.n_batch, params.n_ubatch = 8, 8 * 512, 512, 512
    params.n_threads = params.n_threads_batch = threads
    ctx = L.llama_init_from_model(model, params)
    batch = L.llama_batch_init(512, 0, 8)
    
    def decode(entries: list[tuple[int, int, int, bool]]) -> None:  # (token, position, sequence, wants logits)
        batch.n_tokens = len(entries)
        for i, (token, pos, seq, logits) in enumerate(entries):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, pos, 1, logits
            batch.seq_id[i][0] = seq
        if L.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")

    def argmax(i: int) -> int:
        return int(np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, i), shape=(n_vocab,)).argmax())

    def generate(prompts: list[list[int]], new_tokens: int, _keep=quiet) -> list[list[int]]:
        L.llama_memory_clear(L.llama_get_memory(ctx), True)
        chosen = []
        for s, prompt in enumerate(prompts):
            decode([(t, p, s, p == len(prompt) - 1) for p, t in enumerate(prompt)])
            chosen.append(argmax(-1))
        out = [[c] for c in chosen]
        for step in range(new_tokens - 1):
            decode([(row[-1], len(prompts[s]) + step, s, True) for s, row in enumerate(out)])
            for s, row in enumerate(out):
                row.append(argmax(s))
        return [_until(row, eos) for row in out]

    return generate


def _quiet(level: int, text: bytes, user_data) -> None:
    pass


def _until(tokens: list[int], eos: int) -> list[int]:
    return tokens[: tokens.index(eos)] if eos in tokens else tokens


def weight_bytes(kind: str, path: Path, variant) -> int:
    """Bytes of weights one decoding step reads: all but an embedding table used only for lookups."""
    if kind == "hf":
        with open(path / "model.safetensors", "rb") as f:  # the header: 8 bytes of length, then JSON with each tensor's offsets
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        return sum(t["data_offsets"][1] - t["data_offsets"][0] for name, t in header.items() if name != "__metadata__")
    if kind == "llama":
        from gguf import GGUFReader

        tensors = {t.name: int(t.n_bytes) for t in GGUFReader(str(path)).tensors}
        return sum(n for name, n in tensors.items() if name != "token_embd.weight" or "output.weight" not in tensors)
    import onnx

    from applied_aitk.bundle import load_bundle

    model = onnx.load(str(load_bundle(path, usecase="codegen").model_file(variant)), load_external_data=False)
    consumers: dict[str, set[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, set()).add(node.op_type)

    def size(tensor) -> int:
        external = {e.key: e.value for e in tensor.external_data}
        return int(external["length"]) if "length" in external else len(tensor.raw_data) or onnx.numpy_helper.to_array(tensor).nbytes

    return sum(size(t) for t in model.graph.initializer if consumers.get(t.name, {"Gather"}) != {"Gather"})
