"""Server-side sessions (a chatbot's conversations): JSON state by id, each dropped after ``ttl``
seconds without use, at most ``limit`` open at once.

The store is SQLite (the standard library's ``sqlite3``): in memory for a one-process server,
and a file in WAL mode in the server's temp folder with ``--workers N``, so that every worker
process sees every session and the next message may go to any of them. A change is one
``BEGIN IMMEDIATE`` transaction (read, change, write), so two messages of one session never
overwrite each other's turn, whichever processes answer them. The state is JSON, never pickled.
Calls are synchronous and short (tens of microseconds; a write waits for another process's
write, up to ``BUSY_MS``)."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from applied_aitk.serve.http import HTTPError

T = TypeVar("T")
BUSY_MS = 5000
SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (scope TEXT NOT NULL, id TEXT NOT NULL, used REAL NOT NULL, state TEXT NOT NULL,
                                     PRIMARY KEY (scope, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_used ON sessions (scope, used);
CREATE TABLE IF NOT EXISTS counts (scope TEXT PRIMARY KEY, open INTEGER NOT NULL) WITHOUT ROWID;
"""


class SessionStore:
    """The sessions of one ``scope`` (a model's name), each a ``kind`` (``conversation``), in the database ``path``
    (None: in this process's memory). Each method raises HTTPError 404 for a session that does
    not exist (ended, or idle for ``ttl`` seconds); ``open`` raises 503 with Retry-After when
    ``limit`` are open. Idle time is ``time.monotonic()``, which all processes of a machine share."""

    def __init__(self, path: Path | None, scope: str, kind: str, ttl: float, limit: int):
        self.scope, self.kind, self.ttl, self.limit = scope, kind, ttl, limit
        self.db = sqlite3.connect(":memory:" if path is None else str(path), isolation_level=None,
                                  check_same_thread=False, timeout=BUSY_MS / 1000)
        if path is not None:
            self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=OFF")  # the folder goes with the server: nothing to keep after a crash
        self.db.executescript(SCHEMA)
        self.db.execute("INSERT OR IGNORE INTO counts VALUES (?, 0)", (scope,))

    def open(self, state: dict[str, Any]) -> str:
        """A new session holding ``state``; its id (32 hex digits). Drops the idle ones first."""
        key = uuid.uuid4().hex
        with self._writing():
            now = time.monotonic()
            dropped = self.db.execute("DELETE FROM sessions WHERE scope = ? AND used < ?", (self.scope, now - self.ttl)).rowcount
            (count,) = self.db.execute("SELECT open FROM counts WHERE scope = ?", (self.scope,)).fetchone()
            count -= dropped
            if count >= self.limit:
                self._count(count)
                raise HTTPError(503, f"{count} {self.kind}s open; retry later", None, {"Retry-After": "60"})
            self.db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?)", (self.scope, key, now, json.dumps(state)))
            self._count(count + 1)
        return key

    def touch(self, key: str) -> None:
        """Mark the session in use now (a message arrived): it cannot expire while it is answered."""
        now = time.monotonic()
        updated = self.db.execute("UPDATE sessions SET used = ? WHERE scope = ? AND id = ? AND used >= ?",
                                  (now, self.scope, key, now - self.ttl)).rowcount
        if not updated:
            raise self._missing(key)

    def read(self, key: str) -> dict[str, Any]:
        """The session's state (marking it in use)."""
        self.touch(key)
        return json.loads(self._state(key))

    def change(self, key: str, update: Callable[[dict[str, Any]], tuple[dict[str, Any], T]]) -> T:
        """``update(state)`` returns ``(new state, result)``: the new state is stored and the result
        returned, in one transaction; no other change of the session, in any process, comes between."""
        with self._writing():
            state, result = update(json.loads(self._state(key)))
            self.db.execute("UPDATE sessions SET state = ?, used = ? WHERE scope = ? AND id = ?",
                            (json.dumps(state), time.monotonic(), self.scope, key))
        return result

    def end(self, key: str) -> None:
        with self._writing():
            if not self.db.execute("DELETE FROM sessions WHERE scope = ? AND id = ? AND used >= ?",
                                   (self.scope, key, time.monotonic() - self.ttl)).rowcount:
                raise self._missing(key)
            self.db.execute("UPDATE counts SET open = open - 1 WHERE scope = ?", (self.scope,))

    def close(self) -> None:
        self.db.close()

    def _count(self, count: int) -> None:
        self.db.execute("UPDATE counts SET open = ? WHERE scope = ?", (count, self.scope))

    def _state(self, key: str) -> str:
        row = self.db.execute("SELECT state FROM sessions WHERE scope = ? AND id = ?", (self.scope, key)).fetchone()
        if row is None:
            raise self._missing(key)
        return row[0]

    def _missing(self, key: str) -> HTTPError:
        return HTTPError(404, f"{self.kind} {key!r}: no such {self.kind} (ended, or expired after {self.ttl:g} s idle)", self.kind)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` (the write lock, taken at once) ... ``COMMIT``, or ``ROLLBACK`` on an error."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
