"""Codegen speed at the size of a real code model (issue 18): a random-initialised checkpoint with the
shape of Qwen2.5-Coder-0.5B (transformers' Qwen2Config: 24 layers, hidden 896, 14 heads, 2 KV heads,
intermediate 4864, vocabulary 151,936; 494 M parameters, tied embeddings), imported with
``aitk codegen import --quantize int8 --quantize int4`` (the user's path; one bundle), against
HF ``generate()`` on the same checkpoint and llama.cpp (llama-cpp-python, the ``bench`` extra) on the
same weights converted to GGUF Q8_0 and Q4_0 with llama.cpp's own ``convert_hf_to_gguf.py``.

Each engine runs in its own process (its peak RSS is that process's), greedy, the same random prompts
(``--prompt-tokens``) and ``--new-tokens`` new tokens at batch 1 and 8; tokens/s counts new tokens over
the whole call (prompt pass included), median of ``--rounds`` after a short warm-up. Beside it, as
llama-bench reports them: the prompt pass (prompt tokens/s of a call for one new token) and decoding
(the new tokens after the first over the whole call's time less that call's). Engines are in
codegen_speed_engines.py. The bound a token cannot beat: bytes of weights read per decoding step /
memory bandwidth (a numpy copy, measured in the same run), times the batch.

    .venv/bin/python benchmarks/codegen_speed.py [--out DIR] [--threads 2] [--rounds 1]

Goals: ORT int4 >= llama.cpp Q4_0 tokens/s at batch 1; ORT >= 2x HF generate() at batch 1 and 8;
ORT fp32 greedy tokens identical to HF."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import codegen_speed_engines as engines

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
QWEN_CODER_05B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                      num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
                      tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151643, pad_token_id=151643)
ENGINES = {  # label: (kind, artefact, variant)
    "HF generate() (torch fp32)": ("hf", "hf", None),
    "ORT fp32": ("ort", "bundle", None),
    "ORT int8 (dynamic)": ("ort", "bundle", "int8"),
    "ORT int4 (MatMulNBits)": ("ort", "bundle", "int4"),
    "llama.cpp Q8_0": ("llama", "model-q8_0.gguf", None),
    "llama.cpp Q4_0": ("llama", "model-q4_0.gguf", None),
}
HF_LABEL = "HF generate() (torch fp32)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="work folder, kept (default: a temporary one); what is there is reused")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="threads of every engine (default: the cores this process may use)")
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--rounds", type=int, default=1, help="timed rounds per engine and batch size (median)")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated labels to run")
    parser.add_argument("--engine", help=argparse.SUPPRESS)  # internal: run one engine in this process
    parser.add_argument("--prompts", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        return run_engine(args)

    out = args.out or Path(tempfile.mkdtemp(prefix="aitk-codegen-speed-"))
    out.mkdir(parents=True, exist_ok=True)
    bandwidth = memory_bandwidth(args.threads)
    print(f"memory bandwidth (numpy copy, {args.threads} threads): {bandwidth / 1e9:.1f} GB/s; threads {args.threads}; work folder {out}", flush=True)
    prepare(out, args)
    prompts = np.random.default_rng(0).integers(0, QWEN_CODER_05B["eos_token_id"], (max(batch_sizes(args)), args.prompt_tokens))
    (out / "prompts.json").write_text(json.dumps(prompts.tolist()))
    results = {}
    for label in [e.strip() for e in args.engines.split(",")]:
        kind, artefact, _ = ENGINES[label]
        if not (out / artefact).exists():
            print(f"{label}: skipped ({artefact} was not made)", flush=True)
            continue
        results[label] = measure(label, out, args)
        results[label]["weight_bytes"] = engines.weight_bytes(kind, out / artefact, ENGINES[label][2])
    bandwidth = max(bandwidth, memory_bandwidth(args.threads))  # the bound takes the best the machine showed
    print("\n" + table(results, bandwidth, args) + "\n")
    print(f"bound: {args.threads} threads' memory bandwidth (best numpy copy, before and after: {bandwidth / 1e9:.1f} GB/s) x batch / weights read per step")
    goals(results)


def batch_sizes(args) -> list[int]:
    return [int(b) for b in args.batch_sizes.split(",")]


def memory_bandwidth(threads: int, megabytes: int = 512, rounds: int = 5) -> float:
    """Bytes per second a numpy copy moves (read + write) with ``threads`` threads, each copying its
    slice (numpy lets go of the GIL), best of ``rounds``."""
    from concurrent.futures import ThreadPoolExecutor

    src = np.ones(megabytes * 2**20 // 8)
    dst = np.empty_like(src)
    slices = [slice(i * len(src) // threads, (i + 1) * len(src) // threads) for i in range(threads)]
    with ThreadPoolExecutor(threads) as pool:
        best = min(_timed(lambda: list(pool.map(lambda s: np.copyto(dst[s], src[s]), slices))) for _ in range(rounds))
    return 2 * src.nbytes / best


def _timed(fn, *args) -> float:
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def make_checkpoint(folder: Path) -> Path:
    """A random-initialised Qwen2 checkpoint with Qwen2.5-Coder-0.5B's shape and a small byte-level BPE
    tokenizer (prompts are token ids; the tokenizer only has to load)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**QWEN_CODER_05B)).eval()
    model.save_pretrained(folder)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(Path(__file__).read_text().splitlines(), trainer)
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


