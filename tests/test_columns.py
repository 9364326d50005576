"""The columnar batch path (``Predictor.predict_columns``): batch predict writes JSON lines straight
from a predictor's columns, the same bytes as the rows the same predictor gives `aitk serve`; error
rows (read errors, a batch that raises, ``extra`` errors, NaN and infinities) as on the row path."""

import json

import numpy as np

from applied_aitk.batch import batch_output, run_batch
from applied_aitk.columns import Columns, PredictedBatch
from applied_aitk.outputs import json_lines
from applied_aitk.table_predictor import TablePredictor
from applied_aitk.tables import Schema, read_batches
from applied_aitk.usecase import Predictor

ROWS = b"x,kind,y\n1,a,2\n2,b,oops\n3,,4\n4,d\n13,e,1\n5,f,0\n6,g,7\n7,h,-1\n8,\"q\"\"uote\",2\n9,w,-2\n"


class RatioColumns(TablePredictor):
    """Per row: ratio x / y (infinite for y = 0), kind, x and y as an object, [x, y] as a list, a
    warning for a negative y, an error row for x == 7; a batch holding x == 13 raises."""

    def schema(self):
        return Schema(("x", "y"), ("kind",))

    def predict_columns(self, data):
        x, y = data["numbers"][:, 0], data["numbers"][:, 1]
        if (x == 13).any():
            raise ValueError("13 is not allowed")
        with np.errstate(divide="ignore"):
            ratio = x / y
        extra = {i: {"warnings": ["y is negative"]} for i in np.flatnonzero(y < 0).tolist()}
        extra.update({i: {"error": "x is 7"} for i in np.flatnonzero(x == 7).tolist()})
        return Columns({"ratio": ratio, "kind": data["texts"][:, 0].tolist(), "big": x > 4,
                        "parts": {"x": x.astype(np.int64), "y": y}, "pair": data["numbers"]}, extra)


class RatioRows(RatioColumns):
    """The same predictor on the row path: ``predict_batch`` (the rows of its columns) only."""

    predict_columns = Predictor.predict_columns

    def predict_batch(self, data):
        return RatioColumns.predict_columns(self, data).rows()


def test_columns_are_written_as_the_rows_the_row_path_writes(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(ROWS)
    for batch_size in (1, 3, 64):
        columnar = run_batch(RatioColumns(), [path], tmp_path / "c.jsonl", batch_size=batch_size)
        rows = run_batch(RatioRows(), [path], tmp_path / "r.jsonl", batch_size=batch_size)
        assert (tmp_path / "c.jsonl").read_bytes() == (tmp_path / "r.jsonl").read_bytes()
        assert columnar["failed"] == rows["failed"] == 5 and columnar["records"] == 10
    out = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert out[0] == {"id": f"{path}:2", "ratio": 0.5, "kind": "a", "big": False, "parts": {"x": 1, "y": 2.0}, "pair": [1.0, 2.0]}
    assert out[1]["error"] == f"{path}:3: field 'y': 'oops' is not a number"
    assert out[2]["kind"] is None and out[2]["ratio"] == 0.75
    assert out[3]["error"] == f"{path}:5: expected 3 fields, got 2"
    assert out[4] == {"id": f"{path}:6", "error": "ValueError: 13 is not allowed"}
    assert out[5] == {"id": f"{path}:7", "error": "the model gave a non-finite value (inf) for output field 'ratio'"}
    assert out[6]["big"] is True and out[6]["ratio"] == float(np.float32(6) / np.float32(7))
    assert out[7] == {"id": f"{path}:9", "error": "x is 7"}
    assert out[8]["kind"] == 'q"uote'
    assert out[9] == {"id": f"{path}:11", "ratio": -4.5, "kind": "w", "big": True, "parts": {"x": 9, "y": -2.0},
                      "pair": [9.0, -2.0], "warnings": ["y is negative"]}


def test_the_json_lines_of_a_predicted_batch_are_those_of_its_rows(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(ROWS.replace(b"13,e,1\n", b""))
    (batch,) = list(read_batches([path], RatioColumns().schema()))
    predicted = batch_output(RatioColumns(), batch)
    assert isinstance(predicted, PredictedBatch)
    text, failed = predicted.json_lines()
    expected, written = json_lines(predicted.rows())
    assert text == expected and failed == sum(row.get("error") is not None for row in written) == 4
    assert predicted.rows()[6] == {"id": f"{path}:8", "error": "x is 7"}  # an error leaves out the warning too
    assert predicted.rows()[8]["warnings"] == ["y is negative"]


def test_rows_hold_python_values_and_cells_orjson_refuses_are_written_as_rows():
    columns = Columns({"n": np.array([1, 2], np.int32), "f": np.array([0.1, np.nan], np.float32),
                       "o": [np.float64(0.5), 2**70], "u": np.array([2**64 - 1, 0], np.uint64)})
    rows = columns.rows()
    assert rows[0] == {"n": 1, "f": float(np.float32(0.1)), "o": 0.5, "u": 2**64 - 1} and type(rows[0]["n"]) is int
    text, failed = PredictedBatch(["a", "b"], columns).json_lines()
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0] == {"id": "a", "n": 1, "f": float(np.float32(0.1)), "o": 0.5, "u": 2**64 - 1}
    assert lines[1] == {"id": "b", "error": "the model gave a non-finite value (nan) for output field 'f'"} and failed == 1
    unsigned = PredictedBatch(["a", "b"], Columns({"u": np.array([2**64 - 1, 0], np.uint64), "b": np.array([True, False])}))
    assert unsigned.json_lines() == (b'{"id":"a","u":18446744073709551615,"b":true}\n{"id":"b","u":0,"b":false}\n', 0)


def test_a_predictor_of_columns_serves_rows():
    rows = RatioColumns().predict([(np.array([1, 4], np.float32), ("k",))])
    assert rows == [{"ratio": 0.25, "kind": "k", "big": False, "parts": {"x": 1, "y": 4.0}, "pair": [1.0, 4.0]}]
