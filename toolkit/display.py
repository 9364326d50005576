"""Results on stdout for people: a metrics mapping, nested mappings, tables (``--json`` prints JSON instead)."""

from __future__ import annotations

import json
import math
from typing import Any


def print_metrics(metrics: dict[str, Any], as_json: bool) -> None:
    """Metrics as JSON (an undefined metric, NaN, is null: JSON has no NaN) or as aligned text."""
    if as_json:
        print(json.dumps(_finite(metrics), indent=2, allow_nan=False))
    else:
        print_mapping(metrics)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def print_mapping(mapping: dict[str, Any], indent: int = 0) -> None:
    width = max((len(k) for k in mapping), default=0)
    for key, value in mapping.items():
        if isinstance(value, dict) and value and indent < 2:
            print(" " * indent + f"{key}:")
            print_mapping(value, indent + 2)
        else:
            print(" " * indent + f"{key:<{width}}  {_cell(value)}")


def print_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("(none)")
        return
    columns = list(dict.fromkeys(k for row in rows for k in row))
    cells = [[_cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def _cell(value: Any, limit: int = 120) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if isinstance(value, (list, dict)):
        text = json.dumps(value)
        return text if len(text) <= limit else text[: limit - 3] + "..."
    return "" if value is None else str(value)
