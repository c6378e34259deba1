"""What every torture scenario shares: result rows, the sandbox process, children, counting.

Survivors are always counted where they live, never in our bookkeeping: files
in the witness provider's directory, rows in the SQL table, resources the
sandbox reports alive at ``/_sandbox/alive``, and run files left in the
registry. Every output a child or a sweep produces, and every registry
file, passes through the :class:`SecretScanner` before it is dropped.
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from tests._support import REPO, child_env

__all__ = ["Row", "SandboxProcess", "Lane", "TrialDirs", "Child", "SecretScanner", "SCANNER",
           "torture_env", "sweep_cli", "sql_rows", "count_files", "registry_runs", "mode_problems",
           "PY", "CHILD", "run_lanes"]

PY = sys.executable
CHILD = [PY, "-m", "benchmarks._torture_child"]
PLUGINS = "tests._backends,benchmarks._torture_backends"
FAST_HTTP = {"TAOS_PERSONA_HTTP_RETRIES": "2", "TAOS_PERSONA_HTTP_BACKOFF": "0.01",
             "TAOS_PERSONA_HTTP_TIMEOUT": "5", "TAOS_PERSONA_MAILTM_MAX_RATE": "0"}
"""Retries shrunk so that an outage costs milliseconds, not the default seconds."""


@dataclass
class Row:
    """One line of the final table; ``known`` names a documented limitation."""

    scenario: str
    trials: int = 0
    faults: int = 0
    survivors: int = 0
    live_releases: int = 0
    sweeper_exceptions: int = 0
    failures: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    known: str = ""

    def fail(self, message: str) -> None:
        self.failures.append(message)

    def merge(self, other: "Row") -> "Row":
        """Add another tally of the same scenario (one trial's) into this one."""
        self.trials += other.trials
        self.faults += other.faults
        self.survivors += other.survivors
        self.live_releases += other.live_releases
        self.sweeper_exceptions += other.sweeper_exceptions
        self.failures.extend(other.failures)
        self.notes.extend(other.notes)
        return self

    @property
    def result(self) -> str:
        if self.failures or self.live_releases or self.sweeper_exceptions:
            return "FAIL"
        if self.survivors:
            return "KNOWN" if self.known else "FAIL"
        return "PASS"


class SecretScanner:
    """Looks for every provider secret in every text and file the torture run produced."""

    _SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|AUTH", re.IGNORECASE)

    def __init__(self) -> None:
        self.secrets: Dict[str, str] = {}
        self.scanned = 0
        self.hits: List[str] = []

    def learn(self, env: Dict[str, str]) -> None:
        """Remember the secret-looking variables of an environment handed to children."""
        self.secrets.update({k: v for k, v in env.items() if self._SECRET_NAME.search(k) and len(v) >= 6})

    def scan(self, label: str, text: str) -> None:
        self.scanned += 1
        for name, value in self.secrets.items():
            if value in text:
                self.hits.append(f"{name} found in {label}")

    def scan_tree(self, label: str, directory: str) -> None:
        """Every regular file under ``directory`` (symlinks not followed)."""
        for root, _dirs, names in os.walk(directory):
            for name in names:
                path = os.path.join(root, name)
                info = os.lstat(path)
                if stat.S_ISREG(info.st_mode) and info.st_size < (8 << 20):
                    with open(path, "rb") as handle:
                        self.scan(f"{label}:{os.path.relpath(path, directory)}",
                                  handle.read().decode("latin-1"))


SCANNER = SecretScanner()


def torture_env(sandbox_url: str = "", **extra: str) -> Dict[str, str]:
    """A child's environment: this checkout, our plugins, the sandbox and fast retries."""
    from taos_persona.sandbox import sandbox_env

    env = child_env(TAOS_PERSONA_PLUGINS=PLUGINS)
    for name in list(env):  # a developer's real-provider settings must not leak in
        if (name.startswith("TAOS_PERSONA_") and name.endswith("_URL")) or name.startswith("TAOS_TEST_"):
            del env[name]
    env.pop("TAOS_PERSONA_DIR", None)
    if sandbox_url:
        env.update(sandbox_env(sandbox_url))
    env.update(FAST_HTTP)
    env.update(extra)
    SCANNER.learn(env)
    return env


class SandboxProcess:
    """``python -m taos_persona.sandbox`` in a process of its own, so that it can be killed."""

    def __init__(self, state: str) -> None:
        self.state = state
        self.port = 0
        self.url = ""
        self.proc: Optional[subprocess.Popen] = None
        self._log = open(state + ".log", "ab")

    def start(self) -> "SandboxProcess":
        """Start (on the port it had before, if it was started before) and read the URL back."""
        command = [PY, "-m", "taos_persona.sandbox", "--port", str(self.port), "--state", self.state]
        for _attempt in range(50):
            self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._log, cwd=REPO,
                                         env=torture_env())
            line = self.proc.stdout.readline().decode().strip()  # type: ignore[union-attr]
            if line.startswith("http://"):
                self.url, self.port = line, int(line.rsplit(":", 1)[1])
                return self
            self.proc.wait()
            time.sleep(0.1)  # the old one's port may not be free yet
        raise RuntimeError(f"the sandbox did not start on port {self.port}")

    def stop(self, signum: int = 15) -> None:
        """Stop it (SIGTERM: orderly; SIGKILL: an outage); safe to call twice."""
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.send_signal(signum)
            proc.wait(30)
            proc.stdout.close()  # type: ignore[union-attr]

    def close(self) -> None:
        self.stop()
        self._log.close()

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read().decode() or "null")
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 404:
                return None
            raise

    def alive(self) -> Dict[str, int]:
        return self.call("GET", "/_sandbox/alive")["alive"]

    def total(self) -> int:
        return sum(self.alive().values())

    def resources(self, provider: str) -> List[Dict[str, Any]]:
        return self.call("GET", f"/_sandbox/resources/{provider}") or []

    def drop(self, provider: str, rid: str) -> None:
        """Delete behind the backends' back, as the provider's own expiry does."""
        self.call("DELETE", f"/_sandbox/resources/{provider}/{urllib.request.quote(rid, safe='')}")

    def inject(self, kind: str, count: int, **options: Any) -> None:
        self.call("POST", "/_sandbox/faults", dict(options, kind=kind, count=count))

    def clear_faults(self) -> None:
        self.call("DELETE", "/_sandbox/faults")


