"""``sql``: a user account as a row in a database table, released by deleting the row.

sqlite3 works out of the box: ``database`` is a file path or a
``sqlite:///path`` DSN (``TAOS_PERSONA_SQL_DATABASE``), ``table`` a table
name (``TAOS_PERSONA_SQL_TABLE``, default ``users``). The username is chosen
in :meth:`plan`, so a crash between INSERT and record is found again by
:meth:`recover`. The password is made in :meth:`acquire` and never stored.

Where the row lives is the token's ``database`` (an absolute path). When
``TAOS_PERSONA_SQL_DATABASE`` is set at release time and names another
database, the record is kept (:class:`EndpointMismatchError`); when it is
unset, the recorded file is used: no credential is sent anywhere, and every
field is checked against that database first.

A record is data: before a token touches the database, its table and
columns must match the identifier pattern *and exist in the schema*
(SQLite reads an unknown double-quoted identifier as a string literal, so
``WHERE "nosuchcolumn" = 'nosuchcolumn'`` would match every row), the
username must be one we make and the id an integer. The DELETE names the
row by id and username together and is rolled back if it would remove more
than one row.
"""
from __future__ import annotations

import asyncio
import os
import re
import secrets
import sqlite3
from contextlib import closing
from typing import Any, Dict, List, Optional, Set, Tuple
from urllib.parse import quote

from ..errors import ConfigurationError, EndpointMismatchError, InvalidTokenError
from ..naming import NAME_PREFIX, Persona, has_name_prefix, name_prefix
from ..resources import UserAccount
from ._discovered import Discovered, carries_prefix, provider_time
from ._http import SANDBOX_ENV
from .base import Backend, Lease, register

__all__ = ["SqlUserBackend", "DATABASE_ENV", "TABLE_ENV"]

DATABASE_ENV = "TAOS_PERSONA_SQL_DATABASE"
TABLE_ENV = "TAOS_PERSONA_SQL_TABLE"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}\Z")
_USERNAME = re.compile(r"[A-Za-z0-9]{1,16}[_-][A-Za-z0-9_.@+-]{1,123}\Z")
"""Every username this backend makes starts with the run's prefix (``taos_<run id>_...``; any
project's ``$TAOS_PERSONA_PREFIX`` in place of ``taos``)."""
_GONE_MESSAGES = ("no such table", "unable to open database")
_TOKEN_KEYS = ("database", "table", "username", "username_column", "id_column")
_OPTIONS: Dict[str, Any] = {"database": None, "table": None, "username": None, "username_column": "username",
                            "password_column": "password",  # noqa: S105 - a column name, not a password
                            "id_column": "id", "create_table": False}
"""Options of :meth:`SqlUserBackend.plan` and their defaults."""


