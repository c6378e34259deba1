"""``make demo``: a persona test runs, a second run is SIGKILLed, the sweep leaves nothing behind.

What it shows, step by step:

1. the sandbox (fake mail.tm, sms-activate and an example app) starts on 127.0.0.1;
2. ``examples/test_signup.py`` runs and passes, and nothing of it is left alive;
3. it runs again and is SIGKILLed while it holds a mailbox and a number:
   the registry and the sandbox both show the orphans;
4. ``python -m taos_persona.sweep`` releases them: nothing is left anywhere.

Exit status 0 only if nothing survived. Everything happens under ``.demo/``
in the repository (or ``--work-dir``); only the standard library and this
checkout are used. POSIX only: Windows has no SIGKILL.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Dict, List, Optional, Sequence, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_WORK = os.path.join(REPO, ".demo")  # in .gitignore; make clean removes it
EXAMPLES = os.path.join(REPO, "examples")
MARKER = ".taos-persona-demo"  # the demo deletes only a work dir that carries this file
START_TIMEOUT = 20.0
RUN_TIMEOUT = 90.0
HOLD_TIMEOUT = 60.0


class DemoFailed(Exception):
    """A step went wrong; the message says which and what was seen."""


def shown(path: str) -> str:
    """A path relative to the repository when it is inside it: shorter lines."""
    inside = os.path.commonpath([REPO, path]) == REPO
    return os.path.relpath(path, REPO) if inside else path


def say(text: str) -> None:
    print(text, flush=True)


def indented(text: str) -> None:
    for line in text.rstrip("\n").splitlines():
        say("      | " + line)


# -- the work directory and the environment -------------------------------------------------
def fresh_work_dir(path: str) -> None:
    """Empty the demo's work dir; refuse a non-empty ``--work-dir`` that the demo did not make."""
    if os.path.isdir(path) and os.listdir(path):
        if path != DEFAULT_WORK and not os.path.exists(os.path.join(path, MARKER)):
            raise DemoFailed(f"{path} is not empty and was not made by the demo; pick another --work-dir")
        shutil.rmtree(path)
    os.makedirs(path, exist_ok=True)
    open(os.path.join(path, MARKER), "w").close()


def base_env() -> Dict[str, str]:
    """This process's environment without any taos-persona setting or provider key of the user's.

    A developer's ``TAOS_PERSONA_MAILTM_URL`` or real API key must never
    leak into the demo: every backend talks to the sandbox and nothing else.
    """
    from taos_persona.sandbox import sandbox_credentials

    drop = set(sandbox_credentials()) | {"DEMO_HOLD_SECONDS", "TAOS_PERSONA_PLUGINS"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAOS_PERSONA_") and k not in drop}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH", "")) if p)
    return env


# -- the sandbox ------------------------------------------------------------------------------
def start_sandbox(work: str, env: Dict[str, str]) -> Tuple[subprocess.Popen, str]:
    """``python -m taos_persona.sandbox --port 0``; returns the process and its URL once it listens."""
    url_file = os.path.join(work, "sandbox.url")
    log = open(os.path.join(work, "sandbox.log"), "w")
    command = [sys.executable, "-m", "taos_persona.sandbox", "--port", "0",
               "--state", os.path.join(work, "sandbox.db"), "--url-file", url_file]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log, cwd=work)
    log.close()
    deadline = time.monotonic() + START_TIMEOUT
    while not os.path.exists(url_file):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise DemoFailed(f"the sandbox did not start within {START_TIMEOUT:g}s; see {work}/sandbox.log")
        time.sleep(0.05)
    with open(url_file) as handle:
        return proc, handle.read().strip()


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it does not end within 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def alive(url: str) -> Dict[str, int]:
    """The sandbox's count of resources still alive, per provider (providers at 0 left out)."""
    with urllib.request.urlopen(url + "/_sandbox/alive", timeout=10) as response:
        return json.load(response)["alive"]


def show_alive(counts: Dict[str, int]) -> str:
    listed = " ".join(f"{provider}={n}" for provider, n in sorted(counts.items()))
    return f"{listed or 'nothing'} (total {sum(counts.values())})"


# -- the example test -------------------------------------------------------------------------
def example_command() -> List[str]:
    return [sys.executable, "-m", "unittest", "-v", "test_signup"]


def run_example(env: Dict[str, str]) -> float:
    """Run the example test to the end; its wall time, or DemoFailed with its output."""
    started = time.monotonic()
    try:
        done = subprocess.run(example_command(), env=env, cwd=EXAMPLES, capture_output=True, text=True,
                              timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise DemoFailed(f"the example test did not finish within {RUN_TIMEOUT:g}s") from None
    report = done.stdout + done.stderr
    if done.returncode != 0 or "Ran 1 test" not in report or "skipped" in report:
        raise DemoFailed(f"the example test did not pass (status {done.returncode}):\n{report}")
    return time.monotonic() - started


def run_example_until_killed(env: Dict[str, str], work: str) -> int:
    """Start the example, SIGKILL it while it holds its resources; its pid."""
    log = open(os.path.join(work, "killed-run.log"), "w")
    proc = subprocess.Popen(example_command(), env=dict(env, DEMO_HOLD_SECONDS=str(HOLD_TIMEOUT * 2)),
                            cwd=EXAMPLES, stdout=subprocess.PIPE, stderr=log, text=True)
    log.close()
    try:
        wait_for_line(proc, "HOLDING", HOLD_TIMEOUT)
        proc.send_signal(signal.SIGKILL)
        status = proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    if status != -signal.SIGKILL:
        raise DemoFailed(f"the example test ended with status {status}, not by SIGKILL")
    return proc.pid


def wait_for_line(proc: subprocess.Popen, prefix: str, timeout: float) -> str:
    """The first stdout line of ``proc`` that starts with ``prefix``, within ``timeout`` seconds."""
    lines: "queue.Queue[str]" = queue.Queue()

    def pump() -> None:
        for text in proc.stdout:  # type: ignore[union-attr]
            lines.put(text)
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.001))
        except queue.Empty:
            raise DemoFailed(f"the example test printed no {prefix} within {timeout:g}s") from None
        if not line:
            raise DemoFailed(f"the example test exited (status {proc.wait()}) before {prefix}")
        if line.startswith(prefix):
            return line.strip()


