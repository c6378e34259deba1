"""The sql backend against real sqlite files: rows made, found, deleted, and records never trusted."""
from __future__ import annotations

import asyncio
import os
import sqlite3
import unittest
from contextlib import closing
from typing import Any, Dict, List
from unittest import mock

from taos_persona.backends.sql import DATABASE_ENV, SqlUserBackend
from taos_persona.errors import ConfigurationError, EndpointMismatchError, InvalidTokenError
from taos_persona.naming import Persona
from taos_persona.outcomes import Result
from taos_persona.records import HELD, RunRecord
from taos_persona.releaser import release_run
from tests._support import TempDirTestCase

_ROWS = 1000


class SqlBackendTest(TempDirTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.db = os.path.join(self.tmp, "app.db")
        patcher = mock.patch.dict(os.environ)
        patcher.start()
        self.addCleanup(patcher.stop)
        os.environ.pop(DATABASE_ENV, None)
        self.backend = SqlUserBackend()
        self.persona = Persona("novice_sarah", "run1")

    def execute(self, sql: str, *args: Any) -> List[Any]:
        with closing(sqlite3.connect(self.db, isolation_level=None)) as db:
            return db.execute(sql, args).fetchall()

    def make_unrelated_table(self) -> None:
        """The app's own ``orders``: 1,000 rows that no record of ours names."""
        self.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT)")
        with closing(sqlite3.connect(self.db)) as db, db:
            db.executemany("INSERT INTO orders (item) VALUES (?)", [(f"item{i}",) for i in range(_ROWS)])

    def orders(self) -> int:
        return int(self.execute("SELECT COUNT(*) FROM orders")[0][0])

    def acquire(self, **options: Any) -> Any:
        planned = self.backend.plan(self.persona, database=self.db, **options)
        return asyncio.run(self.backend.acquire(self.persona, **planned))

    def test_acquire_release_deletes_exactly_its_row(self) -> None:
        lease = self.acquire(create_table=True)
        other = self.acquire()
        self.assertEqual(len(self.execute("SELECT * FROM users")), 2)
        asyncio.run(self.backend.release(lease.token))
        self.assertEqual(self.execute("SELECT username FROM users"), [(other.value.username,)])
        asyncio.run(self.backend.release(lease.token))  # gone already: fine

    def test_missing_database_or_table_is_a_configuration_error_naming_the_fix(self) -> None:
        for setup, words in ((lambda: None, "cannot be opened"),
                             (lambda: self.execute("CREATE TABLE other (x)"), "has no table 'users'")):
            with self.subTest(words=words):
                setup()
                with self.assertRaises(ConfigurationError) as caught:
                    self.acquire()
                self.assertIn(self.db, str(caught.exception))
                self.assertIn(words, str(caught.exception))
                self.assertIn("create_table=", str(caught.exception))
                self.assertNotIsInstance(caught.exception, sqlite3.Error)

    def test_no_database_says_where_to_name_one(self) -> None:
        os.environ.pop("TAOS_PERSONA_SANDBOX", None)
        with self.assertRaises(ConfigurationError) as caught:
            self.backend.plan(self.persona)
        message = str(caught.exception)
        for words in ("user_account(database=", "create_table=True", DATABASE_ENV, "--option database="):
            self.assertIn(words, message)
        self.assertNotIn("rest_user", message)

    def test_no_database_next_to_a_sandbox_names_rest_user(self) -> None:
        os.environ["TAOS_PERSONA_SANDBOX"] = "http://127.0.0.1:9"
        with self.assertRaises(ConfigurationError) as caught:
            self.backend.plan(self.persona)
        message = str(caught.exception)
        self.assertIn("the sandbox serves users through rest_user", message)
        self.assertIn("TAOS_PERSONA_USER_BACKEND=rest_user", message)
        self.assertIn("backends={'user': 'rest_user'}", message)
        self.assertIn(DATABASE_ENV, message)

    def crafted(self, **fields: Any) -> Dict[str, Any]:
        token = {"database": self.db, "table": "orders", "username": "taos_x", "username_column": "taos_x",
                 "id_column": "id", "id": 1}
        token.update(fields)
        return token

    def test_crafted_token_never_deletes_an_unrelated_tables_rows(self) -> None:
        """Kind 4: SQLite reads an unknown "column" as the string 'column', so WHERE "x" = 'x'
        matched all 1,000 rows. Every field is checked against the schema first."""
        self.make_unrelated_table()
        tokens = [self.crafted(),  # DELETE FROM "orders" WHERE "taos_x" = 'taos_x': every row
                  self.crafted(id_column="nosuch"),
                  self.crafted(table='orders" --'),
                  self.crafted(username_column="item", username="item1", id=2),  # a real row of orders
                  self.crafted(id="1 OR 1=1"),
                  self.crafted(database="relative.db")]
        for token in tokens:
            with self.subTest(token=token):
                with self.assertRaises(InvalidTokenError):
                    asyncio.run(self.backend.release(token))
                with self.assertRaises(InvalidTokenError):
                    asyncio.run(self.backend.recover(token))
                self.assertEqual(self.orders(), _ROWS)

    def test_crafted_token_through_the_release_path_is_kept_and_reported(self) -> None:
        self.make_unrelated_table()
        run = RunRecord("run1", "novice_sarah", "host", 1)
        record = run.add_intent("sql", "taos_persona.backends.sql:SqlUserBackend", {})
        record.token, record.state = self.crafted(), HELD
        outcomes = asyncio.run(release_run(run, lambda _record: self.backend, lambda: None))
        self.assertEqual([outcome.result for outcome in outcomes], [Result.KEPT])
        self.assertIn("not acted on", outcomes[0].error or "")
        self.assertEqual(self.orders(), _ROWS)
        self.assertIn(record.seq, run.resources)

    def test_a_crafted_token_naming_someone_elses_row_leaves_it_intact(self) -> None:
        """Kind 7: a record names only its own run's rows (prefix and run id), never john_doe."""
        self.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, username TEXT UNIQUE NOT NULL, password TEXT)")
        self.execute("INSERT INTO users (id, username) VALUES (1, 'john_doe')")
        run = RunRecord("run1", "novice_sarah", "host", 1)
        record = run.add_intent("sql", "taos_persona.backends.sql:SqlUserBackend", {})
        record.token, record.state = self.crafted(table="users", username="john_doe",
                                                  username_column="username"), HELD
        outcomes = asyncio.run(release_run(run, lambda _record: self.backend, lambda: None))
        self.assertEqual([outcome.result for outcome in outcomes], [Result.KEPT])
        with self.assertRaises(InvalidTokenError):  # the backend alone refuses it too
            asyncio.run(self.backend.release(record.token))
        self.assertEqual(self.execute("SELECT username FROM users"), [("john_doe",)])

    def test_a_database_setting_naming_another_file_keeps_the_row(self) -> None:
        lease = self.acquire(create_table=True)
        os.environ[DATABASE_ENV] = os.path.join(self.tmp, "other.db")
        with self.assertRaisesRegex(EndpointMismatchError, f"created in {self.db}.*{DATABASE_ENV}="):
            asyncio.run(self.backend.release(lease.token))
        self.assertEqual(len(self.execute("SELECT * FROM users")), 1)
        os.environ[DATABASE_ENV] = self.db
        asyncio.run(self.backend.release(lease.token))
        self.assertEqual(self.execute("SELECT * FROM users"), [])

    def test_recover_finds_the_planned_row(self) -> None:
        planned = self.backend.plan(self.persona, database=self.db, create_table=True)
        self.assertIsNone(asyncio.run(self.backend.recover(planned)))  # no file yet: nothing made
        lease = asyncio.run(self.backend.acquire(self.persona, **planned))
        self.assertEqual(asyncio.run(self.backend.recover(planned)), lease.token)
        self.assertNotIn(lease.value.password, repr(lease))
        self.assertNotIn(lease.value.password, repr(lease.value))


if __name__ == "__main__":
    unittest.main()
