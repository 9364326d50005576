"""The core table reader and the batch writer's guard: bad rows isolated, nothing non-finite written."""

import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from applied_aitk.batch import Journal
from applied_aitk.ranges import TrainingRanges, value_ranges
from applied_aitk.table_files import table_batches
from applied_aitk.tables import Schema, read_records


def records(path, schema):
    return [(r.id, None if r.data is None else (r.data[0].tolist(), r.data[1]), r.error) for r in read_records([path], schema)]


def test_rows_decode_a_batch_at_a_time_and_bad_cells_fail_alone(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b'x,kind,y,extra\n1,a,2.5,z\n\n3,,NA,z\n4,"b,c",abc,z\n5,d,1e39,z\n')
    schema = Schema(("x", "y"), ("kind",), frozenset({"", "na"}))
    got = records(path, schema)
    assert got[0] == (f"{path}:2", ([1.0, 2.5], ("a",)), None)
    assert got[1][0] == f"{path}:4" and got[1][1][0][0] == 3.0 and np.isnan(got[1][1][0][1]) and got[1][1][1] == (None,)
    assert got[2] == (f"{path}:5", None, f"{path}:5: field 'y': 'abc' is not a number")
    assert got[3] == (f"{path}:6", None, f"{path}:6: field 'y': 1e39 does not fit a float32 (largest 3.4e38)")
    strict = records(path, Schema(("x", "y")))
    assert strict[1] == (f"{path}:4", None, f"{path}:4: field 'y': 'NA' is not a finite number")


def test_only_ascii_number_syntax_and_long_values_are_shortened_in_messages(tmp_path):
    path = tmp_path / "n.csv"
    path.write_text(f"x\n١٢\n１３\n1_000\n1{'0' * 400}\n{'7' * 100_000}\n-1e400\n 2 \n", encoding="utf-8")
    got = [error or data[0] for _, data, error in records(path, Schema(("x",)))]
    assert got[:3] == [f"{path}:{n}: field 'x': {v!r} is not a number" for n, v in ((2, "١٢"), (3, "１３"), (4, "1_000"))]
    assert got[3] == f"{path}:5: field 'x': 10000000000000000000… (401 characters) does not fit a float32 (largest 3.4e38)"
    assert got[4] == f"{path}:6: field 'x': 77777777777777777777… (100000 characters) does not fit a float32 (largest 3.4e38)"
    assert got[5:] == [f"{path}:7: field 'x': -1e400 does not fit a float32 (largest 3.4e38)", [2.0]]


def test_numbers_read_the_same_whether_their_block_is_parsed_as_numbers_or_as_text(tmp_path):
    cells = [" 1.5", "2\t", "+3", "-.5e-3", "1E+05", "00012", "3.4028234e38", "5."]
    plain, mixed = tmp_path / "plain.csv", tmp_path / "mixed.csv"
    plain.write_text("x,k\n" + "".join(f"{c},a\n" for c in cells))  # every x a number: Arrow parses x as float64
    mixed.write_text("x,k\n" + "".join(f"{c},a\n" for c in cells) + "nan,a\n")  # one is not: the block is read as text
    schema = Schema(("x",), ("k",))
    fast, slow = records(plain, schema), records(mixed, schema)
    assert [next(table_batches(f, ["x", "k"], ["x"])).columns["x"].type for f in (plain, mixed)] == [pa.float64(), pa.string()]
    assert [data for _, data, _ in fast] == [data for _, data, _ in slow[:-1]] == [([float(np.float32(c))], ("a",)) for c in cells]
    assert slow[-1][2] == f"{mixed}:10: field 'x': 'nan' is not a finite number"
    both = records(plain, Schema(("x",), ("x",)))  # a column read as a number and as text keeps its text as written
    assert [data[1] for _, data, _ in both] == [(c,) for c in cells]


def test_parquet_rows_and_nulls(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"x": [1.0, None, float("inf")], "code": [5411.0, None, 7.5]}), path)
    got = records(path, Schema(("x",), ("code",)))
    assert got[0] == (f"{path}:1", ([1.0], ("5411",)), None)
    assert got[1] == (f"{path}:2", None, f"{path}:2: field 'x': missing, expected a number")
    assert got[2] == (f"{path}:3", None, f"{path}:3: field 'x': inf is not a finite number")