def _identifier(kind: str, name: Any) -> str:
    """A quoted SQL identifier, after checking it cannot smuggle SQL in."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ConfigurationError(f"invalid SQL {kind} name {name!r}: use letters, digits and '_'")
    return f'"{name}"'


def _database_path(database: Optional[str]) -> str:
    database = database or os.environ.get(DATABASE_ENV)
    if not database:
        raise ConfigurationError(_no_database())
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


def _no_database() -> str:
    """What to do when no database is named: where to name one, or (next to a sandbox) the backend it serves."""
    hint = ("the sql backend (the default for user_account) needs a sqlite database file: pass it, e.g. "
            "persona.user_account(database='path/to/app.db', create_table=True) "
            "(from the shell: acquire sql --option database=app.db --option create_table=true), "
            f"or set {DATABASE_ENV}=path/to/app.db")
    if os.environ.get(SANDBOX_ENV, "").strip():
        hint = (f"{SANDBOX_ENV} is set, and the sandbox serves users through rest_user, not sql: set "
                "TAOS_PERSONA_USER_BACKEND=rest_user or pass backends={'user': 'rest_user'}; else " + hint)
    return hint


@register("sql")
class SqlUserBackend(Backend):
    """Insert a user row; delete it on release. Columns are configurable by option."""

    name_fields = ("username",)

    def plan(self, persona: Persona, **options: Any) -> Dict[str, Any]:
        """Check the options (``database``, ``table``, ``username``, ``*_column``, ``create_table``)."""
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise ConfigurationError(f"sql: unknown option(s) {', '.join(unknown)}; known: {', '.join(_OPTIONS)}")
        given = {key: options.get(key) or default for key, default in _OPTIONS.items()}
        table = given["table"] or os.environ.get(TABLE_ENV, "users")
        username_column, password_column = given["username_column"], given["password_column"]
        id_column = given["id_column"]
        for kind, name in (("table", table), ("column", username_column), ("column", password_column),
                           ("column", id_column)):
            _identifier(kind, name)
        username = given["username"] or persona.unique_name().replace("-", "_")
        if not username.replace("-", "_").startswith(persona.prefix.replace("-", "_")) \
                or not _USERNAME.match(username):
            raise ConfigurationError(f"sql: username {username!r} must start with the run's prefix "
                                     f"{persona.prefix.replace('-', '_')!r} and hold only letters, digits "
                                     "and _.@+-, so that a record can never name another row")
        return {"database": _database_path(given["database"]), "table": table, "username": username,
                "username_column": username_column, "password_column": password_column,
                "id_column": id_column, "create_table": bool(given["create_table"])}

    async def acquire(self, persona: Persona, **planned: Any) -> Lease:
        password = secrets.token_urlsafe(12)
        row_id = await asyncio.to_thread(_insert, planned, password)
        token: Dict[str, Any] = {key: planned[key] for key in _TOKEN_KEYS}
        token["id"] = row_id
        return Lease(UserAccount(id=row_id, username=planned["username"], password=password), token)

    async def release(self, token: Dict[str, Any]) -> None:
        """Delete the row named by the token's id and username; a missing database or table is gone."""
        await asyncio.to_thread(_delete, token)

    async def recover(self, planned: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        row_id = await asyncio.to_thread(_find, planned)
        if row_id is None:
            return None
        token = {key: planned[key] for key in _TOKEN_KEYS}
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


def _columns(db: sqlite3.Connection, table: str) -> Optional[Set[str]]:
    """The column names of ``table``, or None if there is no such table."""
    exists = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
    if exists is None:
        return None
    return {row[1] for row in db.execute(f"PRAGMA table_info({_identifier('table', table)})")}


def _checked_record(record: Dict[str, Any]) -> str:
    """The record's database path, after checking every field's form (not yet the schema)."""
    database = record.get("database")
    if not isinstance(database, str) or not os.path.isabs(database):
        raise InvalidTokenError(f"sql: the record's database {database!r} is not an absolute path; "
                                "not acted on")
    configured = os.environ.get(DATABASE_ENV, "").strip()
    if configured and _database_path(configured) != database:
        raise EndpointMismatchError(
            f"this sql user row was created in {database}, but {DATABASE_ENV} points at "
            f"{_database_path(configured)}; set {DATABASE_ENV}={database} (or unset it) and run the "
            "sweep again")
    try:
        for kind, key in (("table", "table"), ("column", "username_column"), ("column", "id_column")):
            _identifier(kind, record.get(key))
    except ConfigurationError as exc:
        raise InvalidTokenError(f"sql: {exc}; not acted on") from None
    username = record.get("username")
    if not isinstance(username, str) or not _USERNAME.match(username) \
            or not has_name_prefix(username, name_prefix()):
        raise InvalidTokenError(f"sql: the record's username {username!r} is not one we make (they start "
                                f"with a name prefix such as {NAME_PREFIX}_); not acted on")
    return database


def _check_schema(db: sqlite3.Connection, record: Dict[str, Any], *columns: str) -> bool:
    """False if the table is missing (nothing of it can be alive); InvalidTokenError if a column is."""
    found = _columns(db, record["table"])
    if found is None:
        return False
    missing = [record[key] for key in columns if record[key] not in found]
    if missing:
        raise InvalidTokenError(f"sql: table {record['table']!r} in {record['database']} has no column "
                                f"{', '.join(map(repr, missing))}; the record does not describe a row of "
                                "it and is not acted on")
    return True


def _insert(planned: Dict[str, Any], password: str) -> Any:
    table, user_col = _identifier("table", planned["table"]), _identifier("column", planned["username_column"])
    pass_col, id_col = _identifier("column", planned["password_column"]), _identifier("column", planned["id_column"])
    create = bool(planned["create_table"])
    try:
        with closing(_connect(planned["database"], create=create)) as db:
            if create:
                db.execute(f"CREATE TABLE IF NOT EXISTS {table} ({id_col} INTEGER PRIMARY KEY, "
                           f"{user_col} TEXT UNIQUE NOT NULL, {pass_col} TEXT)")
            elif _columns(db, planned["table"]) is None:
                raise _missing(planned, f"has no table {planned['table']!r}")
            cursor = db.execute(f"INSERT INTO {table} ({user_col}, {pass_col}) VALUES (?, ?)",  # noqa: S608 - identifiers checked
                                (planned["username"], password))
            return cursor.lastrowid
    except sqlite3.OperationalError as exc:
        if "unable to open database" in str(exc):
            raise _missing(planned, "cannot be opened (no such file, or no access)") from None
        raise


def _missing(planned: Dict[str, Any], what: str) -> ConfigurationError:
    return ConfigurationError(f"sql: the database {planned['database']} {what}; create it first, or pass "
                              "create_table=True to create the table (and the file) on first use")


def _delete(token: Dict[str, Any]) -> None:
    database = _checked_record(token)
    row_id = token.get("id")
    if isinstance(row_id, bool) or not isinstance(row_id, int):
        raise InvalidTokenError(f"sql: the record's id {row_id!r} is not an integer row id; not acted on")
    table, user_col = _identifier("table", token["table"]), _identifier("column", token["username_column"])
    id_col = _identifier("column", token["id_column"])
    try:
        with closing(_connect(database, create=False)) as db:
            if not _check_schema(db, token, "username_column", "id_column"):
                return  # the table is gone: so is the row
            db.execute("BEGIN IMMEDIATE")
            cursor = db.execute(f"DELETE FROM {table} WHERE {id_col} = ? AND {user_col} = ?",  # noqa: S608 - identifiers checked
                                (row_id, token["username"]))
            if cursor.rowcount > 1:
                db.execute("ROLLBACK")
                raise InvalidTokenError(f"sql: the record would delete {cursor.rowcount} rows of "
                                        f"{token['table']!r}, not one; rolled back, not acted on")
            db.execute("COMMIT")
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
    database = _checked_record(planned)
    table, user_col = _identifier("table", planned["table"]), _identifier("column", planned["username_column"])
    id_col = _identifier("column", planned["id_column"])
    try:
        with closing(_connect(database, create=False)) as db:
            if not _check_schema(db, planned, "username_column", "id_column"):
                return None
            row = db.execute(f"SELECT {id_col} FROM {table} WHERE {user_col} = ?",  # noqa: S608 - identifiers checked
                             (planned["username"],)).fetchone()
    except sqlite3.OperationalError as exc:
        if _is_gone(exc):
            return None
        raise
    return None if row is None else row[0]