# -- the registry -----------------------------------------------------------------------------
def registry_entries(registry: str) -> List[str]:
    """Everything in the registry directory, but its marker file and an empty quarantine folder."""
    if not os.path.isdir(registry):
        return []
    names = sorted(name for name in os.listdir(registry) if name != ".taos-registry")
    quarantine = os.path.join(registry, "quarantine")
    return [n for n in names if not (n == "quarantine" and not os.listdir(quarantine))]


def show_orphan_runs(registry: str) -> int:
    """Print each run file's owner and resources, straight from its JSON; the resource count."""
    count = 0
    for name in registry_entries(registry):
        if not name.endswith(".json"):
            continue
        with open(os.path.join(registry, name)) as handle:
            run = json.load(handle)
        say(f"      run {run['run_id']} of persona {run['persona']} (pid {run['pid']}) still holds:")
        for resource in run["resources"]:
            what = resource.get("token", {}).get("address") or resource.get("token", {}).get("phone", "")
            say(f"        #{resource['seq']} {resource['backend']:<13} {resource['state']:<6} {what}")
            count += 1
    return count


# -- the steps --------------------------------------------------------------------------------
def demo(work: str) -> int:
    registry = os.path.join(work, "registry")
    fresh_work_dir(work)
    say(f"taos-persona demo (work dir {shown(work)})")
    env = base_env()
    sandbox, url = start_sandbox(work, env)
    try:
        test_env = dict(env, TAOS_PERSONA_DIR=registry)
        test_env.update(sandbox_env(url))
        orphans = steps(url, registry, test_env)
    finally:
        stop(sandbox)
        say(f" 9. sandbox stopped (exit status {sandbox.returncode})")
    say(f"RESULT: PASS: the SIGKILLed run orphaned {orphans} resources; the sweep released them all; "
        "0 survivors")
    return 0


def sandbox_env(url: str) -> Dict[str, str]:
    from taos_persona.sandbox import sandbox_env as env_for

    return env_for(url)


def steps(url: str, registry: str, test_env: Dict[str, str]) -> int:
    """Steps 1-8 against a running sandbox; the number of orphans the sweep released."""
    say(f" 1. sandbox listening at {url} (fake mail.tm, sms-activate and example app)")
    seconds = run_example(test_env)
    say(f" 2. examples/test_signup.py passed in {seconds:.1f}s: signed up, verified email and SMS codes")
    after_clean = alive(url)
    say(f" 3. after that clean run: sandbox alive {show_alive(after_clean)}, "
        f"registry entries {registry_entries(registry) or 'none'}")
    if sum(after_clean.values()) or registry_entries(registry):
        raise DemoFailed("the clean run left resources behind")
    pid = run_example_until_killed(test_env, os.path.dirname(registry))
    say(f" 4. ran it again and SIGKILLed it (pid {pid}) while it held an email and an SMS number")
    say(f" 5. orphans in the registry {shown(registry)}: {', '.join(registry_entries(registry))}")
    orphans = show_orphan_runs(registry)
    before = alive(url)
    say(f" 6. orphans in the sandbox: alive {show_alive(before)}")
    if not orphans or not sum(before.values()):
        raise DemoFailed("the killed run left nothing behind to sweep: the demo proved nothing")
    sweep = run_sweep(test_env)
    say(f" 7. python -m taos_persona.sweep (exit status {sweep.returncode}):")
    indented(sweep.stdout + sweep.stderr)
    after, left = alive(url), registry_entries(registry)
    say(f" 8. after the sweep: sandbox alive {show_alive(after)}, registry entries {left or 'none'}")
    if sweep.returncode != 0 or sum(after.values()) or left:
        raise DemoFailed(f"something survived the sweep: sandbox {show_alive(after)}, registry {left}")
    return orphans


def run_sweep(env: Dict[str, str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([sys.executable, "-m", "taos_persona.sweep"], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise DemoFailed(f"the sweep did not finish within {RUN_TIMEOUT:g}s") from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python examples/demo.py", description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", default=DEFAULT_WORK,
                        help="where the sandbox state and the registry go (default: .demo in the repo)")
    args = parser.parse_args(argv)
    if sys.platform == "win32" or importlib.util.find_spec("aiohttp") is None:
        print("demo: needs POSIX signals and aiohttp (make demo installs it into .venv)", file=sys.stderr)
        return 1
    try:
        return demo(os.path.abspath(args.work_dir))
    except (DemoFailed, OSError) as exc:
        say(f"RESULT: FAIL: {exc}")
        return 1


if __name__ == "__main__":
    sys.path.insert(0, REPO)  # this checkout's taos_persona, installed or not
    sys.exit(main())
