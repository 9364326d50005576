"""Plugin discovery: entry points load one by one; a broken one is reported, not fatal."""

import json
import os
import subprocess
import sys

import pytest
from conftest import AITK, run_aitk

HEAVY = ("torch", "transformers", "timm", "onnxruntime", "onnx", "sklearn", "pandas", "tokenizers")


def broken_plugin_env(tmp_path):
    """A distribution whose aitk entry point names a module that does not exist."""
    dist = tmp_path / "aitk_broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: aitk-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[aitk]\nbroken = aitk_broken_missing.plugin\n")
    return {"PYTHONPATH": str(tmp_path)}


def test_broken_plugin_is_reported_and_the_rest_work(tmp_path):
    env = broken_plugin_env(tmp_path)
    listed = run_aitk("plugins", "--json", env=env, plugins="wine,broken")
    assert listed.returncode == 0
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert "ModuleNotFoundError" in rows["broken"]["error"]
    assert rows["wine"]["usecases"] == ["wine"] and rows["wine"]["error"] is None
    assert "plugin 'broken' failed to load" in listed.stderr
    assert run_aitk("wine", "--help", env=env, plugins="wine,broken").returncode == 0


def test_strict_mode_makes_a_load_error_fatal(tmp_path):
    result = run_aitk("plugins", env={**broken_plugin_env(tmp_path), "AITK_STRICT_PLUGINS": "1"}, plugins="wine,broken")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: plugin 'broken' failed to load")
    assert "Traceback" not in result.stderr


def test_load_plugins_names_the_ones_to_load():
    rows = json.loads(run_aitk("plugins", "--json", plugins="wine").stdout)
    loaded = {row["name"] for row in rows if row["usecases"]}
    assert loaded == {"wine"}
    assert run_aitk("forecast", "--help", plugins="wine").returncode == 2


def test_help_imports_no_heavy_library_with_every_plugin_installed():
    code = (
        "import sys\nsys.argv = ['aitk', '--help']\nfrom applied_aitk.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "HEAVY []" in result.stdout, result.stdout[-500:]


def test_version_and_help():
    assert run_aitk("--version", plugins="wine").stdout.startswith("aitk ")
    assert "wine" in run_aitk("--help", plugins="wine").stdout
    assert run_aitk("no-such-command", plugins="wine").returncode == 2


def plugin_env(tmp_path, name, source):
    """A distribution ``aitk-NAME`` whose aitk entry point is a module with ``source``."""
    dist = tmp_path / f"aitk_{name}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: aitk-{name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[aitk]\n{name} = aitk_{name}_plugin\n")
    (tmp_path / f"aitk_{name}_plugin.py").write_text(source)
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}


def test_a_plugin_that_exits_at_import_is_a_load_error_not_the_end_of_the_cli(tmp_path):
    env = plugin_env(tmp_path, "quits", "import sys\nsys.exit(3)\n")
    version = run_aitk("--version", env=env, plugins="wine,quits")
    assert version.returncode == 0 and version.stdout.startswith("aitk ")
    listed = run_aitk("plugins", "--json", env=env, plugins="wine,quits")
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["quits"]["error"] == "SystemExit: 3" and rows["wine"]["usecases"] == ["wine"]
    assert "plugin 'quits' failed to load: SystemExit: 3" in listed.stderr


def test_a_plugin_taking_an_existing_use_case_name_is_reported(tmp_path):
    source = (
        "from applied_aitk import UseCase, hookimpl\n"
        "class Impostor(UseCase):\n    name = 'fraud'\n    summary = 'not the fraud use case'\n"
        "@hookimpl\ndef register_usecases(register):\n    register(Impostor())\n"
    )
    env = plugin_env(tmp_path, "impostor", source)
    listed = run_aitk("plugins", "--json", env=env, plugins="fraud,impostor")
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    clash = "use case 'fraud' is already registered by plugin 'fraud'; this one is not loaded"
    assert rows["impostor"]["error"] == clash and rows["impostor"]["usecases"] == []
    assert rows["fraud"]["usecases"] == ["fraud"]
    assert f"warning: plugin 'impostor': {clash}" in listed.stderr
    assert "Fraud detection" in run_aitk("fraud", "--help", env=env, plugins="fraud,impostor").stdout