@dataclass
class TrialDirs:
    """A fresh registry, witness-provider directory and SQL database for one trial."""

    root: str
    registry: str
    files: str
    db: str

    @classmethod
    def make(cls, parent: str) -> "TrialDirs":
        root = tempfile.mkdtemp(prefix="trial-", dir=parent)
        files = os.path.join(root, "provider")
        os.makedirs(files)
        return cls(root, os.path.join(root, "registry"), files, os.path.join(root, "app.db"))

    def survivors(self, sandbox: Optional[SandboxProcess] = None) -> int:
        """Resources alive at every provider this trial could have used."""
        alive = count_files(self.files) + sql_rows(self.db)
        return alive + (sandbox.total() if sandbox is not None else 0)


class Lane:
    """A sandbox of one's own and a scratch directory: trials in two lanes run side by side."""

    def __init__(self, parent: str, name: str) -> None:
        self.root = tempfile.mkdtemp(prefix=f"{name}-", dir=parent)
        self.sandbox = SandboxProcess(os.path.join(self.root, "sandbox.db")).start()

    def dirs(self) -> TrialDirs:
        return TrialDirs.make(self.root)

    def close(self) -> None:
        self.sandbox.close()


def run_lanes(lanes: List["Lane"], items: List[Any], trial: Callable[["Lane", Any], Row]) -> List[Row]:
    """Run ``trial(lane, item)`` for every item, one thread per lane, items in order per lane."""
    pending = list(reversed(items))
    guard = threading.Lock()
    results: List[Row] = []

    def work(lane: "Lane") -> None:
        while True:
            with guard:
                if not pending:
                    return
                item = pending.pop()
            try:
                outcome = trial(lane, item)
            except Exception:  # noqa: BLE001 - a broken trial is a failed trial, not a lost one
                outcome = Row("torture harness", trials=1, failures=[traceback.format_exc()])
            with guard:
                results.append(outcome)

    threads = [threading.Thread(target=work, args=(lane,), daemon=True) for lane in lanes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


class Child:
    """A child process whose output is scanned for secrets when it is collected."""

    def __init__(self, args: List[str], env: Dict[str, str], cwd: str) -> None:
        self.args = args
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env, cwd=cwd)
        self.out = self.err = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def finish(self, timeout: float = 90.0) -> Optional[int]:
        """Wait for the end (killing it past ``timeout``); None means it hung."""
        hung = False
        try:
            out, self.err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            hung = True
            self.proc.kill()
            out, self.err = self.proc.communicate()
        self.out += out
        SCANNER.scan(f"output of {' '.join(self.args[2:4])}", self.out + self.err)
        return None if hung else self.proc.returncode

    def wait_for(self, prefix: str, timeout: float = 60.0) -> bool:
        """Read the child's output until a line starts with ``prefix``; False if it ended first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                return False
            self.out += line
            if line.startswith(prefix):
                return True
        return False

    def lines(self, prefix: str) -> List[str]:
        return [line for line in self.out.splitlines() if line.startswith(prefix)]


IN_FLIGHT_WINDOW = 20.0
"""Seconds past which no create of a dead child can land (FAST_HTTP: 5 s x 3 attempts, plus slack)."""


def only_in_flight(report: Dict[str, Any]) -> bool:
    """Is everything the sweep kept an intent waiting out its request window?"""
    kept = [o for o in report.get("resources", []) if o.get("result") in ("kept", "would keep")]
    return bool(kept) and all(o.get("state") == "intent" and "in flight" in (o.get("error") or "")
                              for o in kept)


def sweep_cli(registry: str, env: Dict[str, str], cwd: str,
              timeout: float = 90.0) -> Tuple[Optional[int], Optional[Dict[str, Any]], str]:
    """``python -m taos_persona.sweep --json``: (status or None if hung, report, stderr)."""
    child = Child([PY, "-m", "taos_persona.sweep", "--dir", registry, "--json"], env, cwd)
    status = child.finish(timeout)
    try:
        report = json.loads(child.out)
    except ValueError:
        report = None
    return status, report, child.err


def sql_rows(db: str) -> int:
    """Rows left in the ``users`` table (the sql backend's provider)."""
    if not os.path.exists(db):
        return 0
    with closing(sqlite3.connect(db, timeout=30)) as conn:
        try:
            return conn.execute("SELECT COUNT(*) FROM users").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def count_files(directory: str) -> int:
    return len(os.listdir(directory)) if os.path.isdir(directory) else 0


def registry_runs(registry: str) -> List[str]:
    """Run files (``*.json``) left at the top of a registry directory."""
    if not os.path.isdir(registry):
        return []
    return sorted(name for name in os.listdir(registry) if name.endswith(".json"))


def mode_problems(registry: str) -> List[str]:
    """Files of ours that are not 0600, directories that are not 0700."""
    found = []
    if not os.path.isdir(registry):
        return found
    for root, _dirs, names in os.walk(registry):
        mode = stat.S_IMODE(os.lstat(root).st_mode)
        if mode != 0o700:
            found.append(f"directory {root} is {mode:o}, not 700")
        for name in names:
            info = os.lstat(os.path.join(root, name))
            if stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) != 0o600:
                found.append(f"file {name} is {stat.S_IMODE(info.st_mode):o}, not 600")
    return found
