"""``make e2e``: a persona signs up in a real browser; then its SIGKILLed twin leaves nothing after the sweep.

1. Runs examples/test_browser_signup.py under pytest against a fresh sandbox.
2. Runs it again, SIGKILLs the whole pytest process group mid-sign-up (the
   persona holds a mailbox and a number), shows the orphans at the sandbox,
   runs ``python -m taos_persona.sweep`` and shows that nothing survived.

Exits 0 on success, 1 on a failure, and 0 with a "skipped:" line when
Playwright or Chromium is missing (``make e2e`` installs both when it may).
"""
from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TEST = os.path.join(HERE, "test_browser_signup.py")
CHROMIUM = os.environ.get("TAOS_PERSONA_CHROMIUM", "/usr/bin/chromium")


def why_skip() -> str:
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install playwright)"
    if not os.path.exists(CHROMIUM):
        return (f"no Chromium at {CHROMIUM}: apt-get install chromium as root, or point "
                "TAOS_PERSONA_CHROMIUM at one (playwright install cannot download here)")
    return ""


def pytest_command(registry: str) -> List[str]:
    return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", HERE,
            "--persona-registry", registry, TEST]


def alive(sandbox) -> str:  # type: ignore[no-untyped-def]
    counts = sandbox.alive()
    return " ".join(f"{k}={v}" for k, v in sorted(counts.items()) if v) or "nothing"


def passing_run(env: Dict[str, str], registry: str, sandbox) -> bool:  # type: ignore[no-untyped-def]
    print("== 1. the browser persona signs up", flush=True)
    done = subprocess.run(pytest_command(registry), env=env, cwd=REPO, text=True, capture_output=True)
    print(done.stdout.strip(), done.stderr.strip(), sep="\n", flush=True)
    print(f"sandbox alive after the run: {alive(sandbox)}", flush=True)
    return done.returncode == 0 and sum(sandbox.alive().values()) == 0


def killed_run(env: Dict[str, str], registry: str, sandbox) -> bool:  # type: ignore[no-untyped-def]
    print("== 2. its twin is SIGKILLed mid-sign-up", flush=True)
    marker = os.path.join(os.path.dirname(registry), "holding")
    proc = subprocess.Popen(pytest_command(registry), env=dict(env, E2E_HOLD_MARKER=marker), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not os.path.exists(marker):
        if proc.poll() is not None or time.monotonic() > deadline:
            print(f"the twin never reached mid-sign-up (status {proc.poll()})")
            return False
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # pytest, the playwright driver and chromium: all at once
    print(f"killed with SIGKILL: status {proc.wait()}; orphans at the sandbox: {alive(sandbox)}", flush=True)
    sweep = subprocess.run([sys.executable, "-m", "taos_persona.sweep", "--dir", registry], env=env,
                           text=True, capture_output=True)
    print(sweep.stdout.strip(), flush=True)
    left = sum(sandbox.alive().values())
    print(f"after the sweep: sandbox alive {alive(sandbox)}; {left} survivors", flush=True)
    return sweep.returncode == 0 and left == 0


def main() -> int:
    reason = why_skip()
    if reason:
        print(f"make e2e: skipped: {reason}")
        return 0
    from taos_persona.sandbox import SandboxThread

    with tempfile.TemporaryDirectory(prefix="taos-e2e-") as work, SandboxThread() as sandbox:
        registry = os.path.join(work, "registry")
        env = {k: v for k, v in os.environ.items() if not k.startswith("TAOS_PERSONA_")}
        env.update(sandbox.env(), TAOS_PERSONA_CHROMIUM=CHROMIUM)
        ok = passing_run(env, registry, sandbox) and killed_run(env, registry, sandbox)
    print("make e2e: passed" if ok else "make e2e: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
