"""Random kills against the real server: 8 workers, 2 sweepers acting as two machines.

Workers run fixtures round after round on the fleet registry; the test
SIGKILLs some of them at random moments and starts new ones; two sweeper
processes sweep in a loop all along. At the end: 0 survivors at the provider
(the test backend's files), 0 releases under a live run (every worker checks
its own resources still exist before it releases them), 0 sweeper exceptions.
``TAOS_FLEET_SOAK_KILLS`` sets how many kills (default 12).
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys

from tests._support import REPO, child_env, reap
from tests.test_postgres_store import FleetTestCase, wait_until

WORKER = r"""
import asyncio, os, random, sys
import tests._backends
from taos_persona import PersonaFixture

async def main():
    while True:
        async with PersonaFixture("soak_sam", sweep=random.random() < 0.3) as fixture:
            values = [await fixture.acquire("file") for _ in range(random.randint(1, 4))]
            print("holding", len(values), flush=True)
            await asyncio.sleep(random.uniform(0.0, 0.4))
            gone = [v for v in values if not os.path.exists(os.path.join(os.environ["TAOS_TEST_FILES"], v))]
            if gone:
                print("STOLEN", gone, flush=True)

asyncio.run(main())
"""

SWEEPER = r"""
import asyncio, os, sys, traceback
import tests._backends
from taos_persona.stores.pgsweep import sweep_url

while not os.path.exists(sys.argv[1]):
    try:
        report = asyncio.run(sweep_url(os.environ["TAOS_PERSONA_REGISTRY"]))
        for problem in report.problems:
            print("PROBLEM", problem, flush=True)
    except BaseException:
        print("EXC", traceback.format_exc().replace("\n", " | "), flush=True)
print("done", flush=True)
"""


class SoakTest(FleetTestCase):
    def spawn(self, code: str, *args: str) -> subprocess.Popen:
        env = child_env(**{"TAOS_PERSONA_REGISTRY": self.url, "TAOS_TEST_FILES": self.files_dir,
                           "TAOS_PERSONA_LEASE": "1", "TAOS_PERSONA_HEARTBEAT": "0.2"})
        proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=REPO, env=env)
        self.addCleanup(reap, proc)
        return proc

    def test_random_kills_leave_nothing_and_touch_no_live_run(self) -> None:
        rng = random.Random(int(os.environ.get("TAOS_FLEET_SOAK_SEED", "11")))
        stop = os.path.join(self.tmp, "stop")
        sweepers = [self.spawn(SWEEPER, stop) for _ in range(2)]
        workers = [self.spawn(WORKER) for _ in range(8)]
        finished = []
        for _ in range(int(os.environ.get("TAOS_FLEET_SOAK_KILLS", "12"))):
            index = rng.randrange(len(workers))
            victim = workers[index]
            victim.stdout.readline()  # mid-run: it holds something right now
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            finished.append(victim)
            workers[index] = self.spawn(WORKER)
        for worker in workers:  # the survivors end the soak with a SIGTERM: an orderly release
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
            finished.append(worker)
        self.wait_lease_out()
        with open(stop, "w"):
            pass
        outputs = [sweeper.communicate(timeout=120)[0] for sweeper in sweepers]
        final = self.sweep_cli()
        self.assertEqual(final.returncode, 0, final.stdout + final.stderr)
        self.assertEqual(self.survivors(), [])
        logs = [proc.stdout.read() for proc in finished if proc.stdout and not proc.stdout.closed]
        self.assertFalse([line for log in logs for line in log.splitlines() if line.startswith("STOLEN")])
        errors = [proc.stderr.read() for proc in finished if proc.stderr and not proc.stderr.closed]
        self.assertFalse([text for text in errors if "Traceback" in text or "Error" in text], errors)
        self.assertFalse([line for out in outputs for line in out.splitlines() if line.startswith(("EXC", "PROBLEM"))])
        wait_until(lambda: self.sql("SELECT count(*) FROM taos_persona_runs WHERE swept_at IS NULL") == "0",
                   what="no run left on record")