def test_a_missing_column_or_unreadable_file_is_one_error_record(tmp_path):
    (tmp_path / "a.csv").write_text("x,z\n1,2\n")
    assert records(tmp_path / "a.csv", Schema(("x", "y"))) == [(str(tmp_path / "a.csv"), None, f"{tmp_path / 'a.csv'}: missing column 'y' (columns: x, z)")]
    assert records(tmp_path / "nope.csv", Schema(("x",)))[0][2] == f"{tmp_path / 'nope.csv'}: cannot open (No such file or directory)"


def test_values_far_outside_training_are_clipped_with_a_warning():
    ranges = value_ranges(np.array([[0.0, 10.0], [1.0, 20.0]]))
    assert ranges == [[0.0, 1.0], [10.0, 20.0]]
    x = np.array([[0.5, 15.0], [1.9, 31.0], [-1.5, np.nan]], dtype=np.float32)
    clipped, warnings = TrainingRanges(["a", "b"], ranges).clip(x)
    np.testing.assert_array_equal(clipped, np.array([[0.5, 15.0], [1.9, 30.0], [-1.0, np.nan]], dtype=np.float32))
    assert warnings == [
        [],
        ["field 'b': 31 is far outside the training range [10, 20]; scored as 30"],
        ["field 'a': -1.5 is far outside the training range [0, 1]; scored as -1"],
    ]


def test_the_writer_turns_a_non_finite_row_into_an_error_row(tmp_path):
    journal = Journal(tmp_path / "out.jsonl", resume=False)
    bad = journal.write([{"id": "a", "score": 0.5}, {"id": "b", "score": float("nan")}, {"id": "c", "p": {"x": float("inf")}}])
    journal.close()
    text = (tmp_path / "out.jsonl").read_text()
    assert bad == 2 and "NaN" not in text and "Infinity" not in text
    rows = [json.loads(line) for line in text.splitlines()]
    assert rows[0] == {"id": "a", "score": 0.5}
    assert rows[1] == {"id": "b", "error": "the model gave a non-finite value (nan) for output field 'score'"}
    assert rows[2]["error"] == "the model gave a non-finite value (inf) for output field 'p.x'"


def test_crlf_lines_blank_lines_and_quoted_text(tmp_path):
    path = tmp_path / "crlf.csv"
    path.write_bytes(b'a,b\r\n1,2\r\n\r\n3,"x, y"\r\n4,5')
    assert records(path, Schema(("a",), ("b",))) == [
        (f"{path}:2", ([1.0], ("2",)), None), (f"{path}:4", ([3.0], ("x, y",)), None), (f"{path}:5", ([4.0], ("5",)), None),
    ]


def test_blank_lines_before_the_header_are_skipped_and_an_all_blank_file_is_empty(tmp_path, caplog):
    (tmp_path / "b.csv").write_bytes(b"\n \t\r\nx,y\n1,2\n")
    (tmp_path / "h.csv").write_bytes(b"sep=;\n\n\nx;y\n1;2\n")
    for name, line in (("b.csv", 4), ("h.csv", 5)):
        assert records(tmp_path / name, Schema(("x", "y"))) == [(f"{tmp_path / name}:{line}", ([1.0, 2.0], ()), None)]
    (tmp_path / "blank.csv").write_bytes(b"\n  \n\r\n")
    assert records(tmp_path / "blank.csv", Schema(("x", "y"))) == []
    assert "blank.csv: no rows, nothing to predict" in caplog.text
    from applied_aitk.table_files import read_frame  # training and evaluation: the same lines, with the same numbers

    (tmp_path / "t.csv").write_bytes(b"\n \nsep=;\n\nx;y\n1,5;2\n")
    assert read_frame(tmp_path / "t.csv").to_dict("index") == {6: {"x": 1.5, "y": 2}}
    assert records(tmp_path / "t.csv", Schema(("x", "y"))) == [(f"{tmp_path / 't.csv'}:6", ([1.5, 2.0], ()), None)]


