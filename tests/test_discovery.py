"""Provider-side discovery (issue 10): what carries our prefix, no visible run owns and is old, goes.

Survivors are counted at the provider: the sandbox's own store and the sqlite
database, never in our registry.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest
from contextlib import closing
from typing import Dict, List, Optional
from unittest import mock

from taos_persona.backends._discovered import Discovered, carries_prefix, provider_time
from taos_persona.backends import BACKENDS, Backend, backend_class, register, twilio
from taos_persona.discovery import (DiscoveryReport, Verdict, _judge, _key, _run_of, _stamped, discover_sweep,
                                    discoverable_backends)
from taos_persona.errors import ConfigurationError, InvalidNameError
from taos_persona.naming import Persona, name_prefix
from tests._sandbox import FAST_RETRIES, SandboxEnvironment
from tests._sandboxed import BackendSandboxCase
from tests._support import (TESTS, TempDirTestCase, child_env, kill_and_wait, needs_aiohttp, posix_only,
                            reap, wait_for_line)

LISTING = ("mailsac", "twilio", "rest_user", "rest_token", "sql")
"""The backends a persona run in these tests holds one of each: every one whose provider lists by name."""
RUN = "20260101T000000-0123456789ab"


class ProviderTimeTest(unittest.TestCase):
    def test_the_formats_providers_write(self) -> None:
        expected = 1751371200.0  # 2025-07-01 12:00:00 UTC
        for text in ("Tue, 01 Jul 2025 12:00:00 +0000", "2025-07-01T12:00:00.000Z", "2025-07-01T12:00:00Z",
                     "2025-07-01T14:00:00+02:00", "2025-07-01 12:00:00", expected, str(expected)):
            with self.subTest(text=text):
                self.assertEqual(provider_time(text), expected)
        for junk in (None, "", "yesterday", True):
            self.assertIsNone(provider_time(junk))


class PrefixTest(unittest.TestCase):
    def test_prefix_needs_its_separator_and_a_run_id(self) -> None:
        run = RUN.lower()
        self.assertTrue(carries_prefix(f"taos-{run}-abc", "taos"))
        self.assertTrue(carries_prefix(f"taos_{run.replace('-', '_')}_abc", "taos"), "sql's names")
        for other in (f"taosx-{run}-abc", f"tao-{run}-abc", "taos", "taos-", "", None, f"shop-taos-{run}",
                      "taos-x-abc", "taos_smith", "Taos_Pueblo", "taos-fan-club", f"TAOS-{run}-abc",
                      f"taos-{run}0-abc", f"taos-{run[:-1]}-abc", "taos-20260101t000000-0123456789AB-abc"):
            self.assertFalse(carries_prefix(other, "taos"), other)

    def test_only_well_formed_names_are_released(self) -> None:
        """Attack 8: a person's ``taos_smith``, ``Taos_Pueblo``, ``taos-fan-club`` beside a real orphan."""
        tmp = tempfile.mkdtemp(prefix="taos-discover-")
        self.addCleanup(shutil.rmtree, tmp, True)
        db = os.path.join(tmp, "app.db")
        people = ["taos_smith", "Taos_Pueblo", "taos-fan-club"]
        orphan = f"taos_{RUN.lower().replace('-', '_')}_a1b2c3"
        with closing(sqlite3.connect(db)) as conn, conn:
            conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, username TEXT UNIQUE NOT NULL, password TEXT)")
            conn.executemany("INSERT INTO users (username) VALUES (?)", [(n,) for n in people + [orphan]])
        registry = os.path.join(tmp, "registry")
        with mock.patch.dict(os.environ, {"TAOS_PERSONA_SQL_DATABASE": db}):
            report = discover_sweep(registry, backends=["sql"], older_than=0)
        self.assertEqual([(f.name, f.run_id, f.verdict) for f in report.findings],
                         [(orphan, RUN, Verdict.RELEASED)])
        with closing(sqlite3.connect(db)) as conn:
            left = sorted(row[0] for row in conn.execute("SELECT username FROM users"))
        self.assertEqual(left, sorted(people), "only the real orphan is released, at the provider")

    def test_configurable_and_checked(self) -> None:
        with mock.patch.dict(os.environ, {"TAOS_PERSONA_PREFIX": "ShopApp"}):
            self.assertEqual(name_prefix(), "shopapp")
            self.assertTrue(Persona("p", "r1").unique_name().startswith("shopapp-r1-"))
        for bad in ("taos-other", "a_b", "x" * 17, "é"):
            with self.subTest(bad=bad), mock.patch.dict(os.environ, {"TAOS_PERSONA_PREFIX": bad}):
                with self.assertRaisesRegex(InvalidNameError, "TAOS_PERSONA_PREFIX"):
                    name_prefix()


