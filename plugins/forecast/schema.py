"""The schema of a forecast table: which columns are the series id, the time, the targets and the
covariates, and whether the table is long (a row per time step) or wide (a row per series).
Resolved from the training settings and the table at training time, stored in the bundle, and
checked against every table read for evaluate or predict."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from applied_aitk.usecases.forecast.time_features import normal_freq
from applied_aitk import AitkError, InputError

ID_NAMES = ("series", "series_id", "unique_id", "id", "item_id")
TIME_NAMES = ("timestamp", "date", "ds", "time", "datetime", "day", "week", "month", "period")
TARGET_NAMES = ("target", "y", "value")


def names(value: Any) -> list[str]:
    """A setting that lists columns: ``"a,b"`` or a list from a config file."""
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


@dataclass
class Schema:
    """How to read a table; resolved at training time and stored in the bundle."""

    format: str  # "long" or "wide"
    id: str | None  # one column, or several comma-separated (a composite key such as "store,item")
    time: str | None
    targets: list[str]
    past: list[str] = field(default_factory=list)
    known: list[str] = field(default_factory=list)
    freq: str | None = None  # a pandas alias; None: integer steps (wide tables)
    fill_gaps: bool = False
    delimiter: str = ""  # CSV delimiter; empty: found from each file
    decimal: str = ""  # CSV decimal mark; empty: found from each file

    @property
    def keys(self) -> list[str]:
        """The columns that identify a series (none: one series per file)."""
        return names(self.id)


def resolve_schema(frame: pd.DataFrame, config: Any, path: Path) -> Schema:
    """Column roles from the training settings, finding unnamed ones by their usual names."""
    columns = [str(c) for c in frame.columns]
    fmt = config.format
    if fmt not in ("auto", "long", "wide"):
        raise AitkError(f"setting format={fmt!r}: expected auto, long or wide")
    time = _column(columns, config.time_column, TIME_NAMES, "time_column", path)
    if fmt == "auto":
        fmt = "long" if time else "wide" if _looks_wide(frame) else None
        if fmt is None:
            raise AitkError(
                f"{path}: no time column (looked for {', '.join(TIME_NAMES)}) and not a wide table "
                f"(ids, then numbers); set time_column=NAME (columns: {listing(columns)})"
            )
    freq = None
    if config.freq:
        try:
            freq = normal_freq(config.freq)
        except ValueError:
            raise AitkError(f"setting freq={config.freq!r}: not a pandas frequency (e.g. h, D, W, MS, QS)") from None
    dialect = {"fill_gaps": config.fill_gaps, "delimiter": config.delimiter, "decimal": config.decimal}
    if fmt == "wide":
        keys = names(config.id_column) or columns[:1]
        for key in keys:
            if key not in columns:
                raise AitkError(f"{path}: unknown column {key!r} (columns: {listing(columns)})")
        return Schema("wide", ",".join(keys), None, ["value"], freq=freq, **dialect)
    if time is None:
        raise AitkError(f"{path}: no time column (looked for {', '.join(TIME_NAMES)}); set time_column=NAME (columns: {listing(columns)})")
    keys = [_column(columns, key, ID_NAMES, "id_column", path) for key in names(config.id_column)]
    keys = keys or [k for k in [_column(columns, "", ID_NAMES, "id_column", path)] if k]
    past, known = names(config.past_covariates), names(config.known_covariates)
    taken = {time, *keys, *past, *known}
    targets = names(config.target)
    if targets == ["*"]:
        targets = [c for c in columns if c not in taken and pd.api.types.is_numeric_dtype(frame[c])]
    elif not targets:
        found = next((c for c in columns if c.lower() in TARGET_NAMES and c not in taken), None)
        numeric = [c for c in columns if c not in taken and pd.api.types.is_numeric_dtype(frame[c])]
        if found:
            targets = [found]
        elif len(numeric) == 1:
            targets = numeric
        else:
            raise AitkError(
                f"{path}: which column to forecast? set target=NAME (or several: target=A,B; every numeric column: target=*); "
                f"numeric columns: {listing(numeric)}"
            )
    for column in [*targets, *past, *known]:
        if column not in columns:
            raise AitkError(f"{path}: unknown column {column!r} (columns: {listing(columns)})")
    if not targets:
        raise AitkError(f"{path}: no numeric column left to forecast (columns: {listing(columns)})")
    return Schema("long", ",".join(keys) or None, time, targets, past, known, freq, **dialect)


def check_columns(frame: pd.DataFrame, schema: Schema, path: Path) -> None:
    """A table read for evaluate or predict must have every column the model was trained with."""
    columns = [str(c) for c in frame.columns]
    needed = schema.keys if schema.format == "wide" else [schema.time, *schema.keys, *schema.targets, *schema.past, *schema.known]
    missing = [c for c in needed if c not in columns]
    if missing:
        raise InputError(f"{path}: no column {missing[0]!r}, which the model was trained with (columns: {listing(columns)})")


def _column(columns: list[str], given: str, usual: tuple[str, ...], setting: str, path: Path) -> str | None:
    if given:
        if given not in columns:
            raise AitkError(f"{path}: unknown column {given!r} for {setting} (columns: {listing(columns)})")
        return given
    lower = {c.lower(): c for c in columns}
    return next((lower[name] for name in usual if name in lower), None)


def _looks_wide(frame: pd.DataFrame) -> bool:
    return frame.shape[1] >= 3 and not pd.api.types.is_numeric_dtype(frame.iloc[:, 0]) and all(
        pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns[1:]
    )


def listing(columns: list[str], limit: int = 12) -> str:
    """Up to ``limit`` column names for a message, and how many there are in all beyond them ("none" for no column)."""
    shown = ", ".join(columns[:limit])
    return shown + (f", ... ({len(columns)} in all)" if len(columns) > limit else "") if columns else "none"
