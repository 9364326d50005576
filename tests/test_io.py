"""Opening inputs: gzip, byte-order marks, UTF-16, and errors that name the byte offset."""

import codecs
import gzip

import pytest

from applied_aitk.batch import expand_inputs
from applied_aitk.errors import AitkError, InputError
from applied_aitk.io import open_text, read_lines

TEXT = '{"a": 1}\n\n{"b": "é"}\n'


@pytest.mark.parametrize("encoded", [
    TEXT.encode(),
    codecs.BOM_UTF8 + TEXT.encode(),
    TEXT.encode("utf-16"),
    codecs.BOM_UTF16_BE + TEXT.encode("utf-16-be"),
    gzip.compress(codecs.BOM_UTF8 + TEXT.encode()),
])
def test_utf8_with_or_without_bom_utf16_with_bom_and_gzip_read_the_same(tmp_path, encoded):
    path = tmp_path / "in.jsonl"
    path.write_bytes(encoded)
    assert [(line.number, line.text) for line in read_lines(path)] == [(1, '{"a": 1}'), (3, '{"b": "é"}')]
    assert open_text(path).read() == TEXT


def test_an_undecodable_line_is_one_error_naming_the_byte_and_the_rest_is_read(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": "\xff"}\n{"c": 3}\n')
    lines = list(read_lines(path))
    assert [line.text for line in lines] == ['{"a": 1}', None, '{"c": 3}']
    assert lines[1].message("in.jsonl") == "in.jsonl:2: not valid UTF-8 (byte 7 of the line)"  # as the table readers word it
    with pytest.raises(InputError, match=r"in.jsonl: not valid UTF-8 at byte 16$"):
        open_text(path).read()


def test_utf16_without_bom_is_an_error_not_garbage(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes("a,b\n1,2\n".encode("utf-16-le"))
    with pytest.raises(InputError, match="NUL byte at byte 1 .UTF-16 needs a byte-order mark"):
        open_text(path).read()


def test_empty_file_gives_a_warning(tmp_path, caplog):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    assert list(read_lines(tmp_path / "empty.jsonl")) == []
    assert [r.levelname for r in caplog.records] == ["WARNING"] and "empty, no records" in caplog.records[0].getMessage()


def test_folders_find_gzipped_inputs_and_name_what_they_looked_for(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv.gz").write_bytes(gzip.compress(b"x\n1\n"))
    (tmp_path / "in" / "notes.txt").write_text("not a table")
    assert expand_inputs([str(tmp_path / "in")], (".csv",)) == [tmp_path / "in" / "a.csv.gz"]
    (tmp_path / "none").mkdir()
    with pytest.raises(AitkError, match=r"none: no input files in this folder \(.csv, .parquet, also .gz\)$"):
        expand_inputs([str(tmp_path / "none")], (".csv", ".parquet"))
    with pytest.raises(AitkError, match=r"\*.jsonl: no files match \(.jsonl, also .gz\)$"):
        expand_inputs([str(tmp_path / "*.jsonl")], (".jsonl",))


def test_a_file_named_twice_is_read_once(tmp_path):
    (tmp_path / "a.csv").write_text("x\n1\n")
    assert expand_inputs([str(tmp_path / "a.csv"), str(tmp_path / "a.csv"), str(tmp_path)], (".csv",)) == [tmp_path / "a.csv"]


@pytest.mark.parametrize("data", [b"\x1f\x8bnot really gzip\n", gzip.compress(b"def f():\n    return 1\n")[:12], b"\x1f\x8bxx"])
def test_a_corrupt_or_truncated_gzip_is_one_error_naming_the_file(tmp_path, data):
    """A header cut short (the last case) read as an empty file ("no rows") once a look ahead had failed."""
    from applied_aitk.tables import Schema, read_records

    path = tmp_path / "prompt.py.gz"
    path.write_bytes(data)
    with pytest.raises(InputError, match=r"prompt.py.gz: cannot read \("):
        open_text(path).read()
    with pytest.raises(InputError, match=r"prompt.py.gz: cannot read \("):
        list(read_lines(path))
    [record] = read_records([path], Schema(("x",)))
    assert record.error.startswith(f"{path}: cannot read (")


def test_a_file_gzipped_twice_is_named_and_said_so_everywhere_files_are_read(tmp_path, wine):
    """It was "NUL byte ... UTF-16 needs a byte-order mark": the gzip header of the inner file read as text."""
    import json

    from conftest import run_aitk

    twice = tmp_path / "twice.jsonl.gz"
    twice.write_bytes(gzip.compress(gzip.compress(TEXT.encode())))
    message = f"{twice}: gzip inside gzip (the file was compressed twice); decompress it once and give that file"
    for read in (lambda: list(read_lines(twice)), lambda: open_text(twice).read()):
        with pytest.raises(InputError) as error:
            read()
        assert str(error.value) == message
    table = tmp_path / "rows.csv.gz"
    table.write_bytes(gzip.compress(gzip.compress((wine["data"] / "predict.csv").read_bytes())))
    out = tmp_path / "p.jsonl"
    result = run_aitk("wine", "predict", str(wine["bundle"]), str(table), str(wine["data"] / "predict.csv"), "--out", str(out), plugins="wine")
    assert result.returncode == 3, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0] == {"id": str(table), "error": f"{table}: gzip inside gzip (the file was compressed twice); decompress it once and give that file"}
    assert len(rows) > 1 and all("label" in row for row in rows[1:])


def test_a_byte_order_mark_at_the_start_of_any_line_is_dropped(tmp_path, monkeypatch):
    """Files joined with `cat`, each with its own mark: the second file's first record was an error
    row ("Unexpected UTF-8 BOM") in chatbot and codegen, and its first number not a number in tables."""
    from applied_aitk import io as aitk_io
    from applied_aitk.tables import Schema, read_records

    bom = codecs.BOM_UTF8
    joined = tmp_path / "joined.jsonl"
    joined.write_bytes(bom + b'{"a": 1}\n' + bom + b'{"a": 2}\r\n' + bom + b"\n" + bom + b'{"a": "x\xef\xbb\xbfy"}\n')
    assert [(line.number, line.text) for line in read_lines(joined)] == [(1, '{"a": 1}'), (2, '{"a": 2}'), (4, '{"a": "x\ufeffy"}')]
    monkeypatch.setattr(aitk_io._TextReader, "block_size", 5)  # marks at the edges of blocks too
    assert open_text(joined).read() == '{"a": 1}\n{"a": 2}\r\n\n{"a": "x\ufeffy"}\n'  # a mark inside a line is text
    utf16 = tmp_path / "joined16.jsonl"
    utf16.write_bytes(('{"a": 1}\n\ufeff{"a": 2}\n').encode("utf-16"))
    assert [line.text for line in read_lines(utf16)] == ['{"a": 1}', '{"a": 2}']
    table = tmp_path / "joined.csv"
    table.write_bytes(bom + b"x,y\n1,2\n" + bom + b"3,4\n")
    for path in (table, joined):
        schema = Schema(("x", "y")) if path == table else Schema(("a",))
        got = [(r.id.rsplit(":", 1)[1], r.error or r.data[0].tolist()) for r in read_records([path], schema)]
        assert got[:2] == ([("2", [1.0, 2.0]), ("3", [3.0, 4.0])] if path == table else [("1", [1.0]), ("2", [2.0])]), got

