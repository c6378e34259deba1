"""Plumbing for the benchmarks: the sandbox as a process, child processes, orphans, timing.

The sandbox runs in a process of its own, so that it neither shares the
benchmark's GIL nor its event loop: the client side is measured, not the
server. Child modes (``python -m benchmarks._harness MODE ...``):

``hold DIR N``        create N live runs in DIR, hold their locks until stdin closes
``sweep DIR C``       sweep DIR with C requests in flight per backend; print a JSON summary
``meter CMD...``      run CMD, pass its stdout through, then print ``MAXRSS <KiB>`` of it alone
"""
from __future__ import annotations

import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import urllib.request
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

__all__ = ["REPO", "SandboxProcess", "median", "timed", "child_env", "run_child", "metered", "populate_orphans",
           "hold_runs", "LockHolder"]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USERS = "example_app.users"
"""The sandbox store's name for the users the ``rest_user`` backend makes."""


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def timed(call: Callable[[], Any]) -> float:
    """Seconds one call takes, by the monotonic high-resolution clock."""
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def child_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """This environment plus ``extra``, with this checkout first on the import path."""
    env = dict(os.environ, **(extra or {}))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH", "")]))
    return env


def run_child(args: Sequence[str], env: Optional[Dict[str, str]] = None) -> str:
    """Run ``python -m benchmarks._harness ARGS``; its stdout, or an error with its stderr."""
    result = subprocess.run([sys.executable, "-m", "benchmarks._harness", *args], cwd=REPO,
                            env=child_env(env), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"child {' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result.stdout


def metered(command: Sequence[str], env: Optional[Dict[str, str]] = None) -> Tuple[str, int]:
    """Run ``command`` under a meter process: (its stdout, its peak RSS in bytes)."""
    out = run_child(["meter", *command], env)
    body, _, last = out.rstrip("\n").rpartition("\n")
    if not last.startswith("MAXRSS "):
        raise RuntimeError(f"meter printed no MAXRSS line: {out[-300:]!r}")
    kib = int(last.split()[1])
    return body, kib * (1 if sys.platform == "darwin" else 1024)


class SandboxProcess:
    """``python -m taos_persona.sandbox`` on 127.0.0.1, state in memory; ``env`` points at it."""

    def __init__(self) -> None:
        self.proc: Optional[subprocess.Popen] = None
        self.url = ""
        self.env: Dict[str, str] = {}

    def __enter__(self) -> "SandboxProcess":
        self.proc = subprocess.Popen([sys.executable, "-m", "taos_persona.sandbox", "--port", "0"],
                                     cwd=REPO, env=child_env(), stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://127.0.0.1:"):
            self.close()
            raise RuntimeError(f"the sandbox did not start (said {self.url!r})")
        from taos_persona.sandbox.credentials import sandbox_env

        self.env = sandbox_env(self.url)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.terminate()
            proc.wait(30)
            if proc.stdout is not None:
                proc.stdout.close()

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def latency(self, seconds: float) -> None:
        """Answer every provider request ``seconds`` late (a delay fault that never runs out)."""
        self.call("DELETE", "/_sandbox/faults")
        if seconds > 0:
            self.call("POST", "/_sandbox/faults", {"kind": "delay", "delay": seconds, "count": 10 ** 9})

    def alive_users(self) -> int:
        return int(self.call("GET", "/_sandbox/alive")["alive"].get(USERS, 0))


async def _make_users(count: int, concurrency: int = 32) -> List[Tuple[Dict[str, Any], Dict[str, Any], str]]:
    """``count`` real users at the sandbox: (planned, token, run id) each, ten per run id."""
    from taos_persona.backends.rest import RestUser
    from taos_persona.naming import Persona, new_run_id

    backend, limit = RestUser(), asyncio.Semaphore(concurrency)
    run_ids = [new_run_id() for _ in range((count + 9) // 10)]

    async def one(index: int) -> Tuple[Dict[str, Any], Dict[str, Any], str]:
        persona = Persona("orphan", run_ids[index // 10])
        planned = backend.plan(persona)
        async with limit:
            lease = await backend.acquire(persona, **planned)
        return planned, lease.token, persona.run_id

    try:
        return list(await asyncio.gather(*(one(i) for i in range(count))))
    finally:
        await backend.aclose()


def populate_orphans(directory: str, runs: int, per_run: int) -> List[Dict[str, Any]]:
    """Real sandbox users left by ``runs`` dead runs of ``per_run`` each, as a SIGKILL leaves them.

    Returns the release tokens. With ``directory`` empty, nothing is recorded: the
    users are bare orphans for the one-by-one baseline.
    """
    import socket

    from taos_persona.backends.base import class_path
    from taos_persona.backends.rest import RestUser
    from taos_persona.records import HELD, RunRecord
    from taos_persona.registry import Registry

    made = asyncio.run(_make_users(runs * per_run))
    if directory:
        registry = Registry(directory)
        registry.ensure()
        for start in range(0, len(made), per_run):
            batch = made[start:start + per_run]
            run = RunRecord(batch[0][2], "orphan", socket.gethostname(), 999999)
            for planned, token, _ in batch:
                record = run.add_intent("rest_user", class_path(RestUser), planned)
                record.token, record.state = token, HELD
            registry.write(run)
    return [token for _, token, _ in made]


def hold_runs(directory: str, count: int) -> None:
    """Child mode: ``count`` live runs with a resource each; locks held until stdin closes."""
    import socket

    from taos_persona.locking import RunLock
    from taos_persona.naming import new_run_id
    from taos_persona.records import HELD, RunRecord
    from taos_persona.registry import Registry

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > count + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, count + 64), hard))
    registry, locks = Registry(directory), []
    registry.ensure()
    for index in range(count):
        run = RunRecord(f"{new_run_id()}-{index}", "busy", socket.gethostname(), os.getpid())
        lock = RunLock(registry.lock_path(run.run_id))
        if not lock.try_acquire():
            raise RuntimeError(f"could not lock {lock.path}")
        locks.append(lock)
        record = run.add_intent("rest_user", "taos_persona.backends.rest:RestUser", {"username": "x"})
        record.token, record.state = {"id": f"u_{index}", "username": "x"}, HELD
        registry.write(run)
    print("READY", flush=True)
    sys.stdin.read()


class LockHolder:
    """A helper process holding ``count`` live runs in ``directory`` while the block runs."""

    def __init__(self, directory: str, count: int) -> None:
        self.args = [sys.executable, "-m", "benchmarks._harness", "hold", directory, str(count)]
        self.proc: Optional[subprocess.Popen] = None

    def __enter__(self) -> "LockHolder":
        self.proc = subprocess.Popen(self.args, cwd=REPO, env=child_env(), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "READY":
            self.__exit__()
            raise RuntimeError(f"lock holder did not get ready (said {line!r})")
        return self

    def __exit__(self, *exc: Any) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.close()
            proc.wait(30)
            proc.stdout.close()


def _sweep_child(directory: str, concurrency: int) -> None:
    """Child mode: one sweep, timed from the call (aiohttp imported first, as a warm CLI would)."""
    import aiohttp  # noqa: F401  the import is not what this figure measures

    from taos_persona.sweeper import sweep_registry

    start = time.perf_counter()
    report = sweep_registry(directory, concurrency=concurrency)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "released": len(report.released), "kept": len(report.kept),
                      "runs": len(report.swept_runs), "status": report.exit_status}))


def _meter(command: Sequence[str]) -> None:
    """Child mode: run ``command``; its peak RSS is the only child this process ever had."""
    result = subprocess.run(list(command), stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise SystemExit(f"metered command failed ({result.returncode})")
    sys.stdout.write(result.stdout)
    print(f"MAXRSS {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}")


def main(argv: Optional[List[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    mode = args.pop(0) if args else ""
    if mode == "hold":
        hold_runs(args[0], int(args[1]))
    elif mode == "sweep":
        _sweep_child(args[0], int(args[1]))
    elif mode == "meter":
        _meter(args)
    else:
        print(f"usage: python -m benchmarks._harness hold|sweep|meter ... (got {mode!r})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
