"""The random-kill soak: many fixtures, killed at random, restarted, while sweepers race them.

Eight (or more) worker processes run persona fixtures in a loop; the torture
SIGKILLs one at a random moment, again and again, and starts a fresh one
(whose first fixture runs a startup sweep); two sweeper processes sweep in a
loop all the while. At the end every worker is killed, one last sweep runs,
and the witness provider's diary is checked: a release by any process but
the owner, before the torture killed the owner, is a release of a live run.
"""
from __future__ import annotations

import json
import os
import random
import signal
import time
from collections import Counter
from typing import Dict, List, Tuple

from ._torture_kit import (CHILD, IN_FLIGHT_WINDOW, Child, Row, SandboxProcess, TrialDirs, only_in_flight,
                           registry_runs, sweep_cli, torture_env)

__all__ = ["soak", "HTTP_ROTATION"]

HTTP_ROTATION = ("mailsac", "rest_user", "twilio", "rest_token", "mailtm", "github", "google",
                 "oauth_rfc7009")
"""One HTTP backend per worker, so that every fixture also holds something at the sandbox."""
ITERATIONS = 400
"""Fixtures per worker process at most: with the time limit, it bounds the requests made."""


class _Soak:
    """The workers, the sweepers and the kill log of one soak."""

    def __init__(self, root: str, rng: random.Random, workers: int) -> None:
        self.rng = rng
        self.dirs = TrialDirs.make(root)
        self.events = os.path.join(self.dirs.root, "events.jsonl")
        self.sandbox = SandboxProcess(os.path.join(self.dirs.root, "sandbox.db")).start()
        self.env = torture_env(self.sandbox.url, TAOS_TORTURE_EVENTS=self.events)
        self.kills: Dict[int, float] = {}
        self.acquired: Counter = Counter()  # backend -> acquisitions the workers reported
        self.row = Row("random-kill soak")
        self.workers: List[Child] = [self._worker(index) for index in range(workers)]
        self.sweepers = [self._child("sweeper") for _ in range(2)]

    def _child(self, mode: str, *extra: str) -> Child:
        args = CHILD + [mode, "--registry", self.dirs.registry, "--files", self.dirs.files,
                        "--db", self.dirs.db, "--seed", str(self.rng.randrange(1 << 30)), *extra]
        return Child(args, self.env, self.dirs.root)

    def _worker(self, index: int) -> Child:
        backends = f"torture_file,torture_file,sql,{HTTP_ROTATION[index % len(HTTP_ROTATION)]}"
        return self._child("soak", "--backends", backends, "--iterations", str(ITERATIONS),
                           "--persona", f"soak_w{index}")

    def kill(self, index: int) -> None:
        """SIGKILL a worker, its time logged first: a release after it is no live-run release."""
        worker = self.workers[index]
        self.kills[worker.pid] = time.time()
        worker.proc.kill()
        status = worker.finish(30)
        self.row.faults += 1
        self.row.trials += len(worker.lines("RUN "))
        self.acquired.update(line.split()[1] for line in worker.lines("ACQUIRED "))
        if status != -signal.SIGKILL:
            self.row.fail(f"worker {index} ended by itself ({status}): {worker.err[-600:]}")
        if "Traceback" in worker.err:
            self.row.fail(f"worker {index} raised: {worker.err[-600:]}")

    def run(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(self.rng.uniform(0.02, 0.35))
            index = self.rng.randrange(len(self.workers))
            self.kill(index)
            self.workers[index] = self._worker(index)

    def stop(self) -> None:
        for index in range(len(self.workers)):
            self.kill(index)
        for sweeper in self.sweepers:
            sweeper.proc.send_signal(signal.SIGTERM)
            status = sweeper.finish(60)
            self._judge_sweeper(sweeper, status)

    def _judge_sweeper(self, sweeper: Child, status: object) -> None:
        lines = [json.loads(line) for line in sweeper.out.splitlines() if line.startswith("{")]
        failed = [line["exception"] for line in lines if "exception" in line]
        self.row.sweeper_exceptions += len(failed) + (0 if status == 0 else 1)
        for text in failed[:3]:
            self.row.fail(f"sweeper exception: {text[-600:]}")
        if status != 0:
            self.row.fail(f"a sweeper ended with {status}: {sweeper.err[-600:]}")
        problems = [p for line in lines for p in line.get("problems", [])]
        self.row.notes.append(f"soak sweeper: {len(lines)} sweeps, "
                              f"{sum(line.get('released', 0) for line in lines)} released, "
                              f"{len(problems)} problems reported")

    def final_sweep(self) -> None:
        status, report, err = sweep_cli(self.dirs.registry, self.env, self.dirs.root)
        deadline = time.monotonic() + IN_FLIGHT_WINDOW
        while status == 1 and only_in_flight(report or {}) and time.monotonic() < deadline:
            time.sleep(0.5)  # a killed worker's create may still land: its intent waits out its window
            status, report, err = sweep_cli(self.dirs.registry, self.env, self.dirs.root)
        if status != 0 or "Traceback" in err:
            self.row.fail(f"final sweep: status {status}: {err[-600:]} {report}")
        alive = self.dirs.survivors(self.sandbox)
        left = registry_runs(self.dirs.registry)
        self.row.survivors += alive + len(left)
        if alive or left:
            self.row.fail(f"after the final sweep: {alive} alive, registry {left}")

    def judge_diary(self) -> None:
        created, releases = _read_diary(self.events)
        owner = {name: pid for name, pid, _ in created}
        run_owner = {name.rsplit("-", 1)[0]: pid for name, pid, _ in created}
        calls: Counter = Counter()
        by: Counter = Counter()
        sweepers = {sweeper.pid for sweeper in self.sweepers}
        for name, pid, when in releases:
            calls[name] += 1
            by["owner" if pid == owner.get(name) else "sweeper" if pid in sweepers else "startup sweep"] += 1
            mine = owner.get(name, run_owner.get(name.rsplit("-", 1)[0]))
            if mine is not None and pid != mine and when < self.kills.get(mine, float("inf")):
                self.row.live_releases += 1
                self.row.fail(f"{name} released by pid {pid} while its owner {mine} was alive")
        per = sorted(calls.values()) or [0]
        self.row.notes.append(
            f"soak: {len(created)} witness resources created (2 per fixture; {self.row.trials} fixtures started), "
            f"{len(calls)} released, release calls per resource: mean {sum(per) / len(per):.3f}, "
            f"max {per[-1]}; release calls by the owner {by['owner']}, by the two sweepers "
            f"{by['sweeper']}, by other workers' startup sweeps {by['startup sweep']}; workers also "
            f"reported {sum(n for b, n in self.acquired.items() if b != 'torture_file')} sql and sandbox "
            f"resources acquired ({', '.join(f'{b} {n}' for b, n in sorted(self.acquired.items()))})")

    def close(self) -> None:
        for child in self.workers + self.sweepers:
            if child.proc.poll() is None:
                child.proc.kill()
                child.finish(30)
        self.sandbox.close()


def _read_diary(path: str) -> Tuple[List[Tuple[str, int, float]], List[Tuple[str, int, float]]]:
    """(creates, releases) of the witness provider, as (name, pid, time)."""
    created, released = [], []
    if os.path.exists(path):
        with open(path) as diary:
            for line in diary:
                event = json.loads(line)
                entry = (event["name"], event["pid"], event["t"])
                (created if event["event"] == "create" else released).append(entry)
    return created, released


def soak(root: str, rng: random.Random, seconds: float, workers: int = 8) -> Row:
    """Run the soak for ``seconds`` of random kills; the row counts what it proves."""
    run = _Soak(root, rng, workers)
    try:
        run.run(seconds)
        run.stop()
        run.final_sweep()
        run.judge_diary()
    finally:
        run.close()
    return run.row
