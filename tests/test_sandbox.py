"""The sandbox itself: its store, restarts, faults, alive counts, loopback-only binds, the CLI."""
from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import unittest
import urllib.error
import urllib.request

from taos_persona.errors import ConfigurationError
from tests._support import REPO, needs_aiohttp, posix_only

KEY = {"Mailsac-Key": "sandbox-mailsac-key"}


class TempStateTest(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="taos-sandbox-")
        self.addCleanup(self.tmp.cleanup)
        self.state = os.path.join(self.tmp.name, "state.sqlite")


@needs_aiohttp
class StoreTest(TempStateTest):
    def test_resources_and_messages_survive_reopening(self) -> None:
        from taos_persona.sandbox import SandboxStore

        store = SandboxStore(self.state)
        store.create("mailsac", "a@x", {"n": 1}, key="taos-run-a@x")
        store.create("mailsac", "b@x", {"n": 2}, key="other@x")
        store.create("mailtm", "id1", {"n": 3}, key="taos_run%@y")
        store.add_message("a@x", {"subject": "hi"})
        store.close()
        store.close()
        store = SandboxStore(self.state)
        self.addCleanup(store.close)
        self.assertEqual(store.alive(), {"mailsac": 2, "mailtm": 1})
        self.assertEqual(store.get("mailsac", "a@x"), {"n": 1})
        self.assertEqual(store.find("mailsac", "other@x"), ("b@x", {"n": 2}))
        self.assertEqual([rid for rid, _ in store.list("mailsac", "taos-")], ["a@x"])
        self.assertEqual(store.list("mailtm", "taos-run"), [])  # '_' and '%' are literal
        self.assertEqual([m["subject"] for m in store.messages("a@x")], ["hi"])

    def test_delete_is_true_once_and_update_needs_alive(self) -> None:
        from taos_persona.sandbox import SandboxStore

        store = SandboxStore()
        self.addCleanup(store.close)
        store.create("p", "r", {"v": 1}, key="k")
        self.assertTrue(store.update("p", "r", {"v": 2}))
        self.assertTrue(store.delete("p", "r"))
        self.assertFalse(store.delete("p", "r"))
        self.assertFalse(store.delete("p", "never"))
        self.assertIsNone(store.get("p", "r"))
        self.assertIsNone(store.find("p", "k"))
        self.assertFalse(store.update("p", "r", {"v": 3}))
        self.assertTrue(store.was_deleted("p", "r"))
        self.assertEqual(store.alive(), {})


