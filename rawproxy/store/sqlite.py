"""Remembered reasoning in SQLite, shared by worker processes and kept across restarts.

The same async interface as MemoryReasoningStore. Every call runs in a worker thread
(nothing blocks the event loop). Reads and writes have a connection each, one call at a
time per connection (a CapacityLimiter of 1, plus a lock for the synchronous close), so a
write waiting for the lock never holds up a read. Several processes open the same file:
WAL lets readers run beside the one writer; busy_timeout makes a writer wait for another
instead of failing, briefly for the reader's occasional recency update (a recall must
stay fast) and longer for writes (they run in the background, off every client's path).
A cancelled call abandons its thread (the thread ends on its own; SQLite rolls back what
it did not commit). Failures are swallowed and told once per outage (`outage`).

Bounds, both cheap:
- expiry: a row past its `expires` is never returned; rows past it are deleted by a
  sweep that runs at most once a minute per store, on a put;
- bytes: triggers keep the total size in a one-row table, so a put knows in the same
  transaction whether the store is over `max_bytes`; it then deletes the least recently
  used rows until the total is back under 90 % of the bound (so the next puts don't
  evict again). "Used" is refreshed on a hit at most once a minute per row, so reads
  rarely write.
Times are wall-clock seconds: several processes and restarts share them.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import trio

from ..core.reasoning import Reasoning, entry_size
from .outage import Outage

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reasoning (
    key       TEXT PRIMARY KEY,
    text      TEXT NOT NULL,
    signature TEXT,
    size      INTEGER NOT NULL,
    expires   REAL NOT NULL,
    used      REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS reasoning_expires ON reasoning (expires);
CREATE INDEX IF NOT EXISTS reasoning_used ON reasoning (used);
CREATE TABLE IF NOT EXISTS reasoning_total (id INTEGER PRIMARY KEY CHECK (id = 0), bytes INTEGER NOT NULL);
INSERT OR IGNORE INTO reasoning_total VALUES (0, 0);
CREATE TRIGGER IF NOT EXISTS reasoning_added AFTER INSERT ON reasoning
    BEGIN UPDATE reasoning_total SET bytes = bytes + NEW.size WHERE id = 0; END;
CREATE TRIGGER IF NOT EXISTS reasoning_removed AFTER DELETE ON reasoning
    BEGIN UPDATE reasoning_total SET bytes = bytes - OLD.size WHERE id = 0; END;
CREATE TRIGGER IF NOT EXISTS reasoning_resized AFTER UPDATE OF size ON reasoning
    BEGIN UPDATE reasoning_total SET bytes = bytes - OLD.size + NEW.size WHERE id = 0; END;
"""

_BUSY_TIMEOUT_MS = 5_000        # writes (background): wait this long for another process's lock
_READ_BUSY_TIMEOUT_MS = 250     # the reader's recency updates: a hint, never worth a slow recall
_SWEEP_EVERY = 60.0      # seconds between two sweeps of expired rows (per store)
_TOUCH_AFTER = 60.0      # a hit refreshes a row's "used" time when it is older than this
_EVICT_TO = 0.9          # eviction brings the total down to this fraction of max_bytes


