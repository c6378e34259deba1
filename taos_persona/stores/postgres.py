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
import json
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ..errors import FencedError, RegistryError
from ..records import RunRecord
from ._pgconn import FleetSettings, connect, connection_errors, lock_key, safe_url
from ._pgio import IOThread
from ._pgschema import RESOURCES, RUNS, migrate

__all__ = ["PostgresStore", "Snapshot", "RunWriter", "SAVE_SQL"]

SAVE_SQL = f"""
WITH r AS (
    UPDATE {RUNS} SET next_seq = $3, released = $4,
                      heartbeat = CASE WHEN $8 THEN now() ELSE heartbeat END
    WHERE run_id = $1 AND epoch = $2 AND swept_at IS NULL RETURNING run_id),
d AS (DELETE FROM {RESOURCES} WHERE run_id = (SELECT run_id FROM r) AND seq = ANY($7::integer[])),
u AS (INSERT INTO {RESOURCES} (run_id, seq, record)
      SELECT r.run_id, x.seq, x.record FROM r, unnest($5::integer[], $6::jsonb[]) AS x(seq, record)
      ON CONFLICT (run_id, seq) DO UPDATE SET record = EXCLUDED.record)
SELECT count(*) FROM r
"""
"""One round trip per save: fenced by epoch, only changed resources sent, gone ones deleted."""

_BEAT_SQL = f"UPDATE {RUNS} SET heartbeat = now() WHERE run_id = $1 AND epoch = $2 AND swept_at IS NULL"
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
    next_seq: int
    released: int
    records: Dict[int, bytes]

    @classmethod
    def of(cls, run: RunRecord) -> "Snapshot":
        return cls(run.run_id, run.next_seq, run.released,
                   {seq: record.encoded() for seq, record in run.resources.items()})


@dataclass
class RunWriter:
    """Saves of one run under one epoch: sends only what changed since the last save that landed."""

    run_id: str
    epoch: int
    sent: Dict[int, bytes] = field(default_factory=dict)

    async def write(self, conn: Any, snap: Snapshot, *, touch: bool, timeout: Optional[float]) -> bool:
        """One statement; False when the epoch is no longer ours (the run was claimed or swept)."""
        changed = [(seq, data) for seq, data in snap.records.items() if self.sent.get(seq) != data]
        gone = [seq for seq in self.sent if seq not in snap.records]
        matched = await conn.fetchval(SAVE_SQL, snap.run_id, self.epoch, snap.next_seq, snap.released,
                                      [seq for seq, _ in changed], [data.decode() for _, data in changed],
                                      gone, touch, timeout=timeout)
        if matched:
            self.sent = dict(snap.records)
        return bool(matched)