@needs_aiohttp
class SandboxThreadTest(TempStateTest):
    def start(self):
        from taos_persona.sandbox import SandboxThread

        sandbox = SandboxThread(self.state).start()
        self.addCleanup(sandbox.close)
        return sandbox

    def test_state_survives_a_restart_and_alive_counts(self) -> None:
        sandbox = self.start()
        for name in ("taos-r-1@mailsac.com", "taos-r-2@mailsac.com"):
            self.assertEqual(sandbox.request("POST", f"/mailsac/addresses/{name}", headers=KEY)[0], 200)
        self.assertEqual(sandbox.call("GET", "/_sandbox/alive"), {"alive": {"mailsac": 2}, "total": 2})
        old_url = sandbox.url
        sandbox.close()
        sandbox.close()
        with self.assertRaises(urllib.error.URLError):
            urllib.request.urlopen(old_url + "/_sandbox/alive", timeout=5)
        sandbox = self.start()
        self.assertEqual(sandbox.alive(), {"mailsac": 2})
        status, body = sandbox.request("GET", "/mailsac/addresses/taos-r-1@mailsac.com", headers=KEY)
        self.assertEqual((status, body["owner"]), (200, "sandbox-account"))
        self.assertTrue(sandbox.drop("mailsac", "taos-r-1@mailsac.com"))
        self.assertFalse(sandbox.drop("mailsac", "taos-r-1@mailsac.com"))
        self.assertEqual(sandbox.alive(), {"mailsac": 1})

    def test_env_points_at_the_sandbox_with_every_credential(self) -> None:
        from taos_persona.sandbox import sandbox_credentials

        sandbox = self.start()
        env = sandbox.env()
        self.assertEqual(env["TAOS_PERSONA_SANDBOX"], sandbox.url)
        self.assertRegex(sandbox.url, r"^http://127\.0\.0\.1:\d+$")
        self.assertEqual(env["MAILSAC_API_KEY"], "sandbox-mailsac-key")
        self.assertLessEqual(set(sandbox_credentials()), set(env))

    def test_wrong_key_gets_mailsacs_401_body(self) -> None:
        sandbox = self.start()
        status, body = sandbox.request("GET", "/mailsac/addresses", headers={"Mailsac-Key": "nope"})
        self.assertEqual(status, 401)
        self.assertEqual(set(body), {"error", "message"})

    def test_faults_hit_the_next_n_requests_of_their_provider_only(self) -> None:
        sandbox = self.start()
        sandbox.inject("500", count=2, provider="mailsac")
        self.assertEqual(sandbox.request("GET", "/mailtm/domains")[0], 200)
        self.assertEqual(sandbox.request("GET", "/mailsac/addresses", headers=KEY)[0], 500)
        self.assertEqual(sandbox.alive(), {})  # /_sandbox/ routes are never faulted
        self.assertEqual(sandbox.request("GET", "/mailsac/addresses", headers=KEY)[0], 500)
        self.assertEqual(sandbox.request("GET", "/mailsac/addresses", headers=KEY)[0], 200)
        sandbox.inject("429", count=1, retry_after=7)
        with self.assertRaises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(sandbox.url + "/mailtm/domains", timeout=5)
        self.assertEqual((caught.exception.code, caught.exception.headers["Retry-After"]), (429, "7"))
        caught.exception.close()
        sandbox.inject("500", count=1, method="POST", path="/mailtm/accounts")
        self.assertEqual(sandbox.request("GET", "/mailtm/domains")[0], 200)
        self.assertEqual(sandbox.request("POST", "/mailtm/accounts", body={})[0], 500)
        sandbox.inject("500", count=5)
        sandbox.clear_faults()
        self.assertEqual(sandbox.request("GET", "/mailtm/domains")[0], 200)

    def test_drop_closes_without_a_response_and_drop_after_acts_first(self) -> None:
        sandbox = self.start()
        sandbox.inject("drop", count=1)
        address = f"{sandbox.url}/mailsac/addresses/taos-d-1@mailsac.com"
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError, urllib.error.URLError)):
            urllib.request.urlopen(urllib.request.Request(address, method="POST", headers=KEY), timeout=5)
        self.assertEqual(sandbox.alive(), {})
        sandbox.inject("drop_after", count=1)
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError, urllib.error.URLError)):
            urllib.request.urlopen(urllib.request.Request(address, method="POST", headers=KEY), timeout=5)
        self.assertEqual(sandbox.alive(), {"mailsac": 1})

    def test_bad_fault_and_bad_delivery_are_400s(self) -> None:
        from taos_persona.sandbox import SandboxRequestError

        sandbox = self.start()
        for path, body in (("/_sandbox/faults", {"kind": "explode"}), ("/_sandbox/faults", {"kind": "500", "count": 0}),
                           ("/_sandbox/deliver/email", {"subject": "no recipient"}),
                           ("/_sandbox/deliver/sms", {"to": "+15550000000"})):
            with self.assertRaises(SandboxRequestError) as caught:
                sandbox.call("POST", path, body)
            self.assertEqual(caught.exception.status, 400, path)

    def test_sms_delivery_is_stored_for_the_number(self) -> None:
        sandbox = self.start()
        stored = sandbox.deliver_sms("+15550001111", "code 1234")
        self.assertEqual((stored["to"], stored["text"]), ("+15550001111", "code 1234"))


