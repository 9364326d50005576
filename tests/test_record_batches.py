"""The batch path of batch inference (``Predictor.read_batches`` / ``predict_batch``): table rows
read as column batches, one bad row among good ones in the same Arrow batch isolated as one error
row, the rest scored from arrays, --resume and repeated ids as on the per-record path."""

import json
import time

import numpy as np
import pytest

from applied_aitk.batch import Counter, batch_rows, prefetched, read_new, run_batch, slices
from applied_aitk.errors import AitkError
from applied_aitk.table_predictor import TablePredictor
from applied_aitk.tables import Schema, read_batches, read_records

ROWS = b"x,kind,y\n1,a,2\n2,b,oops\n3,,4\n4,d\n13,e,1\n5,f,0\n6,g,7\n"


class Ratio(TablePredictor):
    """x / y per row; a row with x == 13 makes the whole batch raise (a model failing its own way)."""

    calls = 0

    def schema(self):
        return Schema(("x", "y"), ("kind",))

    def predict_batch(self, data):
        Ratio.calls += 1
        x, y = data["numbers"][:, 0], data["numbers"][:, 1]
        if (x == 13).any():
            raise ValueError("13 is not allowed")
        with np.errstate(divide="ignore"):
            ratio = (x / y).tolist()
        return [{"ratio": r, "kind": k} for r, (k,) in zip(ratio, data["texts"].tolist())]