def test_a_plugin_whose_entry_point_takes_a_built_in_plugins_name_is_reported_not_dropped(tmp_path):
    """`aitk plugin new fraud`, installed: its entry point `fraud` was skipped without a word, and
    `aitk plugins` listed it as loaded with the use case fraud (the built-in one's)."""
    env = plugin_env(tmp_path, "fraud2", "raise SystemExit('never imported')\n")
    (tmp_path / "aitk_fraud2-0.1.dist-info" / "entry_points.txt").write_text("[aitk]\nfraud = aitk_fraud2_plugin\n")
    listed = run_aitk("plugins", "--json", env=env, plugins="fraud")
    assert listed.returncode == 0, listed.stderr
    rows = {(row["name"], row["distribution"]): row for row in json.loads(listed.stdout)}
    problem = "plugin name 'fraud' is already taken by applied_aitk.usecases.fraud.plugin; this one is not loaded; give it another name"
    assert rows[("fraud", "aitk-fraud2")] | {"version": None} == {
        "name": "fraud", "version": None, "distribution": "aitk-fraud2", "module": "aitk_fraud2_plugin", "loaded": False, "usecases": [], "error": problem}
    assert rows[("fraud", "applied-aitk")]["usecases"] == ["fraud"] and rows[("fraud", "applied-aitk")]["error"] is None
    assert f"warning: plugin 'fraud' (aitk_fraud2_plugin): {problem}" in listed.stderr
    assert "Fraud detection" in run_aitk("fraud", "--help", env=env, plugins="fraud").stdout

@pytest.mark.parametrize("name, summary, problem", [
    ("serve", "'a summary'", "use case 'serve': a core command of aitk; not loaded"),
    ("two words", "'a summary'", "use case 'two words': not a command name (lower case letters, digits, - and _); not loaded"),
    ("nosummary", None, "use case 'nosummary': its commands cannot be built (AttributeError: 'Odd' object has no attribute 'summary'); not loaded"),
])
def test_a_use_case_whose_commands_cannot_be_made_is_a_load_error_not_the_end_of_the_cli(tmp_path, name, summary, problem):
    source = (  # before: every command, --version included, ended in "error: AttributeError: 'Odd' object has no attribute 'summary'"
        "from applied_aitk import UseCase, hookimpl\n"
        f"class Odd(UseCase):\n    name = {name!r}\n" + (f"    summary = {summary}\n" if summary else "") +
        "@hookimpl\ndef register_usecases(register):\n    register(Odd())\n"
    )
    env = plugin_env(tmp_path, "odd", source)
    version = run_aitk("--version", env=env, plugins="wine,odd")
    assert version.returncode == 0 and version.stdout.startswith("aitk ") and f"warning: plugin 'odd': {problem}" in version.stderr
    listed = run_aitk("plugins", "--json", env=env, plugins="wine,odd")
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert listed.returncode == 0 and rows["odd"]["error"] == problem and rows["odd"]["usecases"] == []
    assert run_aitk("wine", "--help", env=env, plugins="wine,odd").returncode == 0


def test_a_plugin_whose_register_commands_fails_is_reported_and_the_rest_work(tmp_path):
    source = "import typer\nfrom applied_aitk import hookimpl\n@hookimpl\ndef register_commands(app):\n    raise SystemExit('no commands today')\n"
    env = plugin_env(tmp_path, "nocmd", source)
    helped = run_aitk("wine", "--help", env=env, plugins="wine,nocmd")
    assert helped.returncode == 0 and "warning: plugin 'nocmd': register_commands failed (SystemExit: no commands today)" in helped.stderr
