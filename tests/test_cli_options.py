"""The command-line surface users rely on: one-line usage errors, logging options anywhere, log lines
that never break a bar, Examples in every help, `--out -`, `--force`, settings files, record counts."""

import gzip
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_aitk

from applied_aitk import console
from applied_aitk.counting import count_records
from applied_aitk.errors import AitkError
from applied_aitk.settings_file import read_settings


def test_an_invalid_choice_is_one_line_and_exit_2(tmp_path):
    result = run_aitk("wine", "predict", str(tmp_path), "x.csv", "--out", "p.jsonl", "--device", "gpu", plugins="wine")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: Invalid value for '--device': 'gpu' is not one of 'auto', 'cpu', 'cuda'."
    quantize = run_aitk("wine", "evaluate", str(tmp_path), str(tmp_path), "--quantize", "fp32", plugins="wine")
    assert quantize.returncode == 2 and len(quantize.stderr.strip().splitlines()) == 1 and "'int8', 'fp16', 'int4', 'none'" in quantize.stderr
    number = run_aitk("wine", "predict", str(tmp_path), "x.csv", "--out", "p.jsonl", "--threads", "two", plugins="wine")
    assert number.returncode == 2 and number.stderr.strip() == "error: Invalid value for '--threads': expected an integer"
    for args, expected in ((["serve", str(tmp_path), "--engine", "ray", "--replicas", "0"], "'--replicas': expected an integer of at least 1, got 0"),
                           (["serve", str(tmp_path), "--port", "70000"], "'--port': expected an integer of at most 65535, got 70000"),
                           (["serve", str(tmp_path), "--max-wait-ms", "-1"], "'--max-wait-ms': expected a number of at least 0, got -1"),
                           (["wine", "predict", str(tmp_path), "x.csv", "--out", "p.jsonl", "--threads", "100000"], "'--threads': expected an integer of at most 1024, got 100000"),
                           (["wine", "predict", str(tmp_path), "x.csv", "--out", "p.jsonl", "--batch-size", "0"], "'--batch-size': expected an integer of at least 1, got 0")):
        out_of_range = run_aitk(*args, plugins="wine")  # a number out of an option's range: the toolkit's words, not pydantic's
        assert out_of_range.returncode == 2 and out_of_range.stderr.strip() == f"error: Invalid value for {expected}"


@pytest.mark.parametrize("args, expected", [
    (["serve", "b", "--timeout", "inf"], "'--timeout': inf is not a finite number"),  # passed min=0.001
    (["serve", "b", "--max-wait-ms", "nan"], "'--max-wait-ms': expected a number of at least 0, got nan"),
    (["codegen", "complete", "b", "def f():", "--temperature", "nan"], "'--temperature': nan is not a finite number"),  # was: ValueError: Probabilities contain NaN
    (["codegen", "complete", "b", "def f():", "--temperature", "inf"], "'--temperature': inf is not a finite number"),
    (["fraud", "train", "t.csv", "--out", "b", "--cost-fn", "inf", "--cost-fp", "1"], "'--cost-fn': inf is not a finite number"),  # was: trained
])
def test_a_number_option_refuses_nan_and_infinity_in_one_line(args, expected):
    result = run_aitk(*args, plugins="codegen,fraud")
    assert result.returncode == 2 and result.stderr.strip() == f"error: Invalid value for {expected}"


@pytest.mark.parametrize("args, expected", [
    (["fraud", "predict", "b", "x.csv", "--out", "p.jsonl", "--threshold", "1.5"], "'--threshold': expected a number of at most 1, got 1.5"),  # was: every row flag false
    (["fraud", "predict", "b", "x.csv", "--out", "p.jsonl", "--explain", "-1"], "'--explain': expected an integer of at least 0, got -1"),
    (["forecast", "evaluate", "b", "d.csv", "--windows", "0"], "'--windows': expected an integer of at least 1, got 0"),
    (["codegen", "evaluate", "b", "d.jsonl", "--top-p", "2"], "'--top-p': expected a number of at most 1, got 2"),
])
def test_a_use_case_option_out_of_its_bounds_is_one_line_and_exit_2(args, expected):
    result = run_aitk(*args, plugins="codegen,forecast,fraud")
    assert result.returncode == 2 and result.stderr.strip() == f"error: Invalid value for {expected}"


