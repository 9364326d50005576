"""What `pip install` puts on the path: one import package, applied_aitk (toolkit/ as applied_aitk,
plugins/ as applied_aitk.usecases), the data files, the `aitk` command and the entry points;
nothing named `toolkit` or `plugins` (issue 15)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from conftest import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_every_folder_is_a_listed_package():
    """Code and data folders alike (tools/rename_namespace.py writes the list)."""
    mapping = PYPROJECT["tool"]["setuptools"]["package-dir"]
    assert mapping == {"applied_aitk": "toolkit", "applied_aitk.usecases": "plugins"}
    found = set()
    for package, folder in mapping.items():
        root = REPO / folder
        files = [p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]
        for path in {parent for p in files for parent in p.relative_to(root).parents}:
            found.add(".".join([package, *path.parts]))
    assert sorted(PYPROJECT["tool"]["setuptools"]["packages"]) == sorted(found)


def test_the_wheel_installs_applied_aitk_only(tmp_path):
    """The built wheel: every file under applied_aitk/ or its dist-info, the data files included."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for folder in ("toolkit", "plugins"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(source)],
                   check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("applied_aitk-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"applied_aitk", wheel.name.split("-py3")[0] + ".dist-info"}
    for expected in ("applied_aitk/cli.py", "applied_aitk/serve/app.py", "applied_aitk/usecases/fraud/plugin.py",
                     "applied_aitk/templates/plugin/pyproject.toml.tmpl", "applied_aitk/usecases/chatbot/sample_data/domain.yaml"):
        assert expected in names, expected
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "aitk = applied_aitk.cli:main" in entry_points and "fraud = applied_aitk.usecases.fraud.plugin" in entry_points


def test_no_top_level_toolkit_or_plugins_module(tmp_path):
    code = ("import importlib.util as u; import applied_aitk.usecases.fraud.plugin\n"
            "print(u.find_spec('toolkit'), u.find_spec('plugins'))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "None None"