class JudgeTest(unittest.TestCase):
    """The three conditions, each on its own, on names as the backends make them."""

    def judge(self, name: Optional[str], created: Optional[float], visible: frozenset = frozenset(),
              older_than: float = 60.0) -> Optional[Verdict]:
        finding = _judge("b", Discovered({}, name, name or "n"), "taos", set(visible), older_than, False) \
            if created is None else _judge("b", Discovered({}, name, name or "n", created), "taos",
                                           set(visible), older_than, False)
        return None if finding is None else finding.verdict

    def test_verdicts(self) -> None:
        old, young = time.time() - 2 * 3600, time.time() - 60
        name = f"taos-{RUN.lower()}-a1b2c3"
        self.assertIs(self.judge(name, old), Verdict.RELEASED)
        self.assertIs(self.judge(name.replace("-", "_"), old), Verdict.RELEASED, "sql's names")
        self.assertIs(self.judge(name, young), Verdict.TOO_YOUNG)
        self.assertIs(self.judge(name, old, frozenset({RUN.lower()})), Verdict.LIVE_RUN)
        self.assertIs(self.judge(name.replace("-", "_"), old, frozenset({RUN.lower()})), Verdict.LIVE_RUN)
        self.assertIsNone(self.judge(f"shop-{RUN.lower()}-a1b2c3", old), "another project's name")
        self.assertIs(self.judge(None, old), Verdict.UNNAMED)

    def test_age_from_the_run_id_when_the_provider_gives_none(self) -> None:
        self.assertIs(self.judge(f"taos-{RUN.lower()}-a1b2c3", None), Verdict.RELEASED, "2026-01-01 is old")
        fresh = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-0123456789ab"
        self.assertIs(self.judge(f"taos-{fresh.lower()}-a1b2c3", None), Verdict.TOO_YOUNG)
        self.assertIsNone(self.judge("taos-custom-run-a1b2c3", None, older_than=0), "no run id: not ours")

    def test_runs_alive_in_another_registry_are_protected(self) -> None:
        name = f"taos-{RUN.lower()}-a1b2c3"

        class Lister(Backend):
            released: List[str] = []

            async def discover(self, prefix: str) -> List[Discovered]:
                return [Discovered({"name": name}, name, name, 0.0)]

            async def release(self, token: Dict[str, object]) -> None:
                self.released.append(str(token["name"]))

        with mock.patch.dict(BACKENDS, {"lister": register("lister")(Lister)}):
            report = discover_sweep(self.id_dir(), backends=["lister"], live_runs=[RUN])
            self.assertEqual([f.verdict for f in report.findings], [Verdict.LIVE_RUN])
            self.assertEqual(Lister.released, [])
            report = discover_sweep(self.id_dir(), backends=["lister"])
            self.assertEqual(Lister.released, [name])

    def id_dir(self) -> str:
        directory = tempfile.mkdtemp(prefix="taos-registry-")
        self.addCleanup(shutil.rmtree, directory, True)
        return directory

    def test_run_id_is_matched_whole(self) -> None:
        name = f"taos-{RUN.lower()}-abcdef"
        self.assertEqual(_run_of(name, "taos", {_key(RUN)}), (RUN, True))
        self.assertEqual(_run_of(name, "taos", {_key(RUN)[:-1]}), (RUN, False))
        self.assertEqual(_run_of("taos-my-run-1-abcdef", "taos", {"my-run-1"}), (None, False))

    def test_named_backends_must_list(self) -> None:
        with self.assertRaisesRegex(ConfigurationError, "mailtm.*cannot list.*mailsac"):
            discoverable_backends(["mailtm"])
        self.assertEqual(set(discoverable_backends()) & {"mailtm", "oauth_rfc7009"}, set())
        self.assertLessEqual(set(LISTING) | {"sms_activate"}, set(discoverable_backends()))

    def test_exit_status(self) -> None:
        report = DiscoveryReport("taos", 60)
        self.assertEqual(report.exit_status, 0)
        report.problems.append({"backend": "twilio", "error": "x"})
        self.assertEqual(report.exit_status, 1)


