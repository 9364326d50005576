"""The slim install: training packages are the `train` extra, the core knows which they are, and a
command that needs them says in one line what to install. (The tests of predict, evaluate and
serve run with those packages hidden: conftest.WITHOUT_TRAINING.)"""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from importlib.metadata import packages_distributions

from conftest import REPO, SLIM_AITK

from applied_aitk.extras import DISTRIBUTION, TRAINING_MODULES


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_training_modules_are_what_the_train_extra_installs():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    train, base = _names(project["optional-dependencies"]["train"]), _names(project["dependencies"])
    assert {"torch", "transformers", "timm", "torchvision", "onnxscript"} <= train and not train & base
    modules = {m: {d.lower().replace("_", "-") for d in ds} for m, ds in packages_distributions().items()}
    for distribution in train:
        installs = {m for m, ds in modules.items() if distribution in ds and not m.startswith("_")}
        assert installs & TRAINING_MODULES, f"{distribution}: none of {sorted(installs)} in TRAINING_MODULES"
    for module in TRAINING_MODULES:
        assert modules[module] & train, f"{module} comes from {modules[module]}, not the train extra"


def test_training_without_the_train_extra_says_what_to_install(wine, tmp_path):
    result = subprocess.run([*SLIM_AITK, "wine", "train", str(wine["data"] / "train.csv"), "--out", str(tmp_path / "b")],
                            capture_output=True, text=True, env={**os.environ, "AITK_LOAD_PLUGINS": "wine"})
    assert result.returncode == 1
    assert result.stderr == (f"error: this command needs the training dependencies (torch is not installed): "
                             f"pip install '{DISTRIBUTION}[train]'\n")
    assert not (tmp_path / "b").exists()


def test_demo_without_the_train_extra_says_what_to_install(tmp_path):
    result = subprocess.run([*SLIM_AITK, "demo", "--out", str(tmp_path / "demo")],
                            capture_output=True, text=True, env={**os.environ, "AITK_LOAD_PLUGINS": "wine"})
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (f"error: this command needs the training dependencies (torch is not "
                                              f"installed): pip install '{DISTRIBUTION}[train]'")
    assert "failed" not in result.stderr + result.stdout
