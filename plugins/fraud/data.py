"""Transaction tables: reading CSV/Parquet, resolving columns, fitting and applying preprocessing.

Every cell is read as raw text (CSV) or its Parquet value and parsed by the same code at train,
evaluate and predict time, so a value means the same thing in each. Imputation and scaling of
numeric columns live in the ONNX graph; what stays out here is the category vocabularies
(id 0 is the out-of-vocabulary bucket) and the check that numeric cells hold numbers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from applied_aitk.console import get_logger
from applied_aitk.errors import AitkError, shown
from applied_aitk.io import base_suffix, has_suffix
from applied_aitk.table_files import read_frame, where

logger = get_logger(__name__)

from applied_aitk.table_predictor import TABLE_SUFFIXES as SUFFIXES  # also .tsv, .ndjson
LABEL_DEFAULTS = ("Class", "label")
TIME_DEFAULTS = ("Time", "time", "timestamp")
MISSING = frozenset({"", "na", "nan", "null", "none", "n/a"})
MISSING_TOKEN = "<missing>"
OOV = 0


def names(value: Any) -> list[str]:
    """A column list given as "a,b" (``--set``) or as a list (config file)."""
    if not value:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def read_table(path: Path) -> pd.DataFrame:
    """The whole table (to train or evaluate on) as raw values: CSV and JSON lines cells as text (also .csv.gz;
    comma, semicolon with decimal commas or tab: ``applied_aitk.table_files.read_frame``), Parquet
    cells as stored. A folder: every table in it, one after the other. The index says where each
    row came from: its line (the row number from 1 in Parquet), keyed by the file in a folder,
    for messages made with ``table_files.where``."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and has_suffix(p, SUFFIXES))
        if not files:
            raise AitkError(f"{path}: no {', '.join(SUFFIXES)} files in this folder (also .gz)")
        return pd.concat([read_table(f) for f in files], keys=[str(f) for f in files])
    if not path.is_file():
        raise AitkError(f"{path}: no such file")
    suffix = base_suffix(path)
    try:
        if suffix in SUFFIXES and suffix != ".parquet":  # CSV (any delimiter) and JSON lines
            return read_frame(path, text_cells=True)
        if suffix == ".parquet":
            frame = pd.read_parquet(path)
            frame.index = pd.Index(np.arange(1, len(frame) + 1), name="line")
            return frame
    except (ValueError, OSError, pd.errors.ParserError) as e:
        raise AitkError(f"{path}: cannot read the table ({str(e).strip()})") from None
    raise AitkError(f"{path}: expected a {', '.join(SUFFIXES)} file")


def cells(column: Any) -> np.ndarray:
    """A column (Series or sequence) as numpy: float64 for numeric dtypes, else objects."""
    if isinstance(column, pd.Series):
        if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
            return column.to_numpy(dtype=np.float64, na_value=np.nan)
        return column.to_numpy(dtype=object, na_value=None)
    return np.asarray(column, dtype=object)


def is_missing(value: Any) -> bool:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return True
    return isinstance(value, str) and value.strip().lower() in MISSING


def missing_mask(column: Any) -> np.ndarray:
    values = cells(column)
    if values.dtype == np.float64:
        return np.isnan(values)
    return np.fromiter((is_missing(v) for v in values), dtype=bool, count=len(values))


def parse_numeric(column: Any) -> tuple[np.ndarray, np.ndarray]:
    """(float32 values with NaN for missing, mask of cells that are neither a finite number nor missing)."""
    values = cells(column)
    if values.dtype != np.float64:
        if values.dtype.kind in "biuf":  # numbers already (float()'s text syntax would take 1_000 and ١٢)
            values = values.astype(np.float64)
        else:  # text: ASCII number syntax only (pandas' parser)
            parsed = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            bad = np.isnan(parsed) & ~missing_mask(values)
            return _float32(parsed), bad | _too_big(parsed)
    return _float32(values), _too_big(values)


def _too_big(values: np.ndarray) -> np.ndarray:
    """Infinite, or too large for float32 (1e39 would become inf in the model)."""
    with np.errstate(invalid="ignore"):
        return np.abs(values) > np.finfo(np.float32).max


def _float32(values: np.ndarray) -> np.ndarray:
    return np.where(_too_big(values), np.nan, values).astype(np.float32)


def category_text(column: Any) -> np.ndarray:
    """Cells as category tokens: missing cells become ``<missing>``, 5411.0 read from Parquet becomes "5411"."""

    def token(v: Any) -> str:
        if is_missing(v):
            return MISSING_TOKEN
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return str(v).strip()

    return np.array([token(v) for v in cells(column).tolist()], dtype=object)


@dataclass
class Columns:
    """Which columns play which part; resolved once at training and stored in the bundle."""

    label: str | None
    time: str | None
    numeric: list[str]
    categorical: list[str]

    @property
    def features(self) -> list[str]:
        return [*self.numeric, *self.categorical]


