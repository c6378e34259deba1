"""Every backend through the whole machine: fixture, registry, sweep, against the sandbox.

Survivors are counted in the sandbox (``/_sandbox/alive``), never in our own
bookkeeping: a provider outage during release keeps the record and a later
sweep finishes the job; a SIGKILL between the provider's create and our
record is resolved by ``recover`` in the next sweep.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import unittest
import warnings
from typing import Any, Dict

from tests._sandbox import FAST_RETRIES, SandboxEnvironment
from tests._support import TempDirTestCase, child_env, needs_aiohttp, posix_only, run_python

HTTP_BACKENDS = ("mailtm", "mailsac", "sms_activate", "twilio", "github", "google", "oauth_rfc7009",
                 "rest_user", "rest_token")
CANNOT_RECOVER = ("sms_activate",)  # no client-chosen name: see its module docstring

_CHILD = """
import asyncio, json, sys
from taos_persona import PersonaFixture
async def main():
    async with PersonaFixture("novice_sarah", registry_dir=sys.argv[1]) as persona:
        await persona.acquire(sys.argv[2], **json.loads(sys.argv[3]))
asyncio.run(main())
"""


_KILLED_CHILD = """
import asyncio, json, os, signal, sys
from taos_persona import PersonaFixture
async def main():
    async with PersonaFixture("novice_sarah", registry_dir=sys.argv[1]) as persona:
        for backend, options in json.loads(sys.argv[2]).items():
            await persona.acquire(backend, **options)
        await asyncio.sleep(0.1)  # the last held record rides on a deferred write
        os.kill(os.getpid(), signal.SIGKILL)
