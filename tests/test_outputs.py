"""The batch output encoding: one orjson call per row, NaN and inf never written, any value a
plugin may return either written as JSON or turned into an error row (never a crash)."""

import json

import numpy as np

from applied_aitk.batch import Journal
from applied_aitk.outputs import json_lines, read_jsonl, write_jsonl


def lines(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode("utf-8").splitlines()]


def test_rows_are_json_lines_with_nulls_kept_and_non_finite_values_refused():
    rows = [{"id": "a", "p": 0.25, "note": None, "é": "ü"}, {"id": "b", "p": [1.0, float("-inf")]}, {"id": "c", "x": None}]
    data, written = json_lines(rows)
    assert data.endswith(b"\n") and b"Infinity" not in data
    assert lines(data) == written == [
        {"id": "a", "p": 0.25, "note": None, "é": "ü"},
        {"id": "b", "error": "the model gave a non-finite value (-inf) for output field 'p.1'"},
        {"id": "c", "x": None},
    ]
    assert json_lines([]) == (b"", [])


def test_values_orjson_refuses_are_written_by_the_standard_library_or_become_error_rows():
    rows = [
        {"id": "numpy", "score": np.float64(0.5), "big": 2**70, "by_class": {1: 0.5}},
        {"id": "nan32", "score": np.float32("nan")},
        {"id": "object", "score": object()},
        {"id": "bad\udcff", "label": "x"},
    ]
    got = lines(json_lines(rows)[0])
    assert got[0] == {"id": "numpy", "score": 0.5, "big": 2**70, "by_class": {"1": 0.5}}
    assert got[1] == {"id": "nan32", "error": "the model gave a non-finite value (nan) for output field 'score'"}
    assert got[2]["id"] == "object" and "JSON cannot hold" in got[2]["error"]
    assert got[3] == {"id": "bad\udcff", "label": "x"}  # the id read back equals the record's: --resume skips it


def test_journal_appends_whole_batches_and_resume_reads_them(tmp_path):
    out = tmp_path / "out.jsonl"
    journal = Journal(out, resume=False)
    assert journal.write([{"id": "a", "v": 1}, {"id": "b", "v": float("nan")}]) == 1
    journal.file.close()  # killed here: the journal stays, OUT is not written
    assert not out.exists()
    resumed = Journal(out, resume=True)
    assert resumed.ids == {"a", "b"} and resumed.failed == 1
    resumed.write([{"id": "c", "v": 3}])
    resumed.close()
    assert [row["id"] for row in read_jsonl(out)] == ["a", "b", "c"]


def test_write_jsonl_refuses_non_finite_values_too(tmp_path):
    write_jsonl(iter([{"id": "a", "v": float("inf")}, {"id": "b", "v": 2}]), tmp_path / "x.jsonl")
    assert [row.get("error") is None for row in read_jsonl(tmp_path / "x.jsonl")] == [False, True]


def test_finite_rows_keeps_finite_rows_and_names_the_field_of_a_non_finite_one():
    from applied_aitk.outputs import finite_rows

    rows = [{"id": "0", "score": 0.5, "top": [{"value": None, "impact": 1.0}]}, {"id": "1", "top": [{"impact": float("inf")}]}]
    assert finite_rows(rows[:1]) == rows[:1]
    assert finite_rows(rows) == [rows[0], {"id": "1", "error": "the model gave a non-finite value (inf) for output field 'top.0.impact'"}]
    assert finite_rows([{"id": "2", "n": 2**70}]) == [{"id": "2", "n": 2**70}]  # orjson refuses it: checked row by row