def resolve_columns(frame: pd.DataFrame, config: Any, source: Path, need_label: bool) -> Columns:
    """Label, time and feature columns from the config, detecting what was not declared."""
    present = list(frame.columns)
    label = _pick(config.label, LABEL_DEFAULTS, present, source)
    if label is None and need_label:
        raise AitkError(
            f"{source}: no label column ({config.label or ' or '.join(LABEL_DEFAULTS)}); "
            "name it with --set label=COLUMN, or train without labels with --set model=autoencoder"
        )
    time = None if str(config.time).lower() == "none" else _pick(config.time, TIME_DEFAULTS, present, source)
    numeric, categorical, ignore = names(config.numeric), names(config.categorical), names(config.ignore)
    for column in [*numeric, *categorical, *ignore]:
        require(present, column, source)
    taken = {label, time, *numeric, *categorical, *ignore}
    for column in present:
        if column in taken:
            continue
        kind = _detect(frame[column], column, source)
        if kind == "numeric":
            numeric.append(column)
        elif kind == "categorical":
            categorical.append(column)
    if not numeric and not categorical:
        raise AitkError(f"{source}: no feature columns besides the label and time columns")
    return Columns(label, time, numeric, categorical)


def require(present: list[str], column: str, source: Any) -> None:
    if column not in present:
        raise AitkError(f"{source}: missing column {column!r} (columns: {', '.join(map(str, present[:12]))}{'...' if len(present) > 12 else ''})")


def _pick(wanted: str, defaults: tuple[str, ...], present: list[str], source: Path) -> str | None:
    if wanted:
        require(present, wanted, source)
        return wanted
    return next((c for c in defaults if c in present), None)


def _detect(column: pd.Series, name: str, source: Path) -> str | None:
    """numeric, categorical, or None for a column that only looks like an id (unique per row)."""
    values, bad = parse_numeric(column)
    filled = ~missing_mask(column)
    if not filled.any():
        logger.info(f"column {name}: empty, not used")
        return None
    if not bad.any():
        return "numeric"
    if bad.sum() <= 0.01 * filled.sum():
        row = int(np.flatnonzero(bad)[0])
        raise AitkError(
            f"{where(column, row, source)}: column {name!r}: expected a number, got {shown(cells(column)[row])} "
            f"(declare it with --set categorical={name} if it is a category)"
        )
    n_unique = column[filled].nunique()
    if filled.sum() > 50 and n_unique > 0.9 * filled.sum():
        logger.info(f"column {name}: one value per row (an id?), not used; declare it with --set categorical={name} to use it")
        return None
    return "categorical"


def labels(frame: pd.DataFrame, column: str, source: Path) -> np.ndarray:
    """The label as float 0/1 (NaN where missing); anything else is an error naming the row."""
    raw = frame[column]
    text = raw.astype(str).str.strip().str.lower()
    mapping = {"1": 1.0, "0": 0.0, "1.0": 1.0, "0.0": 0.0, "true": 1.0, "false": 0.0, "yes": 1.0, "no": 0.0}
    y = text.map(mapping).to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isnan(y) & ~missing_mask(raw)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise AitkError(f"{where(raw, row, source)}: label column {column!r}: expected 0 or 1, got {cells(raw)[row]!r}")
    return y


def time_order(frame: pd.DataFrame, column: str, source: Path) -> np.ndarray:
    """Row order by the time column: numbers (e.g. seconds) or date-times."""
    values, bad = parse_numeric(frame[column])
    if bad.any():
        stamps = pd.to_datetime(frame[column], errors="coerce", utc=True)
        bad = stamps.isna().to_numpy() & ~missing_mask(frame[column])
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise AitkError(f"{where(frame, row, source)}: time column {column!r}: expected a number or a date-time, got {cells(frame[column])[row]!r}")
        values = stamps.astype("int64").to_numpy().astype(np.float64)
        values[stamps.isna().to_numpy()] = np.nan
    return np.argsort(np.nan_to_num(values, nan=-np.inf), kind="stable")