class DiscoverCliUsageTest(TempDirTestCase):
    """Bad usage ends with status 2 and a message that says what to do, never a traceback."""

    def test_usage_errors(self) -> None:
        cases = [(("--discover", "--backend", "mailtm"), {}, "cannot list"),
                 (("--backend", "mailsac"), {}, "--backend needs --discover"),
                 (("--discover",), {"TAOS_PERSONA_PREFIX": "taos-x"}, "TAOS_PERSONA_PREFIX")]
        for args, env, message in cases:
            with self.subTest(args=args):
                done = self.run_sweep_cli(*args, **env)
                self.assertEqual(done.returncode, 2, done.stderr)
                self.assertIn(message, done.stderr)
                self.assertNotIn("Traceback", done.stderr)


@needs_aiohttp
class BackendDiscoverTest(BackendSandboxCase):
    """Each backend's ``discover``: our prefix only, with the provider's creation time and a working token."""

    def setUp(self) -> None:
        super().setUp()
        tmp = tempfile.mkdtemp(prefix="taos-discover-")
        self.addCleanup(shutil.rmtree, tmp, True)
        os.environ["TAOS_PERSONA_SQL_DATABASE"] = os.path.join(tmp, "app.db")

    async def acquire(self, name: str, persona: Persona) -> Dict[str, object]:
        backend = self.backend(name)
        options = {"create_table": True} if name == "sql" else {}
        return (await backend.acquire(persona, **backend.plan(persona, **options))).token

    async def test_every_listing_backend(self) -> None:
        other = Persona("other", "r" + self.sarah.run_id)
        for name in LISTING:
            with self.subTest(backend=name):
                await self.acquire(name, self.sarah)
                with mock.patch.dict(os.environ, {"TAOS_PERSONA_PREFIX": "shop"}):
                    await self.acquire(name, other)
                backend = self.backend(name)
                found = [item for item in await backend.discover("taos")
                         if _key(item.name or "").startswith(_key(self.sarah.prefix))]
                self.assertEqual(len(found), 1, found)
                self.assertFalse(any(_key(item.name or "").startswith("shop-") for item in
                                     await backend.discover("taos")), "another prefix is not listed")
                created = found[0].created if name != "sql" else time.time()  # sqlite: no creation column
                self.assertLess(abs(time.time() - (created or 0)), 120, found[0])
                await backend.release(_stamped(backend, found[0].token))
                self.assertEqual([i for i in await backend.discover("taos") if i.name == found[0].name], [])

    async def test_twilio_reads_every_page(self) -> None:
        names = {(await self.acquire("twilio", self.sarah))["friendly_name"] for _ in range(3)}
        with mock.patch.object(twilio, "_LIST_PAGE", 1):
            found = {item.name for item in await self.backend("twilio").discover("taos")}
        self.assertLessEqual(names, found)

    async def test_rest_listing_route_is_configurable(self) -> None:
        token = await self.acquire("rest_user", self.sarah)
        calls: List[str] = []
        with mock.patch.dict(os.environ, {"TAOS_PERSONA_APP_USERS_LIST": "/users?prefix={prefix}-"}):
            backend = self.backend("rest_user")
            real = backend.request

            async def spy(method: str, path: str, **kwargs: object) -> object:
                calls.append(f"{method} {path} {kwargs.get('params')}")
                return await real(method, path, **kwargs)  # type: ignore[arg-type]

            with mock.patch.object(backend, "request", spy):
                found = await backend.discover("taos")
        self.assertEqual(calls, ["GET /users {'prefix': 'taos-'}"])
        self.assertIn(token["username"], [item.name for item in found])

    async def test_sms_activate_lists_unnamed_and_mailtm_cannot_list(self) -> None:
        token = await self.acquire("sms_activate", self.sarah)
        found = {item.token["id"]: item for item in await self.backend("sms_activate").discover("taos")}
        self.assertIsNone(found[token["id"]].name, "an activation has no name of ours")
        self.assertFalse(backend_class("mailtm").can_discover())
        with self.assertRaises(NotImplementedError):
            await self.backend("mailtm").discover("taos")
        await self.backend("sms_activate").release(token)


