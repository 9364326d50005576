"""`aitk plugin new`: the package installs, shows up in `aitk plugins`, and its own test passes."""

import filecmp
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO, run_aitk


def test_new_plugin_installs_appears_and_passes_its_test(tmp_path):
    created = run_aitk("plugin", "new", "churn", "--out", str(tmp_path), plugins="")
    assert created.returncode == 0, created.stderr
    package = tmp_path / "aitk-churn"
    site = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(site), str(package)]
    subprocess.run(install, check=True, capture_output=True)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    listed = run_aitk("plugins", env=env, plugins="churn")
    assert "churn" in listed.stdout and "aitk-churn" in listed.stdout
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(package / "tests")],
        capture_output=True, text=True, env={**os.environ, **env, "AITK_LOAD_PLUGINS": "churn"}, cwd=tmp_path,
    )
    assert tests.returncode == 0, tests.stdout[-2000:]


def test_refuses_bad_names_and_existing_folders(tmp_path):
    assert run_aitk("plugin", "new", "Bad-Name", "--out", str(tmp_path), plugins="").returncode == 1
    (tmp_path / "aitk-x").mkdir()
    exists = run_aitk("plugin", "new", "x", "--out", str(tmp_path), plugins="")
    assert exists.returncode == 1 and "already exists" in exists.stderr
    # names the package would install under and never load (it was written, installed, and dropped)
    for name, taken in (("fraud", "the use case of the installed applied-aitk"), ("serve", "a core command of aitk")):
        refused = run_aitk("plugin", "new", name, "--out", str(tmp_path), plugins="")
        assert (refused.returncode, refused.stderr.strip()) == (1, f"error: plugin name {name!r}: {taken}; choose another")
        assert not (tmp_path / f"aitk-{name}").exists()


def test_the_example_plugin_is_what_the_scaffold_writes(tmp_path):
    assert run_aitk("plugin", "new", "wine", "--out", str(tmp_path), plugins="").returncode == 0
    generated, shipped = tmp_path / "aitk-wine", REPO / "examples" / "aitk-wine"
    files = sorted(p.relative_to(generated) for p in generated.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(shipped) for p in shipped.rglob("*") if p.is_file() and "egg-info" not in str(p) and "__pycache__" not in str(p))
    assert all(filecmp.cmp(generated / f, shipped / f, shallow=False) for f in files)