@needs_aiohttp
class LoopbackOnlyTest(unittest.IsolatedAsyncioTestCase):
    def test_check_loopback(self) -> None:
        from taos_persona.sandbox import check_loopback

        for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
            self.assertEqual(check_loopback(host), host)
        for host in ("0.0.0.0", "::", "192.168.1.10", "example.com", ""):
            with self.assertRaisesRegex(ConfigurationError, "loopback"):
                check_loopback(host)

    async def test_async_sandbox_refuses_other_hosts_and_closes_twice(self) -> None:
        from taos_persona.sandbox import Sandbox

        with self.assertRaises(ConfigurationError):
            Sandbox(host="0.0.0.0")
        async with Sandbox() as sandbox:
            self.assertRegex(sandbox.url, r"^http://127\.0\.0\.1:[1-9]\d*$")
            self.assertNotEqual(sandbox.port, 0)
        await sandbox.close()


@needs_aiohttp
@posix_only
class CommandLineTest(TempStateTest):
    def run_cli(self, *args: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "taos_persona.sandbox", *args], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(proc.stderr.close)
        self.addCleanup(proc.stdout.close)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        return proc

    def test_serves_until_sigterm_and_exits_0(self) -> None:
        url_file = os.path.join(self.tmp.name, "url")
        proc = self.run_cli("--port", "0", "--state", self.state, "--url-file", url_file)
        url = proc.stdout.readline().strip()
        self.assertRegex(url, r"^http://127\.0\.0\.1:\d+$")
        with open(url_file) as handle:
            self.assertEqual(handle.read().strip(), url)
        with urllib.request.urlopen(url + "/_sandbox/alive", timeout=10) as response:
            self.assertEqual(json.loads(response.read()), {"alive": {}, "total": 0})
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(30), 0)
        self.assertEqual(proc.stderr.read(), "")

    def test_user_errors_are_messages_not_tracebacks(self) -> None:
        missing = os.path.join(self.tmp.name, "no", "such", "dir", "state.sqlite")
        for args, status, words in ((("--host", "0.0.0.0"), 2, "loopback"),
                                    (("--port", "99999"), 2, "not a port number"),
                                    (("--state", missing), 1, "cannot use --state")):
            with self.subTest(args=args):
                proc = self.run_cli(*args)
                self.assertEqual(proc.wait(30), status)
                stderr = proc.stderr.read()
                self.assertIn(words, stderr)
                self.assertNotIn("Traceback", stderr)


    def test_per_provider_ports_print_one_url_each_laid_out_as_its_host(self) -> None:
        proc = self.run_cli("--port", "0", "--per-provider-ports")
        url = proc.stdout.readline().strip()
        urls = dict(proc.stdout.readline().split() for _ in range(8))
        self.assertEqual(set(urls), {"mailtm", "mailsac", "sms_activate", "twilio", "github", "google", "oauth",
                                     "example_app"})
        self.assertRegex(urls["mailsac"], r"^http://127\.0\.0\.1:\d+/api$")  # https://mailsac.com/api
        request = urllib.request.Request(urls["mailsac"] + "/me", headers=KEY)
        with urllib.request.urlopen(request, timeout=10) as response:
            self.assertEqual(json.loads(response.read())["_id"], "sandbox-account")
        # github.com's layout: /login/oauth at the root (GitHub answers token errors with 200)
        with urllib.request.urlopen(urls["github"] + "/login/oauth/access_token", data=b"code=x",
                                    timeout=10) as response:
            self.assertIn("error=incorrect_client_credentials", response.read().decode())
        with urllib.request.urlopen(url + "/_sandbox/alive", timeout=10) as response:  # one sandbox behind all
            self.assertEqual(json.loads(response.read())["total"], 0)
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(30), 0)
        self.assertEqual(proc.stderr.read(), "")