def prepare(out: Path, args) -> None:
    """The checkpoint, the bundle (``aitk codegen import``) and the GGUF files, each unless already there."""
    if not (out / "hf" / "config.json").is_file():
        seconds = _timed(make_checkpoint, out / "hf")
        print(f"random Qwen2.5-Coder-0.5B-shaped checkpoint written in {seconds:.0f} s", flush=True)
    context = str(args.prompt_tokens + args.new_tokens)
    if not (out / "bundle" / "manifest.json").is_file():
        command = [sys.executable, "-c", "from applied_aitk.cli import main; main()", "--debug", "codegen", "import", str(out / "hf"), "--out", str(out / "bundle"),
                   "--context", context, "--quantize", "int8", "--quantize", "int4", "--threads", str(args.threads), "--force"]
        seconds, rss, _ = run_child(command)
        print(f"aitk codegen import --quantize int8 --quantize int4: {seconds / 60:.1f} min, peak RSS {rss / 2**30:.1f} GiB", flush=True)
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        print("llama-cpp-python is not installed (pip install -e '.[bench]' builds it): the llama.cpp rows are skipped", flush=True)
        return
    for kind in ("q8_0", "q4_0"):
        if not (out / f"model-{kind}.gguf").is_file():
            seconds = _timed(make_gguf, out / "hf", out / f"model-{kind}.gguf", kind)
            print(f"GGUF {kind.upper()} written in {seconds:.0f} s", flush=True)


def make_gguf(hf_dir: Path, target: Path, kind: str) -> None:
    """llama.cpp's ``convert_hf_to_gguf.py`` (see ``find_convert_script``) to f16, then ``llama_model_quantize`` to ``kind``."""
    import llama_cpp

    f16 = target.with_name("model-f16.gguf")
    if not f16.is_file():
        script = find_convert_script(target.parent)
        # the script refuses a tokenizer whose pre-tokenizer hash it does not know (ours is a made-up one);
        # prompts are token ids, so tell it the model's own family, and that its vocabulary is GPT-2 style
        code = ("import sys; sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[1] + '/gguf-py'); "
                "sys.argv = [sys.argv[1] + '/convert_hf_to_gguf.py'] + sys.argv[2:]; "
                "import convert_hf_to_gguf as c, conversion.base as b, conversion.qwen as q; "
                "b.TextModel.get_vocab_base_pre = lambda self, tokenizer: 'qwen2'; q.Qwen2Model.set_vocab = b.TextModel._set_vocab_gpt2; c.main()")
        subprocess.run([sys.executable, "-c", code, str(script.parent), str(hf_dir), "--outtype", "f16", "--outfile", str(f16)],
                       check=True, capture_output=True)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = {"q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, "q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0}[kind]
    params.nthread = len(os.sched_getaffinity(0))
    if llama_cpp.llama_model_quantize(str(f16).encode(), str(target).encode(), params) != 0:
        raise RuntimeError(f"llama_model_quantize to {kind} failed")