def test_duplicate_record_ids_are_made_unique_the_same_way_every_run(caplog):
    from applied_aitk.batch import Counter, skip_done
    from applied_aitk.usecase import Record

    given = [Record("x", 1), Record("y", 2), Record("x", 3), Record("x", 4)]
    first = [r.id for r in skip_done(iter(given), set(), Counter())]
    assert first == ["x", "y", "x#2", "x#3"]
    assert "record id 'x' appears more than once" in caplog.text
    skipped = Counter()
    resumed = [(r.id, r.data) for r in skip_done(iter(given), {"x", "y", "x#2"}, skipped)]
    assert resumed == [("x#3", 4)] and skipped.value == 3


def test_spreadsheet_dialects_semicolon_with_decimal_commas_and_tab(tmp_path):
    (tmp_path / "eu.csv").write_bytes("x;kind;y\n1,5;a;-2,5e-1\n3;b,c;4,0\n5;d;1.234,5\n1.335;e;1\n".encode())
    got = records(tmp_path / "eu.csv", Schema(("x", "y"), ("kind",)))
    assert [g[1] for g in got[:2]] == [([1.5, -0.25], ("a",)), ([3.0, 4.0], ("b,c",))]
    thousands = "has a '.' in a file with decimal commas (a thousands mark?)"  # refused, never misread
    assert got[2][2].endswith(f"eu.csv:4: field 'y': '1.234,5' {thousands}")
    assert got[3][2].endswith(f"eu.csv:5: field 'x': '1.335' {thousands}")
    (tmp_path / "t.tsv").write_bytes(b"y\tx\n2.5\t1\n")
    assert records(tmp_path / "t.tsv", Schema(("x", "y")))[0][1] == ([1.0, 2.5], ())
    (tmp_path / "utf16.csv").write_bytes("x,y\n1,2\n".encode("utf-16-le"))  # no byte-order mark
    assert records(tmp_path / "utf16.csv", Schema(("x",)))[0][2].endswith("line 1: NUL byte at byte 1 (UTF-16 needs a byte-order mark; expected UTF-8)")


def test_excels_sep_hint_line_sets_the_delimiter_and_is_not_the_header(tmp_path):
    from applied_aitk.table_files import read_frame

    (tmp_path / "x.csv").write_bytes("sep=;\r\nx;kind;y\r\n1,5;a,b;2\r\n3;c;oops\r\n".encode("utf-8-sig"))
    got = records(tmp_path / "x.csv", Schema(("x", "y"), ("kind",)))
    assert got[0] == (f"{tmp_path / 'x.csv'}:3", ([1.5, 2.0], ("a,b",)), None)
    assert got[1][2] == f"{tmp_path / 'x.csv'}:4: field 'y': 'oops' is not a number"  # lines as an editor counts them
    assert read_frame(tmp_path / "x.csv", text_cells=True).to_dict("list") == {"x": ["1.5", "3"], "kind": ["a,b", "c"], "y": ["2", "oops"]}
    (tmp_path / "p.csv").write_text('"sep=|"\nx|y\n1|2\n')
    assert records(tmp_path / "p.csv", Schema(("x", "y")))[0][1] == ([1.0, 2.0], ())


def test_read_frame_finds_the_dialect_for_training_tables(tmp_path):
    from applied_aitk.errors import InputError
    from applied_aitk.table_files import read_frame

    (tmp_path / "eu.csv").write_bytes("x;code;label\n1,5;007;a\n-2,5e1;010;b\n".encode("utf-8-sig"))
    frame = read_frame(tmp_path / "eu.csv")
    assert frame["x"].tolist() == [1.5, -25.0] and frame["label"].tolist() == ["a", "b"]
    assert read_frame(tmp_path / "eu.csv", text_cells=True).to_dict("list") == {"x": ["1.5", "-2.5e1"], "code": ["007", "010"], "label": ["a", "b"]}
    (tmp_path / "dot.csv").write_bytes("x;y\n1,5;2,5\n1.335;3,1\n2;4,5\n".encode())  # a thousands mark, never read as 1.335
    for text_cells in (False, True):
        with pytest.raises(InputError, match=r"dot.csv:3: column 'x': '1.335' has a '.' in a file with decimal commas"):
            read_frame(tmp_path / "dot.csv", text_cells=text_cells)