def test_one_arrow_batch_holds_good_rows_as_arrays_and_bad_rows_as_errors(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(ROWS)
    (batch,) = list(read_batches([path], Ratio().schema()))
    assert batch.ids == [f"{path}:{line}" for line in range(2, 9)]
    assert batch.errors == {1: f"{path}:3: field 'y': 'oops' is not a number", 3: f"{path}:5: expected 3 fields, got 2"}
    assert batch.data["numbers"].dtype == np.float32
    assert batch.data["numbers"].tolist() == [[1, 2], [3, 4], [13, 1], [5, 0], [6, 7]]
    assert batch.data["texts"].tolist() == [["a"], [None], ["e"], ["f"], ["g"]]
    records = list(read_records([path], Ratio().schema()))  # the per-record path reads the same
    assert [r.id for r in records] == batch.ids and [r.error for r in records][1] == batch.errors[1]


def test_a_bad_row_fails_alone_in_its_batch_and_the_rest_are_scored(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(ROWS)
    (batch,) = list(read_batches([path], Ratio().schema()))
    rows = batch_rows(Ratio(), batch)
    assert [row["id"] for row in rows] == batch.ids
    assert rows[0] == {"id": f"{path}:2", "ratio": 0.5, "kind": "a"}
    assert rows[1] == {"id": f"{path}:3", "error": f"{path}:3: field 'y': 'oops' is not a number"}
    assert rows[2] == {"id": f"{path}:4", "ratio": 0.75, "kind": None}
    assert rows[4] == {"id": f"{path}:6", "error": "ValueError: 13 is not allowed"}
    assert rows[6]["ratio"] == float(np.float32(6) / np.float32(7))


def test_slices_keep_each_row_with_its_id_across_errors(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(ROWS)
    (batch,) = list(read_batches([path], Ratio().schema()))
    parts = list(slices(batch, 2))
    assert [len(p.ids) for p in parts] == [2, 2, 2, 1]
    assert parts[0].errors == {1: batch.errors[1]} and parts[1].errors == {1: batch.errors[3]}
    assert [p.data["numbers"][:, 0].tolist() for p in parts] == [[1], [3], [13, 5], [6]]
    whole = batch_rows(Ratio(), batch)
    assert [row for p in parts for row in batch_rows(Ratio(), p)] == whole


def test_run_batch_writes_every_row_in_order_exit_rows_and_no_infinity(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(ROWS)
    summary = run_batch(Ratio(), [path], tmp_path / "out.jsonl", batch_size=3)
    text = (tmp_path / "out.jsonl").read_text()
    rows = [json.loads(line) for line in text.splitlines()]
    assert [row["id"] for row in rows] == [f"{path}:{line}" for line in range(2, 9)]
    assert rows[5] == {"id": f"{path}:7", "error": "the model gave a non-finite value (inf) for output field 'ratio'"}
    assert "Infinity" not in text and "NaN" not in text
    assert (summary["records"], summary["ok"], summary["failed"]) == (7, 3, 4)


def test_resume_and_repeated_ids_on_the_batch_path(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(ROWS)
    run_batch(Ratio(), [path], tmp_path / "full.jsonl")
    out = tmp_path / "out.jsonl"
    lines = (tmp_path / "full.jsonl").read_text().splitlines(keepends=True)
    out.with_name("out.jsonl.partial.jsonl").write_text("".join(lines[:3]) + lines[3][:10])  # killed mid-line
    resumed = run_batch(Ratio(), [path], out, resume=True)
    assert (resumed["resumed"], resumed["records"]) == (3, 4)
    assert out.read_text() == (tmp_path / "full.jsonl").read_text()

    (batch,) = list(read_batches([path], Ratio().schema()))
    assert batch.unique  # one file: its PATH:LINE ids need no check
    twice = list(read_batches([path, path], Ratio().schema()))  # the same name twice: its ids repeat, and are checked
    assert [b.unique for b in twice] == [False, False] and twice[0].ids == batch.ids
    skipped = Counter()
    again = list(read_new(twice, {f"{path}:2", f"{path}:2#2"}, skipped))
    assert again[0].ids[0] == f"{path}:3" and again[1].ids[0] == f"{path}:3#2" and skipped.value == 2
    assert again[1].errors == {0: batch.errors[1], 2: batch.errors[3]}
    assert again[1].data["numbers"][:, 0].tolist() == [3, 13, 5, 6]


def test_the_reader_thread_raises_its_errors_in_order_and_stops_with_the_consumer():
    def failing():
        yield 1
        yield 2
        raise AitkError("t.csv: cannot read (broken gzip)")

    got = []
    with pytest.raises(AitkError, match="broken gzip"):
        for item in prefetched(failing()):
            got.append(item)
    assert got == [1, 2]

    read = []

    def endless():
        while True:
            read.append(len(read))
            yield read[-1]

    for item in prefetched(endless(), depth=2):
        if item == 3:
            break
    time.sleep(0.3)
    settled = len(read)
    time.sleep(0.3)
    assert len(read) == settled <= 3 + 1 + 2 + 1  # read no further than the queue holds


def test_ids_of_files_whose_names_could_collide_are_checked(tmp_path):
    (tmp_path / "a.csv").write_bytes(ROWS)
    (tmp_path / "a.csv:2").write_bytes(b"not,a,table\n")  # unreadable as the schema: its one error record's id is its name
    paths = [tmp_path / "a.csv", tmp_path / "a.csv:2"]
    batches = list(read_batches(paths, Ratio().schema()))
    assert not any(b.unique for b in batches)  # 'a.csv:2' is also the id of a.csv's line 2
    ids = [id for b in read_new(batches, set(), Counter()) for id in b.ids]
    assert len(ids) == len(set(ids)) and ids[-1] == f"{tmp_path / 'a.csv:2'}#2"
    assert all(b.unique for b in read_batches([tmp_path / "a.csv", tmp_path / "b.csv"], Ratio().schema()))


def test_ids_are_path_and_line_also_for_a_name_that_is_not_valid_unicode(tmp_path):
    odd = tmp_path / "t\udcff.csv"  # a file name with a byte that is not UTF-8, as Python gives it
    odd.write_bytes(ROWS)
    (batch,) = list(read_batches([odd], Ratio().schema()))
    assert batch.ids == [f"{odd}:{line}" for line in range(2, 9)]