class _Owned:
    """The owner's hold on one run: its connection, lock, epoch and heartbeat."""

    def __init__(self, store: "PostgresStore", run_id: str) -> None:
        self.store, self.run_id, self.key = store, run_id, lock_key(run_id)
        self.conn: Any = None
        self.server_pid = 0
        self.writer = RunWriter(run_id, 1)
        self.lock = asyncio.Lock()
        self.fenced = False
        self.beats: Optional["asyncio.Task[None]"] = None

    async def start(self, run: RunRecord) -> None:
        """Take the lock and insert the run's row; RegistryError if the run id is taken."""
        await self._adopt(await self.store.connection())
        if not await self.conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key):
            await self.close()
            raise RegistryError(f"run id {self.run_id} is in use by a live process in the fleet registry "
                                f"{self.store.where}; pick another run id")
        epoch = await self.conn.fetchval(
            f"INSERT INTO {RUNS} (run_id, lock_key, persona, host, pid) VALUES ($1, $2, $3, $4, $5) "
            "ON CONFLICT (run_id) DO NOTHING RETURNING epoch", run.run_id, self.key, run.persona,
            run.host, run.pid)
        if epoch is None:
            await self.close()
            raise RegistryError(f"run id {self.run_id} already has a record in the fleet registry "
                                f"{self.store.where}; run python -m taos_persona.sweep --registry ... "
                                "or pick another run id")
        self.writer.epoch = int(epoch)
        self.beats = asyncio.ensure_future(self._heartbeat())

    async def _adopt(self, conn: Any) -> None:
        self.conn, self.server_pid = conn, conn.get_server_pid()

    async def run(self, op: Any, *, patience: Optional[float]) -> Any:
        """``await op(conn)`` under our lock, reconnecting (for ``patience`` seconds) on a lost connection."""
        async with self.lock:
            if self.fenced:
                raise await self.store.fenced_error(self.run_id)
            try:
                return await op(self.conn)
            except connection_errors():
                pass
            await asyncio.wait_for(self._reconnect(), patience)
            return await op(self.conn)

    async def _reconnect(self) -> None:
        """A new session that holds our lock again; marks us fenced if our epoch is gone."""
        delay = 0.05
        while True:
            self._drop_conn()
            try:
                conn = await self.store.connection()
                await self._relock(conn)
                return
            except FencedError:
                raise
            except (RegistryError, *connection_errors()):  # the server is still out of reach
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _relock(self, conn: Any) -> None:
        timeout = self.store.settings.op_timeout
        try:
            if not await conn.fetchval(_BEAT_SQL + " RETURNING 1", self.run_id, self.writer.epoch,
                                       timeout=timeout):
                self.fenced = True
                await self._adopt(conn)
                raise await self.store.fenced_error(self.run_id)
            await conn.execute(_TERMINATE_OLD_SQL, self.server_pid, self.key, timeout=timeout)
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key, timeout=timeout):
                await asyncio.sleep(0.1)  # our old session is ending, or a sweeper checks us
                if not await conn.fetchval(_BEAT_SQL + " RETURNING 1", self.run_id, self.writer.epoch,
                                           timeout=timeout):
                    self.fenced = True
                    break
        except BaseException:
            if not self.fenced:
                conn.terminate()
            raise
        await self._adopt(conn)
        if self.fenced:
            raise await self.store.fenced_error(self.run_id)

    async def _heartbeat(self) -> None:
        """Stamp ``now()`` every ``heartbeat_every`` seconds; reconnect as long as it takes."""
        settings = self.store.settings

        async def beat(conn: Any) -> None:
            if await conn.execute(_BEAT_SQL, self.run_id, self.writer.epoch,
                                  timeout=settings.op_timeout) == "UPDATE 0":
                self.fenced = True

        while not self.fenced:
            await asyncio.sleep(settings.heartbeat_every)
            try:
                await self.run(beat, patience=None)
            except FencedError:
                return
            except Exception:  # noqa: BLE001 - a heartbeat never dies of one bad answer
                continue

    def _drop_conn(self) -> None:
        if self.conn is not None:
            self.conn.terminate()
            self.conn = None

    async def close(self) -> None:
        """Stop beating and end the session: the server drops the lock with it. Safe twice."""
        if self.beats is not None:
            self.beats.cancel()
            await asyncio.gather(self.beats, return_exceptions=True)
            self.beats = None
        if self.conn is not None:
            try:
                await asyncio.wait_for(self.conn.close(), self.store.settings.op_timeout)
            except Exception:  # noqa: BLE001 - closing is best effort: terminate drops the socket
                self.conn.terminate()
            self.conn = None