def test_a_folder_option_given_a_file_is_one_line_and_exit_2(wine, tmp_path):
    """Was the raw FileExistsError / NotADirectoryError: once (sample, --report, plugin new), in
    every row (defects --heatmaps, forecast --plot), or in each use case's demo row."""
    taken = tmp_path / "notes.txt"
    taken.write_text("a file")
    for args, option in (
        (["wine", "sample", str(taken)], "'OUT'"),
        (["wine", "evaluate", str(wine["bundle"]), str(wine["data"] / "test.csv"), "--report", str(taken)], "'--report'"),
        (["demo", "--only", "wine", "--out", str(taken)], "'--out'"),
        (["plugin", "new", "churn", "--out", str(taken)], "'--out'"),
        (["defects", "predict", str(wine["bundle"]), str(taken), "--out", "-", "--heatmaps", str(taken)], "'--heatmaps'"),
        (["forecast", "predict", str(wine["bundle"]), str(taken), "--out", "-", "--plot", str(taken)], "'--plot'"),
    ):
        result = run_aitk(*args, plugins="wine,defects,forecast")
        assert (result.returncode, result.stderr.strip()) == (2, f"error: Invalid value for {option}: dir {str(taken)!r} is a file."), args
    assert "--heatmaps DIR" in run_aitk("defects", "predict", "--help", plugins="defects").stdout

def test_a_group_alone_shows_its_help():
    result = run_aitk("wine", plugins="wine")
    assert result.returncode == 2 and result.stderr.startswith("Usage: aitk wine") and "Commands:" in result.stderr


def test_the_shell_completes_choice_values():
    result = run_aitk(env={"_AITK_COMPLETE": "complete_bash", "COMP_WORDS": "aitk wine predict --device ", "COMP_CWORD": "4"}, plugins="wine")
    assert result.returncode == 0 and result.stdout.split() == ["auto", "cpu", "cuda"]


def test_quiet_and_log_options_work_after_the_command(wine, tmp_path):
    predict = ["wine", "predict", str(wine["bundle"]), str(wine["data"] / "predict.csv")]
    loud = run_aitk(*predict, "--out", str(tmp_path / "a.jsonl"), plugins="wine")
    assert loud.returncode == 0 and "records" in loud.stderr
    quiet = run_aitk(*predict, "--out", str(tmp_path / "b.jsonl"), "--quiet", plugins="wine")
    assert quiet.returncode == 0 and quiet.stderr == ""
    log = tmp_path / "run.log"
    logged = run_aitk(*predict, "--out", str(tmp_path / "c.jsonl"), "--log-file", str(log), "-q", plugins="wine")
    assert logged.returncode == 0 and logged.stderr == ""
    line = log.read_text().splitlines()[-1]
    assert " INFO aitk.batch: " in line and "records" in line and line[:4].isdigit()  # timestamp first
    stamped = run_aitk("--log-timestamps", *predict, "--out", str(tmp_path / "d.jsonl"), plugins="wine")
    assert stamped.stderr[:4].isdigit() and "records" in stamped.stderr


def test_log_lines_are_written_through_tqdm_while_a_bar_is_open(monkeypatch):
    from tqdm import tqdm

    written = []
    monkeypatch.setattr(tqdm, "write", classmethod(lambda cls, message, file=None: written.append(message)))
    monkeypatch.setattr(console, "bars_enabled", lambda: True)
    console.setup()
    logger = console.get_logger("tests.bars")
    try:
        with console.bar("train", total=3, unit="step") as shown:
            logger.info("held-out loss 1.23")
            console.warn_once("a warning once")
            console.warn_once("a warning once")
            shown.update(3)
        logger.info("after the bar")
    finally:
        logging.getLogger("aitk").handlers.clear()
        logging.getLogger("aitk").propagate = True
    assert written == ["held-out loss 1.23", "warning: a warning once", "after the bar"]


