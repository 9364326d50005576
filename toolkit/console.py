"""Logs and progress bars on stderr; none of either when quiet, and no bars or colour off a terminal."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
quiet = False


def log(message: str) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def bars_enabled() -> bool:
    return not quiet and sys.stderr.isatty() and "NO_COLOR" not in os.environ


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """``items`` with a progress bar (rate in ``unit``/s) on stderr when bars are enabled."""
    if not bars_enabled():
        yield from items
        return
    from tqdm import tqdm

    yield from tqdm(items, desc=desc, total=total, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass


@contextmanager
def counter(desc: str, unit: str = "it"):
    """A bar with a running count and rate (``bar.update(n)``) on stderr when bars are enabled."""
    if not bars_enabled():
        yield _NoBar()
        return
    from tqdm import tqdm

    with tqdm(desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False) as bar:
        yield bar