class PostgresStore:
    """The fleet registry at one URL. The owner's side: :meth:`begin`, :meth:`save`, :meth:`finish`.

    Every method blocks the calling thread for about one round trip; the
    ``a``-prefixed twins await it instead. The sweep lives in
    :mod:`taos_persona.stores.pgsweep`.
    """

    def __init__(self, url: str, settings: Optional[FleetSettings] = None) -> None:
        self.url = url
        self.where = safe_url(url)
        self.settings = settings or FleetSettings.from_env()
        self.io = IOThread()
        self.io.socket_fds = self._socket_fds
        self._owned: Dict[str, _Owned] = {}
        self._migrated = False

    def __repr__(self) -> str:
        return f"<PostgresStore {self.where} lease={self.settings.lease:g}s runs={len(self._owned)}>"

    async def connection(self) -> Any:
        """A new connection (keepalives set), the schema migrated on the first one."""
        conn = await connect(self.url, self.settings)
        if not self._migrated:
            try:
                await migrate(conn, self.where)
            except BaseException:
                conn.terminate()
                raise
            self._migrated = True
        return conn

    def _socket_fds(self) -> List[int]:
        fds = []
        for owned in list(self._owned.values()):
            transport = getattr(owned.conn, "_transport", None)
            sock = transport.get_extra_info("socket") if transport is not None else None
            if sock is not None and sock.fileno() >= 0:
                fds.append(sock.fileno())
        return fds

    # -- the owner's side ------------------------------------------------------------------
    def begin(self, run: RunRecord) -> None:
        """Take the run's lock and write its row; RegistryError if the server or run id says no."""
        self.io.call(self._begin(run))

    async def abegin(self, run: RunRecord) -> None:
        await self.io.acall(self._begin(run))

    async def _begin(self, run: RunRecord) -> None:
        owned = _Owned(self, run.run_id)
        await owned.start(run)
        self._owned[run.run_id] = owned

    def save(self, run: RunRecord) -> None:
        """Write the run's state; FencedError if it was swept, RegistryError if the server is gone."""
        self.io.call(self._save(Snapshot.of(run)))

    async def asave(self, run: RunRecord) -> None:
        await self.io.acall(self._save(Snapshot.of(run)))

    async def _save(self, snap: Snapshot) -> None:
        owned = self._require(snap.run_id)

        async def write(conn: Any) -> None:
            if not await owned.writer.write(conn, snap, touch=True, timeout=self.settings.op_timeout):
                owned.fenced = True
                raise await self.fenced_error(snap.run_id)

        try:
            await owned.run(write, patience=self.settings.lease / 2)
        except asyncio.TimeoutError:
            raise RegistryError(f"lost the fleet registry {self.where} for longer than half the lease "
                                f"({self.settings.lease / 2:g}s) while saving run {snap.run_id}; check the "
                                "network to the server (TAOS_PERSONA_LEASE sets the lease)") from None

    def finish(self, run: RunRecord) -> None:
        """Delete the run if nothing is left, else keep it for the sweep; drop the lock either way.

        Raises FencedError (after dropping the lock) if the run was swept under us.
        """
        self.io.call(self._finish(Snapshot.of(run)))

    async def afinish(self, run: RunRecord) -> None:
        await self.io.acall(self._finish(Snapshot.of(run)))

    async def _finish(self, snap: Snapshot) -> None:
        owned = self._owned.get(snap.run_id)
        if owned is None:
            return
        try:
            await owned.run(lambda conn: self._final_write(conn, owned, snap), patience=self.settings.lease / 2)
        finally:
            self._owned.pop(snap.run_id, None)
            await owned.close()

    async def _final_write(self, conn: Any, owned: _Owned, snap: Snapshot) -> None:
        timeout = self.settings.op_timeout
        if snap.records:  # kept for the sweep, which may take it at once: "-infinity" means gone
            matched = await owned.writer.write(conn, snap, touch=False, timeout=timeout)
            if matched:
                await conn.execute(f"UPDATE {RUNS} SET heartbeat = '-infinity' WHERE run_id = $1 AND epoch = $2",
                                   snap.run_id, owned.writer.epoch, timeout=timeout)
        else:
            matched = await conn.execute(f"DELETE FROM {RUNS} WHERE run_id = $1 AND epoch = $2",
                                         snap.run_id, owned.writer.epoch, timeout=timeout) != "DELETE 0"
        if not matched:
            owned.fenced = True
            raise await self.fenced_error(snap.run_id, forget=True)

    def _require(self, run_id: str) -> _Owned:
        owned = self._owned.get(run_id)
        if owned is None:
            raise RegistryError(f"run {run_id} is not open in the fleet registry {self.where}")
        return owned

    async def fenced_error(self, run_id: str, *, forget: bool = False) -> FencedError:
        """The error an owner gets once its run was swept: who swept it, when, what it released.

        ``forget``: the owner has read it, so the tombstone row goes (it was kept for this).
        """
        conn = await self.connection()
        try:
            row = await conn.fetchrow(f"SELECT claimed_by, swept_at, released_under FROM {RUNS} WHERE run_id = $1",
                                      run_id, timeout=self.settings.op_timeout)
            if forget and row is not None and row["swept_at"] is not None:
                await conn.execute(f"DELETE FROM {RUNS} WHERE run_id = $1 AND swept_at IS NOT NULL", run_id)
        finally:
            await conn.close()
        return FencedError(_fence_message(run_id, self.where, row))

    def close(self) -> None:
        """End every session this store holds (their locks go with them) and its thread. Safe twice."""
        if self._owned and os.getpid() == self.io.pid:
            self.io.call(self._close_all())
        self.io.close()

    async def _close_all(self) -> None:
        owned, self._owned = list(self._owned.values()), {}
        await asyncio.gather(*(item.close() for item in owned), return_exceptions=True)


def _fence_message(run_id: str, where: str, row: Any) -> str:
    if row is None:
        return (f"run {run_id} was swept from the fleet registry {where} while this process ({socket.gethostname()} "
                f"pid {os.getpid()}) was cut off from it; what it held was released: do not use it")
    released = json.loads(row["released_under"]) if isinstance(row["released_under"], str) else row["released_under"]
    listed = ", ".join(f"{item.get('backend')} #{item.get('seq')} {item.get('identity') or ''}".rstrip()
                       + f" ({item.get('result')})" for item in released) or "nothing yet"
    return (f"run {run_id} was swept by {row['claimed_by'] or 'another machine'} while this process "
            f"({socket.gethostname()} pid {os.getpid()}) was cut off from the fleet registry {where}; "
            f"released under it: {listed}. This run's resources are gone: the test must not go on "
            "with them (raise TAOS_PERSONA_LEASE if the network blips this long)")
