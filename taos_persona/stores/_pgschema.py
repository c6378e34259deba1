"""The fleet registry's tables (taos_persona_runs, taos_persona_resources, taos_persona_schema).

The library creates its own schema and moves it forward one version at a
time, under a transaction-level advisory lock so that two machines starting
at once never migrate twice. A schema newer than this code knows is refused:
an older taos-persona must not write rows it does not understand.
"""
from __future__ import annotations

from typing import Any, Tuple

from ..errors import SchemaVersionError

__all__ = ["SCHEMA_VERSION", "migrate"]

_MIGRATION_LOCK = 0x7461_6F73_0000_0001
"""The advisory lock key every migrating machine takes ("taos" in ASCII, then 1)."""

_MIGRATIONS: Tuple[str, ...] = (
    # version 1: runs (one per fixture lifetime) and the resources each still holds.
    """
    CREATE TABLE taos_persona_runs (
        run_id         text PRIMARY KEY,
        lock_key       bigint NOT NULL,
        persona        text NOT NULL,
        host           text NOT NULL,
        pid            integer NOT NULL,
        started        timestamptz NOT NULL DEFAULT now(),
        heartbeat      timestamptz NOT NULL DEFAULT now(),
        epoch          bigint NOT NULL DEFAULT 1,
        next_seq       integer NOT NULL DEFAULT 1,
        released       integer NOT NULL DEFAULT 0,
        claimed_by     text,
        swept_at       timestamptz,
        released_under jsonb NOT NULL DEFAULT '[]'::jsonb
    );
    CREATE INDEX taos_persona_runs_heartbeat ON taos_persona_runs (heartbeat) WHERE swept_at IS NULL;
    CREATE TABLE taos_persona_resources (
        run_id text NOT NULL REFERENCES taos_persona_runs (run_id) ON DELETE CASCADE,
        seq    integer NOT NULL,
        record jsonb NOT NULL,
        PRIMARY KEY (run_id, seq)
    );
    """,
    # version 2: no foreign key from resources to runs. Its check (one more query per
    # inserted row, on every intent write) is redundant: every save inserts through a
    # join on the run's row, locked FOR SHARE and fenced by its epoch, so a resource
    # never lands without its run; the owner's delete removes the resources itself,
    # after locking the run's row (what ON DELETE CASCADE did).
    """
    ALTER TABLE taos_persona_resources DROP CONSTRAINT IF EXISTS taos_persona_resources_run_id_fkey;
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)


async def migrate(conn: Any, where: str) -> int:
    """Bring the schema up to :data:`SCHEMA_VERSION`; return the version found before.

    ``conn`` is an asyncpg connection; ``where`` names the server (no password)
    for the error. Raises :class:`SchemaVersionError` for a newer schema.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute("CREATE TABLE IF NOT EXISTS taos_persona_schema (version integer NOT NULL)")
        found = await conn.fetchval("SELECT max(version) FROM taos_persona_schema") or 0
        if found > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"the fleet registry at {where} has schema version {found}, newer than this "
                f"taos-persona's {SCHEMA_VERSION}; upgrade taos-persona on this machine "
                "(pip install -U 'taos-persona[postgres]')")
        for version in range(found + 1, SCHEMA_VERSION + 1):
            await conn.execute(_MIGRATIONS[version - 1])
            await conn.execute("INSERT INTO taos_persona_schema (version) VALUES ($1)", version)
        return int(found)
