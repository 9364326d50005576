"""The codegen use case as a user relies on it: training lowers held-out loss, ORT greedy decoding
equals HF generate(), stop sequences stop, bad prompts become error rows, reference solutions pass
in the sandbox, evaluate refuses to run code unisolated (attacks on the sandbox: test_sandbox.py; serving
and the Ray engine: test_codegen_serve.py)."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from conftest import CODEGEN_TINY as TINY
from conftest import REPO, assert_report, codegen
from conftest import codegen_train as train


@pytest.fixture
def trained(codegen_trained):
    return codegen_trained


@pytest.fixture
def loaded(codegen_loaded):
    return codegen_loaded


def test_a_few_training_steps_lower_the_held_out_loss(trained):
    manifest = json.loads((trained["bundle"] / "manifest.json").read_text())
    metrics, history = manifest["metrics"], manifest["metrics"]["history"]
    assert [h["steps"] for h in history] == [20, 40, 60] and metrics["stopped"] == "max_steps"
    assert (trained["bundle"] / "history.csv").is_file() and not (trained["root"] / "bundle.ckpt").exists()  # nothing left beside it
    assert history[-1]["heldout_loss"] < history[0]["heldout_loss"] < math.log(512)
    assert metrics["heldout_perplexity"] == pytest.approx(math.exp(metrics["heldout_loss"]))
    assert manifest["graphs"]["model"]["greedy_equals_hf_generate"] is True
    assert manifest["graphs"]["model"]["parity"]["max_abs_diff"]["logits"] < 1e-3
    assert {"model.onnx", "score.onnx", "tokenizer.json", "weights.safetensors"} <= set(manifest["files"])


def test_a_corpus_spec_that_matches_nothing_says_so(tmp_path):
    result = train(f"{tmp_path}/nothing/*.py,stdlib-not", tmp_path / "b", TINY)
    assert result.returncode == 1 and "no such file or directory" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "b").exists()


def test_training_over_an_interrupted_run_without_resume_says_it_starts_over(tmp_path):
    (tmp_path / "b.ckpt").mkdir()
    (tmp_path / "b.ckpt" / "state.json").write_text("{}")
    result = train(f"{tmp_path}/nothing/*.py", tmp_path / "b", TINY)
    assert result.returncode == 1
    assert f"warning: {tmp_path / 'b.ckpt'}: an interrupted run is there; this run starts over" in result.stderr


def test_ort_greedy_tokens_equal_hf_generate_with_left_padding(loaded):
    from applied_aitk.usecases.codegen.generate import Sampling
    from applied_aitk.usecases.codegen.model import hf_greedy, load_bundle_model

    bundle, generator = loaded
    model = load_bundle_model(bundle)
    prompts = [generator.encode(p) for p in ("def add(a, b):\n", "import os\n\n\nclass Stack:\n    def push(self, item):\n", "x")]
    width = max(map(len, prompts))
    ids = np.full((3, width), generator.pad)
    mask = np.zeros_like(ids)
    for b, p in enumerate(prompts):
        ids[b, width - len(p):], mask[b, width - len(p):] = p, 1
    expected = hf_greedy(model, ids, mask, 24, generator.pad, sorted(generator.eos))
    batched = generator.generate(prompts, Sampling(max_new_tokens=24), seeds=[0, 0, 0])
    alone = [generator.generate([p], Sampling(max_new_tokens=24), seeds=[0])[0] for p in prompts]
    for want, got, single in zip(expected, batched, alone):
        want = list(want[: next((i for i, t in enumerate(want) if t in generator.eos), len(want))])
        assert got.tokens == want and single.tokens == want


def test_the_cache_is_updated_in_place_by_group_query_attention(loaded):
    """The graph's attention is GroupQueryAttention and nothing concatenates a past; the loop that binds
    one buffer as past and present gives the tokens of the loop whose cache grows (older bundles')."""
    import copy

    import onnx

    from applied_aitk.usecases.codegen.generate import Sampling

    bundle, generator = loaded
    graph = onnx.load(str(bundle.model_file(None))).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("GroupQueryAttention") == bundle.assets["layers"] and generator.in_place
    assert not [n for n in graph.node if n.op_type == "Concat" and any(i.startswith("past.") for i in n.input)]
    growing = copy.copy(generator)
    growing.in_place = False
    prompts = [generator.encode("def add(a, b):\n"), generator.encode("x")]
    sampling = Sampling(max_new_tokens=12)
    assert [c.tokens for c in generator.generate(prompts, sampling, [0, 0])] == [c.tokens for c in growing.generate(prompts, sampling, [0, 0])]


def test_repetition_penalty_and_sampling_follow_transformers(loaded):
    import torch

    from applied_aitk.usecases.codegen.generate import Sampling
    from applied_aitk.usecases.codegen.model import load_bundle_model

    bundle, generator = loaded
    prompt = generator.encode("def add(a, b):\n")
    ours = generator.generate([prompt], Sampling(max_new_tokens=16, repetition_penalty=1.5), seeds=[0])[0]
    with torch.no_grad():
        theirs = load_bundle_model(bundle).generate(torch.tensor([prompt]), max_new_tokens=16, do_sample=False, repetition_penalty=1.5,
                                                    pad_token_id=generator.pad, eos_token_id=sorted(generator.eos))
    assert ours.tokens == theirs[0, len(prompt):].tolist()[: len(ours.tokens)]
    sampled = [generator.generate([prompt], Sampling(max_new_tokens=16, temperature=1.0, top_k=20, top_p=0.9, seed=s), seeds=[0])[0].tokens for s in (1, 1, 2)]
    assert sampled[0] == sampled[1] != sampled[2]


def test_stop_sequences_stop(loaded):
    from applied_aitk.usecases.codegen.generate import Sampling

    _, generator = loaded
    free = generator.complete(["def add(a, b):\n"], Sampling(max_new_tokens=40))[0]
    assert len(free.text) > 10, free
    stop = free.text[6:9]
    stopped = generator.complete(["def add(a, b):\n"], Sampling(max_new_tokens=40, stop=(stop,)))[0]
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[: free.text.index(stop)]
    assert len(stopped.tokens) < len(free.tokens)


def test_complete_streams_the_same_text_as_predict(trained, loaded):
    from applied_aitk.usecases.codegen.generate import Sampling

    _, generator = loaded
    result = codegen("complete", trained["bundle"], "def add(a, b):", "--max-new-tokens", "20")
    assert result.returncode == 0, result.stderr
    assert result.stdout == generator.complete(["def add(a, b):"], Sampling(max_new_tokens=20))[0].text + "\n"
    assert "tokens/s" in result.stderr
    empty = codegen("complete", trained["bundle"], "")
    assert empty.returncode == 1 and empty.stderr.strip() == "error: prompt: expected a non-empty string"
    none = codegen("complete", trained["bundle"], "def add(a, b):", "--max-new-tokens", "0")  # was: the default 128
    assert none.returncode == 1 and none.stderr.strip() == "error: max_new_tokens 0: expected at least 1"


def test_a_model_trained_with_fim_rate_fills_in_the_middle(trained, loaded, tmp_path):
    from applied_aitk.usecases.codegen.fim import Infill
    from applied_aitk.usecases.codegen.generate import Sampling

    _, generator = loaded
    assert generator.fim.style == "starcoder" and (generator.fim.prefix_id, generator.fim.suffix_id, generator.fim.middle_id) == (2, 3, 4)
    prefix, suffix = "def add(a, b):\n    ", "\n    return c\n"
    ids = generator.prepare(Infill(prefix, suffix), Sampling(max_new_tokens=16))[0]
    assert ids[:2] == [0, 2] and ids[-1] == 4 and ids.count(3) == 1  # end of text, as every training text begins
    result = codegen("complete", trained["bundle"], prefix, "--suffix", suffix, "--max-new-tokens", "16")
    assert result.returncode == 0, result.stderr
    assert result.stdout == generator.complete([Infill(prefix, suffix)], Sampling(max_new_tokens=16))[0].text + "\n"


def test_bad_prompts_become_error_rows(trained, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_bytes(b"\n".join([
        json.dumps({"prompt": "def add(a, b):\n"}).encode(),
        json.dumps({"prompt": ""}).encode(),
        b'{"prompt": "caf\xe9"}',
        b"not json",
        json.dumps({"id": "long", "prompt": "x = 1\n" * 300}).encode(),
    ]) + b"\n")
    out = tmp_path / "out.jsonl"
    result = codegen("predict", trained["bundle"], prompts, "--out", out, "--max-new-tokens", "8")
    assert result.returncode == 3, result.stderr
    rows = {row["id"]: row for row in map(json.loads, out.read_text().splitlines())}
    assert rows[f"{prompts}:1"]["new_tokens"] == 8 and "error" not in rows[f"{prompts}:1"]
    assert rows[f"{prompts}:2"]["error"].endswith("field prompt: expected a non-empty string")
    at = prompts.read_bytes().split(b"\n")[2].index(b"\xe9")
    assert rows[f"{prompts}:3"]["error"] == f"{prompts}:3: not valid UTF-8 (byte {at} of the line)"
    assert "not valid JSON" in rows[f"{prompts}:4"]["error"]
    assert "kept its last 56 tokens" in rows["long"]["warning"] and rows["long"]["prompt_tokens"] == 56
    strict = codegen("predict", trained["bundle"], prompts, "--out", tmp_path / "strict.jsonl", "--max-new-tokens", "8", "--on-long", "error")
    long_row = [json.loads(line) for line in (tmp_path / "strict.jsonl").read_text().splitlines()][-1]
    assert strict.returncode == 3 and long_row["error"].startswith(f"{prompts}:5: ") and "longer than 56" in long_row["error"]


def test_evaluate_reports_perplexity_and_pass_at_k(trained):
    report = trained["root"] / "report"
    result = codegen("evaluate", trained["bundle"], trained["data"] / "eval", "--json", "--max-new-tokens", "16", "--report", report)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["problems"] == 4 and 0 <= metrics["pass@1"] <= 1
    assert metrics["perplexity"] > 1 and metrics["files"] == 1
    assert metrics["sandbox"].startswith("bubblewrap")
    assert_report(report, "pass_at_k.png", "training_curves.png", "perplexity_per_file.png")
    assert len((report / "per_problem.csv").read_text().splitlines()) == 1 + 4
    (row,) = list(__import__("csv").DictReader((report / "per_file.csv").open()))  # the one source file: the overall figures
    assert row["file"] == "sched.py" and int(row["tokens"]) == metrics["tokens"] and float(row["perplexity"]) == pytest.approx(metrics["perplexity"], rel=1e-3)


def test_prompts_in_windows_encodings_and_bytes_that_are_not_utf8(trained, tmp_path):
    from conftest import run_aitk

    bad_arg = run_aitk("codegen", "complete", str(trained["bundle"]), b'name = "caf\xe9"\ndef greet():\n', "--max-new-tokens", "4", plugins="codegen")
    assert bad_arg.returncode == 1 and bad_arg.stderr.strip() == "error: prompt: not valid UTF-8 at byte 11"
    piped = codegen("complete", trained["bundle"], "-", "--max-new-tokens", "4", stdin="\ufeffdef add(a, b):\n")
    assert piped.returncode == 0, piped.stderr
    (tmp_path / "cp1252.py").write_bytes('s = "caf\u00e9 \u2013 ok"\n'.encode("cp1252"))
    (tmp_path / "utf16.jsonl").write_bytes('{"prompt": "def a():"}\r\n{"prompt": "def b():"}\r\n'.encode("utf-16"))
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps({"prompt": "def c():"}).encode() + b"\n")
    out = tmp_path / "out.jsonl"
    result = codegen("predict", trained["bundle"], tmp_path / "cp1252.py", tmp_path / "utf16.jsonl", tmp_path / "bom.jsonl", "--out", out, "--max-new-tokens", "4")
    assert result.returncode == 3, result.stderr
    rows = {row["id"]: row for row in map(json.loads, out.read_text().splitlines())}
    assert rows[str(tmp_path / "cp1252.py")]["error"] == f"{tmp_path / 'cp1252.py'}: not valid UTF-8 at byte 8"
    assert [rows[f"{tmp_path / name}:{n}"]["prompt_tokens"] > 0 for name, n in (("utf16.jsonl", 1), ("utf16.jsonl", 2), ("bom.jsonl", 1))] == [True] * 3
    assert len(rows) == 4


def test_evaluate_reads_gzip_problems_and_refuses_zero_tokens(trained, tmp_path):
    import gzip

    (tmp_path / "HumanEval.jsonl.gz").write_bytes(gzip.compress((trained["data"] / "eval/problems.jsonl").read_bytes()))
    result = codegen("evaluate", trained["bundle"], tmp_path / "HumanEval.jsonl.gz", "--json", "--max-new-tokens", "4")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["problems"] == 4
    (tmp_path / "empty.py").write_text("")
    empty = codegen("evaluate", trained["bundle"], tmp_path / "empty.py", "--json")
    assert empty.returncode == 1 and empty.stdout == "" and "no tokens to score" in empty.stderr


def test_evaluate_refuses_to_run_generated_code_without_a_sandbox(trained, tmp_path):
    args = ("evaluate", trained["bundle"], trained["data"] / "eval/problems.jsonl", "--json", "--max-new-tokens", "4")
    no_bwrap = {"PATH": str(tmp_path)}  # an empty folder: bubblewrap cannot be found
    refused = codegen(*args, env=no_bwrap)
    assert refused.returncode != 0 and refused.stdout == ""
    said = [line for line in refused.stderr.splitlines() if "bubblewrap" in line]
    assert len(said) == 1 and "apt-get install bubblewrap" in said[0] and "--unsafe-no-sandbox" in said[0], refused.stderr
    allowed = codegen(*args, "--unsafe-no-sandbox", env=no_bwrap)
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)["sandbox"].startswith("NONE (--unsafe-no-sandbox")


