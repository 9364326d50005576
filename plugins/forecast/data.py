"""Series from tables: each series validated (timestamps, values) and put on its regular time grid; the column roles they are read by: schema.py.

A table (read by ``table.read_table``) becomes a list of ``Series``: each one sorted, on a regular time grid, with its targets,
past-only covariates and known-future covariates (which may run past the last target value:
those rows are the future the known covariates describe). Anything wrong with one series is an
InputError (a ``SeriesError``) that names the series, the line and what was expected; the other
series go on. Lines are those of the file as an editor counts them (the header is line 1): a
table's index holds them (``table.read_table``).

Timestamps with a UTC offset are valid: one fixed offset is kept as it is; offsets that change
(daylight-saving time) are converted to UTC, or, when every timestamp falls at the same local time
of day (daily, weekly, monthly data stamped at local midnight), kept as local dates. Values must
be finite and within float32's range (the model computes in float32)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from applied_aitk.errors import shown
from applied_aitk.usecases.forecast.table import read_table
from applied_aitk.usecases.forecast.schema import Schema, check_columns, listing
from applied_aitk.usecases.forecast.time_features import infer_freq, time_grid
from applied_aitk import AitkError, InputError

FLOAT32_MAX = float(np.finfo(np.float32).max)

class SeriesError(InputError):
    """What is wrong with one series: ``problem``, at file line ``line`` (None until known: then
    the series' first line), and the ``timestamp`` at fault where there is one (ISO text)."""

    def __init__(self, sid: str, problem: str, line: Any = None, timestamp: Any = None):
        super().__init__(f"series {sid}: {problem}" if sid != NO_ID else problem)
        self.sid, self.problem = sid, problem
        self.line = None if line is None or pd.isna(line) else int(line)
        self.timestamp = None if timestamp is None else _fmt_time(timestamp)

    def __reduce__(self) -> tuple[type, tuple]:  # pickled for Ray's tasks: rebuilt from what __init__ takes
        return SeriesError, (self.sid, self.problem, self.line, self.timestamp)

    def located(self, path: Path | str | None) -> str:
        """The one-line message: ``PATH:LINE: series S: problem`` (``location``)."""
        return f"{location(path, self.line)}: {self}"


def location(path: Path | str | None, line: int | None) -> str:
    """Where a row is: ``PATH:LINE`` (``stdin:LINE`` for ``-``); ``rows[K]`` for a series sent as JSON (``path`` None)."""
    if path is None:
        return f"rows[{line}]" if line is not None else "rows"
    name = "stdin" if str(path) == "-" else str(path)
    return name if line is None else f"{name}:{line}"


@dataclass
class Series:
    id: str
    times: Any  # DatetimeIndex, or int64 steps; covers the targets and the future rows
    y: np.ndarray  # [n, targets]
    past: np.ndarray  # [n, past covariates]
    known: np.ndarray  # [n + future rows, known covariates]
    where: str = ""  # "PATH:LINE" of the series' first row, for messages

    @property
    def n(self) -> int:
        return len(self.y)


NO_ID = ""
"""The "series id" of the rows whose id cell is empty, which ``split_series`` yields last."""


def split_series(frame: pd.DataFrame, schema: Schema, path: Path) -> Iterator[tuple[str, pd.DataFrame]]:
    """(series id, its rows) in order of first appearance; a table without an id column is one series named after the file.

    A composite key's id joins its values with ``/`` (store 1, item A: ``1/A``). Rows with an empty
    id cell come last, as one part named NO_ID, which ``prepare`` refuses by line."""
    frame = frame.copy()
    frame.columns = [str(c) for c in frame.columns]
    if not schema.keys:
        yield ("stdin" if str(path) == "-" else path.stem), frame
        return
    keys = frame[schema.keys]
    empty = (keys.isna() | (keys.astype(str).apply(lambda column: column.str.strip()) == "")).any(axis=1).to_numpy()
    if empty.any():  # rows without an id: the last part, named NO_ID (``prepare`` refuses it)
        yield from split_series(frame[~empty], schema, path)
        yield NO_ID, frame[empty]
        return
    ids = frame[schema.keys[0]].astype(str)
    for key in schema.keys[1:]:
        ids = ids + "/" + frame[key].astype(str)
    if schema.format == "wide":
        for row, sid in zip(frame.index, ids):
            yield sid, frame.loc[[row]]
        return
    for sid, part in frame.groupby(ids, sort=False):
        yield str(sid), part


def prepare(sid: str, part: pd.DataFrame, schema: Schema, freq: str | None, fill_gaps: bool) -> Series:
    """Validate one series and put it on its regular grid; SeriesError says what is wrong, and at
    which line of the file (``part``'s index): the line at fault, else the series' first line."""
    try:
        if sid == NO_ID:
            raise no_id(part, schema)
        if schema.format == "wide":
            return _prepare_wide(sid, part, schema, fill_gaps)
        return _prepare_long(sid, part, schema, freq, fill_gaps)
    except SeriesError as e:
        if e.line is None and len(part):
            e.line = int(min(part.index))
        raise


def no_id(part: pd.DataFrame, schema: Schema) -> SeriesError:
    """The error of the rows (``split_series``'s NO_ID part) whose series id is empty."""
    rows = f"{len(part)} rows, the first on this line" if len(part) > 1 else "this row"
    columns = f"column {schema.keys[0]!r}" if len(schema.keys) == 1 else f"one of the columns {listing(schema.keys)}"
    return SeriesError(NO_ID, f"no series id: {columns} is empty ({rows})", int(min(part.index)))


def _prepare_wide(sid: str, part: pd.DataFrame, schema: Schema, fill_gaps: bool) -> Series:
    row = part.drop(columns=schema.keys).iloc[0]
    line = part.index[0]
    values = pd.to_numeric(row, errors="coerce").to_numpy(np.float64)
    text = row.to_numpy()
    bad = np.flatnonzero(np.isnan(values) & pd.notna(text))
    if len(bad):
        raise SeriesError(sid, f"column {row.index[bad[0]]}: {shown(text[bad[0]])} is not a number", line)
    huge = np.flatnonzero(~(np.abs(values) <= FLOAT32_MAX) & ~np.isnan(values))
    if len(huge):
        raise SeriesError(sid, f"column {row.index[huge[0]]}: {_number_problem(text[huge[0]])}", line)
    observed = np.flatnonzero(~np.isnan(values))
    if not len(observed):
        raise SeriesError(sid, "no values", line)
    values = values[observed[0] : observed[-1] + 1]
    values = _fill_or_refuse(sid, "value", values, None, fill_gaps)
    steps = np.arange(len(values), dtype=np.int64)
    return Series(sid, steps, values[:, None], np.zeros((len(values), 0)), np.zeros((len(values), 0)))


def _prepare_long(sid: str, part: pd.DataFrame, schema: Schema, freq: str | None, fill_gaps: bool) -> Series:
    times = parse_times(part[schema.time], sid)
    raw = part[schema.time]
    unparsed = np.flatnonzero(pd.isna(times))
    if len(unparsed):
        row = part.index[unparsed[0]]
        value = raw.iloc[unparsed[0]]
        what = "empty timestamp" if pd.isna(value) else f"unparseable timestamp {shown(value)}"
        raise SeriesError(sid, f"{what} in column {schema.time!r}", row)
    order = np.argsort(np.asarray(times), kind="stable")
    part, times = part.iloc[order], times[order]
    dup = np.flatnonzero(pd.Index(times).duplicated(keep=False))
    if len(dup):
        first, second = sorted(part.index[dup[:2]])
        raise SeriesError(sid, f"duplicate timestamp {_fmt_time(times[dup[0]])} (also on line {first})", second, times[dup[0]])
    numeric = {c: _numeric(sid, part, c, times) for c in [*schema.targets, *schema.past, *schema.known]}
    frame = pd.DataFrame(numeric, index=pd.Index(times))
    frame["__row"] = np.asarray(part.index)
    frame = _on_grid(sid, frame, freq, fill_gaps)
    y = frame[schema.targets].to_numpy(np.float64)
    has = np.flatnonzero(~np.isnan(y).all(axis=1))
    if not len(has):
        raise SeriesError(sid, f"no values in {listing(schema.targets)}")
    end = has[-1] + 1  # rows after the last target value are future rows, kept for known covariates
    keep_end = len(frame) if schema.known else end
    frame = frame.iloc[has[0] : keep_end]
    end -= has[0]
    rows = frame["__row"].to_numpy()
    y = np.stack([_fill_or_refuse(sid, c, frame[c].to_numpy(np.float64)[:end], rows, fill_gaps, frame.index) for c in schema.targets], axis=1)
    past = _covariates(sid, frame.iloc[:end], schema.past, rows, fill_gaps)
    known = _covariates(sid, frame, schema.known, rows, fill_gaps)
    index = frame.index
    return Series(sid, index if isinstance(index, pd.DatetimeIndex) else index.to_numpy(np.int64), y, past, known)


def parse_times(column: pd.Series, sid: str = "") -> Any:
    """Timestamps (integers stay integer steps); what cannot be parsed becomes NaT.

    Offset-aware timestamps go to one zone (see the module's docstring); a mix of timestamps with
    and without an offset is an InputError naming the series and row."""
    if pd.api.types.is_integer_dtype(column):
        return column.to_numpy(np.int64)
    if pd.api.types.is_datetime64_any_dtype(column):
        return pd.DatetimeIndex(column)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            times = pd.DatetimeIndex(pd.to_datetime(column, errors="coerce"))
        except (ValueError, TypeError):  # offsets that change: pandas asks for one zone
            return _one_zone(column, sid)
    if (pd.isna(times) & column.notna().to_numpy()).any():
        _one_zone(column, sid)  # NaT where a value was given: refuse a naive/aware mix by name
    return times


def _one_zone(column: pd.Series, sid: str) -> pd.DatetimeIndex:
    stamps = [_timestamp(v) for v in column]
    aware = [None if pd.isna(t) else t.tzinfo is not None for t in stamps]
    seen = [k for k, a in enumerate(aware) if a is not None]
    odd = [k for k in seen if aware[k] != aware[seen[0]]]
    if odd:
        first, other = seen[0], odd[0]
        raise SeriesError(
            sid, f"column {column.name!r} mixes timestamps with and without a UTC offset: "
            f"{shown(column.iloc[first])} (line {column.index[first]}), {shown(column.iloc[other])} (this line); "
            "write every timestamp with its offset, or none", column.index[other],
        )
    if not seen or not aware[seen[0]]:
        return pd.DatetimeIndex(stamps)
    wall = pd.DatetimeIndex([pd.NaT if pd.isna(t) else t.tz_localize(None) for t in stamps])
    valid = wall[~pd.isna(wall)]
    if len(pd.unique(valid - valid.normalize())) <= 1:
        return wall  # all at one local time of day: the local dates are the series' steps
    return pd.DatetimeIndex([pd.NaT if pd.isna(t) else t.tz_convert("UTC") for t in stamps], tz="UTC")


def _timestamp(value: Any) -> Any:
    try:
        return pd.NaT if pd.isna(value) else pd.Timestamp(value)
    except (ValueError, TypeError):
        return pd.NaT


def _numeric(sid: str, part: pd.DataFrame, column: str, times: Any = None) -> np.ndarray:
    """The column as float64 (NaN where empty); SeriesError at the first cell that is not a finite float32."""
    values = pd.to_numeric(part[column], errors="coerce").to_numpy(np.float64)
    bad = np.flatnonzero(np.isnan(values) & part[column].notna().to_numpy())
    if len(bad):
        k = bad[0]
        raise SeriesError(sid, f"column {column!r}: {shown(part[column].iloc[k])} is not a number", part.index[k], _time_at(times, k))
    huge = np.flatnonzero(np.abs(values) > FLOAT32_MAX)
    if len(huge):
        k = huge[0]
        raise SeriesError(sid, f"column {column!r}: {_number_problem(part[column].iloc[k])}", part.index[k], _time_at(times, k))
    return values


def _time_at(times: Any, k: int) -> Any:
    return None if times is None or pd.isna(times[k]) else times[k]


def _number_problem(value: Any) -> str:
    number = float(value)
    text = shown(value) if isinstance(value, str) else f"{number:g}"
    if np.isinf(number):
        return f"{text} is not a finite number"
    return f"{text} is too large (the model computes in float32, at most {FLOAT32_MAX:.3g})"


def _on_grid(sid: str, frame: pd.DataFrame, freq: str | None, fill_gaps: bool) -> pd.DataFrame:
    """The rows on the regular grid from the first to the last timestamp; missing ones become NaN rows."""
    times = frame.index
    if not isinstance(times, pd.DatetimeIndex):
        grid = pd.Index(np.arange(times[0], times[-1] + 1, dtype=np.int64))
    elif freq is None:
        return frame
    else:
        grid = time_grid(times[0], times[-1], freq)
        off = ~times.isin(grid)
        if off.any():
            first = np.flatnonzero(off)[0]
            raise SeriesError(
                sid, f"timestamp {_fmt_time(times[first])} is not on the {freq} grid that starts at {_fmt_time(times[0])}",
                frame["__row"].iloc[first], times[first],
            )
    missing = len(grid) - len(times)
    if missing and not fill_gaps:
        first = grid[~grid.isin(times)][0]
        before = int(pd.Index(times).searchsorted(first)) - 1  # the row the gap follows
        raise SeriesError(sid, f"{missing} missing timestamp(s), the first {_fmt_time(first)} (after this line); "
                          "set fill_gaps=true to interpolate them", frame["__row"].iloc[before], first)
    return frame.reindex(grid)


def _fill_or_refuse(sid: str, column: str, values: np.ndarray, rows: np.ndarray | None, fill_gaps: bool, times: Any = None) -> np.ndarray:
    """Interior NaNs interpolated linearly when ``fill_gaps``, else an InputError naming the first."""
    holes = np.flatnonzero(np.isnan(values))
    if not len(holes):
        return values
    if not fill_gaps:
        where = f"at {_fmt_time(times[holes[0]])}" if times is not None else f"at step {holes[0] + 1}"
        line = None if rows is None else rows[holes[0]]
        raise SeriesError(sid, f"column {column!r}: missing value {where}; set fill_gaps=true to interpolate", line,
                          None if times is None else times[holes[0]])
    return pd.Series(values).interpolate(limit_direction="both").to_numpy(np.float64)


def _covariates(sid: str, frame: pd.DataFrame, columns: list[str], rows: np.ndarray, fill_gaps: bool) -> np.ndarray:
    if not columns:
        return np.zeros((len(frame), 0))
    return np.stack([_fill_or_refuse(sid, c, frame[c].to_numpy(np.float64), rows, fill_gaps, frame.index) for c in columns], axis=1)


def _fmt_time(t: Any) -> str:
    if isinstance(t, pd.Timestamp):
        return t.isoformat().split("T")[0] if t == t.normalize() else t.isoformat()  # strftime's %Y: "1" for year 1
    return str(t)


def no_series(data: Path | str, purpose: str, bad: dict[str, str]) -> AitkError:
    """The error when nothing is left to ``purpose`` ("train on", "evaluate"): ``DATA: no series to
    evaluate (2 left out; the first: ...)``, or ``(no rows)`` when the data held none."""
    why = f"{len(bad)} left out; the first: {next(iter(bad.values()))}" if bad else "no rows"
    return AitkError(f"{data}: no series to {purpose} ({why})")


def load_series(paths: list[Path], schema: Schema, fill_gaps: bool) -> tuple[list[Series], dict[str, str], str | None]:
    """Every good series of ``paths``, the reasons the bad ones were left out (each naming its file), and the frequency."""
    parts, bad, origin = [], {}, {}
    for path in paths:
        frame = read(path, schema)
        for sid, part in split_series(frame, schema, path):
            if sid == NO_ID:
                bad[f"{path}:{int(min(part.index))}"] = no_id(part, schema).located(path)
                continue
            if sid in origin:
                bad[sid] = f"{path}:{int(min(part.index))}: series {sid}: also in {origin[sid]}; series ids must be unique across inputs"
                continue
            origin[sid] = path
            parts.append((sid, part))
    freq = schema.freq
    if freq is None and schema.format == "long":
        freq = infer_freq([t[~pd.isna(t)] for t in _some_times(parts, schema.time) if isinstance(t, pd.DatetimeIndex)])
    good = []
    for sid, part in parts:
        if sid in bad:
            continue
        try:
            good.append(prepare(sid, part, schema, freq, fill_gaps))
            good[-1].where = f"{origin[sid]}:{int(min(part.index))}"
        except SeriesError as e:
            bad[sid] = e.located(origin[sid])
        except InputError as e:
            bad[sid] = f"{origin[sid]}: {e}"
    return good, bad, freq


def read(path: Path, schema: Schema, bad_lines: dict[int, str] | None = None) -> pd.DataFrame:
    """A table read in the schema's CSV dialect, with every column the schema needs (else InputError);
    lines that cannot be rows go into ``bad_lines`` (else they are logged): ``table.read_table``."""
    frame = read_table(path, schema.delimiter, schema.decimal, bad_lines=bad_lines)
    check_columns(frame, schema, path)
    return frame


def _some_times(parts: list[tuple[str, pd.DataFrame]], column: str, count: int = 200) -> list[Any]:
    """The timestamps of up to ``count`` series, leaving out those that cannot be parsed (prepare names them)."""
    found = []
    for sid, part in parts[:count]:
        try:
            found.append(parse_times(part[column], sid))
        except InputError:
            continue
    return found