def find_convert_script(work: Path) -> Path:
    """llama.cpp's convert_hf_to_gguf.py: in $LLAMA_CPP_DIR, or in the source distribution of the installed
    llama-cpp-python (its vendor/llama.cpp), fetched with pip into ``work`` once."""
    if os.environ.get("LLAMA_CPP_DIR"):
        return Path(os.environ["LLAMA_CPP_DIR"]) / "convert_hf_to_gguf.py"
    import tarfile
    from importlib.metadata import version

    found = sorted(work.glob("llama_cpp_python-*/vendor/llama.cpp/convert_hf_to_gguf.py"))
    if not found:
        wanted = f"llama-cpp-python=={version('llama-cpp-python')}"
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:", wanted, "-d", str(work)], check=True)
        with tarfile.open(next(work.glob("llama_cpp_python-*.tar.gz"))) as sdist:
            sdist.extractall(work, filter="data")
        found = sorted(work.glob("llama_cpp_python-*/vendor/llama.cpp/convert_hf_to_gguf.py"))
    return found[0]


def run_child(command: list[str]) -> tuple[float, int, str]:
    """(seconds, peak RSS in bytes, stdout) of a child process; raises when it fails."""
    started = time.perf_counter()
    # OpenMP threads (torch's, llama.cpp's) spin-wait for a busy core on a shared machine: not here
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    child = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=REPO, env=env)
    stdout = child.stdout.read().decode()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:6])}... failed (exit {child.returncode})")
    return time.perf_counter() - started, usage.ru_maxrss * 1024, stdout


def measure(label: str, out: Path, args) -> dict:
    command = [sys.executable, __file__, "--engine", label, "--out", str(out), "--prompts", str(out / "prompts.json"), "--threads", str(args.threads),
               "--new-tokens", str(args.new_tokens), "--batch-sizes", args.batch_sizes, "--rounds", str(args.rounds)]
    _, _, stdout = run_child(command)
    result = json.loads(stdout.strip().splitlines()[-1])
    rss = result["peak_rss"]
    rates = ", ".join(f"batch {b}: {_rate(result, b):.1f} tokens/s (prompt pass {_prompt_rate(result, b):.0f}, decoding {_decode_rate(result, b):.1f})"
                      for b in result["batches"])
    print(f"{label}: {rates}; peak RSS {rss / 2**30:.2f} GiB", flush=True)
    return result


def run_engine(args) -> None:
    """One engine in this process: greedy generation at each batch size; prints a JSON line."""
    kind, artefact, variant = ENGINES[args.engine]
    prompts = json.loads(args.prompts.read_text())
    make = {"hf": engines.hf_engine, "ort": engines.ort_engine, "llama": engines.llama_engine}[kind]
    generate = make(args.out / artefact, variant, args.threads, QWEN_CODER_05B["eos_token_id"])
    batches = {}
    for size in batch_sizes(args):
        batch = prompts[:size]
        generate([p[:8] for p in batch], 2)  # warm-up: loads and first-call costs, not a timed prompt pass
        times, prompt_times, tokens = [], [], None
        for _ in range(args.rounds):
            prompt_times.append(_timed(generate, batch, 1))  # the prompt pass (and the first token's choice) alone
            started = time.perf_counter()
            tokens = generate(batch, args.new_tokens)
            times.append(time.perf_counter() - started)
        batches[size] = {"seconds": statistics.median(times), "prompt_seconds": statistics.median(prompt_times),
                         "prompt_tokens": sum(map(len, batch)), "new_tokens": sum(map(len, tokens)), "tokens": tokens}
    print(json.dumps({"batches": batches, "peak_rss": engines.peak_rss()}))