@pytest.mark.parametrize("cell, expected", [
    (1.5, 1.5), (2, 2.0), ("1.5", 1.5), (None, "field 'a': missing, expected a number"),
    (True, "field 'a': expected a number or text, got true/false"), (-1e39, " does not fit a float32 (largest 3.4e38)"),
    (10**400, "field 'a': 10000000000000000000… (401 characters) does not fit a float32 (largest 3.4e38)"), ("lots", "field 'a': 'lots' is not a number"),
])
def test_a_json_row_takes_numbers_and_numeric_text_and_names_a_bad_field(cell, expected):
    from applied_aitk.errors import InputError
    from applied_aitk.tables import record_from_object

    schema = Schema(("a", "b"), ("t",))
    row = {"a": cell, "b": 3, "t": 7}
    if isinstance(expected, str):
        with pytest.raises(InputError, match=re.escape(expected)):
            record_from_object(row, schema, "0")
        return
    numbers, texts = record_from_object(row, schema, "0").data
    assert numbers.dtype == np.float32 and numbers.tolist() == [expected, 3.0] and texts == ("7",)


BAD_RECORDS = [[1, 2], "row", None, {"b": 3, "t": "x"}, {"a": 1, "b": 2}, {"a": True, "b": 2, "t": "x"}, {"a": [1, 2], "b": 2, "t": "x"},
               {"a": {"v": 1}, "b": 2, "t": "x"}, {"a": 1, "b": 2, "t": False}, {"a": 1e39, "b": 2, "t": "x"},
               {"a": "lots", "b": 2, "t": "x"}, {"a": None, "b": "", "t": "x"}, {"a": "inf", "b": 2, "t": "x"}, {"a": 1, "b": 2, "t": [1]},
               {"a": True, "t": [1]}, {"a": "1", "b": 1e39, "t": "x"}]


def test_a_bad_json_record_gets_the_error_batch_predict_writes_for_that_json_line(tmp_path):
    """`aitk serve` and batch `predict` check a JSON record with the same functions: same error
    text for every bad record (the line's number aside), so the two cannot drift."""
    from applied_aitk.errors import InputError
    from applied_aitk.tables import record_from_object

    schema = Schema(("a", "b"), ("t",))
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [{"a": 1, "b": 2, "t": "x"}, *BAD_RECORDS]) + "\n")
    batch = [error.split(": ", 1)[1] for _, _, error in records(path, schema)[1:]]
    served = []
    for record in BAD_RECORDS:
        with pytest.raises(InputError) as e:
            record_from_object(record, schema, "0")
        served.append(str(e.value))
    assert served == batch
    assert batch[:6] == ["expected a JSON object of column: value"] * 3 + ["field 'a': missing", "field 't': missing",
                                                                            "field 'a': expected a number or text, got true/false"]


def test_json_lines_quote_a_number_beyond_float32_as_written_on_either_path(tmp_path):
    fit = "does not fit a float32 (largest 3.4e38)"
    lines = ['{"x": 1e+39}', '{"x": 1' + "0" * 50 + "}", '{"x": -2.5E300}', '{"x": 1e400}', '{"x": 1' + "0" * 400 + "}"]
    expected = [f"1e+39 {fit}", f"10000000000000000000… (51 characters) {fit}", f"-2.5E300 {fit}", f"1e400 {fit}",
                f"10000000000000000000… (401 characters) {fit}"]
    for i, line in enumerate(lines):  # alone (a block parsed at once) and after a good line
        for name, text in ((f"a{i}.jsonl", line), (f"b{i}.jsonl", '{"x": 2}\n' + line)):
            (tmp_path / name).write_text(text + "\n")
            assert records(tmp_path / name, Schema(("x",)))[-1][2].endswith(f": field 'x': {expected[i]}")


