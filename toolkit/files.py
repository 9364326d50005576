"""Files that appear whole or not at all (a temp file or folder beside the target, renamed into place),
and JSON files read with a one-line error.

A crash or Ctrl-C part-way leaves the old file (or none), never half of one; the temp name starts
with a dot and names the target, so a stale one is easy to recognise and remove."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from applied_aitk.errors import AitkError


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yields a temp path beside ``path`` (same suffix, so writers that go by it still work); when the
    block ends normally it is renamed to ``path``, when it raises it is removed.

    >>> with atomic_path(out / "plot.png") as tmp:
    ...     fig.savefig(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` through a temp file renamed into place."""
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")


def replace_dir(src: Path, dst: Path) -> None:
    """Rename the folder ``src`` to ``dst``; an existing ``dst`` is moved aside first and removed after,
    so ``dst`` is always either the old folder or the new one."""
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(dst, old)
    os.rename(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_json(path: Path) -> Any:
    """The JSON value in ``path`` (UTF-8); AitkError with one line naming the file when it is not valid JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise AitkError(f"{path}: not valid JSON ({e})") from None
