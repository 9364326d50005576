"""Fill-in-the-middle with the FIM tokens code models ship (StarCoder, Qwen2.5-Coder, DeepSeek-Coder):
the PSM prompt's token ids, `predict` with prefix/suffix records and `complete --suffix` on imported
tiny random-initialised checkpoints, and generation stopping at a FIM end token. A model trained with
fim_rate, and the refusal without FIM tokens: test_codegen.py."""

import json

import pytest

from conftest import run_aitk

PREFIX, SUFFIX = "def area(r):\n    ", "\n    return a\n"
CODE = ["def add(a, b):\n    return a + b\n", "class Stack:\n    def push(self, item):\n        self.items.append(item)\n"] * 20


def _tokenizer(special_tokens: list[str], head: str | None = None):
    """A byte-level BPE trained on a little code with ``special_tokens`` first (ids 0, 1, ...); ``head``:
    a token the post-processor puts before every text, as DeepSeek's beginning of sentence."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(CODE, trainers.BpeTrainer(vocab_size=300, special_tokens=special_tokens,
                                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    if head:
        tokenizer.post_processor = processors.TemplateProcessing(single=f"{head} $A", special_tokens=[(head, tokenizer.token_to_id(head))])
    return tokenizer


def _import(folder, family: str, tokenizer, eos: int, zero_head: bool = False):
    """A tiny random-initialised checkpoint of ``family`` with ``tokenizer``, imported as a bundle."""
    import torch
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM

    from applied_aitk.package import package

    from applied_aitk.usecases.codegen.export import import_model
    from applied_aitk.usecases.codegen.plugin import Codegen

    torch.manual_seed(0)
    config = CONFIG_MAPPING[family](vocab_size=tokenizer.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                    bos_token_id=eos, eos_token_id=eos, pad_token_id=eos, tie_word_embeddings=False)
    model = AutoModelForCausalLM.from_config(config)
    if zero_head:  # every logit 0: greedy decoding picks id 0
        torch.nn.init.zeros_(model.lm_head.weight)
    model.save_pretrained(folder / "hf")
    tokenizer.save(str(folder / "hf/tokenizer.json"))
    result, settings = import_model(folder / "hf", threads=1)
    return package(result, folder / "bundle", Codegen(), settings)


def _generator(bundle):
    from applied_aitk.runtime import Runtime

    from applied_aitk.usecases.codegen.plugin import Codegen

    return Codegen().generator(bundle, Runtime(device="cpu", threads=1))


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False).ids


@pytest.fixture(scope="module")
def starcoder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("starcoder2")
    tokenizer = _tokenizer(["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>"])
    return _import(folder, "starcoder2", tokenizer, eos=0), tokenizer


def test_starcoder2_fim_prompt_is_prefix_suffix_middle(starcoder):
    from applied_aitk.usecases.codegen.fim import Infill
    from applied_aitk.usecases.codegen.generate import Sampling

    bundle, tokenizer = starcoder
    generator = _generator(bundle)
    assert generator.fim.style == "starcoder" and generator.fim.end_ids >= {1, 2, 3, 4}
    ids, warning, error = generator.prepare(Infill(PREFIX, SUFFIX), Sampling(max_new_tokens=16))
    assert ids == [1, *_encode(tokenizer, PREFIX), 3, *_encode(tokenizer, SUFFIX), 2] and warning is error is None
    # too long: the prefix keeps its end, the suffix its start (the code nearest the gap), with a warning
    long_prefix, long_suffix = "x = 1\n" * 80, "y = 2\n" * 80
    ids, warning, _ = generator.prepare(Infill(long_prefix, long_suffix), Sampling(max_new_tokens=28))
    assert len(ids) == 100 and ids[0] == 1 and ids[-1] == 2 and "dropped" in warning
    cut = ids.index(3)
    assert ids[1:cut] == _encode(tokenizer, long_prefix)[-(cut - 1):] and ids[cut + 1:-1] == _encode(tokenizer, long_suffix)[: 100 - cut - 2]


def test_predict_fills_in_prefix_suffix_records_beside_prompts(starcoder, tmp_path):
    bundle, tokenizer = starcoder
    records = [{"id": "fim", "prefix": PREFIX, "suffix": SUFFIX}, {"id": "plain", "prompt": PREFIX},
               {"id": "start", "prompt": "", "suffix": SUFFIX}, {"id": "bad", "prefix": PREFIX, "suffix": 3}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    result = run_aitk("codegen", "predict", str(bundle.path), str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out.jsonl"),
                      "--max-new-tokens", "8", "--threads", "1", plugins="codegen")
    assert result.returncode == 3, result.stderr
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())}
    fim_length = 3 + len(_encode(tokenizer, PREFIX)) + len(_encode(tokenizer, SUFFIX))
    assert rows["fim"]["prompt_tokens"] == fim_length and rows["fim"]["finish_reason"] in ("eos", "length")
    assert rows["plain"]["prompt_tokens"] == len(_encode(tokenizer, PREFIX))
    assert rows["start"]["prompt_tokens"] == 3 + len(_encode(tokenizer, SUFFIX))
    assert rows["bad"]["error"].endswith("field suffix: expected a string")
    completed = run_aitk("codegen", "complete", str(bundle.path), PREFIX, "--suffix", SUFFIX, "--max-new-tokens", "8", "--echo",
                         "--threads", "1", plugins="codegen")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith(PREFIX) and completed.stdout.endswith(SUFFIX + "\n")


def test_qwen_style_prompt_and_generation_stops_at_a_fim_end_token(tmp_path):
    from applied_aitk.usecases.codegen.fim import Infill
    from applied_aitk.usecases.codegen.generate import Sampling

    # <|fim_pad|> is id 0, the token a zeroed output layer picks; end of text is 1
    tokenizer = _tokenizer(["<|fim_pad|>", "<|endoftext|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"])
    generator = _generator(_import(tmp_path, "qwen2", tokenizer, eos=1, zero_head=True))
    assert generator.fim.style == "qwen"
    (done,) = generator.complete([Infill(PREFIX, SUFFIX)], Sampling(max_new_tokens=16))
    assert done.prompt_tokens == 3 + len(_encode(tokenizer, PREFIX)) + len(_encode(tokenizer, SUFFIX))
    assert done.finish_reason == "eos" and done.tokens == [] and done.text == ""


def test_deepseek_style_prompt_starts_with_its_beginning_of_sentence():
    from applied_aitk.usecases.codegen.fim import Infill, find_fim, infill_ids

    bos, begin, hole, end = "<｜begin▁of▁sentence｜>", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"
    tokenizer = _tokenizer([bos, "<｜end▁of▁sentence｜>", begin, hole, end], head=bos)
    fim = find_fim(tokenizer)
    assert fim.style == "deepseek" and fim.head == (0,)
    ids, prefix_cut, suffix_cut = infill_ids(fim, tokenizer, Infill(PREFIX, SUFFIX), room=100)
    assert ids == [0, 2, *_encode(tokenizer, PREFIX), 3, *_encode(tokenizer, SUFFIX), 4] and prefix_cut == suffix_cut == 0
    assert find_fim(_tokenizer(["<|endoftext|>"])) is None


def test_training_windows_are_rewritten_prefix_suffix_middle_end_of_text():
    import numpy as np

    from applied_aitk.usecases.codegen.fim import find_fim
    from applied_aitk.usecases.codegen.trainer import batch_at

    fim = find_fim(_tokenizer(["<|endoftext|>", "<|pad|>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>"]))
    stream = np.arange(10, 1010, dtype=np.int32)  # distinct tokens: every piece can be found again
    plain = batch_at(stream, 7, 8, 32, 0).numpy()
    assert (batch_at(stream, 7, 8, 32, 0, (fim, 0), 0.0).numpy() == plain).all()  # fim_rate 0: the same windows
    rewritten = batch_at(stream, 7, 8, 32, 0, (fim, 0), 1.0).numpy()
    for row, original in zip(rewritten, plain):
        text = list(original[:28])
        p, s, m = (list(row).index(t) for t in (2, 3, 4))
        assert p == 0 and p < s < m and row[-1] == 0 and len(row) == 32
        prefix, suffix, middle = list(row[1:s]), list(row[s + 1:m]), list(row[m + 1:-1])
        assert prefix + middle + suffix == text  # PSM: the middle is written last, then end of text
    assert (batch_at(stream, 7, 8, 32, 0, (fim, 0), 1.0).numpy() == rewritten).all()  # a function of (seed, step): resumable


def test_a_record_is_a_prompt_or_an_infill_and_a_lone_prefix_is_a_prompt():
    from applied_aitk.usecases.codegen.data import prompt_of
    from applied_aitk.usecases.codegen.fim import Infill
    from applied_aitk.errors import InputError

    def of(value):
        return prompt_of({"where": "in.jsonl:1", "value": value})

    assert of({"prompt": PREFIX}) == PREFIX and of({"prefix": PREFIX}) == PREFIX
    assert of({"prefix": PREFIX, "suffix": SUFFIX}) == Infill(PREFIX, SUFFIX) == of({"prompt": PREFIX, "suffix": SUFFIX})
    for value, message in (({"prefix": " "}, "field prefix: expected a non-empty string"),
                           ({"text": PREFIX}, "field prompt: expected a non-empty string"),
                           ({"prefix": "", "suffix": ""}, "fields prefix and suffix: expected code in at least one of them")):
        with pytest.raises(InputError, match=f"^in.jsonl:1: {message}$"):
            of(value)