def test_json_lines_are_table_rows_as_serve_takes_them_and_a_bad_line_fails_alone(tmp_path):
    import codecs
    import gzip

    from applied_aitk.tables import record_from_object

    schema = Schema(("a", "b"), ("t",))
    good = [{"a": 1.5, "b": "2", "t": 7}, {"b": 3, "a": -1e-3, "t": "x", "extra": [1]}, {"a": 0.1, "b": None, "t": None}]
    lines = [json.dumps(good[0]), json.dumps(good[1]), "", '{"a": 1, "b": 2', "[1, 2]", '{"a": 1, "t": "x"}',
             '{"a": true, "b": 1, "t": "x"}', "\udcff", json.dumps(good[2])]
    path = tmp_path / "rows.jsonl.gz"
    path.write_bytes(gzip.compress(codecs.BOM_UTF8 + "\n".join(lines).encode("utf-8", "surrogateescape")))
    got = records(path, Schema(("a", "b"), ("t",), frozenset({""})))
    served = [record_from_object(row, schema, "0").data for row in good[:2]]
    assert got[:2] == [(f"{path}:{i + 1}", (numbers.tolist(), texts), None) for i, (numbers, texts) in enumerate(served)]
    assert [(id, error) for id, _, error in got[2:7]] == [
        (f"{path}:4", f"{path}:4: not valid JSON (unexpected end of data at character 15)"),
        (f"{path}:5", f"{path}:5: expected a JSON object of column: value"),
        (f"{path}:6", f"{path}:6: field 'b': missing"),
        (f"{path}:7", f"{path}:7: field 'a': expected a number or text, got true/false"),
        (f"{path}:8", f"{path}:8: not valid UTF-8 (byte 0 of the line)"),
    ]
    assert got[7][0] == f"{path}:9" and got[7][1][0][0] == np.float32(0.1) and np.isnan(got[7][1][0][1]) and got[7][1][1] == (None,)
    other = tmp_path / "other.jsonl"
    other.write_text('{"x": 1}\n{"y": 2}\n')
    assert records(other, schema) == [(str(other), None, f"{other}: missing columns 'a', 'b', 't' (columns: x)")]


def test_a_block_read_at_once_gives_what_the_same_lines_give_one_by_one(tmp_path):
    """Blocks of plain rows are parsed in one call (CSV: Arrow; JSON lines: orjson, numbers kept as
    float64): the rows must decode as they do when a bad line sends the block down the line-by-line path."""
    schema = Schema(("a", "b"), ("t",), frozenset({""}))
    rows = [{"a": 1.5, "b": 2, "t": 5411}, {"a": -0.0, "b": 2**53 + 1, "t": 2**53 + 1}, {"a": 1e-3, "b": None, "t": "x"}]
    plain, with_bad = tmp_path / "plain.jsonl", tmp_path / "bad.jsonl"
    plain.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with_bad.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"a": true, "b": 1, "t": "y"}\n')
    at_once, by_line = records(plain, schema), records(with_bad, schema)
    assert repr([r[1:] for r in at_once]) == repr([r[1:] for r in by_line[:3]]) and by_line[3][2].endswith("got true/false")
    assert at_once[0][1] == ([1.5, 2.0], ("5411",)) and at_once[1][1][1] == ("9007199254740993",)
    csv = tmp_path / "t.csv"  # a line of white space is blank on either path; a bare carriage return splits no row
    csv.write_bytes(b"a,b,t\n1,2,x\n  \n3,4,y\n5,6,z\r7,8,w\n9,10,v\n")
    got = records(csv, schema)
    assert [r[0].rsplit(":", 1)[1] for r in got] == ["2", "4", "5", "6"]
    assert got[2][2].endswith(":5: a carriage return inside the line (expected one record a line)")
    assert got[3][1] == ([9.0, 10.0], ("v",))
    csv.write_bytes(b'a,b,t\n1,1.0\r2.0,x\n3,4,"q"\n5,6\r,z\n')  # a carriage return in a field, quoted block or not
    got = records(csv, schema)
    assert [r[2] and r[2].split(": ", 1)[1] for r in got] == ["a carriage return inside the line (expected one record a line)", None,
                                                          "a carriage return inside the line (expected one record a line)"]


