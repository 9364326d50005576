"""Logs and progress bars on stderr: one logging path (the stdlib logger "aitk" and its children)
and tqdm bars that log lines never break.

``setup()`` (called once by the CLI) sends the "aitk" logger to stderr through a handler that
writes with ``tqdm.write`` while a bar is open, and optionally to a log file. ``--quiet`` silences
logs and bars; bars show only on a terminal and not when ``NO_COLOR`` is set.

Core and plugin modules log with ``logger = get_logger(__name__)`` and ``logger.info(...)``;
warnings that could repeat for every batch go through ``warn_once``."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
ROOT = "aitk"
PACKAGE = __name__.partition(".")[0]  # applied_aitk
quiet = False


def get_logger(name: str) -> logging.Logger:
    """The logger for module ``name`` (``__name__``): a child of "aitk", e.g. "aitk.usecases.codegen.trainer"
    for applied_aitk.usecases.codegen.trainer, "aitk.aitk_wine.plugin" for a third-party plugin's."""
    name = name.removeprefix(PACKAGE + ".")
    return logging.getLogger(name if name == ROOT or name.startswith(ROOT + ".") else f"{ROOT}.{name}")


class ConsoleHandler(logging.Handler):
    """Writes records to the current ``sys.stderr``; through ``tqdm.write`` while a bar is open,
    so that a log line lands above the bar instead of splitting it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            tqdm = sys.modules.get("tqdm")  # no bar can be open unless tqdm was imported
            if tqdm is not None:  # tqdm.write clears open bars, writes the line, and draws them again
                tqdm.tqdm.write(message, file=sys.stderr)
            else:
                sys.stderr.write(message + "\n")
                sys.stderr.flush()
        except Exception:
            self.handleError(record)


class _Formatter(logging.Formatter):
    """``message`` for info, ``warning: message`` above it; optionally a timestamp first."""

    def __init__(self, timestamps: bool):
        super().__init__("%(asctime)s %(message)s" if timestamps else "%(message)s", "%Y-%m-%d %H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.WARNING and not record.message.startswith(("warning:", "error:")):
            record.message = f"{record.levelname.lower()}: {record.message}"
        return super().formatMessage(record)


def setup(silent: bool = False, debug: bool = False, log_file: Path | None = None, timestamps: bool = False) -> None:
    """Send the "aitk" logs to stderr (no logs and no bars when ``silent``, debug lines too with
    ``debug``) and, when given, to ``log_file`` (appended, with timestamps and levels, whatever
    ``silent`` says). Raises OSError when ``log_file`` cannot be opened."""
    global quiet
    quiet = silent
    logger = logging.getLogger(ROOT)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.propagate = False
    logger.setLevel(logging.DEBUG if debug or log_file else logging.INFO)
    console = ConsoleHandler(logging.CRITICAL + 1 if silent else logging.DEBUG if debug else logging.INFO)
    console.setFormatter(_Formatter(timestamps))
    logger.addHandler(console)
    if log_file is not None:
        file = logging.FileHandler(log_file, encoding="utf-8")
        file.setLevel(logging.DEBUG if debug else logging.INFO)
        file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
        logger.addHandler(file)


@functools.cache
def warn_once(message: str, name: str = ROOT) -> None:
    """``message`` as a warning of logger ``name``, the first time only."""
    get_logger(name).warning(message)


def bars_enabled() -> bool:
    return not quiet and sys.stderr.isatty() and "NO_COLOR" not in os.environ


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """``items`` with a progress bar (count of ``total``, rate in ``unit``/s, ETA) on stderr when bars
    are enabled; ``total`` defaults to ``len(items)`` when it has one."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with bar(desc, total, unit) as shown:
        for item in items:
            yield item
            shown.update(1)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **values: Any) -> None:
        pass


@contextmanager
def bar(desc: str, total: int | None = None, unit: str = "it", initial: int = 0) -> Iterator[Any]:
    """A progress bar on stderr when bars are enabled: ``shown.update(n)`` counts (from ``initial``),
    ``shown.set_postfix(loss=0.12)`` shows the latest values. With ``total`` it shows the share done and an ETA."""
    if not bars_enabled():
        yield _NoBar()
        return
    from tqdm import tqdm

    with tqdm(desc=desc, total=total, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False, initial=initial) as shown:
        yield shown


def epoch_progress(total: int, desc: str = "train", start: int = 0) -> Iterator[tuple[int, Any]]:
    """``(epoch, bar)`` for each of ``total`` epochs (0-based) from ``start`` (a resumed run), with one
    bar for the whole training (epochs done of ``total``, rate, ETA); pass the bar to
    ``applied_aitk.train.log_epoch`` to show each epoch's metrics on it. Breaking out of the loop (early
    stopping) closes the bar."""
    with bar(desc, total, "epoch", initial=start) as shown:
        for epoch in range(start, total):
            yield epoch, shown
            shown.update(1)