class Preprocessing:
    """Numeric statistics (baked into the graph) and category vocabularies (applied here).

    Categories seen fewer than ``min_count`` times in training share the out-of-vocabulary id 0
    with categories never seen, so the model learns what "rare or new" looks like."""

    def __init__(self, columns: Columns, numeric: list[dict[str, Any]], categorical: list[dict[str, Any]]):
        self.columns = columns
        self.numeric = numeric
        self.categorical = categorical
        self.index = [{token: i + 1 for i, token in enumerate(c["vocabulary"])} for c in categorical]

    @classmethod
    def fit(cls, frame: pd.DataFrame, columns: Columns, min_count: int, max_categories: int) -> Preprocessing:
        numeric = []
        for name in columns.numeric:
            values, _ = parse_numeric(frame[name])
            finite = values[~np.isnan(values)].astype(np.float64)
            median = float(np.median(finite)) if finite.size else 0.0
            scale = _robust_scale(finite)
            low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
            numeric.append({
                "name": name, "median": median, "scale": scale, "missing": bool(np.isnan(values).any()), "min": low, "max": high,
            })
        categorical = []
        for name in columns.categorical:
            counts = pd.Series(category_text(frame[name])).value_counts()
            kept = counts[counts >= min_count].index[:max_categories].tolist()
            vocabulary = sorted(kept)
            mode = vocabulary.index(counts.index[0]) + 1 if counts.index[0] in kept else OOV
            categorical.append({"name": name, "vocabulary": vocabulary, "mode": mode})
        return cls(columns, numeric, categorical)

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.columns.label,
            "time": self.columns.time,
            "numeric": self.numeric,
            "categorical": self.categorical,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Preprocessing:
        columns = Columns(
            data["label"], data["time"], [c["name"] for c in data["numeric"]], [c["name"] for c in data["categorical"]]
        )
        return cls(columns, data["numeric"], data["categorical"])

    @property
    def ranges(self) -> list[list[float]] | None:
        """[min, max] of each numeric column in training (None for bundles from before they were kept)."""
        if not all("min" in c for c in self.numeric):
            return None
        return [[c["min"], c["max"]] for c in self.numeric]

    def category_ids(self, texts: np.ndarray) -> np.ndarray:
        """int64 [rows, C] vocabulary ids of text cells, object [rows, >= C] (str or None), whose first
        C columns are the categorical columns'."""
        ids = np.zeros((len(texts), len(self.categorical)), dtype=np.int64)
        for j, index in enumerate(self.index):
            ids[:, j] = [index.get(MISSING_TOKEN if is_missing(cell) else cell.strip(), OOV) for cell in texts[:, j].tolist()]
        return ids

    @property
    def vocab_sizes(self) -> list[int]:
        """Embedding rows per categorical column: the vocabulary plus the OOV id 0."""
        return [len(c["vocabulary"]) + 1 for c in self.categorical]

    def encode(self, frame: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str | None]]:
        """(numeric float32 [n, N] raw with NaN, categorical int64 [n, C] ids, bad-row mask, reason per row).

        ``frame`` is a DataFrame or a mapping of column name to a sequence of cells."""
        n = len(frame[self.columns.features[0]])
        numeric = np.zeros((n, len(self.numeric)), dtype=np.float32)
        reasons: list[str | None] = [None] * n
        for j, spec in enumerate(self.numeric):
            numeric[:, j], bad = parse_numeric(frame[spec["name"]])
            for i in np.flatnonzero(bad):
                if reasons[i] is None:
                    reasons[i] = f"column {spec['name']!r}: expected a number, got {shown(cells(frame[spec['name']])[i])}"
        categorical = np.zeros((n, len(self.categorical)), dtype=np.int64)
        for j, (spec, index) in enumerate(zip(self.categorical, self.index)):
            categorical[:, j] = [index.get(t, OOV) for t in category_text(frame[spec["name"]])]
        bad_rows = np.array([r is not None for r in reasons], dtype=bool)
        return numeric, categorical, bad_rows, reasons

    def encode_checked(self, frame: pd.DataFrame, source: Path) -> tuple[np.ndarray, np.ndarray]:
        """``encode`` for training and evaluation data, where a bad cell is an error naming its row."""
        for column in self.columns.features:
            require(list(frame.columns), column, source)
        numeric, categorical, bad, reasons = self.encode(frame)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise AitkError(f"{where(frame, row, source)}: {reasons[row]}")
        return numeric, categorical

    def baseline(self) -> tuple[np.ndarray, np.ndarray]:
        """A typical row (numeric medians, most frequent categories): what occlusion replaces a feature with."""
        numeric = np.array([c["median"] for c in self.numeric], dtype=np.float32)
        categorical = np.array([c["mode"] for c in self.categorical], dtype=np.int64)
        return numeric, categorical


def check_numeric(frame: pd.DataFrame, columns: list[str], source: Path) -> None:
    """Every cell of the numeric ``columns`` is a number or missing, else an error naming the first bad row."""
    for name in columns:
        _, bad = parse_numeric(frame[name])
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise AitkError(f"{where(frame, row, source)}: column {name!r}: expected a number, got {shown(cells(frame[name])[row])}")


def _robust_scale(values: np.ndarray) -> float:
    """IQR / 1.349 (the standard deviation for a normal distribution), falling back to std, then 1."""
    if values.size:
        q1, q3 = np.percentile(values, [25, 75])
        if q3 > q1:
            return float((q3 - q1) / 1.349)
        if values.std() > 0:
            return float(values.std())
    return 1.0