def test_minus_zero_keeps_its_sign_in_json_lines_as_in_csv_and_parquet(tmp_path):
    """JSON's -0.0 was read as 0.0 (as the text "0") where CSV and Parquet keep -0.0: the same row,
    the same numbers and text in every format, on the block path and the line-by-line one."""
    schema = Schema(("a", "b"), ("a",))
    (tmp_path / "t.csv").write_text("a,b\n-0.0,1\n2,-0.0\n")
    pq.write_table(pa.table({"a": [-0.0, 2.0], "b": [1.0, -0.0]}), tmp_path / "t.parquet")
    (tmp_path / "t.jsonl").write_text('{"a": -0.0, "b": 1}\n{"a": 2, "b": -0.0}\n')
    (tmp_path / "bad.jsonl").write_text('{"a": -0.0, "b": 1}\n{"a": 2, "b": -0.0}\n[1]\n')  # line by line
    for name in ("t.csv", "t.parquet", "t.jsonl", "bad.jsonl"):
        got = [data for _, data, _ in records(tmp_path / name, schema)][:2]
        assert repr(got) == repr([([-0.0, 1.0], ("-0.0",)), ([2.0, -0.0], ("2",))]), name


def test_read_frame_reads_json_lines_as_the_csv_of_their_keys(tmp_path):
    from applied_aitk.errors import InputError
    from applied_aitk.table_files import read_frame

    path = tmp_path / "train.jsonl"
    path.write_text('{"x": 1.5, "label": "a", "code": "007"}\n\n{"label": "b", "x": 2, "code": null, "note": [1]}\n')
    frame = read_frame(path)
    assert frame["x"].tolist() == [1.5, 2.0] and frame["label"].tolist() == ["a", "b"]
    assert list(frame.index) == [1, 3]  # the line of each object, as messages name it
    assert read_frame(path, text_cells=True).to_dict("list") == {"x": ["1.5", "2"], "label": ["a", "b"], "code": ["007", ""], "note": ["", "[1]"]}
    path.write_text('{"x": 1}\n[1]\n')
    with pytest.raises(InputError, match=re.escape(f"{path}: line 2: expected a JSON object of column: value")):
        read_frame(path)


def test_json_lines_on_stdin_are_told_from_csv_by_their_first_line(monkeypatch):
    import io
    from pathlib import Path

    schema = Schema(("a",))
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b'{"a": 1}\n{"b": 2}\n')))
    assert records(Path("-"), schema) == [("stdin:1", ([1.0], ()), None), ("stdin:2", None, "stdin:2: field 'a': missing")]
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"a\n1\n")))
    assert records(Path("-"), schema) == [("stdin:2", ([1.0], ()), None)]


def test_read_frame_rows_know_their_editor_line(tmp_path):
    from applied_aitk.table_files import read_frame, where

    path = tmp_path / "t.csv"
    path.write_text('sep=,\nx,note\n1,"two\nlines"\n\n2,b\n  \n3,"c\n\nd"\n4,e\n')
    frame = read_frame(path, text_cells=True)
    assert frame["x"].tolist() == ["1", "2", "3", "4"] and list(frame.index) == [3, 6, 8, 11]
    assert where(frame, 3, path) == f"{path}:11"
    path.write_text("x;y\n1,5;2\n\n3;4\n")
    assert list(read_frame(path).index) == [2, 4]


def test_a_parquet_file_that_is_broken_or_has_a_column_of_lists_is_one_error_record(tmp_path):
    from applied_aitk.counting import count_records

    pq.write_table(pa.table({"x": pa.array(["1.5", "2", "1.5"]).dictionary_encode(), "y": [[1.0], [2.0], [3.0]]}), tmp_path / "t.parquet")
    assert records(tmp_path / "t.parquet", Schema(("x",)))[:2] == [(f"{tmp_path / 't.parquet'}:1", ([1.5], ()), None), (f"{tmp_path / 't.parquet'}:2", ([2.0], ()), None)]
    listed = tmp_path / "t.parquet"
    assert records(listed, Schema(("x", "y"))) == [(str(listed), None, f"{listed}: column 'y': a list<element: double> column, expected numbers or text")]
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    assert count_records([tmp_path / "broken.parquet"]) == 0
    [(id, data, error)] = records(tmp_path / "broken.parquet", Schema(("x",)))
    assert id == str(tmp_path / "broken.parquet") and error.startswith(f"{id}: cannot read the table (")


def test_a_bundle_writes_nan_metrics_as_null_and_bundle_info_json_has_no_nan():
    from applied_aitk.bundle import jsonable

    assert jsonable({"auc": float("nan"), "m": [np.float32("inf"), 1.5], "n": np.float64(2.0)}) == {"auc": None, "m": [None, 1.5], "n": 2.0}
