"""Shared fixtures: run the aitk CLI as a user does, and a trained bundle of the example plugin."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
AITK = [sys.executable, "-c", "from toolkit.cli import main; main()"]


def run_aitk(*args: str, env: dict[str, str] | None = None, plugins: str | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    """``aitk ARGS`` in a subprocess; ``plugins`` limits the plugins loaded (AITK_LOAD_PLUGINS)."""
    full_env = {**os.environ, **(env or {})}
    if plugins is not None:
        full_env["AITK_LOAD_PLUGINS"] = plugins
    return subprocess.run([*AITK, *args], capture_output=True, text=True, env=full_env, input=stdin)


@pytest.fixture(scope="session")
def wine(tmp_path_factory) -> dict[str, Path]:
    """The example plugin's sample data and a bundle trained on it."""
    root = tmp_path_factory.mktemp("wine")
    assert run_aitk("wine", "sample", str(root / "data"), plugins="wine").returncode == 0
    trained = run_aitk("wine", "train", str(root / "data/train.csv"), "--out", str(root / "bundle"), plugins="wine")
    assert trained.returncode == 0, trained.stderr
    return {"data": root / "data", "bundle": root / "bundle"}


def assert_report(folder: Path, *plots: str) -> None:
    """``evaluate --report`` wrote ``plots`` and an index.html with every PNG of the folder inline."""
    import re

    for name in plots:
        assert (folder / name).stat().st_size > 1000, name
    page = (folder / "index.html").read_text()
    inline = re.findall(r"<img src='data:image/png;base64,", page)
    assert len(inline) == len(list(folder.rglob("*.png"))) >= len(plots)
