"""`codegen import` of the decoder families people bring code models in: for each, a tiny random-initialised
checkpoint whose exported KV-cache loop gives the greedy tokens of HF ``generate()`` for 32 new tokens
(left-padded batch; RoPE scaling, sliding windows, tied and untied embeddings among them); a slow
tokenizer converted to a fast one; an unsupported architecture refused in one line naming it."""

import json

import pytest

from conftest import run_aitk

COMMON = dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              max_position_embeddings=128, bos_token_id=0, eos_token_id=0, pad_token_id=0)
FAMILIES = {
    "gpt2": {},  # learned positions, tied embeddings
    "gpt_neox": {"rotary_pct": 0.25},  # partial rotary, untied
    "llama": {"rope_scaling": {"rope_type": "linear", "factor": 2.0}, "tie_word_embeddings": False},
    "mistral": {"sliding_window": 16},  # prompt + new tokens run past the window
    "qwen2": {"tie_word_embeddings": True},
    "starcoder2": {"sliding_window": 16},
    "phi3": {},
    "gemma": {"head_dim": 8},
}


@pytest.fixture(scope="module")
def slow_tokenizer(tmp_path_factory):
    """A GPT-2 style byte-level BPE trained on a little code, saved as vocab.json + merges.txt only."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    folder = tmp_path_factory.mktemp("tokenizer")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    text = ["def add(a, b):\n    return a + b\n", "class Stack:\n    def push(self, item):\n        self.items.append(item)\n"] * 20
    tokenizer.train_from_iterator(text, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer.model.save(str(folder))
    return folder, tokenizer


def _checkpoint(folder, family: str, tokenizer=None, **overrides):
    """A tiny random-initialised ``family`` checkpoint (COMMON, FAMILIES[family], then ``overrides``) saved to ``folder``."""
    import torch
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(CONFIG_MAPPING[family](**{**COMMON, **FAMILIES[family], **overrides}))
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save(str(folder / "tokenizer.json"))
    return model.eval()


@pytest.mark.parametrize("family", FAMILIES)
def test_imported_family_greedy_tokens_equal_hf_generate(family, tmp_path, slow_tokenizer):
    import numpy as np

    from applied_aitk.package import package
    from applied_aitk.runtime import Runtime
    from applied_aitk.text import pad_ids

    from applied_aitk.usecases.codegen.export import _until_eos, import_model
    from applied_aitk.usecases.codegen.generate import Sampling
    from applied_aitk.usecases.codegen.model import hf_greedy
    from applied_aitk.usecases.codegen.plugin import Codegen

    model = _checkpoint(tmp_path / "hf", family, slow_tokenizer[1])
    result, config = import_model(tmp_path / "hf", threads=1)
    bundle = package(result, tmp_path / "bundle", Codegen(), config)
    assert bundle.assets["model_type"] == family
    generator = Codegen().generator(bundle, Runtime(device="cpu", threads=1))
    prompts = [list(map(int, np.random.default_rng(k).integers(1, 300, n))) for k, n in enumerate((24, 17, 9))]
    ours = generator.generate(prompts, Sampling(max_new_tokens=32), seeds=[0] * 3)
    ids, mask = pad_ids(prompts, generator.pad, side="left")
    theirs = hf_greedy(model, ids, mask, 32, generator.pad, sorted(generator.eos))
    assert [c.tokens for c in ours] == [_until_eos(list(map(int, t)), generator.eos) for t in theirs]
    assert sum(len(c.tokens) for c in ours) > 32  # not all stopped at once


def test_a_slow_tokenizer_is_converted_to_a_fast_one(tmp_path, slow_tokenizer):
    import shutil

    folder, tokenizer = slow_tokenizer
    _checkpoint(tmp_path / "hf", "gpt2")
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(folder / name, tmp_path / "hf" / name)
    result = run_aitk("codegen", "import", str(tmp_path / "hf"), "--out", str(tmp_path / "bundle"), "--json", "--threads", "1", plugins="codegen")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["greedy_equals_hf_generate"] is True
    from applied_aitk.usecases.codegen.data import load_tokenizer

    converted = load_tokenizer(tmp_path / "bundle/tokenizer.json")
    code = "def add(a, b):\n    return a + b\n"
    assert converted.encode(code).ids == tokenizer.encode(code).ids and converted.decode(converted.encode(code).ids) == code
    # no fill-in-the-middle tokens: --suffix is refused in one line naming the bundle
    refused = run_aitk("codegen", "complete", str(tmp_path / "bundle"), "def f(x):", "--suffix", "\n    return y\n", plugins="codegen")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'bundle'}: its tokenizer has no fill-in-the-middle tokens")


@pytest.mark.parametrize("family, architecture", [("deepseek_v3", "DeepseekV3ForCausalLM"), ("gemma2", "Gemma2ForCausalLM"), ("bert", "BertModel")])
def test_an_unsupported_architecture_is_refused_by_name(tmp_path, family, architecture):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf/config.json").write_text(json.dumps({"model_type": family, "architectures": [architecture]}))
    result = run_aitk("codegen", "import", str(tmp_path / "hf"), "--out", str(tmp_path / "bundle"), plugins="codegen")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    line = [x for x in result.stderr.splitlines() if x.strip()][-1]
    assert f"architecture {architecture} (model_type '{family}') is not supported" in line and "llama" in line
    assert not (tmp_path / "bundle").exists()


def test_a_local_llama_imports_with_int4_and_int8_variants_written_checked_and_run(tmp_path, slow_tokenizer):
    """One `codegen import` (a Llama whose pad id is not its end of text) serves the import summary, both variants and
    their use: complete and evaluate with int4, complete with int8."""
    _checkpoint(tmp_path / "hf", "llama", slow_tokenizer[1], pad_token_id=1)
    result = run_aitk("codegen", "import", str(tmp_path / "hf"), "--out", str(tmp_path / "bundle"), "--json", "--quantize", "int4", "--quantize", "int8",
                      "--threads", "1", plugins="codegen")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["model_type"] == "llama" and summary["kv_heads"] == 2 and summary["greedy_equals_hf_generate"] is True
    manifest = json.loads((tmp_path / "bundle/manifest.json").read_text())
    assert set(manifest["graphs"]["model"]["variants"]) == {"int4", "int8"}  # one export, both variants
    assert {"model.int4.onnx", "model.int8.onnx"} <= set(manifest["files"])
    assert 0 <= manifest["graphs"]["model"]["variants"]["int8"]["greedy_tokens_equal_fp32"] <= 1
    completed = run_aitk("codegen", "complete", str(tmp_path / "bundle"), "def f(x):", "--max-new-tokens", "5", "--quantize", "int8", plugins="codegen")
    assert completed.returncode == 0, completed.stderr
    missing = run_aitk("codegen", "import", str(tmp_path), "--out", str(tmp_path / "b2"), plugins="codegen")
    assert missing.returncode == 1 and "not a Hugging Face model directory" in missing.stderr
    import onnx

    ops = {n.op_type for n in onnx.load(str(tmp_path / "bundle/model.int4.onnx")).graph.node}
    assert "MatMulNBits" in ops
    # random weights: near-flat logits, so greedy agreement says little; perplexity is the quality check
    decoder, score = (manifest["graphs"][g]["variants"]["int4"] for g in ("model", "score"))
    assert 0 <= decoder["greedy_tokens_equal_fp32"] <= 1 and decoder["compared_tokens"] > 0
    assert score["perplexity_tokens"] > 100 and abs(score["perplexity"] / score["perplexity_fp32"] - 1) < 0.05
    completed = run_aitk("codegen", "complete", str(tmp_path / "bundle"), "def add(a, b):", "--max-new-tokens", "8", "--quantize", "int4",
                         plugins="codegen")
    assert completed.returncode == 0 and "8 tokens" in completed.stderr, completed.stderr
    from applied_aitk.usecases.codegen.export import REFERENCE

    scored = run_aitk("codegen", "evaluate", str(tmp_path / "bundle"), str(REFERENCE), "--quantize", "int4", "--json", plugins="codegen")
    assert scored.returncode == 0, scored.stderr
    assert abs(json.loads(scored.stdout)["perplexity"] / score["perplexity"] - 1) < 0.05


def exported_logits_match(bundle_dir, out) -> None:
    """`export-hf BUNDLE OUT` writes a folder whose from_pretrained model gives the bundle's ONNX logits
    (a prompt pass of the KV-cache graph) and whose tokenizer encodes as the bundle's."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from applied_aitk.bundle import load_bundle
    from applied_aitk.runtime import Runtime

    from applied_aitk.usecases.codegen.plugin import Codegen

    result = run_aitk("codegen", "export-hf", str(bundle_dir), str(out), plugins="codegen")
    assert result.returncode == 0, result.stderr
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    generator = Codegen().generator(load_bundle(bundle_dir, usecase="codegen"), Runtime(device="cpu", threads=1))
    prompt = "def add(a, b):\n    return"
    ids = generator.encode(prompt)
    assert tokenizer(prompt)["input_ids"] == ids
    layers, heads, dim = (load_bundle(bundle_dir).assets[k] for k in ("layers", "kv_heads", "head_dim"))
    feeds = {"input_ids": np.array([ids]), "attention_mask": np.ones((1, len(ids)), np.int64), "position_ids": np.arange(len(ids))[None]}
    feeds.update({f"past.{i}.{kv}": np.zeros((1, heads, 0, dim), np.float32) for i in range(layers) for kv in ("key", "value")})
    onnx_logits = generator.session.run(feeds)[0]
    with torch.no_grad():
        hf_logits = model(torch.tensor([ids])).logits[:, -1].numpy()
    np.testing.assert_allclose(onnx_logits, hf_logits, atol=1e-4, rtol=1e-4)


def test_an_imported_bundle_exports_back_to_hugging_face(tmp_path, slow_tokenizer):
    from applied_aitk.package import package

    from applied_aitk.usecases.codegen.export import import_model
    from applied_aitk.usecases.codegen.plugin import Codegen

    _checkpoint(tmp_path / "hf", "gpt_neox", slow_tokenizer[1])
    result, config = import_model(tmp_path / "hf", threads=1)
    package(result, tmp_path / "bundle", Codegen(), config)
    exported_logits_match(tmp_path / "bundle", tmp_path / "out")
    again = run_aitk("codegen", "export-hf", str(tmp_path / "bundle"), str(tmp_path / "out"), plugins="codegen")
    assert again.returncode == 1 and "already exists; --force" in again.stderr
