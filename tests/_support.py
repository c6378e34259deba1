"""Shared test plumbing: temp registries, child processes, and what counts as a survivor."""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from typing import Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, "tests")
HAVE_AIOHTTP = importlib.util.find_spec("aiohttp") is not None
HAVE_PYTEST = importlib.util.find_spec("pytest") is not None

# Tests kill and sweep within milliseconds, with nothing left in flight at the provider:
# trust recover()'s first "nothing here". test_crash.IntentGraceTest covers the default.
os.environ.setdefault("TAOS_PERSONA_INTENT_GRACE", "0")
needs_aiohttp = unittest.skipUnless(HAVE_AIOHTTP, "needs aiohttp")
needs_pytest = unittest.skipUnless(HAVE_PYTEST, "needs pytest (the stdlib-only slice has none)")
posix_only = unittest.skipUnless(sys.platform != "win32", "POSIX signals and flock")


def child_env(**extra: str) -> Dict[str, str]:
    """The environment for a child Python that imports this checkout and our test backends."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAOS_PERSONA_FAULT")}
    env["PYTHONPATH"] = os.pathsep.join([REPO, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["TAOS_PERSONA_PLUGINS"] = "tests._backends"
    env.update(extra)
    return env


def run_files(directory: str) -> List[str]:
    """Every name in a registry directory but its marker file (``.taos-registry``), sorted."""
    if not os.path.isdir(directory):
        return []
    return sorted(name for name in os.listdir(directory) if name != ".taos-registry")


class TempDirTestCase(unittest.TestCase):
    """A fresh directory per test: ``self.tmp``, ``self.registry_dir``, ``self.files_dir``."""

    def setUp(self) -> None:
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="taos-test-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.registry_dir = os.path.join(self.tmp, "registry")
        self.files_dir = os.path.join(self.tmp, "provider")
        os.makedirs(self.files_dir)

    def registry_files(self) -> List[str]:
        """Every name in the registry directory but its marker file."""
        return run_files(self.registry_dir)

    def survivors(self) -> List[str]:
        """Resources still alive at the fake provider (files in its directory)."""
        return sorted(os.listdir(self.files_dir))

    def start_child(self, *args: str, **env: str) -> subprocess.Popen:
        """Start tests/_child.py; its stdout says what it has done, line by line."""
        command = [sys.executable, os.path.join(TESTS, "_child.py"), "--registry", self.registry_dir,
                   "--files", self.files_dir, *args]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=child_env(**env), cwd=self.tmp)
        self.addCleanup(reap, proc)
        return proc

    def run_sweep_cli(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "taos_persona.sweep", "--dir", self.registry_dir, *args],
                              capture_output=True, text=True, env=child_env(**env), cwd=self.tmp, timeout=120)


def run_python(code: str, *args: str, env: Optional[Dict[str, str]] = None,
               timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``python -c code args`` from the repository, as a user's process would."""
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO,
                          env=child_env() if env is None else env, timeout=timeout)


def wait_for_line(proc: subprocess.Popen, prefix: str, timeout: float = 30.0) -> str:
    """Read the child's stdout until a line starts with ``prefix``."""
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"child exited (status {proc.wait()}) before {prefix!r}; "
                                 f"stderr: {proc.stderr.read() if proc.stderr else ''}")
        if line.startswith(prefix):
            return line.strip()
    raise AssertionError(f"no {prefix!r} from the child within {timeout}s")


def kill_and_wait(proc: subprocess.Popen, signum: int = signal.SIGKILL, timeout: float = 60.0) -> int:
    proc.send_signal(signum)
    return proc.wait(timeout)


def reap(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def signal_status(signum: int) -> List[int]:
    """Statuses Popen may report for "ended by ``signum``": death by it, or 128 + it."""
    return [-signum, 128 + signum]


def read_text(path: str) -> str:
    with open(path) as handle:
        return handle.read()


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()
