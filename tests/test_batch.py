"""Batch inference over files: error rows, exit 3, formats, inputs, and resume after a kill."""

import csv
import ctypes
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import AITK, run_aitk


def predict(wine, out, *inputs, extra=(), stdin=None):
    return run_aitk("wine", "predict", str(wine["bundle"]), *map(str, inputs), "--out", str(out), *extra, plugins="wine", stdin=stdin)


def rows_of(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def csv_with_bad_rows(wine, path):
    rows = list(csv.DictReader(open(wine["data"] / "predict.csv")))
    rows[1]["alcohol"] = "abc"
    rows[3]["proline"] = ""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def test_a_corrupt_record_becomes_an_error_row_and_the_run_goes_on(wine, tmp_path):
    count = csv_with_bad_rows(wine, tmp_path / "in.csv")
    result = predict(wine, tmp_path / "out.jsonl", tmp_path / "in.csv")
    assert result.returncode == 3, result.stderr
    rows = rows_of(tmp_path / "out.jsonl")
    assert len(rows) == count
    errors = {row["id"]: row["error"] for row in rows if row.get("error")}
    name = str(tmp_path / "in.csv")
    assert errors == {
        f"{name}:3": f"{name}:3: field 'alcohol': 'abc' is not a number",
        f"{name}:5": f"{name}:5: field 'proline': missing, expected a number",
    }
    assert all(row["label"].startswith("cultivar_") for row in rows if not row.get("error"))
    assert "2 failed" in result.stderr


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_csv_and_parquet_hold_the_same_rows_as_jsonl(wine, tmp_path, suffix):
    csv_with_bad_rows(wine, tmp_path / "in.csv")
    predict(wine, tmp_path / "out.jsonl", tmp_path / "in.csv")
    assert predict(wine, tmp_path / f"out{suffix}", tmp_path / "in.csv").returncode == 3
    frame = pd.read_csv(tmp_path / "out.csv") if suffix == ".csv" else pd.read_parquet(tmp_path / "out.parquet")
    expected = rows_of(tmp_path / "out.jsonl")
    assert list(frame.columns) == ["id", "label", "probability", "probabilities", "error"]
    assert frame["id"].tolist() == [row["id"] for row in expected]
    assert frame["label"].fillna("").tolist() == [row.get("label") or "" for row in expected]
    assert frame["error"].notna().sum() == 2


def test_inputs_from_folders_globs_and_stdin(wine, tmp_path):
    (tmp_path / "in").mkdir()
    text = (wine["data"] / "predict.csv").read_text()
    for name in ("a.csv", "b.csv"):
        (tmp_path / "in" / name).write_text(text)
    (tmp_path / "in" / "notes.txt").write_text("not a table")
    n = len(text.splitlines()) - 1
    assert predict(wine, tmp_path / "folder.jsonl", tmp_path / "in").returncode == 0
    assert len(rows_of(tmp_path / "folder.jsonl")) == 2 * n
    assert predict(wine, tmp_path / "glob.jsonl", str(tmp_path / "in" / "*.csv")).returncode == 0
    assert len(rows_of(tmp_path / "glob.jsonl")) == 2 * n
    assert predict(wine, tmp_path / "stdin.jsonl", "-", stdin=text).returncode == 0
    assert len(rows_of(tmp_path / "stdin.jsonl")) == n
    missing = predict(wine, tmp_path / "x.jsonl", tmp_path / "nope.csv")
    assert missing.returncode == 1 and missing.stderr.strip() == f"error: {tmp_path / 'nope.csv'}: no such file or directory"
    wrong = predict(wine, tmp_path / "x.txt", tmp_path / "in")
    assert wrong.returncode == 1 and "expected a file ending in .jsonl, .csv, .parquet" in wrong.stderr


def test_killed_run_resumed_gives_exactly_the_rows_of_an_uninterrupted_run(wine, tmp_path):
    lines = (wine["data"] / "predict.csv").read_text().splitlines()
    big = tmp_path / "big.csv"
    big.write_text("\n".join([lines[0], *(lines[1:] * 1500)]) + "\n")
    args = ["--batch-size", "4"]
    assert predict(wine, tmp_path / "full.jsonl", big, extra=args).returncode == 0

    out = tmp_path / "resumed.jsonl"
    journal = tmp_path / "resumed.jsonl.partial.jsonl"
    env = {**os.environ, "AITK_LOAD_PLUGINS": "wine"}
    process = subprocess.Popen([*AITK, "wine", "predict", str(wine["bundle"]), str(big), "--out", str(out), *args], env=env, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and (not journal.exists() or journal.stat().st_size < 200_000):
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert not out.exists(), "a killed run leaves no half-written output"
    done_before = len(journal.read_text().splitlines())
    assert 0 < done_before < 1500 * (len(lines) - 1)

    resumed = predict(wine, out, big, extra=[*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert f"{done_before} resumed" in resumed.stderr or f"{done_before - 1} resumed" in resumed.stderr
    assert out.read_text().splitlines() == (tmp_path / "full.jsonl").read_text().splitlines()
    assert not journal.exists()


def test_malformed_rows_are_error_rows_naming_file_line_and_problem(wine, tmp_path):
    lines = (wine["data"] / "predict.csv").read_bytes().splitlines()
    good = lines[1]
    bad = [
        good + b",1",  # line 3: an extra field
        good.rsplit(b",", 3)[0],  # line 4: three fields short
        b'"' + good,  # line 5: a quote that never closes
        good.replace(b".", b"\xff", 1),  # line 6: not UTF-8
        good.replace(good.split(b",")[0], b"1e39", 1),  # line 7: beyond float32
        good.replace(good.split(b",")[0], b"inf", 1),  # line 8: not finite
    ]
    (tmp_path / "in.csv").write_bytes(b"\n".join([lines[0], good, *bad, good]) + b"\n")
    result = predict(wine, tmp_path / "out.jsonl", tmp_path / "in.csv")
    assert result.returncode == 3, result.stderr
    rows = rows_of(tmp_path / "out.jsonl")
    name = str(tmp_path / "in.csv")
    assert [row["id"] for row in rows] == [f"{name}:{line}" for line in range(2, 10)]
    assert [row.get("error") for row in rows] == [
        None,
        f"{name}:3: expected 13 fields, got 14",
        f"{name}:4: expected 13 fields, got 10",
        f"{name}:5: unbalanced quote (a quoted field never closes on this line)",
        f"{name}:6: not valid UTF-8 (byte 2 of the line)",
        f"{name}:7: field 'alcohol': 1e39 does not fit a float32 (largest 3.4e38)",
        f"{name}:8: field 'alcohol': 'inf' is not a finite number",
        None,
    ]
    assert rows[0]["label"] == rows[-1]["label"] and rows[0]["probability"] == rows[-1]["probability"]
    assert "6 failed" in result.stderr
    full = (tmp_path / "out.jsonl").read_text().splitlines()
    (tmp_path / "resumed.jsonl.partial.jsonl").write_text("\n".join(full[:4]) + "\n")  # killed after line 5
    resumed = predict(wine, tmp_path / "resumed.jsonl", tmp_path / "in.csv", extra=["--resume"])
    assert resumed.returncode == 3 and "4 resumed" in resumed.stderr
    assert (tmp_path / "resumed.jsonl").read_text().splitlines() == full


def test_evaluate_over_zero_rows_is_an_error_and_metrics_json_has_no_nan(wine, tmp_path, capsys):
    header = (wine["data"] / "test.csv").read_text().splitlines()[0]
    (tmp_path / "header.csv").write_text(header + "\n")
    result = run_aitk("wine", "evaluate", str(wine["bundle"]), str(tmp_path / "header.csv"), plugins="wine")
    assert result.returncode == 1 and result.stderr.strip() == f"error: {tmp_path / 'header.csv'}: no rows"

    from applied_aitk.display import print_metrics

    print_metrics({"roc_auc": float("nan"), "per_class": {"a": float("inf"), "b": 0.5}}, as_json=True)
    assert json.loads(capsys.readouterr().out) == {"roc_auc": None, "per_class": {"a": None, "b": 0.5}}


def test_far_outside_training_is_scored_with_a_warning(wine, tmp_path):
    lines = (wine["data"] / "predict.csv").read_text().splitlines()
    first = lines[1].split(",")
    far = ["1e30", *first[1:]]
    (tmp_path / "in.csv").write_text("\n".join([lines[0], lines[1], ",".join(far)]) + "\n")
    assert predict(wine, tmp_path / "out.jsonl", tmp_path / "in.csv").returncode == 0
    normal, extreme = rows_of(tmp_path / "out.jsonl")
    assert "warnings" not in normal
    assert extreme["label"].startswith("cultivar_") and len(extreme["warnings"]) == 1
    assert extreme["warnings"][0].startswith("field 'alcohol': 1e+30 is far outside the training range [") and "; scored as " in extreme["warnings"][0]


def test_an_unreadable_file_is_an_error_row_and_the_others_go_on(wine, tmp_path):
    (tmp_path / "nocolumns.csv").write_text("a,b\n1,2\n")
    (tmp_path / "empty.csv").write_text("")
    result = predict(wine, tmp_path / "out.jsonl", tmp_path / "nocolumns.csv", tmp_path / "empty.csv", wine["data"] / "predict.csv")
    assert result.returncode == 3, result.stderr
    rows = rows_of(tmp_path / "out.jsonl")
    assert rows[0]["id"] == str(tmp_path / "nocolumns.csv")
    assert rows[0]["error"].startswith(f"{tmp_path / 'nocolumns.csv'}: missing columns 'alcohol', 'malic_acid'")
    assert len(rows) == 1 + len((wine["data"] / "predict.csv").read_text().splitlines()) - 1
    assert all("label" in row for row in rows[1:])
    assert f"warning: {tmp_path / 'empty.csv'}: no rows" in result.stderr


def test_no_input_files_is_an_error_naming_the_spec_and_the_types(wine, tmp_path):
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "notes.txt").write_text("x")
    result = predict(wine, tmp_path / "out.jsonl", tmp_path / "none")
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {tmp_path / 'none'}: no input files in this folder (.csv, .tsv, .jsonl, .ndjson, .parquet, also .gz)"
    assert not (tmp_path / "out.jsonl").exists()


def test_gzipped_and_utf16_tables_are_read_like_plain_ones(wine, tmp_path):
    import gzip

    text = (wine["data"] / "predict.csv").read_text()
    (tmp_path / "plain.csv").write_text(text)
    (tmp_path / "z.csv.gz").write_bytes(gzip.compress(text.encode()))
    (tmp_path / "u16.csv").write_bytes(text.encode("utf-16"))
    outputs = []
    for name in ("plain.csv", "z.csv.gz", "u16.csv"):
        assert predict(wine, tmp_path / f"{name}.jsonl", tmp_path / name).returncode == 0
        outputs.append([{k: v for k, v in row.items() if k != "id"} for row in rows_of(tmp_path / f"{name}.jsonl")])
    assert outputs[0] == outputs[1] == outputs[2]



def test_a_folder_of_tsv_and_ndjson_tables_is_read_and_fraud_trains_on_them(wine, tmp_path):
    """A folder holding .tsv or .ndjson tables (formats the README lists) was 'no input files', and
    fraud's train and evaluate refused them, 'expected a .csv, .jsonl or .parquet file'."""
    import csv

    from applied_aitk.usecases.fraud.data import read_table

    text = (wine["data"] / "predict.csv").read_text()
    records = list(csv.DictReader(text.splitlines()))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "t.tsv").write_text(text.replace(",", "\t"))
    (tmp_path / "in" / "j.ndjson").write_text("".join(json.dumps({k: float(v) for k, v in r.items()}) + "\n" for r in records))
    assert predict(wine, tmp_path / "plain.jsonl", wine["data"] / "predict.csv").returncode == 0
    assert predict(wine, tmp_path / "out.jsonl", tmp_path / "in").returncode == 0
    plain = [{k: v for k, v in row.items() if k != "id"} for row in rows_of(tmp_path / "plain.jsonl")]
    rows = rows_of(tmp_path / "out.jsonl")
    assert [row["id"] for row in rows] == [f"{tmp_path / 'in' / name}:{n}" for name, first in (("j.ndjson", 1), ("t.tsv", 2)) for n in range(first, first + len(records))]
    assert [{k: v for k, v in row.items() if k != "id"} for row in rows] == plain * 2
    for name in ("t.tsv", "j.ndjson"):
        assert read_table(tmp_path / "in" / name).astype(float).to_dict("list") == {k: [float(r[k]) for r in records] for k in records[0]}

def test_same_file_names_in_two_folders_keep_apart_and_resume_equals_a_full_run(wine, tmp_path):
    lines = (wine["data"] / "predict.csv").read_text().splitlines()
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        body = lines[1:] if folder == "a" else lines[:0:-1]  # the same name, different rows
        (tmp_path / folder / "predict.csv").write_text("\n".join([lines[0], *body * 20]) + "\n")
    inputs = [tmp_path / "a" / "predict.csv", tmp_path / "b" / "predict.csv"]
    assert predict(wine, tmp_path / "full.jsonl", *inputs).returncode == 0
    full = (tmp_path / "full.jsonl").read_text().splitlines()
    ids = [json.loads(line)["id"] for line in full]
    assert len(ids) == len(set(ids)) == 2 * 20 * (len(lines) - 1)
    for cut in (len(full) // 3, len(full) // 2 + 7):  # killed in file a, and in file b; the last line cut short
        journal = tmp_path / "resumed.jsonl.partial.jsonl"
        journal.write_text("\n".join(full[:cut]) + "\n" + full[cut][:20])
        resumed = predict(wine, tmp_path / "resumed.jsonl", *inputs, extra=["--resume"])
        assert resumed.returncode == 0, resumed.stderr
        assert f"{cut} resumed" in resumed.stderr
        assert (tmp_path / "resumed.jsonl").read_text().splitlines() == full
        (tmp_path / "resumed.jsonl").unlink()


def test_training_tables_read_gzip_and_utf16_like_plain_ones(wine, tmp_path):
    import gzip

    import numpy as np
    from aitk_wine.data import read_table

    text = (wine["data"] / "train.csv").read_text()
    (tmp_path / "z.csv.gz").write_bytes(gzip.compress(text.encode()))
    (tmp_path / "u16.csv").write_bytes(text.encode("utf-16"))
    plain = read_table(wine["data"] / "train.csv", "label")
    for name in ("z.csv.gz", "u16.csv"):
        x, labels, features = read_table(tmp_path / name, "label")
        np.testing.assert_array_equal(x, plain[0])
        assert (labels, features) == (plain[1], plain[2])



def test_training_table_errors_name_the_editor_line(tmp_path):
    from aitk_wine.data import read_table

    from applied_aitk import AitkError

    path = tmp_path / "t.csv"  # line 1 the hint, 2 the header, 3-4 a quoted field, 5 blank, 6 the bad cell
    for cell, problem in (("x", "expected a number, got 'x'"), ("", "missing value"), ("1e39", "1e+39 is not a finite float32")):
        path.write_text(f'sep=,\na,b,label\n2,1,"two\nlines"\n\n{cell},1,q\n')
        with pytest.raises(AitkError) as raised:
            read_table(path, "label")
        assert str(raised.value) == f"{path}:6: column 'a': {problem}"


def test_parquet_keeps_nested_values_as_list_and_struct_columns_csv_as_json(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from applied_aitk.outputs import read_rows, write_rows

    rows = [
        {"id": "a", "p50": [371.7, 380], "boxes": [[1, 2, 3, 4]], "info": {"label": "ok", "score": 0.5}},
        {"id": "b", "p50": [1, 2], "boxes": [], "info": {"label": "defect", "score": 1}},
        {"id": "c", "error": "unreadable"},
    ]
    write_rows(lambda: iter(rows), tmp_path / "out.parquet")
    schema = pq.read_schema(tmp_path / "out.parquet")
    assert schema.field("p50").type == pa.list_(pa.float64())
    assert schema.field("boxes").type == pa.list_(pa.list_(pa.int64()))
    assert schema.field("info").type == pa.struct([("label", pa.string()), ("score", pa.float64())])
    table = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert table[0]["p50"] == [371.7, 380.0] and table[1]["boxes"] == [] and table[2]["p50"] is None and table[2]["error"] == "unreadable"
    assert list(read_rows(tmp_path / "out.parquet")) == table  # what --resume reads back
    write_rows(lambda: iter(rows), tmp_path / "out.csv")
    frame = pd.read_csv(tmp_path / "out.csv")
    assert json.loads(frame["p50"][0]) == [371.7, 380] and json.loads(frame["info"][1]) == {"label": "defect", "score": 1}


def test_a_layout_splits_rows_as_the_output_is_written_and_a_resumed_run_keeps_them(tmp_path):
    from applied_aitk.batch import Counter, Journal, write_batches
    from applied_aitk.outputs import read_rows

    def split(row):  # a row with a list of steps -> a row per step; one already split stays
        return [{"id": row["id"], "step": s} for s in row["steps"]] if "steps" in row else [row]

    out = tmp_path / "out.parquet"
    rows = [{"id": "a", "steps": [1, 2]}, {"id": "b", "error": "unreadable"}, {"id": "c", "steps": [3]}]
    summary = write_batches([rows[:2], rows[2:]], Journal(out, resume=False, layout=split), Counter(), None)
    written = list(read_rows(out))
    assert [(r["id"], r["step"], r["error"]) for r in written] == [("a", 1, None), ("a", 2, None), ("b", None, "unreadable"), ("c", 3, None)]
    assert summary["records"] == 3 and summary["failed_in_output"] == 1
    again = write_batches([], Journal(out, resume=True, layout=split), Counter(), None)  # every record done already
    assert again["failed_in_output"] == 1 and list(read_rows(out)) == written


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_resume_over_other_inputs_keeps_only_the_rows_of_records_given_now(wine, tmp_path, suffix):
    lines = (wine["data"] / "predict.csv").read_text().splitlines()
    (tmp_path / "old.csv").write_text("\n".join(lines[:4] + ["1,2,3"]) + "\n")  # 3 rows and a short one
    out = tmp_path / f"out{suffix}"
    assert predict(wine, out, tmp_path / "old.csv").returncode == 3
    resumed = predict(wine, out, wine["data"] / "predict.csv", extra=["--resume"])
    assert resumed.returncode == 0, resumed.stderr  # the old file's error row is gone with its records
    assert "4 row(s) in" in resumed.stderr and "left out" in resumed.stderr
    frame = pd.read_json(out, lines=True) if suffix == ".jsonl" else pd.read_parquet(out)
    assert frame["id"].tolist() == [f"{wine['data'] / 'predict.csv'}:{n}" for n in range(2, len(lines) + 1)]


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the read on stdin through /proc (Linux)")
def test_ctrl_c_while_predict_waits_on_stdin_ends_with_one_line(wine, tmp_path):
    command = [*AITK, "wine", "predict", str(wine["bundle"]), "-", "--out", str(tmp_path / "out.jsonl")]
    # SIGINT as at a terminal: a shell ignores it in the jobs it starts in the background (`make test &`)
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "AITK_LOAD_PLUGINS": "wine"}, preexec_fn=_default_sigint)
    try:
        deadline = time.monotonic() + 60
        while (reader := _thread_reading_stdin(process.pid)) is None and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        # The kernel may hand Ctrl-C's SIGINT to any thread; the hard case is the one blocked in
        # read(2), which Python does not interrupt: the main thread must still see it.
        ctypes.CDLL(None, use_errno=True).tgkill(process.pid, reader, signal.SIGINT)
        process.wait(timeout=30)  # stdin still open: no end of input races the interrupt
        err = process.stderr.read()
    finally:
        process.kill()
        process.stdin.close()
    assert (process.returncode, err.strip()) == (130, "interrupted")  # not "Fatal Python error ... lock for <stdin>"
    assert list(tmp_path.iterdir()) == []


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _thread_reading_stdin(pid: int) -> int | None:
    """The id of a thread of ``pid`` waiting in read(2) on descriptor 0, if one is."""
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            if (task / "syscall").read_text().startswith("0 0x0 "):
                return int(task.name)
        except OSError:
            continue
    return None
