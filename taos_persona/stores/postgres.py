"""A fleet registry on PostgreSQL: one view of what is alive across every CI machine.

Selected by ``TAOS_PERSONA_REGISTRY=postgresql://user@host/db`` (or the
fixture's ``registry=``, or ``sweep --registry``). Runs and their resources
are rows; liveness is exact, not guessed by age:

- The owner holds a session advisory lock on a key derived from its run id,
  on a connection of its own whose TCP keepalive settings make the server
  end a dead machine's session (and so drop the lock) within ~11 s.
- The owner stamps a heartbeat with the server's ``now()``; a run is swept
  only when its lock is free AND its heartbeat is older than the lease.
- A blip: the owner reconnects, ends its own old session if the server
  still has it, and takes its lock again; the heartbeat goes on meanwhile.
- Fencing: a sweeper that claims a run bumps its ``epoch``; every write of
  the owner names the epoch it holds, so an owner that comes back after its
  run was swept fails loudly (:class:`FencedError`, listing what was
  released under it) and never goes on with released resources.
"""
from __future__ import annotations

import asyncio
import functools
import json
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple, TypeVar

from ..errors import FencedError, RegistryError
from ..records import SCHEMA, RunRecord
from ..store import RunClaim, RunStore
from ._pgconn import FleetSettings, connect, connection_errors, lock_key, safe_url
from ._pgio import IOThread
from ._pgschema import migrate

__all__ = ["PostgresStore", "PgClaim", "Snapshot", "RunWriter"]

T = TypeVar("T")

FIRST_SQL = """
WITH r AS (
    INSERT INTO taos_persona_runs (run_id, epoch, next_seq, released, lock_key, persona, host, pid)
    VALUES ($1, $2, $3, $4, $7, $8, $9, $10) ON CONFLICT (run_id) DO NOTHING RETURNING run_id),
u AS (INSERT INTO taos_persona_resources (run_id, seq, record)
      SELECT r.run_id, x.seq, x.record::jsonb FROM r, unnest($5::integer[], $6::text[]) AS x(seq, record))
SELECT count(*) FROM r
"""
"""A run's first save makes its row (a run that acquires nothing writes nothing); 0: the id is taken."""

_UPSERT_TEMPLATE = """
INSERT INTO taos_persona_resources (run_id, seq, record)
SELECT r.run_id, x.seq, x.record::jsonb
FROM taos_persona_runs r, {rows} AS x(seq, record)
WHERE r.run_id = $1 AND r.epoch = $2 AND r.swept_at IS NULL
FOR SHARE OF r
ON CONFLICT (run_id, seq) DO UPDATE SET record = EXCLUDED.record
"""
UPSERT_SQL = _UPSERT_TEMPLATE.format(rows="unnest($3::integer[], $4::text[])")
"""The common save (new or changed resources, none gone): one plain INSERT, fenced by epoch.

``FOR SHARE`` on the run's row serializes with a sweeper's claim (which updates
that row): a save either lands before the claim, and the sweeper sees it, or
finds the epoch changed and writes nothing."""

_UPSERT_ROWS = 4
"""Up to this many records (an intent plus the held record riding on it: 2) a save names
each one in a VALUES list, which the server runs cheaper than ``unnest`` of two arrays."""


@functools.lru_cache(maxsize=_UPSERT_ROWS)
def _upsert_sql(rows: int) -> str:
    """:data:`UPSERT_SQL` with ``rows`` (seq, record) pairs as $3, $4, $5, ... ."""
    pairs = ", ".join(f"(${3 + 2 * i}::integer, ${4 + 2 * i}::text)" for i in range(rows))
    return _UPSERT_TEMPLATE.format(rows=f"(VALUES {pairs})")


def upsert_args(run_id: str, epoch: int, seqs: List[int], records: List[str]) -> Tuple[Any, ...]:
    """(statement, *arguments) of the common save: a VALUES list when few records, else arrays."""
    if len(seqs) > _UPSERT_ROWS:
        return UPSERT_SQL, run_id, epoch, seqs, records
    return (_upsert_sql(len(seqs)), run_id, epoch, *(value for pair in zip(seqs, records) for value in pair))