def test_reference_solutions_pass_in_the_sandbox_and_pass_at_k(trained):
    from applied_aitk.usecases.codegen.data import read_problems
    from applied_aitk.usecases.codegen.evaluation import pass_at_k
    from applied_aitk.usecases.codegen.sandbox import run_program

    lines = [json.loads(line) for line in (trained["data"] / "eval/problems.jsonl").read_text().splitlines()]
    problems = read_problems(trained["data"] / "eval/problems.jsonl")
    for line, problem in zip(lines, problems):
        solution = "\n" + line["code"] if "code" in line else line["canonical_solution"]
        assert run_program(problem.program(solution))["status"] == "passed"
        assert run_program(problem.program("\n    pass\n"))["status"] == "failed"
    assert pass_at_k(10, 0, 1) == 0 and pass_at_k(10, 10, 5) == 1
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3) and pass_at_k(5, 1, 2) == pytest.approx(0.4)


def test_an_interrupted_run_resumes_from_its_checkpoint(trained, tmp_path):
    import os
    import time

    from conftest import AITK

    out, corpus = tmp_path / "bundle", trained["data"] / "corpus"
    endless = [*TINY[:3], "max_steps=100000", *TINY[4:]]  # checkpoints after the evaluation that follows every 30 steps
    run = subprocess.Popen([*AITK, "codegen", "train", str(corpus), "--out", str(out), "--threads", "1", *[a for s in endless for a in ("--set", s)]],
                           env={**os.environ, "AITK_LOAD_PLUGINS": "codegen"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not (tmp_path / "bundle.ckpt/state.json").exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    run.kill()  # as a power cut would: the checkpoint is whole (written aside, renamed into place)
    run.wait()
    assert not out.exists()
    state = json.loads((tmp_path / "bundle.ckpt/state.json").read_text())["result"]
    steps, losses = state["steps"], [h["heldout_loss"] for h in state["history"]]
    assert state["best"] == min(losses) and state["best_epoch"] == losses.index(min(losses)) + 1  # 1-based, as in FitResult
    other = train(corpus, tmp_path / "other", [*TINY[1:], "size=mini", "resume=true", f"checkpoint={tmp_path / 'bundle.ckpt'}"])
    assert other.returncode == 1 and "checkpoint was trained with size='tiny'" in other.stderr
    resumed = train(corpus, out, [*TINY[:3], "max_steps=80", *TINY[4:], "resume=true"])
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr and f"at step {steps}" in resumed.stderr and steps in (40, 60)
    history = json.loads((out / "manifest.json").read_text())["metrics"]["history"]
    assert [h["steps"] for h in history] == [20, 40, 60, 80]
    assert not (tmp_path / "bundle.ckpt").exists()  # finished: nothing to resume, nothing left beside the bundle
    again = train(corpus, out, [*TINY, "resume=true"])
    assert again.returncode == 1 and "already there; --force replaces a bundle" in again.stderr


def test_the_plugin_imports_no_heavy_library():
    code = "import sys, applied_aitk.usecases.codegen.plugin; print([m for m in ('torch', 'numpy', 'transformers', 'onnxruntime') if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.stdout.strip() == "[]", result.stderr


def test_old_setting_names_still_work_with_a_warning():
    from applied_aitk.usecases.codegen.plugin import Codegen

    config = Codegen().config_from({"context": "64", "steps": "10", "max_minutes": "2", "include": "*.py,*.pyi"})
    assert (config.context_length, config.max_steps, config.max_time, config.include) == (64, 10, 120.0, ["*.py", "*.pyi"])


def test_a_trained_bundle_exports_to_a_hugging_face_folder(trained, tmp_path):
    from test_codegen_import import exported_logits_match

    exported_logits_match(trained["bundle"], tmp_path / "hf")