class SQLiteReasoningStore:
    shared = True  # other worker processes write to the same file

    def __init__(self, path: str, max_bytes: int, ttl: float, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.ttl = ttl
        self._clock = clock
        self.hits = 0
        self.misses = 0
        self._next_sweep = 0.0
        self.outage = Outage(f"sqlite:{path}")
        self._lock = threading.Lock()
        self._limiter = trio.CapacityLimiter(1)
        self._read_lock = threading.Lock()
        self._read_limiter = trio.CapacityLimiter(1)
        if path != ":memory:" and not os.path.exists(path):
            # Reasoning is the user's data: the file (and SQLite's -wal/-shm beside it,
            # which copy its mode) is readable by its owner only.
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._db = self._connect(_BUSY_TIMEOUT_MS)
        try:
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: a crashed process loses nothing committed
            with self._lock, self._write() as db:
                # executescript would COMMIT the open transaction first: statement by statement.
                for statement in _SCHEMA.split(";\n"):
                    if statement.strip():
                        db.execute(statement)
            if path == ":memory:":  # one private database: one connection, one lock
                self._reader, self._read_lock, self._read_limiter = self._db, self._lock, self._limiter
            else:
                self._reader = self._connect(_READ_BUSY_TIMEOUT_MS)
        except BaseException:
            self._db.close()  # a file that cannot serve: nothing left open behind the error
            raise

    def _connect(self, busy_timeout_ms: int) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=busy_timeout_ms / 1000, isolation_level=None,
                             check_same_thread=False)
        db.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
        return db

    @contextmanager
    def _write(self, db: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        """One write transaction, taking the write lock up front (waits up to busy_timeout)."""
        db = self._db if db is None else db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # ------------------------------------------------------------------ async interface

    async def get_many(self, keys: Iterable[str]) -> dict[str, Reasoning]:
        keys = list(dict.fromkeys(keys))
        if not keys:
            return {}
        try:
            found = await self._run(self._get_many, keys, limiter=self._read_limiter)
        except sqlite3.Error as exc:
            # A store that fails costs the real reasoning, never the request: the repair
            # falls back to the turn's own text.
            self.outage.failed("a read", exc)
            found = {}
        else:
            self.outage.ok()
        self.hits += len(found)
        self.misses += len(keys) - len(found)
        return found

    async def put(self, key: str, value: Reasoning) -> None:
        try:
            await self._run(self._put, key, value)
        except sqlite3.Error as exc:
            self.outage.failed("a write", exc)
        else:
            self.outage.ok()

    async def aclose(self) -> None:
        # No limiter: close() takes both locks, so it waits for a call in flight, and an
        # abandoned call may still hold a limiter.
        await trio.to_thread.run_sync(self.close, abandon_on_cancel=True)

    # Blocking, for tests and tools (the event loop never calls these).
    def total_bytes(self) -> int:
        """The total size of the rows (all processes'), as the triggers keep it."""
        with self._read_lock:
            return self._reader.execute("SELECT bytes FROM reasoning_total WHERE id = 0").fetchone()[0]

    def count(self) -> int:
        with self._read_lock:
            return self._reader.execute("SELECT count(*) FROM reasoning").fetchone()[0]

    async def _run(self, fn, *args, limiter: trio.CapacityLimiter | None = None):
        return await trio.to_thread.run_sync(fn, *args, limiter=limiter or self._limiter, abandon_on_cancel=True)

    # ------------------------------------------------------------------ in the worker thread

    def _get_many(self, keys: list[str]) -> dict[str, Reasoning]:
        now = self._clock()
        found: dict[str, Reasoning] = {}
        stale: list[str] = []
        with self._read_lock:
            db = self._reader
            for start in range(0, len(keys), 500):  # SQLite's bound on host parameters
                chunk = keys[start:start + 500]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    f"SELECT key, text, signature, used FROM reasoning WHERE key IN ({marks}) AND expires >= ?",
                    (*chunk, now),
                ).fetchall()
                for key, text, signature, used in rows:
                    found[key] = Reasoning(text, signature)
                    if used < now - _TOUCH_AFTER:
                        stale.append(key)
            if stale:
                try:
                    with self._write(db):
                        db.executemany("UPDATE reasoning SET used = ? WHERE key = ?", [(now, k) for k in stale])
                except sqlite3.OperationalError:
                    pass  # busy past the timeout: recency is a hint, the answer is what matters
        return found

    def _put(self, key: str, value: Reasoning) -> None:
        size = entry_size(key, value)
        if size > self.max_bytes:
            return  # larger than the whole store: keeping it would evict everything
        now = self._clock()
        with self._lock, self._write() as db:
            db.execute(
                "INSERT INTO reasoning (key, text, signature, size, expires, used) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET text = excluded.text, signature = excluded.signature, "
                "size = excluded.size, expires = excluded.expires, used = excluded.used",
                (key, value.text, value.signature, size, now + self.ttl, now),
            )
            if now >= self._next_sweep:
                db.execute("DELETE FROM reasoning WHERE expires < ?", (now,))
                self._next_sweep = now + _SWEEP_EVERY
            total = db.execute("SELECT bytes FROM reasoning_total WHERE id = 0").fetchone()[0]
            if total > self.max_bytes:
                self._evict(total - int(self.max_bytes * _EVICT_TO), keep=key)

    def _evict(self, excess: int, keep: str) -> None:
        victims: list[tuple[str]] = []
        freed = 0
        for victim, size in self._db.execute("SELECT key, size FROM reasoning ORDER BY used, expires"):
            if victim == keep:
                continue
            victims.append((victim,))
            freed += size
            if freed >= excess:
                break
        self._db.executemany("DELETE FROM reasoning WHERE key = ?", victims)

    def close(self) -> None:
        with self._lock:
            self._db.close()
        if self._reader is not self._db:
            with self._read_lock:
                self._reader.close()
