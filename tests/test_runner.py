"""``python -m taos_persona run`` and its clients, run as a user runs them, counted at the sandbox."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import unittest
from typing import Dict, List, Tuple

from tests._sandbox import SandboxEnvironment
from tests._support import REPO, TempDirTestCase, child_env, needs_aiohttp, posix_only, reap, signal_status

EXAMPLES = os.path.join(REPO, "examples")
CLIENT = """
import json, os, subprocess, sys, urllib.request

def cli(*args):
    out = subprocess.run([sys.executable, "-m", "taos_persona", *args], capture_output=True, text=True, check=True)
    print(out.stdout.strip(), flush=True)
    return json.loads(out.stdout)

cli("acquire", "user")
address = cli("acquire", "email", "--option", "domain=null")["address"]
body = {"to": address, "subject": "Verify", "text": "code 123456 at https://x.test/v?c=123456 or https://x.test/help"}
request = urllib.request.Request(os.environ["TAOS_PERSONA_SANDBOX"] + "/_sandbox/deliver/email",
                                 json.dumps(body).encode(), {"Content-Type": "application/json"})
urllib.request.urlopen(request).close()
cli("wait-message", address, "--subject", "Verify", "--timeout", "30")
"""
HAVE_NODE = shutil.which("node") is not None
HAVE_CURL = shutil.which("curl") is not None


@needs_aiohttp
@posix_only
class RunCommandTest(SandboxEnvironment, TempDirTestCase):
    """``self.registry_dir`` for ``run``; the environment points at the class's sandbox."""

    def env(self, **extra: str) -> Dict[str, str]:
        return child_env(**extra)

    def alive(self) -> int:
        return sum(self.sandbox.alive().values())

    def run_command(self, *command: str, persona: str = "runner", **env: str) -> List[str]:
        return [sys.executable, "-m", "taos_persona", "run", "--persona", persona, "--registry", self.registry_dir,
                "--", *command]

    def run_cli(self, *command: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.run_command(*command), capture_output=True, text=True, cwd=self.tmp,
                              env=self.env(**env), timeout=120, start_new_session=True)

    def assert_nothing_left(self) -> None:
        self.assertEqual(self.alive(), 0)
        self.assertEqual(self.registry_files(), [])

    @unittest.skipUnless(HAVE_CURL, "the shell example needs curl")
    def test_shell_script_acquires_uses_and_releases(self) -> None:
        self.assert_signs_up("sh", os.path.join(EXAMPLES, "persona.sh"))

    @unittest.skipUnless(HAVE_NODE, "needs node")
    def test_node_script_acquires_uses_and_releases(self) -> None:
        self.assert_signs_up("node", os.path.join(EXAMPLES, "persona.mjs"))

    def assert_signs_up(self, *command: str) -> None:
        done = self.run_cli(*command)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        self.assertRegex(done.stdout, r"signed up \S+@\S+ with phone \+\d+")
        self.assert_nothing_left()

    def test_exits_with_the_commands_status_and_releases(self) -> None:
        script = '"$TAOS_PERSONA_PYTHON" -m taos_persona acquire email >/dev/null && exit 7'
        done = self.run_cli("sh", "-c", script)
        self.assertEqual(done.returncode, 7, done.stderr)
        self.assert_nothing_left()
        done = self.run_cli("sh", "-c", '"$TAOS_PERSONA_PYTHON" -m taos_persona acquire sms >/dev/null; kill -TERM $$')
        self.assertEqual(done.returncode, 128 + signal.SIGTERM, done.stderr)
        self.assert_nothing_left()

    def test_socket_is_private(self) -> None:
        done = self.run_cli("sh", "-c", 'stat -c %a "$TAOS_PERSONA_SOCKET" "$(dirname "$TAOS_PERSONA_SOCKET")"')
        self.assertEqual(done.stdout.split(), ["600", "700"], done.stderr)

    def test_acquire_prints_the_public_value_and_wait_message_extracts(self) -> None:
        script = os.path.join(self.tmp, "client.py")
        with open(script, "w") as handle:
            handle.write(CLIENT)
        done = self.run_cli(sys.executable, script, TAOS_PERSONA_USER_BACKEND="rest_user")
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        user, mailbox, message = (json.loads(line) for line in done.stdout.splitlines())
        self.assertIn("password", user, "the test's own user password is the test's to use")
        self.assertNotIn("reader", mailbox)
        self.assertEqual((message["code"], message["link"]), ("123456", "https://x.test/v?c=123456"))
        self.assertEqual(message["links"], ["https://x.test/v?c=123456", "https://x.test/help"])
        for name, secret in self.sandbox.env().items():
            if name != "TAOS_PERSONA_SANDBOX":
                self.assertNotIn(secret, done.stdout + done.stderr)
        self.assert_nothing_left()

    def test_option_values_are_json_when_they_parse(self) -> None:
        from taos_persona.cli import _option

        self.assertEqual(_option("create_table=true"), ("create_table", True))
        self.assertEqual(_option("table=users"), ("table", "users"))
        self.assertEqual(_option("n=3"), ("n", 3))

    def test_request_errors_are_one_line(self) -> None:
        outside = subprocess.run([sys.executable, "-m", "taos_persona", "acquire", "email"], capture_output=True,
                                 text=True, env={k: v for k, v in self.env().items() if k != "TAOS_PERSONA_SOCKET"})
        self.assertEqual(outside.returncode, 1)
        self.assertIn("TAOS_PERSONA_SOCKET is not set", outside.stderr)
        done = self.run_cli("sh", "-c", '"$TAOS_PERSONA_PYTHON" -m taos_persona wait-code +1555 --timeout 1')
        self.assertEqual(done.returncode, 1)
        self.assertIn("no number '+1555' was acquired in this run", done.stderr)
        self.assertNotIn("Traceback", done.stderr)
        missing = self.run_cli("no-such-command-taos")
        self.assertEqual(missing.returncode, 127)
        self.assertIn("cannot start 'no-such-command-taos'", missing.stderr)
        self.assert_nothing_left()

    def test_a_kinds_configuration_error_says_run_chose_the_backend(self) -> None:
        done = self.run_cli("sh", "-c", '"$TAOS_PERSONA_PYTHON" -m taos_persona acquire user '
                            '--option create_table=true', TAOS_PERSONA_USER_BACKEND="rest_user")
        self.assertEqual(done.returncode, 1, done.stdout + done.stderr)
        self.assertIn("rest_user: unknown option(s) create_table", done.stderr)
        self.assertIn("acquire user is the rest_user backend here, chosen by $TAOS_PERSONA_USER_BACKEND in "
                      "the environment `run` started in; setting it inside COMMAND changes nothing", done.stderr)
        self.assertIn("acquire sql --option database=", done.stderr)
        self.assert_nothing_left()

    def test_sigint_and_sigterm_are_forwarded_and_everything_released(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with self.subTest(signal=signum.name):
                proc, child_pid = self.start_holding()
                os.kill(proc.pid, signum)
                self.assertEqual(proc.wait(timeout=60), 128 + signum, proc.stderr.read() if proc.stderr else "")
                self.wait_gone(child_pid)
                self.assert_nothing_left()
                os.remove(os.path.join(self.tmp, "holding"))

    def test_sigkilled_holder_leaves_no_survivors_after_a_sweep(self) -> None:
        proc, child_pid = self.start_holding()
        proc.send_signal(signal.SIGKILL)
        self.assertIn(proc.wait(timeout=60), signal_status(signal.SIGKILL))
        os.kill(child_pid, signal.SIGKILL)  # the orphaned script would sleep on
        self.assertEqual(self.alive(), 2, "the holder died holding a mailbox and a number")
        sweep = subprocess.run([sys.executable, "-m", "taos_persona.sweep", "--dir", self.registry_dir],
                               capture_output=True, text=True, env=self.env(), timeout=120)
        self.assertEqual(sweep.returncode, 0, sweep.stdout + sweep.stderr)
        self.assert_nothing_left()

    def start_holding(self) -> Tuple[subprocess.Popen[str], int]:
        """``run`` the shell example until it holds its resources; (holder, script pid)."""
        marker = os.path.join(self.tmp, "holding")
        proc = subprocess.Popen(self.run_command("sh", os.path.join(EXAMPLES, "persona.sh")),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=self.tmp,
                                env=self.env(HOLD_MARKER=marker), start_new_session=True)  # no terminal
        self.addCleanup(reap, proc)
        deadline = time.monotonic() + 60
        while not (os.path.exists(marker) and open(marker).read().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                self.fail(f"the script did not hold its resources ({proc.poll()})")
            time.sleep(0.05)
        return proc, int(open(marker).read())

    def wait_gone(self, pid: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        self.fail(f"process {pid} still runs")


COUNTS_SIGINT = """
import os, signal, sys
from taos_persona.runner import RunnerError, request

received = []
signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
open(sys.argv[1], "w").close()
while not received:
    signal.pause()
try:  # a round trip to the holder: a SIGINT it forwards would arrive before its answer
    request({"op": "wait_code", "number": "none", "timeout": 0})
except RunnerError:
    pass
sys.exit(len(received))
"""


@needs_aiohttp
@posix_only
class TerminalCtrlCTest(SandboxEnvironment, TempDirTestCase):
    def test_ctrl_c_at_a_terminal_reaches_the_command_once(self) -> None:
        """The terminal signals the whole foreground group: forwarding it too would send two SIGINTs.

        Two SIGINTs that arrive close together may merge into one, so the count
        alone cannot catch a double; the decision test below can.
        """
        script, ready = os.path.join(self.tmp, "count.py"), os.path.join(self.tmp, "ready")
        with open(script, "w") as handle:
            handle.write(COUNTS_SIGINT)
        pid, master = self.on_a_terminal(["-m", "taos_persona", "run", "--registry", self.registry_dir, "--",
                                          sys.executable, script, ready])
        deadline = time.monotonic() + 60
        while not os.path.exists(ready):
            self.assertLess(time.monotonic(), deadline, "the command never got ready")
            time.sleep(0.05)
        os.write(master, b"\x03")  # Ctrl-C, as typed
        output = _drain(master)
        self.assertEqual(_exit_code(pid), 1, f"SIGINTs the command received; output: {output}")
        self.assertEqual(self.registry_files(), [])

    def test_forwards_sigint_unless_the_terminal_sent_it_to_the_command_too(self) -> None:
        decide = ("import subprocess, sys; from taos_persona.runner import _terminal_sent_it_too as sent\n"
                  "same = subprocess.Popen(['sleep', '60']); own = subprocess.Popen(['sleep', '60'], "
                  "start_new_session=True)\nprint('DECISION', sent(same.pid), sent(own.pid), flush=True)\n"
                  "same.kill(); own.kill()")
        pid, master = self.on_a_terminal(["-c", decide])
        output = _drain(master)
        _exit_code(pid)
        self.assertIn("DECISION True False", output)
        no_terminal = subprocess.run([sys.executable, "-c", decide], capture_output=True, text=True,
                                     env=child_env(), start_new_session=True, timeout=60)
        self.assertIn("DECISION False False", no_terminal.stdout, no_terminal.stderr)

    def on_a_terminal(self, args: List[str]) -> Tuple[int, int]:
        """Start ``python ARGS`` as the leader of a new session on a fresh pty; (pid, pty master)."""
        import pty

        pid, master = pty.fork()
        if pid == 0:  # the child: its controlling terminal is the pty
            os.execve(sys.executable, [sys.executable, *args], child_env())
        self.addCleanup(os.close, master)
        return pid, master


def _exit_code(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def _drain(master: int) -> str:
    """Read the pty until the other side closes it (EIO on Linux)."""
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


@needs_aiohttp
@posix_only
class SandboxPrintEnvTest(unittest.TestCase):
    def test_print_env_is_eval_able(self) -> None:
        proc = subprocess.Popen([sys.executable, "-m", "taos_persona.sandbox", "--print-env"],
                                stdout=subprocess.PIPE, text=True, env=child_env())
        self.addCleanup(reap, proc)
        lines: List[str] = []
        assert proc.stdout is not None
        while not lines or "TWILIO" not in lines[-1]:
            lines.append(proc.stdout.readline())
        shown = subprocess.run(["sh", "-c", "".join(lines) + 'echo "$TAOS_PERSONA_SANDBOX $TAOS_PERSONA_USER_BACKEND"'],
                               capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
        self.assertRegex(shown.stdout, r"^http://127\.0\.0\.1:\d+ rest_user$")
        proc.send_signal(signal.SIGINT)
        self.assertEqual(proc.wait(timeout=60), 0)


if __name__ == "__main__":
    unittest.main()