def test_every_help_has_examples_and_names_arguments_by_meaning():
    script = (
        "from applied_aitk.cli import app, add_usecase_commands, _usecases\n"
        "import typer\n"
        "for u in _usecases().values(): add_usecase_commands(u)\n"
        "def walk(command, path):\n"
        "    subs = getattr(command, 'commands', {})\n"
        "    for name, sub in subs.items(): yield from walk(sub, [*path, name])\n"
        "    yield path, command\n"
        "root = typer.main.get_command(app)\n"
        "for path, command in walk(root, ['aitk']):\n"
        "    ctx = typer.Context(command, info_name=' '.join(path))\n"
        "    print(' '.join(path), '|', command.get_help(ctx).replace(chr(10), ' '))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "AITK_LOAD_PLUGINS"}  # every installed plugin
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    helps = dict(line.split(" | ", 1) for line in result.stdout.splitlines())
    assert {"aitk wine predict", "aitk codegen complete", "aitk chatbot chat", "aitk forecast train", "aitk serve", "aitk doctor",
            "aitk", "aitk wine", "aitk bundle", "aitk plugin"} <= set(helps)  # commands and groups
    assert [name for name, text in helps.items() if "Examples:" not in text] == []
    assert [name for name, text in helps.items() if "{" in text.split("Options:")[0] or "<list[" in text] == []
    assert "Usage: aitk wine predict [OPTIONS] BUNDLE INPUT..." in helps["aitk wine predict"]
    assert "Usage: aitk codegen complete [OPTIONS] BUNDLE PROMPT" in helps["aitk codegen complete"]
    assert "train" not in helps["aitk wine predict"].split("--quantize")[1].split("--engine")[0]


def test_out_dash_writes_json_lines_to_stdout(wine, tmp_path):
    result = run_aitk("wine", "predict", str(wine["bundle"]), str(wine["data"] / "predict.csv"), "--out", "-", plugins="wine")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    expected = count_records([wine["data"] / "predict.csv"])
    assert len(rows) == expected > 0 and all(row["label"] for row in rows)
    assert not Path("-").exists() and not Path("-.partial.jsonl").exists()
    clash = run_aitk("wine", "predict", str(wine["bundle"]), str(wine["data"] / "predict.csv"), "--out", "-", "--json", plugins="wine")
    assert clash.returncode == 2 and len(clash.stderr.strip().splitlines()) == 1


def test_train_refuses_to_replace_a_bundle_without_force(wine, tmp_path):
    train = ["wine", "train", str(wine["data"] / "train.csv"), "--set", "epochs=5"]
    shutil.copytree(wine["bundle"], tmp_path / "b")  # a bundle `train` wrote
    manifest = (tmp_path / "b/manifest.json").read_text()
    again = run_aitk(*train, "--out", str(tmp_path / "b"), "--set", "seed=1", plugins="wine")
    assert again.returncode == 1 and again.stderr.strip() == f"error: --out {tmp_path / 'b'}: a bundle is already there; --force replaces a bundle"
    assert (tmp_path / "b/manifest.json").read_text() == manifest
    forced = run_aitk(*train, "--out", str(tmp_path / "b"), "--set", "seed=1", "--force", plugins="wine")
    assert forced.returncode == 0, forced.stderr
    assert json.loads((tmp_path / "b/manifest.json").read_text())["config"]["seed"] == 1
    (tmp_path / "data").mkdir()
    (tmp_path / "data/keep.csv").write_text("a\n1\n")
    not_a_bundle = run_aitk(*train, "--out", str(tmp_path / "data"), "--force", plugins="wine")
    assert not_a_bundle.returncode == 1 and "is not a bundle" in not_a_bundle.stderr and (tmp_path / "data/keep.csv").exists()


@pytest.mark.parametrize("name, text, where", [
    ("s.yaml", "hidden: 16\nepochs: [3\n", "s.yaml:3:1: invalid YAML: "),
    ("s.yaml", "hidden: 16\nhidden: 8\n", 's.yaml:2:1: invalid YAML: found duplicate key "hidden"'),  # PyYAML kept the last
    ("s.json", '{"hidden": 16,\n "epochs": }', "s.json:2:12: invalid JSON: Expecting value"),
    ("s.toml", "hidden = 16\nepochs = \n", "s.toml:2:10: invalid TOML: "),
])
def test_a_bad_settings_file_names_file_line_and_column(tmp_path, name, text, where):
    (tmp_path / name).write_text(text)
    with pytest.raises(AitkError) as error:
        read_settings(tmp_path / name)
    assert str(error.value).startswith(str(tmp_path / where)) and "\n" not in str(error.value)


def test_a_settings_file_format_follows_its_extension(tmp_path, wine):
    (tmp_path / "s.yml").write_text("hidden: 16\n")
    assert read_settings(tmp_path / "s.yml") == {"hidden": 16}
    (tmp_path / "s.cfg").write_text("[x]\nhidden = 16\n")
    with pytest.raises(AitkError, match=r"s\.cfg: a settings file must end in \.json, \.yaml, \.yml, \.toml"):
        read_settings(tmp_path / "s.cfg")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(AitkError, match="expected a mapping of setting to value, found list"):
        read_settings(tmp_path / "list.yaml")
    cli = run_aitk("wine", "train", str(wine["data"] / "train.csv"), "--out", str(tmp_path / "b"), "--config", str(tmp_path / "s.cfg"), plugins="wine")
    assert cli.returncode == 1 and len(cli.stderr.strip().splitlines()) == 1 and not (tmp_path / "b").exists()


def test_sample_json_says_where_each_part_is(tmp_path):
    result = run_aitk("wine", "sample", str(tmp_path / "d"), "--json", plugins="wine")
    assert result.returncode == 0, result.stderr
    written = json.loads(result.stdout)
    assert Path(written["train"]).is_file() and all(Path(p).is_file() for p in written["predict"])


def test_records_are_counted_before_predicting_for_the_bar_total(tmp_path):
    (tmp_path / "rows.csv").write_text("a,b\n1,2\n3,4\n5,6")  # no newline at the end
    (tmp_path / "lines.jsonl").write_text('{"x": 1}\n{"x": 2}\n')
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    assert count_records([tmp_path / "rows.csv", tmp_path / "lines.jsonl", tmp_path / "image.png"]) == 3 + 2 + 1
    (tmp_path / "rows.csv.gz").write_bytes(gzip.compress((tmp_path / "rows.csv").read_bytes()))
    assert count_records([tmp_path / "rows.csv.gz"]) == 3  # the rows, not the compressed bytes' newlines, nor 1 file
    assert count_records([Path("-")]) is None


def on_a_terminal(*args: str) -> str:
    """What ``aitk ARGS`` writes to stderr when stderr is a terminal (a pseudo-terminal), bars included."""
    import fcntl
    import pty
    import struct
    import termios
    import threading

    from conftest import AITK

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))  # a terminal 120 columns wide
    env = {**os.environ, "AITK_LOAD_PLUGINS": "wine"}
    env.pop("NO_COLOR", None)
    # a run shorter than tqdm's 0.1 s refresh interval would close its bars before drawing a count
    env["TQDM_MININTERVAL"] = "0"
    process = subprocess.Popen([*AITK, *args], stdout=subprocess.DEVNULL, stderr=slave, env=env)
    os.close(slave)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the process closed the terminal
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    assert process.wait(timeout=300) == 0
    reader.join(timeout=10)
    os.close(master)
    return b"".join(chunks).decode("utf-8", "replace")


def test_training_and_predict_show_bars_with_a_total_a_rate_and_an_eta(wine, tmp_path):
    import re

    trained = on_a_terminal("wine", "train", str(wine["data"] / "train.csv"), "--out", str(tmp_path / "b"), "--set", "epochs=10", "--set", "patience=0")
    assert re.search(r"train: +\d+%\|.*\| \d+/10 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+(?:epoch/s|s/epoch)", trained), trained[-2000:]
    rows = len((wine["data"] / "predict.csv").read_text().splitlines()) - 1
    predicted = on_a_terminal("wine", "predict", str(wine["bundle"]), str(wine["data"] / "predict.csv"), "--out", str(tmp_path / "p.jsonl"))
    assert re.search(rf"predict: +\d+%\|.*\| \d+/{rows} \[", predicted), predicted[-2000:]