asyncio.run(main())
"""


@needs_aiohttp
@posix_only
class EveryBackendEndToEndTest(SandboxEnvironment, TempDirTestCase):
    def setUp(self) -> None:
        super().setUp()
        os.environ["TAOS_PERSONA_DIR"] = self.registry_dir  # restored by SandboxEnvironment's patch

    def env(self) -> Dict[str, str]:
        return dict(self.sandbox.env(), **FAST_RETRIES)

    def alive(self) -> int:
        return sum(self.sandbox.alive().values())

    def options(self, backend: str) -> Dict[str, Any]:
        """What a persona passes to acquire: OAuth backends need a code the user "approved"."""
        if backend in ("github", "google", "oauth_rfc7009"):
            from taos_persona.backends import backend_class

            prefix = backend_class(backend).provider
            return {"code": self.sandbox.call("POST", "/_sandbox/oauth/code", {"provider": prefix})["code"]}
        return {}

    def provider_prefix(self, backend: str) -> str:
        from taos_persona.backends import backend_class

        return backend_class(backend).provider

    def test_outage_during_release_keeps_the_record_then_the_sweep_releases(self) -> None:
        from taos_persona import PersonaFixture, ResourceLeftWarning, sweep_registry as sweep

        for backend in HTTP_BACKENDS:
            with self.subTest(backend=backend):
                before = self.alive()

                async def body(backend: str = backend, before: int = before) -> None:
                    async with PersonaFixture("novice_sarah", registry_dir=self.registry_dir, sweep=False) as p:
                        await p.acquire(backend, **self.options(backend))
                        self.assertEqual(self.alive(), before + 1)
                        self.sandbox.inject("500", count=1000, provider=self.provider_prefix(backend))

                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    asyncio.run(body())
                self.assertTrue(any(issubclass(w.category, ResourceLeftWarning) for w in caught))
                self.assertEqual(self.alive(), before + 1, "the outage kept it alive")
                self.assertEqual(sweep(self.registry_dir).exit_status, 1, "still down: status 1")
                self.sandbox.clear_faults()
                report = sweep(self.registry_dir)
                self.assertEqual(report.exit_status, 0, report.to_json())
                self.assertEqual(self.alive(), before)
                self.assertEqual(self.registry_files(), [])

    def test_sigkill_between_create_and_record_then_sweep(self) -> None:
        for backend in HTTP_BACKENDS:
            with self.subTest(backend=backend):
                before = self.alive()
                env = child_env(TAOS_PERSONA_FAULT="acquire.after_create", **self.env())
                child = run_python(_CHILD, self.registry_dir, backend, json.dumps(self.options(backend)), env=env)
                self.assertEqual(child.returncode, -signal.SIGKILL, child.stderr)
                self.assertEqual(self.alive(), before + 1, "created at the provider, not recorded as held")
                sweep = self.run_sweep_cli(**self.env())
                if backend in CANNOT_RECOVER:
                    self.assertEqual(sweep.returncode, 1, sweep.stdout)
                    self.assertIn("cannot recover", sweep.stdout)
                    self.drop_all(backend)
                    continue
                self.assertEqual(sweep.returncode, 0, sweep.stdout + sweep.stderr)
                self.assertEqual(self.alive(), before, f"{backend}: zero survivors in the sandbox")
                self.assertEqual(self.registry_files(), [])

    def test_sweep_pointed_at_another_sandbox_keeps_every_record(self) -> None:
        """Kind 1: a run SIGKILLed against sandbox A, swept with TAOS_PERSONA_SANDBOX at B.

        The sweep must not send A's tokens to B (where "404, already gone" looked
        like success): exit 1, everything still alive at A, every record kept,
        the fix in the message. Swept with A again: nothing left at A.
        """
        from taos_persona.sandbox import SandboxThread

        before = self.alive()
        backends = list(HTTP_BACKENDS)
        options = {b: self.options(b) for b in backends}
        child = run_python(_KILLED_CHILD, self.registry_dir, json.dumps(options), env=child_env(**self.env()))
        self.assertEqual(child.returncode, -signal.SIGKILL, child.stderr)
        self.assertEqual(self.alive(), before + len(backends))
        with SandboxThread() as other:
            elsewhere = self.run_sweep_cli(**dict(other.env(), **FAST_RETRIES))
            self.assertEqual(sum(other.alive().values()), 0)
        self.assertEqual(elsewhere.returncode, 1, elsewhere.stdout + elsewhere.stderr)
        self.assertIn(f"TAOS_PERSONA_SANDBOX={self.sandbox.url}", elsewhere.stdout)
        self.assertEqual(self.alive(), before + len(backends), "nothing released at A, nor dropped")
        self.assertEqual(len([n for n in self.registry_files() if n.endswith(".json")]), 1)
        home = self.run_sweep_cli(**self.env())
        self.assertEqual(home.returncode, 0, home.stdout + home.stderr)
        self.assertEqual(self.alive(), before)
        self.assertEqual(self.registry_files(), [])

    def test_create_whose_answer_was_lost_is_adopted(self) -> None:
        """Kind 7: the provider creates, the connection is cut, the HTTP layer retries and hears
        "already exists" for our planned name: the backend looks the name up and adopts it."""
        from taos_persona import PersonaFixture

        creates = {"mailtm": "/mailtm/accounts", "mailsac": "/mailsac/addresses",
                   "twilio": "/twilio/2010-04-01/Accounts/", "rest_user": "/example_app/users",
                   "rest_token": "/example_app/tokens"}
        for backend, path in creates.items():
            with self.subTest(backend=backend):
                before = self.alive()
                self.sandbox.inject("drop_after", count=1, method="POST", path=path)

                async def body(backend: str = backend, before: int = before) -> None:
                    async with PersonaFixture("novice_sarah", registry_dir=self.registry_dir, sweep=False) as p:
                        await p.acquire(backend)
                        self.assertEqual(self.queued_faults_left(), 0, "the create was cut once")
                        self.assertEqual(self.alive(), before + 1, "one resource, adopted")

                asyncio.run(body())
                self.assertEqual(self.alive(), before, "released at exit")
                self.assertEqual(self.registry_files(), [])

    def test_a_missing_key_leaves_no_phantom_intent(self) -> None:
        """Kind 7: a missing key used to fail after the intent was written, so every later start
        warned and every sweep exited 1 (sms_activate: for 25 minutes). Nothing was sent, so
        nothing may stay: the backend's plan needs the key, before any intent."""
        from taos_persona import PersonaFixture, ResourceLeftWarning, sweep_registry as sweep
        from taos_persona.errors import ConfigurationError

        keys = {"sms_activate": "SMS_ACTIVATE_API_KEY", "mailsac": "MAILSAC_API_KEY",
                "twilio": "TWILIO_AUTH_TOKEN", "rest_user": "TAOS_PERSONA_APP_TOKEN",
                "github": "GITHUB_CLIENT_SECRET"}
        for backend, key in keys.items():
            with self.subTest(backend=backend):
                options = self.options(backend)
                saved = os.environ.pop(key)

                async def body(backend: str = backend, key: str = key, options: Dict[str, Any] = options) -> None:
                    async with PersonaFixture("novice_sarah", registry_dir=self.registry_dir, sweep=False) as p:
                        with self.assertRaisesRegex(ConfigurationError, key) as caught:
                            await p.acquire(backend, **options)
                        self.assertNotIn("point TAOS_PERSONA_SANDBOX", str(caught.exception))

                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    asyncio.run(body())
                os.environ[key] = saved
                self.assertFalse([w for w in caught if issubclass(w.category, ResourceLeftWarning)])
                self.assertEqual(self.registry_files(), [])
                self.assertEqual(sweep(self.registry_dir).exit_status, 0)

    def queued_faults_left(self) -> int:
        return len(self.sandbox.call("GET", "/_sandbox/faults")["queued"])

    def drop_all(self, backend: str) -> None:
        """Clean up what a backend that cannot recover left (the provider would expire it)."""
        prefix = self.provider_prefix(backend)
        for resource in self.sandbox.resources(prefix):
            self.sandbox.drop(prefix, resource["rid"])
        for name in self.registry_files():
            os.unlink(os.path.join(self.registry_dir, name))


if __name__ == "__main__":
    unittest.main()
