"""``sql``: a user account as a row in a database table, released by deleting the row.

sqlite3 works out of the box: ``database`` is a file path or a
``sqlite:///path`` DSN (``TAOS_PERSONA_SQL_DATABASE``), ``table`` a table
name (``TAOS_PERSONA_SQL_TABLE``, default ``users``). The username is chosen
in :meth:`plan`, so a crash between INSERT and record is found again by
:meth:`recover`. The password is made in :meth:`acquire` and never stored.
"""
from __future__ import annotations

import asyncio
import os
import re
import secrets
import sqlite3
from contextlib import closing
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import quote

from ..errors import ConfigurationError
from ..naming import Persona
from ..resources import UserAccount
from ._discovered import Discovered, carries_prefix, provider_time
from .base import Backend, Lease, register

__all__ = ["SqlUserBackend"]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}\Z")
_GONE_MESSAGES = ("no such table", "unable to open database")


def _identifier(kind: str, name: str) -> str:
    """A quoted SQL identifier, after checking it cannot smuggle SQL in."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ConfigurationError(f"invalid SQL {kind} name {name!r}: use letters, digits and '_'")
    return f'"{name}"'


def _database_path(database: Optional[str]) -> str:
    database = database or os.environ.get("TAOS_PERSONA_SQL_DATABASE")
    if not database:
        raise ConfigurationError("the sql backend needs a database: pass database='path/to/app.db' "
                                 "or set TAOS_PERSONA_SQL_DATABASE")
    if database.startswith("sqlite:///"):
        database = database[len("sqlite:///"):] or ":memory:"
    elif "://" in database:
        scheme = database.split("://", 1)[0]
        raise ConfigurationError(f"the built-in sql backend speaks sqlite only, not {scheme!r}; register "
                                 "a backend of your own for other databases (see README)")
    if database == ":memory:":
        raise ConfigurationError("an in-memory sqlite database cannot be swept by another process; "
                                 "use a file")
    return os.path.abspath(database)


@register("sql")
class SqlUserBackend(Backend):
    """Insert a user row; delete it on release. Columns are configurable by option."""

    def plan(self, persona: Persona, *, database: Optional[str] = None, table: Optional[str] = None,
             username: Optional[str] = None, username_column: str = "username",
             password_column: str = "password", id_column: str = "id",
             create_table: bool = False) -> Dict[str, Any]:
        table = table or os.environ.get("TAOS_PERSONA_SQL_TABLE", "users")
        for kind, name in (("table", table), ("column", username_column), ("column", password_column),
                           ("column", id_column)):
            _identifier(kind, name)
        return {"database": _database_path(database), "table": table,
                "username": username or persona.unique_name().replace("-", "_"),
                "username_column": username_column, "password_column": password_column,
                "id_column": id_column, "create_table": bool(create_table)}

    async def acquire(self, persona: Persona, **planned: Any) -> Lease:
        password = secrets.token_urlsafe(12)
        row_id = await asyncio.to_thread(_insert, planned, password)
        token = {key: planned[key] for key in ("database", "table", "username", "username_column",
                                                "id_column")}
        token["id"] = row_id
        return Lease(UserAccount(id=row_id, username=planned["username"], password=password), token)

    async def release(self, token: Dict[str, Any]) -> None:
        await asyncio.to_thread(_delete, token)

    async def recover(self, planned: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        row_id = await asyncio.to_thread(_find, planned)
        if row_id is None:
            return None
        token = {key: planned[key] for key in ("database", "table", "username", "username_column",
                                                "id_column")}
        token["id"] = row_id
        return token

    async def discover(self, prefix: str) -> List[Discovered]:
        """Rows of ``$TAOS_PERSONA_SQL_TABLE`` whose username carries ``prefix``, with the
        time in ``$TAOS_PERSONA_SQL_CREATED_COLUMN`` (else a ``created_at`` column, if any)."""
        where = {"database": _database_path(None), "table": os.environ.get("TAOS_PERSONA_SQL_TABLE", "users"),
                 "username_column": "username", "id_column": "id"}
        rows = await asyncio.to_thread(_list, where, prefix)
        return [Discovered(dict(where, username=name, id=row_id), name, name, provider_time(created))
                for row_id, name, created in rows if carries_prefix(name, prefix)]


def _is_gone(exc: sqlite3.OperationalError) -> bool:
    """The database file or the table no longer exists: so no row can."""
    return any(message in str(exc) for message in _GONE_MESSAGES)


def _connect(path: str, *, create: bool) -> sqlite3.Connection:
    mode = "rwc" if create else "rw"
    return sqlite3.connect(f"file:{quote(path)}?mode={mode}", uri=True, timeout=30, isolation_level=None)


def _insert(planned: Dict[str, Any], password: str) -> Any:
    table, user_col = _identifier("table", planned["table"]), _identifier("column", planned["username_column"])
    pass_col, id_col = _identifier("column", planned["password_column"]), _identifier("column", planned["id_column"])
    with closing(_connect(planned["database"], create=planned["create_table"])) as db:
        if planned["create_table"]:
            db.execute(f"CREATE TABLE IF NOT EXISTS {table} ({id_col} INTEGER PRIMARY KEY, "
                       f"{user_col} TEXT UNIQUE NOT NULL, {pass_col} TEXT)")
        cursor = db.execute(f"INSERT INTO {table} ({user_col}, {pass_col}) VALUES (?, ?)",
                            (planned["username"], password))
        return cursor.lastrowid


def _delete(token: Dict[str, Any]) -> None:
    table, user_col = _identifier("table", token["table"]), _identifier("column", token["username_column"])
    try:
        with closing(_connect(token["database"], create=False)) as db:
            db.execute(f"DELETE FROM {table} WHERE {user_col} = ?", (token["username"],))
    except sqlite3.OperationalError as exc:
        if not _is_gone(exc):
            raise  # the database or table is gone: so is the row


def _created_column(db: sqlite3.Connection, table: str) -> Optional[str]:
    """The configured creation-time column, else ``created_at`` if the table has one."""
    configured = os.environ.get("TAOS_PERSONA_SQL_CREATED_COLUMN", "").strip()
    if configured:
        return _identifier("column", configured)
    columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    return '"created_at"' if "created_at" in columns else None


def _list(where: Dict[str, Any], prefix: str) -> List[Tuple[Any, str, Any]]:
    """``(id, username, created or None)`` of the rows whose username starts with ``prefix`` and a separator."""
    table, user_col = _identifier("table", where["table"]), _identifier("column", where["username_column"])
    id_col = _identifier("column", where["id_column"])
    start = len(prefix) + 1
    try:
        with closing(_connect(where["database"], create=False)) as db:
            created = _created_column(db, table) or "NULL"
            rows: List[Tuple[Any, str, Any]] = db.execute(
                f"SELECT {id_col}, {user_col}, {created} FROM {table} "  # noqa: S608 - checked identifiers
                f"WHERE lower(substr({user_col}, 1, ?)) IN (?, ?)",
                (start, prefix.lower() + "-", prefix.lower() + "_")).fetchall()
    except sqlite3.OperationalError as exc:
        if _is_gone(exc):
            return []
        raise
    return rows


def _find(planned: Dict[str, Any]) -> Any:
    table, user_col = _identifier("table", planned["table"]), _identifier("column", planned["username_column"])
    id_col = _identifier("column", planned["id_column"])
    try:
        with closing(_connect(planned["database"], create=False)) as db:
            row = db.execute(f"SELECT {id_col} FROM {table} WHERE {user_col} = ?",
                             (planned["username"],)).fetchone()
    except sqlite3.OperationalError as exc:
        if _is_gone(exc):
            return None
        raise
    return None if row is None else row[0]