def _names(sandbox: object, db: str) -> Dict[str, List[str]]:
    """Backend -> provider-side names alive right now, read from the sandbox's store and the database."""
    def rows(provider: str, field: str) -> List[str]:
        return [row["data"][field] if field else row["rid"] for row in sandbox.resources(provider)]  # type: ignore

    names = {"mailsac": [r.partition("@")[0] for r in rows("mailsac", "")],
             "twilio": rows("twilio", "friendly_name"),
             "rest_user": rows("example_app.users", "username"),
             "rest_token": rows("example_app.tokens", "name"), "sql": []}
    if os.path.exists(db):
        with closing(sqlite3.connect(db)) as conn:
            names["sql"] = [row[0] for row in conn.execute("SELECT username FROM users")]
    return names


@needs_aiohttp
@posix_only
class EphemeralRunnerTest(SandboxEnvironment, TempDirTestCase):
    """A run SIGKILLed and its registry deleted: ``sweep --discover`` finds its resources at the providers."""

    def setUp(self) -> None:
        super().setUp()
        self.db = os.path.join(self.tmp, "app.db")
        os.environ["TAOS_PERSONA_SQL_DATABASE"] = self.db

    def start_run(self, registry: str, *, prefix: str = "taos", watchdog: bool = False,
                  extra: "tuple[str, ...]" = ()) -> "tuple[subprocess.Popen, str]":
        backends = [arg for name in LISTING + extra for arg in ("--backend", name)]
        command = [sys.executable, os.path.join(TESTS, "_persona_child.py"), "--registry", registry, *backends]
        env = child_env(**dict(os.environ, TAOS_PERSONA_PREFIX=prefix, **FAST_RETRIES))
        child = subprocess.Popen(command + (["--watchdog"] if watchdog else []), stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=self.tmp)
        self.addCleanup(reap, child)
        run_id = wait_for_line(child, "ENTERED", 60).split()[1]
        wait_for_line(child, "HOLDING")
        return child, f"{prefix}-{run_id}".lower()

    def of_run(self, run_prefix: str) -> Dict[str, int]:
        """Backend -> how many resources of the run named ``run_prefix`` are alive at the provider."""
        return {backend: sum(1 for name in names if name.lower().replace("_", "-").startswith(run_prefix + "-"))
                for backend, names in _names(self.sandbox, self.db).items()}

    def discover(self, *args: str, every: bool = False) -> "tuple[int, dict]":
        """``sweep --discover --json`` as a subprocess: of the backends in :data:`LISTING`, of those
        named in ``args``, or (``every``) of every backend that can list."""
        named = args if every or "--backend" in args else (*args, *(a for b in LISTING for a in ("--backend", b)))
        done = subprocess.run([sys.executable, "-m", "taos_persona.sweep", "--dir", self.registry_dir,
                               "--discover", "--json", *named], capture_output=True, text=True, cwd=self.tmp,
                              env=child_env(**dict(os.environ, **FAST_RETRIES)), timeout=120)
        self.assertIn(done.returncode, (0, 1), done.stderr)
        return done.returncode, json.loads(done.stdout)

    def test_lost_registry_live_run_young_and_other_prefix(self) -> None:
        lost_registry = os.path.join(self.tmp, "lost-runner")
        dead, dead_run = self.start_run(lost_registry)
        kill_and_wait(dead)
        shutil.rmtree(lost_registry)  # the runner is gone, and its .taos/ with it
        live, live_run = self.start_run(self.registry_dir)
        other, other_run = self.start_run(os.path.join(self.tmp, "other-project"), prefix="shop")
        kill_and_wait(other)
        everything = {backend: 1 for backend in LISTING}
        for run in (dead_run, live_run, other_run):
            self.assertEqual(self.of_run(run), everything)

        status, young = self.discover()  # default bound: 60 minutes; everything here is seconds old
        self.assertEqual(status, 0, young)
        self.assertEqual(self.of_run(dead_run), everything, "younger than the bound: untouched")
        verdicts = {item["result"] for item in young["discovery"]["resources"]
                    if (item["run_id"] or "").lower() == dead_run[5:]}
        self.assertEqual(verdicts, {"too young"})

        status, swept = self.discover("--older-than", "0")
        self.assertEqual(status, 0, swept)
        self.assertEqual(self.of_run(dead_run), {backend: 0 for backend in LISTING}, "0 survivors of the lost run")
        self.assertEqual(self.of_run(live_run), everything, "the live run's resources are untouched")
        self.assertEqual(self.of_run(other_run), everything, "another project's prefix is untouched")
        results = {(item["backend"], item["result"]) for item in swept["discovery"]["resources"]
                   if (item["run_id"] or "").lower() in (dead_run[5:], live_run[5:])}
        self.assertEqual(results, {(b, r) for b in LISTING for r in ("released", "live run")})
        live.stdin.close()  # type: ignore[union-attr]
        wait_for_line(live, "DONE")
        self.assertEqual(self.of_run(live_run), {backend: 0 for backend in LISTING})

    def test_backdated_resources_of_a_dead_run_go_with_the_default_bound(self) -> None:
        dead, dead_run = self.start_run(os.path.join(self.tmp, "lost"))
        kill_and_wait(dead)
        self.backdate(hours=2)
        status, report = self.discover("--backend", "mailsac", "--backend", "twilio", "--backend", "rest_user")
        self.assertEqual(status, 0, report)
        left = self.of_run(dead_run)
        self.assertEqual({b: left[b] for b in ("mailsac", "twilio", "rest_user")}, {"mailsac": 0, "twilio": 0,
                                                                                   "rest_user": 0})
        self.assertEqual(left["rest_token"], 1, "a backend not named is not listed")

    def test_every_backend_that_can_list_unnamed_ones_only_reported(self) -> None:
        dead, dead_run = self.start_run(os.path.join(self.tmp, "lost"), extra=("sms_activate",))
        kill_and_wait(dead)
        activations = len(self.sandbox.resources("sms_activate"))
        self.assertGreater(activations, 0)
        status, report = self.discover("--older-than", "0", every=True)
        self.assertEqual(status, 0, report)
        self.assertEqual(self.of_run(dead_run), {backend: 0 for backend in LISTING})
        self.assertEqual(len(self.sandbox.resources("sms_activate")), activations, "never released: no name")
        found = report["discovery"]["resources"]
        self.assertIn("unnamed", {item["result"] for item in found if item["backend"] == "sms_activate"})
        self.assertNotIn("mailtm", {item["backend"] for item in found + report["discovery"]["skipped"]})

    def test_dry_run_releases_nothing(self) -> None:
        dead, dead_run = self.start_run(os.path.join(self.tmp, "lost"))
        kill_and_wait(dead)
        status, report = self.discover("--older-than", "0", "--dry-run")
        self.assertEqual(status, 0, report)
        self.assertEqual({item["result"] for item in report["discovery"]["resources"]
                          if (item["run_id"] or "").lower() == dead_run[5:]}, {"would release"})
        table = subprocess.run([sys.executable, "-m", "taos_persona.sweep", "--dir", self.registry_dir, "--discover",
                                "--older-than", "0", "--dry-run", "--backend", "mailsac"], capture_output=True,
                               text=True, cwd=self.tmp, env=child_env(**dict(os.environ, **FAST_RETRIES)), timeout=120)
        self.assertRegex(table.stdout, rf"would release +mailsac +{dead_run}-[0-9a-f]+@mailsac.com")
        self.assertRegex(table.stdout, r"found: [1-9]\d* would release, 0 kept")
        self.assertEqual(self.of_run(dead_run), {backend: 1 for backend in LISTING})

    def backdate(self, hours: float) -> None:
        """Make every sandbox resource look ``hours`` older at its provider."""
        for provider in ("twilio", "mailsac", "example_app.users", "example_app.tokens", "sms_activate"):
            for row in self.sandbox.resources(provider):
                self.sandbox.backdate(provider, row["rid"], hours * 3600)


if __name__ == "__main__":
    unittest.main()