SAVE_SQL = """
WITH r AS (SELECT run_id FROM taos_persona_runs WHERE run_id = $1 AND epoch = $2 AND swept_at IS NULL FOR SHARE),
n AS (UPDATE taos_persona_runs SET next_seq = $3, released = $4 WHERE run_id IN (SELECT run_id FROM r)),
d AS (DELETE FROM taos_persona_resources WHERE run_id IN (SELECT run_id FROM r) AND seq = ANY($7::integer[])),
u AS (INSERT INTO taos_persona_resources (run_id, seq, record)
      SELECT r.run_id, x.seq, x.record::jsonb FROM r, unnest($5::integer[], $6::text[]) AS x(seq, record)
      ON CONFLICT (run_id, seq) DO UPDATE SET record = EXCLUDED.record)
SELECT count(*) FROM r
"""
"""A save with resources gone (a release's progress): fenced, changed ones sent, gone ones deleted."""

_BEAT_SQL = "UPDATE taos_persona_runs SET heartbeat = now() WHERE run_id = $1 AND epoch = $2 AND swept_at IS NULL"
_TERMINATE_OLD_SQL = """
SELECT pg_terminate_backend(pid) FROM pg_locks
WHERE locktype = 'advisory' AND granted AND pid = $1 AND objsubid = 1
  AND ((classid::bigint << 32) | objid::bigint) = $2
"""
"""End our own previous session, but only while it still holds our lock (a pid can be reused)."""


@dataclass(frozen=True)
class Snapshot:
    """A run's state, copied on the caller's thread: what one save writes."""

    run_id: str
    persona: str
    host: str
    pid: int
    next_seq: int
    released: int
    records: Dict[int, bytes]

    @classmethod
    def of(cls, run: RunRecord) -> "Snapshot":
        return cls(run.run_id, run.persona, run.host, run.pid, run.next_seq, run.released,
                   {seq: record.encoded() for seq, record in run.resources.items()})


@dataclass
class RunWriter:
    """Saves of one run under one epoch: sends only what changed since the last save that landed."""

    run_id: str
    epoch: int = 1
    written: bool = False
    sent: Dict[int, bytes] = field(default_factory=dict)

    async def write(self, conn: Any, snap: Snapshot, *, timeout: Optional[float]) -> bool:
        """One statement (none if nothing changed); False when the epoch is no longer ours (the
        run was claimed or swept), or, for a first write, when the run id has a row already."""
        sent, now = self.sent, snap.records  # an unchanged record is the same cached bytes object
        seqs = [seq for seq, data in now.items() if sent.get(seq) != data]
        records = [now[seq].decode() for seq in seqs]
        gone = [seq for seq in sent if seq not in now]
        if not self.written:
            matched = await conn.fetchval(FIRST_SQL, snap.run_id, self.epoch, snap.next_seq, snap.released,
                                          seqs, records, lock_key(snap.run_id), snap.persona, snap.host, snap.pid,
                                          timeout=timeout)
        elif gone:
            matched = await conn.fetchval(SAVE_SQL, snap.run_id, self.epoch, snap.next_seq, snap.released,
                                          seqs, records, gone, timeout=timeout)
        elif seqs:
            status = await conn.execute(*upsert_args(snap.run_id, self.epoch, seqs, records), timeout=timeout)
            matched = status != "INSERT 0 0"
        else:
            return True
        if matched:  # a snapshot's records are its own copy, never changed after
            self.sent, self.written = snap.records, True
        return bool(matched)



class PgClaim(RunClaim):
    """A claim in the fleet registry: the run's advisory lock, its epoch, and the writer.

    An owner's claim holds its lock on a connection of its own (``session``);
    a sweeper's claims share the store's sweeper connection.
    """

    def __init__(self, run_id: str, writer: RunWriter, session: Optional["_OwnerSession"] = None) -> None:
        super().__init__(run_id)
        self.writer = writer
        self.session = session
        self.loaded: List[Dict[str, Any]] = []  # what a sweeper found: the tombstone lists it