def table(results: dict, bandwidth: float, args) -> str:
    from common import markdown_table

    sizes = batch_sizes(args)
    hf = results.get(HF_LABEL)
    header = ["engine", *(f"batch {b} tokens/s" for b in sizes), *(f"vs HF b{b}" for b in sizes), *(f"prompt pass b{b}" for b in sizes),
              *(f"decoding b{b}" for b in sizes), "weights read per step", *(f"bound b{b}" for b in sizes), "peak RSS", "greedy tokens = HF"]
    rows = []
    for label, r in results.items():
        ratio = [f"{_rate(r, b) / _rate(hf, b):.2f}x" if hf else "" for b in sizes]
        bound = [f"{b * bandwidth / r['weight_bytes']:.1f}" for b in sizes]
        rows.append([label, *(f"{_rate(r, b):.1f}" for b in sizes), *ratio, *(f"{_prompt_rate(r, b):.0f}" for b in sizes),
                     *(f"{_decode_rate(r, b):.1f}" for b in sizes), f"{r['weight_bytes'] / 1e6:.0f} MB", *bound,
                     f"{r['peak_rss'] / 2**30:.2f} GiB", agreement(r, hf, sizes) if hf and label != HF_LABEL else ""])
    return markdown_table(header, rows)


def _rate(result: dict, size) -> float:
    """New tokens per second over the whole call (prompt pass included): what the issue's goals compare."""
    entry = result["batches"][str(size)]
    return entry["new_tokens"] / entry["seconds"]


def _prompt_rate(result: dict, size) -> float:
    """Prompt tokens per second of the prompt pass (llama-bench's pp): a call for one new token."""
    entry = result["batches"][str(size)]
    return entry["prompt_tokens"] / entry["prompt_seconds"]


def _decode_rate(result: dict, size) -> float:
    """New tokens per second after the prompt pass (llama-bench's tg): the whole call less a one-token call,
    over the tokens after each row's first."""
    entry = result["batches"][str(size)]
    return (entry["new_tokens"] - int(size)) / max(entry["seconds"] - entry["prompt_seconds"], 1e-9)


def agreement(result: dict, hf: dict, sizes: list[int]) -> str:
    ours = [row for b in sizes for row in result["batches"][str(b)]["tokens"]]
    theirs = [row for b in sizes for row in hf["batches"][str(b)]["tokens"]]
    if ours == theirs:
        return "yes"
    same = sum(next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b))) for a, b in zip(ours, theirs))
    return f"no ({same / max(sum(map(len, theirs)), 1):.0%} of tokens before the first difference)"


def goals(results: dict) -> None:
    def rate(label: str, size: int) -> float | None:
        return _rate(results[label], size) if label in results and str(size) in results[label]["batches"] else None

    int4, q4 = rate("ORT int4 (MatMulNBits)", 1), rate("llama.cpp Q4_0", 1)
    if int4 and q4:
        print(f"goal ORT int4 >= llama.cpp Q4_0 at batch 1: {int4:.1f} vs {q4:.1f} tokens/s -> {'met' if int4 >= q4 else 'NOT met'}")
        ours, theirs = results["ORT int4 (MatMulNBits)"], results["llama.cpp Q4_0"]
        print(f"  of which prompt pass {_prompt_rate(ours, 1):.0f} vs {_prompt_rate(theirs, 1):.0f} tokens/s, "
              f"decoding {_decode_rate(ours, 1):.1f} vs {_decode_rate(theirs, 1):.1f} tokens/s")
    for size in (1, 8):
        hf = rate(HF_LABEL, size)
        for label in ("ORT fp32", "ORT int8 (dynamic)", "ORT int4 (MatMulNBits)"):
            ours = rate(label, size)
            if hf and ours:
                print(f"goal {label} >= 2x HF generate() at batch {size}: {ours / hf:.2f}x -> {'met' if ours >= 2 * hf else 'NOT met'}")
    if HF_LABEL in results and "ORT fp32" in results:
        print(f"goal ORT fp32 greedy tokens identical to HF: {agreement(results['ORT fp32'], results[HF_LABEL], [int(b) for b in results['ORT fp32']['batches']])}")


if __name__ == "__main__":
    main()
