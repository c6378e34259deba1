"""The sandbox's memory: provider resources and delivered messages, in sqlite.

State lives in one sqlite file so that it survives a sandbox restart, which
is what crash tests need: a killed test run leaves resources "alive" here,
and the next run's sweep must find and release them. ``path=None`` keeps
everything in memory instead.

A resource is ``(provider, rid)`` with a JSON ``data`` dict and an optional
``key`` (address, phone number, username, token name) used for lookups and
message delivery. Deleting one marks it dead rather than forgetting it, so a
provider can tell "never existed" from "already deleted" if it wants to.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

__all__ = ["SandboxStore", "Entry"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    provider TEXT NOT NULL,
    rid TEXT NOT NULL,
    key TEXT,
    data TEXT NOT NULL,
    alive INTEGER NOT NULL DEFAULT 1,
    created REAL NOT NULL,
    PRIMARY KEY (provider, rid)
);
CREATE INDEX IF NOT EXISTS resources_key ON resources (provider, key);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    data TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_key ON messages (key);
"""


def _after_prefix(prefix: str) -> str:
    """The least string greater than every string that starts with ``prefix`` (a key range's end)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class Entry(NamedTuple):
    """One resource as the store holds it: ``created`` is its provider-side creation time (epoch s)."""

    rid: str
    data: Dict[str, Any]
    created: float
    alive: bool


class SandboxStore:
    """Resources and messages of every sandboxed provider, in one sqlite database."""

    def __init__(self, path: Optional[str] = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db: Optional[sqlite3.Connection] = sqlite3.connect(
            path or ":memory:", check_same_thread=False, isolation_level=None)
        self._db.executescript(_SCHEMA)

    def _run(self, sql: str, args: Tuple[Any, ...] = ()) -> sqlite3.Cursor:
        """Execute one statement (autocommit) under the store's lock."""
        if self._db is None:
            raise RuntimeError("SandboxStore is closed")
        with self._lock:
            return self._db.execute(sql, args)

    def create(self, provider: str, rid: str, data: Dict[str, Any], key: Optional[str] = None) -> None:
        """Make ``(provider, rid)`` alive with ``data``; a dead one of that id is replaced."""
        self._run("INSERT OR REPLACE INTO resources (provider, rid, key, data, alive, created) "
                  "VALUES (?, ?, ?, ?, 1, ?)", (provider, rid, key, json.dumps(data), time.time()))

    def get(self, provider: str, rid: str) -> Optional[Dict[str, Any]]:
        """The data of an alive resource, or None."""
        row = self._run("SELECT data FROM resources WHERE provider=? AND rid=? AND alive=1",
                        (provider, rid)).fetchone()
        return json.loads(row[0]) if row else None

    def was_deleted(self, provider: str, rid: str) -> bool:
        """True if ``(provider, rid)`` existed once and has been deleted."""
        row = self._run("SELECT 1 FROM resources WHERE provider=? AND rid=? AND alive=0",
                        (provider, rid)).fetchone()
        return row is not None

    def find(self, provider: str, key: str) -> Optional[Tuple[str, Dict[str, Any]]]:
        """``(rid, data)`` of the alive resource with this key, or None."""
        row = self._run("SELECT rid, data FROM resources WHERE provider=? AND key=? AND alive=1 "
                        "ORDER BY created LIMIT 1", (provider, key)).fetchone()
        return (row[0], json.loads(row[1])) if row else None

    def list(self, provider: str, prefix: str = "") -> List[Tuple[str, Dict[str, Any]]]:
        """``(rid, data)`` of every alive resource whose key starts with ``prefix``, oldest first."""
        return [(entry.rid, entry.data) for entry in self.entries(provider, prefix)]

    def entries(self, provider: str, prefix: str = "") -> List[Entry]:
        """Like :meth:`list`, with each resource's creation time: what a provider's listing shows."""
        # A key range, not LIKE: it uses the (provider, key) index (an exact-name lookup per release
        # scanned every row before: 10,000 releases took 8x longer), and names are case-sensitive.
        where, args = ("", ()) if not prefix else (" AND key >= ? AND key < ?", (prefix, _after_prefix(prefix)))
        rows = self._run(f"SELECT rid, data, created FROM resources WHERE provider=? AND alive=1{where} "  # noqa: S608
                         "ORDER BY created, rowid", (provider, *args)).fetchall()
        return [Entry(rid, json.loads(data), created, True) for rid, data, created in rows]

    def entry(self, provider: str, rid: str) -> Optional[Entry]:
        """The resource alive or dead (a provider that remembers how a thing ended), or None."""
        row = self._run("SELECT data, created, alive FROM resources WHERE provider=? AND rid=?",
                        (provider, rid)).fetchone()
        return Entry(rid, json.loads(row[0]), row[1], bool(row[2])) if row else None

    def backdate(self, provider: str, rid: str, seconds: float) -> bool:
        """Move an alive resource's creation time ``seconds`` into the past; False if not alive.

        What a test of provider-side age (``sweep --discover --older-than``) needs
        instead of waiting an hour.
        """
        cursor = self._run("UPDATE resources SET created=created-? WHERE provider=? AND rid=? AND alive=1",
                           (float(seconds), provider, rid))
        return cursor.rowcount > 0

    def update(self, provider: str, rid: str, data: Dict[str, Any]) -> bool:
        """Replace an alive resource's data; False if it is not alive."""
        cursor = self._run("UPDATE resources SET data=? WHERE provider=? AND rid=? AND alive=1",
                           (json.dumps(data), provider, rid))
        return cursor.rowcount > 0

    def delete(self, provider: str, rid: str) -> bool:
        """Mark a resource dead; False if it was already gone (or never existed)."""
        cursor = self._run("UPDATE resources SET alive=0 WHERE provider=? AND rid=? AND alive=1",
                           (provider, rid))
        return cursor.rowcount > 0

    def alive(self) -> Dict[str, int]:
        """``{provider: number of alive resources}``, providers with none left out."""
        rows = self._run("SELECT provider, COUNT(*) FROM resources WHERE alive=1 "
                         "GROUP BY provider ORDER BY provider").fetchall()
        return {provider: count for provider, count in rows}

    def add_message(self, key: str, message: Dict[str, Any]) -> Dict[str, Any]:
        """Deliver ``message`` to ``key``; returns it with ``seq`` and ``created`` filled in."""
        created = time.time()
        cursor = self._run("INSERT INTO messages (key, data, created) VALUES (?, ?, ?)",
                           (key, json.dumps(message), created))
        return dict(message, seq=cursor.lastrowid, created=created)

    def messages(self, key: str) -> List[Dict[str, Any]]:
        """Every message delivered to ``key``, oldest first, each with ``seq`` and ``created``."""
        rows = self._run("SELECT seq, data, created FROM messages WHERE key=? ORDER BY seq",
                         (key,)).fetchall()
        return [dict(json.loads(data), seq=seq, created=created) for seq, data, created in rows]

    def update_message(self, seq: int, message: Dict[str, Any]) -> bool:
        """Replace a delivered message's data (``seq`` and ``created`` are kept apart); False if gone."""
        clean = {k: v for k, v in message.items() if k not in ("seq", "created")}
        return self._run("UPDATE messages SET data=? WHERE seq=?", (json.dumps(clean), seq)).rowcount > 0

    def delete_messages(self, key: str, seqs: Optional[List[int]] = None) -> int:
        """Delete the messages of ``key`` (only those in ``seqs`` if given); how many went."""
        if seqs is None:
            return self._run("DELETE FROM messages WHERE key=?", (key,)).rowcount
        marks = ",".join("?" * len(seqs)) or "NULL"
        return self._run(f"DELETE FROM messages WHERE key=? AND seq IN ({marks})",  # noqa: S608 (marks only)
                         (key, *seqs)).rowcount

    def close(self) -> None:
        """Close the database; safe to call twice."""
        db, self._db = self._db, None
        if db is not None:
            with self._lock:
                db.close()