class _OwnerSession:
    """The owner's hold on one run: its own connection, the lock on it, the heartbeat.

    It lives on the store's thread, so a test that blocks its own loop (sync
    code, a debugger) still rides out a blip: reconnect, lock, heartbeat. The
    saves go through ``writes``, a connection on the owner's loop: no thread
    hop on an acquisition's path, fenced by the epoch like every write.
    """

    def __init__(self, store: "PostgresStore", run_id: str) -> None:
        self.store, self.run_id, self.key = store, run_id, lock_key(run_id)
        self.loop = asyncio.get_running_loop()
        self.closed = False
        self.conn: Any = None
        self.server_pid = 0
        self.writer = RunWriter(run_id)
        self.lock = asyncio.Lock()
        self.fenced = False
        self.beats: Optional["asyncio.Task[None]"] = None
        self.writes: Optional[_WriteConn] = None

    async def start(self) -> None:
        """Take the lock; RegistryError if the run id is held or has a row already."""
        self._adopt(await self.store.connection())
        if not await self.conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key):
            self.abandon()
            raise RegistryError(f"run id {self.run_id} is in use by a live process in the fleet registry "
                                f"{self.store.location}; pick another run id")
        if await self.conn.fetchval("SELECT 1 FROM taos_persona_runs WHERE run_id = $1", self.run_id):
            self.abandon()
            raise RegistryError(f"run id {self.run_id} already has a record in the fleet registry "
                                f"{self.store.location}; run python -m taos_persona.sweep --registry URL "
                                "or pick another run id")
        self.beats = asyncio.ensure_future(self._heartbeat())

    def _adopt(self, conn: Any) -> None:
        self.conn, self.server_pid = conn, conn.get_server_pid()

    async def run(self, op: Callable[[Any], Awaitable[T]], *, patience: Optional[float]) -> T:
        """``await op(conn)`` one at a time; on a lost connection, reconnect (for at most
        ``patience`` seconds, None: as long as it takes) and try once more."""
        async with self.lock:
            if self.fenced:
                raise await self.store.fenced_error(self.run_id)
            if self.closed:
                raise RegistryError(f"run {self.run_id}'s session with {self.store.location} is closed")
            if self.conn is not None:
                try:
                    return await op(self.conn)
                except connection_errors():
                    pass
            await asyncio.wait_for(self._reconnect(), patience)
            return await op(self.conn)

    async def _reconnect(self) -> None:
        """A new session that holds our lock again; FencedError if our epoch is gone meanwhile."""
        delay = 0.05
        while True:
            self._drop_conn()
            try:
                conn = await self.store.connection()
            except (RegistryError, *connection_errors()):  # type: ignore[misc]  # still out of reach
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            try:
                await self._relock(conn)
            except connection_errors():
                conn.terminate()
                continue
            self._adopt(conn)
            if self.fenced:
                raise await self.store.fenced_error(self.run_id)
            return

    async def _relock(self, conn: Any) -> None:
        """Beat at once (the lease goes on), end our old session if the server still has it,
        then wait for our lock; stop waiting if a sweeper took the run meanwhile."""
        timeout = self.store.settings.op_timeout
        while await self._beat(conn):
            await conn.execute(_TERMINATE_OLD_SQL, self.server_pid, self.key, timeout=timeout)
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key, timeout=timeout):
                return
            await asyncio.sleep(0.1)  # our old session is ending, or a sweeper is looking at us

    async def _beat(self, conn: Any) -> bool:
        """Stamp the server's now(); False (and fenced) if the run is no longer ours."""
        if not self.writer.written:
            return True  # no row yet: nothing to sweep, nothing to keep alive
        status = await conn.execute(_BEAT_SQL, self.run_id, self.writer.epoch,
                                    timeout=self.store.settings.op_timeout)
        if status == "UPDATE 0":
            self.fenced = True
        return not self.fenced

    async def _heartbeat(self) -> None:
        """Beat every ``heartbeat_every`` seconds until fenced or closed; never dies of an error."""
        while not (self.fenced or self.closed):
            await asyncio.sleep(self.store.settings.heartbeat_every)
            try:
                await self.run(self._beat, patience=None)
            except FencedError:
                return
            except Exception:  # noqa: BLE001 - the next beat tries again
                continue

    def _drop_conn(self) -> None:
        if self.conn is not None:
            self.conn.terminate()
            self.conn = None

    def abandon(self) -> None:
        """Stop beating and end the session at once, from any thread: the server drops the lock.

        Synchronous (``unclaim`` runs on every exit path, signal handlers included):
        a shutdown of the socket sends the FIN now, whatever the state of our loop.
        """
        self.closed = True
        beats, self.beats = self.beats, None
        conn, self.conn = self.conn, None
        on_loop = _running_loop() is self.loop
        if beats is not None:
            _call_on(self.loop, beats.cancel, on_loop)
        if conn is None:
            return
        transport = getattr(conn, "_transport", None)
        sock = transport.get_extra_info("socket") if transport is not None else None
        try:
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        _call_on(self.loop, conn.terminate, on_loop)
        if self.writes is not None:
            self.writes.drop()


