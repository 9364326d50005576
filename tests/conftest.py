"""Shared fixtures: run the aitk CLI as a user does, and a trained bundle of the example plugin."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
AITK = [sys.executable, "-c", "from applied_aitk.cli import main; main()"]

# As in a slim install (`pip install aitk`, no `train` extra): the train-only packages cannot be
# found (every import finder answers None for them, as when they are not installed).
WITHOUT_TRAINING = """
import sys
from applied_aitk.extras import TRAINING_MODULES
assert not TRAINING_MODULES & set(sys.modules), 'imported before the finders were wrapped'
class WithoutTraining:
    def __init__(self, finder):
        self.finder = finder
    def find_spec(self, name, path=None, target=None):
        if name.partition('.')[0] in TRAINING_MODULES:
            return None
        return self.finder.find_spec(name, path, target)
    def __getattr__(self, name):
        return getattr(self.finder, name)
sys.meta_path[:] = [WithoutTraining(finder) for finder in sys.meta_path]
"""
SLIM_AITK = [sys.executable, "-c", WITHOUT_TRAINING + "from applied_aitk.cli import main; main()"]
# Commands that need the `train` extra; the tests run every other command as in a slim install.
TRAINING_COMMANDS = {"train", "sample", "demo", "import", "export-hf"}


def run_aitk(*args: str, env: dict[str, str] | None = None, plugins: str | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    """``aitk ARGS`` in a subprocess; ``plugins`` limits the plugins loaded (AITK_LOAD_PLUGINS).
    Unless ARGS name a training command, the train-only packages are hidden (WITHOUT_TRAINING)."""
    full_env = {**os.environ, **(env or {})}
    if plugins is not None:
        full_env["AITK_LOAD_PLUGINS"] = plugins
    command = AITK if TRAINING_COMMANDS & set(args) else SLIM_AITK
    return subprocess.run([*command, *args], capture_output=True, text=True, env=full_env, input=stdin)


@pytest.fixture(scope="session")
def wine(tmp_path_factory) -> dict[str, Path]:
    """The example plugin's sample data and a bundle trained on it."""
    root = tmp_path_factory.mktemp("wine")
    assert run_aitk("wine", "sample", str(root / "data"), plugins="wine").returncode == 0
    trained = run_aitk("wine", "train", str(root / "data/train.csv"), "--out", str(root / "bundle"), plugins="wine")
    assert trained.returncode == 0, trained.stderr
    return {"data": root / "data", "bundle": root / "bundle"}


# The codegen plugin's quick settings: a tiny model that still lowers its held-out loss in 60 steps.
CODEGEN_TINY = ["size=tiny", "vocab_size=512", "context_length=64", "max_steps=60", "batch_size=16", "learning_rate=3e-3", "warmup_steps=10",
                "eval_steps=20", "eval_tokens=2048", "save_steps=30", "fim_rate=0.5"]


def codegen(*args, stdin: str | bytes | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``aitk codegen ARGS`` in a subprocess (run_aitk)."""
    return run_aitk("codegen", *map(str, args), plugins="codegen", stdin=stdin, env=env)


def codegen_train(data, out, settings: list[str]) -> subprocess.CompletedProcess:
    """``aitk codegen train DATA --out OUT --set S...``, on one thread: on a shared 2-core machine a
    second torch thread spin-waits for a busy core."""
    return codegen("train", data, "--out", out, "--threads", "1", *[a for s in settings for a in ("--set", s)])


@pytest.fixture(scope="session")
def codegen_trained(tmp_path_factory) -> dict[str, Path]:
    """The codegen sample data and a tiny bundle trained on it (CODEGEN_TINY), for every codegen test file."""
    root = tmp_path_factory.mktemp("codegen")
    assert codegen("sample", root / "data").returncode == 0
    result = codegen_train(f"{root}/data/corpus/**/*.py", root / "bundle", CODEGEN_TINY)  # a glob: DATA is a spec, not just a path
    assert result.returncode == 0, result.stderr
    return {"root": root, "data": root / "data", "bundle": root / "bundle"}


@pytest.fixture(scope="session")
def codegen_loaded(codegen_trained):
    """The trained codegen bundle loaded, and its generator on ONNX Runtime (CPU)."""
    from applied_aitk.bundle import load_bundle
    from applied_aitk.runtime import Runtime
    from applied_aitk.usecases.codegen.plugin import Codegen

    bundle = load_bundle(codegen_trained["bundle"], usecase="codegen")
    return bundle, Codegen().generator(bundle, Runtime(device="cpu"))


# The chatbot tests' environment: one OpenMP thread, and the Hugging Face hub never asked.
CHATBOT_ENV = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="session")
def chatbot_trained(tmp_path_factory) -> dict[str, Path]:
    """The chatbot's sample domain, and a bundle trained on it with the demo's quick settings (frozen MiniLM + head)."""
    root = tmp_path_factory.mktemp("chatbot")
    assert run_aitk("chatbot", "sample", str(root / "data"), env=CHATBOT_ENV, plugins="chatbot").returncode == 0
    trained = run_aitk("chatbot", "train", str(root / "data/domain.yaml"), "--out", str(root / "bundle"), "--set", "freeze_encoder=true",
                       "--set", "epochs=60", "--set", "max_length=48", "--device", "cpu", env=CHATBOT_ENV, plugins="chatbot")
    assert trained.returncode == 0, trained.stderr
    return {"data": root / "data", "bundle": root / "bundle", "root": root}


def assert_report(folder: Path, *plots: str) -> None:
    """``evaluate --report`` wrote ``plots`` and an index.html with every PNG of the folder inline."""
    import re

    for name in plots:
        assert (folder / name).stat().st_size > 1000, name
    page = (folder / "index.html").read_text()
    inline = re.findall(r"<img src='data:image/png;base64,", page)
    assert len(inline) == len(list(folder.rglob("*.png"))) >= len(plots)
