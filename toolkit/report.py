"""Evaluation reports: the plots a use case draws (PNG files, matplotlib's Agg backend), the
training curves from the bundle's history, and one self-contained ``index.html`` per report folder
with the metrics table, every plot inline (base64 data URIs) and every CSV table, so it opens from
disk in any browser with no server."""

from __future__ import annotations

import base64
import csv
import html
import json
from pathlib import Path
from typing import Any

from applied_aitk.console import get_logger
from applied_aitk.files import atomic_path, atomic_write

logger = get_logger(__name__)

MAX_TABLE_ROWS = 100


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` as PNG (temp file + rename) and close it."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        pyplot().close(fig)
    return path


def bundle_history(bundle: Any) -> list[dict[str, float]]:
    """Per-epoch training history of a bundle: ``history.csv`` when it has one, else a
    ``history`` list in its metrics; [] when it has neither."""
    if bundle.has("history.csv"):
        with open(bundle.file("history.csv"), newline="", encoding="utf-8") as f:
            return [{k: float(v) for k, v in row.items() if _is_number(v)} for row in csv.DictReader(f)]
    history = bundle.metrics.get("history")
    return [row for row in history if isinstance(row, dict)] if isinstance(history, list) else []


def plot_history(history: list[dict[str, float]], path: Path) -> Path | None:
    """Training curves: the loss, and every validation metric, against the epoch (or step)."""
    x_name = "epoch" if all("epoch" in r for r in history) else "step"
    names = [k for k in history[0] if k not in ("epoch", "step", "steps", "seconds", "lr", "learning_rate") and all(_is_number(r.get(k)) for r in history)] if history else []
    if not names:
        return None
    losses = [k for k in names if "loss" in k or "perplexity" in k]
    others = [k for k in names if k not in losses]
    plt = pyplot()
    fig, axes = plt.subplots(1, 2 if losses and others else 1, figsize=(10 if losses and others else 5.5, 4), squeeze=False)
    for ax, group, label in zip(axes[0], [g for g in (losses, others) if g], ["loss", "validation metric"] if losses else ["validation metric"]):
        for k in group:
            ax.plot([r.get(x_name, i + 1) for i, r in enumerate(history)], [float(r[k]) for r in history], marker="o", markersize=3, label=k)
        ax.set(xlabel=x_name, ylabel=label, title=f"training: {label}")
        ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def finish(folder: Path, title: str, metrics: dict[str, Any], bundle: Any = None) -> Path:
    """Complete a report folder a use case's evaluate wrote into: training curves from ``bundle``'s
    history (``training_curves.png``), then ``index.html``. Returns the index's path."""
    history = bundle_history(bundle) if bundle is not None else []
    if history:
        plot_history(history, folder / "training_curves.png")
    return write_index(folder, title, metrics)


def write_index(folder: Path, title: str, metrics: dict[str, Any]) -> Path:
    """``folder/index.html``: the metrics table, every PNG under ``folder`` inline, and every CSV
    table (the first ``MAX_TABLE_ROWS`` rows). Written atomically; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    pngs = sorted(folder.rglob("*.png"), key=lambda p: (p.name != "training_curves.png", str(p)))
    csvs = sorted(folder.rglob("*.csv"))
    parts = [f"<h1>{html.escape(title)}</h1>", "<h2>Metrics</h2>", _metrics_html(metrics)]
    if pngs:
        parts.append("<h2>Plots</h2>")
        parts += [_image_html(folder, p) for p in pngs]
    for path in csvs:
        parts.append(f"<h2>{html.escape(str(path.relative_to(folder)))}</h2>{_csv_html(path)}")
    page = f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>{''.join(parts)}</body></html>"
    index = folder / "index.html"
    atomic_write(index, page)
    logger.info(f"report: {index} ({len(pngs)} plots)")
    return index


_STYLE = ("body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:0.5em 0 1.5em}"
          "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left;font-size:90%}figure{margin:1em 0}img{max-width:100%}")


def _metrics_html(metrics: dict[str, Any]) -> str:
    rows, tables = [], []
    for key, value in metrics.items():
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            tables.append(f"<h3>{html.escape(key)}</h3>{_table(_columns(value.values()), [[k, *v.values()] for k, v in value.items()], key)}")
        elif isinstance(value, dict):
            rows += [[f"{key}.{k}", v] for k, v in value.items()]
        else:
            rows.append([key, value])
    return _table(["metric", "value"], rows) + "".join(tables)


def _columns(dicts: Any) -> list[str]:
    return list(next(iter(dicts)).keys())


def _table(header: list[str], rows: list[list[Any]], first: str | None = None) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in ([first, *header] if first else header))
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_text(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        text = json.dumps(value)
        return text if len(text) <= 200 else text[:197] + "..."
    return "" if value is None else str(value)


def _image_html(folder: Path, path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    name = str(path.relative_to(folder))
    return f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(name)}'><figcaption>{html.escape(name)}</figcaption></figure>"


def _csv_html(path: Path) -> str:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        return "<p>(empty)</p>"
    shown = rows[1 : MAX_TABLE_ROWS + 1]
    note = f"<p>first {len(shown)} of {len(rows) - 1} rows</p>" if len(rows) - 1 > len(shown) else ""
    return note + _table(rows[0], shown)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False