class _WriteConn:
    """The owner's connection for saves, on the owner's own loop; reconnects to ride out a blip."""

    def __init__(self, store: "PostgresStore") -> None:
        self.store = store
        self.loop = asyncio.get_running_loop()
        self.conn: Any = None
        self.lock = asyncio.Lock()

    async def run(self, op: Callable[[Any], Awaitable[T]], *, patience: float) -> T:
        """``await op(conn)``; on a lost connection, retry on new ones for ``patience`` seconds."""
        async with self.lock:
            if self.conn is not None and not self.conn.is_closed():
                try:
                    return await op(self.conn)
                except connection_errors():
                    self.drop()
            return await asyncio.wait_for(self._retry(op), patience)

    async def _retry(self, op: Callable[[Any], Awaitable[T]]) -> T:
        delay = 0.05
        while True:
            try:
                self.conn = await self.store.connection()
                return await op(self.conn)
            except FencedError:
                raise
            except (RegistryError, *connection_errors()):  # type: ignore[misc]  # still out of reach
                self.drop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    def drop(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            _call_on(self.loop, conn.terminate, _running_loop() is self.loop)


def _running_loop() -> Optional[asyncio.AbstractEventLoop]:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _call_on(loop: asyncio.AbstractEventLoop, function: Callable[[], Any], on_loop: bool) -> None:
    """Call ``function`` on ``loop``: now if we are on it (or it is stopped), else threadsafe."""
    if on_loop or loop.is_closed() or not loop.is_running():
        try:
            function()
        except Exception:  # noqa: BLE001 - a closing transport may already be gone
            pass
    else:
        loop.call_soon_threadsafe(function)


_GONE_SQL = "UPDATE taos_persona_runs SET heartbeat = '-infinity' WHERE run_id = $1 AND epoch = $2"
_CLAIM_SQL = """
SELECT true FROM taos_persona_runs
WHERE run_id = $1 AND swept_at IS NULL AND heartbeat < now() - make_interval(secs => $2)
FOR UPDATE SKIP LOCKED
"""
_FENCE_SQL = "UPDATE taos_persona_runs SET epoch = epoch + 1, claimed_by = $2 WHERE run_id = $1 RETURNING epoch"
_LOAD_RUN_SQL = """
SELECT persona, host, pid, extract(epoch FROM started)::float8 AS started, next_seq, released,
       CASE WHEN isfinite(heartbeat) THEN extract(epoch FROM heartbeat)::float8 ELSE 0 END AS updated
FROM taos_persona_runs WHERE run_id = $1 AND epoch = $2 AND swept_at IS NULL
"""
_LOAD_RESOURCES_SQL = "SELECT record::text FROM taos_persona_resources WHERE run_id = $1 ORDER BY seq"
_TOMBSTONE_SQL = """
WITH d AS (DELETE FROM taos_persona_resources WHERE run_id = $1)
UPDATE taos_persona_runs SET swept_at = now(), released_under = released_under || $3::jsonb
WHERE run_id = $1 AND epoch = $2
"""
_EXPIRE_TOMBSTONES_SQL = """
WITH t AS (DELETE FROM taos_persona_runs WHERE swept_at < now() - interval '7 days' RETURNING run_id)
DELETE FROM taos_persona_resources WHERE run_id IN (SELECT run_id FROM t)
"""
"""A tombstone's resources went with it (``_TOMBSTONE_SQL``); any left are deleted all the same."""
_DELETE_RUN_SQL = "DELETE FROM taos_persona_runs WHERE run_id = $1 AND epoch = $2"
_DELETE_RESOURCES_SQL = "DELETE FROM taos_persona_resources WHERE run_id = $1"


class PostgresStore(RunStore):
    """The fleet registry at one URL, behind the :class:`RunStore` verbs.

    All database work runs on the store's own loop thread (:class:`IOThread`);
    the coroutines here await it from any loop. ``close()`` ends every
    session (and so every lock) this store holds.
    """

    def __init__(self, url: str, settings: Optional[FleetSettings] = None) -> None:
        self.url = url
        self.location = safe_url(url)
        self.settings = settings or FleetSettings.from_env()
        self.io = IOThread()
        self.io.socket_fds = self._socket_fds
        self._sessions: Dict[str, _OwnerSession] = {}
        self._sweeper: Any = None
        self._sweeper_lock: Optional[asyncio.Lock] = None
        self._migrated = False

    def __repr__(self) -> str:
        return f"<PostgresStore {self.location} lease={self.settings.lease:g}s owned={len(self._sessions)}>"

    async def connection(self) -> Any:
        """A new connection (keepalives set); the schema is migrated on the first one."""
        conn = await connect(self.url, self.settings)
        if not self._migrated:
            try:
                await migrate(conn, self.location)
            except BaseException:
                conn.terminate()
                raise
            self._migrated = True
        return conn

    def _socket_fds(self) -> List[int]:
        fds = []
        sessions = list(self._sessions.values())
        conns = [session.conn for session in sessions] + [s.writes.conn for s in sessions if s.writes is not None]
        for conn in conns + [self._sweeper]:
            transport = getattr(conn, "_transport", None)
            sock = transport.get_extra_info("socket") if transport is not None else None
            if sock is not None and sock.fileno() >= 0:
                fds.append(sock.fileno())
        return fds

    # -- RunStore --------------------------------------------------------------------------
    async def list_runs(self) -> List[str]:
        rows = await self.on_sweeper(lambda conn: conn.fetch(
            "SELECT run_id FROM taos_persona_runs WHERE swept_at IS NULL ORDER BY run_id"))
        return [row["run_id"] for row in rows]

    async def claim_new(self, run_id: str) -> RunClaim:
        """Take the run's lock on a session of its own (on the store's thread); nothing is written."""
        session = await self.io.acall(self._start_session(run_id))
        session.writes = _WriteConn(self)
        self._sessions[run_id] = session
        return PgClaim(run_id, session.writer, session)

    async def _start_session(self, run_id: str) -> _OwnerSession:
        session = _OwnerSession(self, run_id)
        await session.start()
        return session

    async def claim_dead(self, run_id: str) -> Optional[RunClaim]:
        """The run if its lock is free AND its heartbeat older than the lease; its epoch bumped."""
        async def claim(conn: Any) -> Optional[RunClaim]:
            key = lock_key(run_id)  # from the run id, never from the row: a record is data, not authority
            async with conn.transaction():
                if not await conn.fetchval(_CLAIM_SQL, run_id, self.settings.lease):
                    return None
                if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
                    return None
                epoch = await conn.fetchval(_FENCE_SQL, run_id, _whoami())
            return PgClaim(run_id, RunWriter(run_id, int(epoch), written=True))

        return await self.on_sweeper(claim)

    async def load(self, claim: RunClaim) -> Optional[RunRecord]:
        pg = _pg(claim)

        async def load(conn: Any) -> Optional[RunRecord]:
            row = await conn.fetchrow(_LOAD_RUN_SQL, claim.run_id, pg.writer.epoch)
            if row is None:
                return None
            texts = [item[0] for item in await conn.fetch(_LOAD_RESOURCES_SQL, claim.run_id)]
            return _record_from_rows(claim.run_id, row, texts)

        run = await self.on_sweeper(load)
        if run is not None:
            pg.writer.sent = {seq: record.encoded() for seq, record in run.resources.items()}
            pg.loaded = [{"seq": r.seq, "backend": r.backend, "state": r.state} for r in run.live()]
        return run

    async def save(self, claim: RunClaim, run: RunRecord) -> None:
        pg, snap = _pg(claim), Snapshot.of(run)
        if pg.session is None:
            await self.on_sweeper(lambda conn: self._sweeper_write(conn, pg, snap))
        else:
            session = pg.session
            await self._on_owner(session, lambda conn: self._owner_write(session, conn, snap))

    async def _sweeper_write(self, conn: Any, pg: PgClaim, snap: Snapshot) -> None:
        if not await pg.writer.write(conn, snap, timeout=self.settings.op_timeout):
            raise RegistryError(f"run {snap.run_id} in the fleet registry {self.location} changed under "
                                "this sweeper's claim; its record stays for the next sweep")

    async def _owner_write(self, session: _OwnerSession, conn: Any, snap: Snapshot) -> None:
        if not await session.writer.write(conn, snap, timeout=self.settings.op_timeout):
            session.fenced = True
            raise await self.fenced_error(snap.run_id)

    async def _on_owner(self, session: _OwnerSession, op: Callable[[Any], Awaitable[T]]) -> T:
        """``op`` on the owner's session when we are on its loop (riding out a blip for up to half
        the lease); from another loop (a signal or atexit path), on a connection of that loop:
        fenced by the epoch all the same."""
        if session.fenced:
            raise await self.fenced_error(session.run_id)
        writes = session.writes
        if writes is None or writes.loop is not asyncio.get_running_loop():
            conn = await self.connection()
            try:
                return await op(conn)
            finally:
                conn.terminate()
        try:
            return await writes.run(op, patience=self.settings.lease / 2)
        except asyncio.TimeoutError:
            raise RegistryError(f"lost the fleet registry {self.location} for longer than half the lease "
                                f"({self.settings.lease / 2:g}s) while writing run {session.run_id}; check the "
                                "network to the server (TAOS_PERSONA_LEASE sets the lease)") from None

    async def delete(self, claim: RunClaim) -> None:
        pg = _pg(claim)
        if pg.session is None:  # a sweeper: keep a tombstone, for an owner that comes back
            await self.on_sweeper(lambda conn: conn.execute(
                _TOMBSTONE_SQL, claim.run_id, pg.writer.epoch, json.dumps(pg.loaded)))
            return
        await self._owner_delete(pg.session)

    async def _owner_delete(self, session: _OwnerSession) -> None:
        if not session.writer.written:
            return
        if session.fenced:  # the owner's exit reads the tombstone, which was kept for this
            raise await self.fenced_error(session.run_id, forget=True)

        async def delete(conn: Any) -> None:
            timeout = self.settings.op_timeout
            async with conn.transaction():  # the run's row first: a save in flight ends before,
                status = await conn.execute(_DELETE_RUN_SQL, session.run_id, session.writer.epoch,
                                            timeout=timeout)  # or finds no row and writes nothing;
                if status != "DELETE 0":  # this statement's fresh snapshot sees every save that landed
                    await conn.execute(_DELETE_RESOURCES_SQL, session.run_id, timeout=timeout)
            if status == "DELETE 0":
                session.fenced = True
                raise await self.fenced_error(session.run_id, forget=True)

        await self._on_owner(session, delete)

    def unclaim(self, claim: RunClaim, *, forget: bool) -> None:
        """Drop the lock (an owner's session ends; a sweeper unlocks). Never raises; bounded wait."""
        try:
            pg = _pg(claim)
            if pg.session is not None:
                session = self._sessions.pop(claim.run_id, None) or pg.session
                session.abandon()
                if not forget and session.writer.written and not session.fenced:  # left for the sweep,
                    self.io.call(self._sweeper_call(lambda conn: conn.execute(  # which may take it at once
                        _GONE_SQL, claim.run_id, session.writer.epoch)), timeout=self.settings.op_timeout)
            else:
                self.io.call(self._sweeper_call(lambda conn: conn.execute(
                    "SELECT pg_advisory_unlock($1)", lock_key(claim.run_id))), timeout=self.settings.op_timeout)
        except Exception:  # noqa: BLE001 - a lost session drops its locks on the server anyway
            pass

    # -- the sweeper's connection ----------------------------------------------------------
    async def on_sweeper(self, op: Callable[[Any], Awaitable[T]]) -> T:
        """``await op(conn)`` on the sweeper's connection, on the store's thread, from any loop."""
        return await self.io.acall(self._sweeper_call(op))

    async def _sweeper_call(self, op: Callable[[Any], Awaitable[T]]) -> T:
        """One statement at a time on the sweeper's connection (its claims' locks live there)."""
        if self._sweeper_lock is None:
            self._sweeper_lock = asyncio.Lock()
        async with self._sweeper_lock:
            if self._sweeper is None or self._sweeper.is_closed():
                self._sweeper = await self.connection()
            try:
                return await asyncio.wait_for(op(self._sweeper), self.settings.op_timeout * 3)
            except connection_errors() as exc:
                self._sweeper.terminate()  # its claims' locks go with it: nothing is half-held
                self._sweeper = None
                raise RegistryError(f"lost the fleet registry {self.location} mid-sweep ({exc!r}); "
                                    "what was not done stays for the next sweep") from None

    async def expire_tombstones(self) -> None:
        """Forget runs swept more than 7 days ago (kept so that a returning owner learns of it)."""
        await self.on_sweeper(lambda conn: conn.execute(_EXPIRE_TOMBSTONES_SQL))

    async def fenced_error(self, run_id: str, *, forget: bool = False) -> FencedError:
        """The error an owner gets once its run was swept: who swept it, when, what was released.

        ``forget``: the owner has read it, so the tombstone row goes (it was kept for this).
        """
        conn = await self.connection()
        try:
            row = await conn.fetchrow("SELECT claimed_by, swept_at, released_under FROM taos_persona_runs WHERE run_id = $1",
                                      run_id, timeout=self.settings.op_timeout)
            if forget and row is not None and row["swept_at"] is not None:
                await conn.execute("DELETE FROM taos_persona_runs WHERE run_id = $1 AND swept_at IS NOT NULL", run_id)
        finally:
            await conn.close()
        return FencedError(_fence_message(run_id, self.location, row))

    async def aclose(self) -> None:
        await self.io.acall(self._close_all())
        self.io.close()

    def close(self) -> None:
        """End every session this store holds (their locks go with them) and its thread. Safe twice."""
        if os.getpid() == self.io.pid and (self._sessions or self._sweeper is not None) and self.io.started:
            try:
                self.io.call(self._close_all(), timeout=self.settings.op_timeout * 2)
            except Exception:  # noqa: BLE001 - the sessions end with the process anyway
                pass
        self.io.close()

    async def _close_all(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            session.abandon()
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.terminate()


def _pg(claim: RunClaim) -> PgClaim:
    if not isinstance(claim, PgClaim):
        raise TypeError(f"{claim!r} is not a claim of a PostgresStore")
    return claim


def _whoami() -> str:
    return f"{socket.gethostname()} pid {os.getpid()}"


def _record_from_rows(run_id: str, row: Any, texts: List[str]) -> RunRecord:
    """A RunRecord from the database's rows, every field validated as a file's would be."""
    document = {"schema": SCHEMA, "run_id": run_id, "persona": row["persona"], "host": row["host"],
                "pid": row["pid"], "started": row["started"], "updated": row["updated"],
                "next_seq": row["next_seq"], "released": row["released"],
                "resources": [json.loads(text) for text in texts]}
    seqs = [item.get("seq") for item in document["resources"] if isinstance(item, dict)]
    numbers = [seq for seq in seqs if isinstance(seq, int)]
    document["next_seq"] = max([row["next_seq"], *(seq + 1 for seq in numbers)])  # saves skip next_seq
    return RunRecord.from_bytes(json.dumps(document).encode())


def _fence_message(run_id: str, where: str, row: Any) -> str:
    me = f"this process ({_whoami()})"
    if row is None:
        return (f"run {run_id} was swept from the fleet registry {where} while {me} was cut off from it; "
                "what it held was released: the test must not go on with it")
    released = row["released_under"]
    released = json.loads(released) if isinstance(released, str) else released
    listed = ", ".join(f"{item.get('backend')} #{item.get('seq')} ({item.get('state')})"
                       for item in released) or "nothing yet"
    return (f"run {run_id} was swept by {row['claimed_by'] or 'another machine'} while {me} was cut off "
            f"from the fleet registry {where}; released under it: {listed}. The test must not go on with "
            "those resources (raise TAOS_PERSONA_LEASE if the network to the server blips this long)")
