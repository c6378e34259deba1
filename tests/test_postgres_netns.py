"""A machine's death and partitions, with network namespaces: the owner runs on its own "machine".

The owner runs in a network namespace of its own, linked to the server by a
veth pair; the test process is the other machine that sweeps. Cutting the
link (``ip link set ... down``) is a real partition: no FIN, no RST gets
through, and only the server's TCP keepalive ends the owner's session. Lease
and keepalive are short here (settings, so the test takes seconds); the
measured times are printed. Skips, saying why, where ``ip netns`` is not
permitted (not root, no CAP_NET_ADMIN).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import unittest
import uuid
from typing import Optional

from tests._postgres import Server, skip_reason
from tests._support import REPO, child_env, kill_and_wait, reap, wait_for_line
from tests.test_postgres_store import CHILD, wait_until

LEASE = 3.0
KEEPALIVE = "1,1,2,3000"  # idle 1 s, probes every 1 s, 2 probes; 3 s of unacknowledged data
KEEPALIVE_BOUND = 4.0     # the longest the server keeps a silent peer's session with those settings


def _netns_reason() -> Optional[str]:
    reason = skip_reason()
    if reason:
        return reason
    if sys.platform != "linux" or shutil.which("ip") is None:
        return "needs Linux and iproute2 (ip netns)"
    probe = f"tp-probe-{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns is not permitted here ({made.stderr.strip()}): run as root with CAP_NET_ADMIN"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


_REASON = _netns_reason()


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@unittest.skipIf(_REASON is not None, _REASON or "")
class MachineDeathTest(unittest.TestCase):
    """One namespace, one veth pair and one server (listening on loopback and the veth) per class."""

    @classmethod
    def setUpClass(cls) -> None:
        tag = uuid.uuid4().hex[:6]
        cls.netns, cls.host_if, cls.ns_if = f"tp-{tag}", f"tpa{tag}", f"tpb{tag}"
        subnet = 16 + int(tag[:2], 16) % 200
        cls.host_ip, cls.ns_ip = f"10.231.{subnet}.1", f"10.231.{subnet}.2"
        ip("netns", "add", cls.netns)
        ip("link", "add", cls.host_if, "type", "veth", "peer", "name", cls.ns_if)
        ip("link", "set", cls.ns_if, "netns", cls.netns)
        ip("addr", "add", f"{cls.host_ip}/30", "dev", cls.host_if)
        ip("link", "set", cls.host_if, "up")
        ip("netns", "exec", cls.netns, "ip", "addr", "add", f"{cls.ns_ip}/30", "dev", cls.ns_if)
        ip("netns", "exec", cls.netns, "ip", "link", "set", cls.ns_if, "up")
        ip("netns", "exec", cls.netns, "ip", "link", "set", "lo", "up")
        cls.server = Server(["127.0.0.1", cls.host_ip], trust=["127.0.0.1/32", f"{cls.ns_ip}/32"]).start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()
        subprocess.run(["ip", "link", "del", cls.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", cls.netns], capture_output=True)

    def setUp(self) -> None:
        import tempfile
        self.tmp = tempfile.mkdtemp(prefix="taos-netns-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.files_dir = os.path.join(self.tmp, "provider")
        os.makedirs(self.files_dir)
        self.database = self.server.create_database()
        self.link(up=True)

    def link(self, *, up: bool) -> None:
        ip("link", "set", self.host_if, "up" if up else "down")

    def survivors(self) -> list:
        return sorted(os.listdir(self.files_dir))

    def sql(self, query: str) -> str:
        return self.server.psql(self.database, query)

    def start_owner(self, count: int, lease: float) -> subprocess.Popen:
        env = child_env(TAOS_PERSONA_REGISTRY=self.server.url(self.database, host=self.host_ip),
                        TAOS_TEST_FILES=self.files_dir, TAOS_PERSONA_LEASE=str(lease), TAOS_PERSONA_HEARTBEAT="0.5",
                        TAOS_PERSONA_PG_KEEPALIVE=KEEPALIVE)
        proc = subprocess.Popen(["ip", "netns", "exec", self.netns, sys.executable, "-c", CHILD, str(count)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=REPO, env=env)
        self.addCleanup(reap, proc)
        return proc

    def sweep(self, lease: float) -> dict:
        """Sweep as the other machine (over loopback); the JSON report."""
        done = subprocess.run([sys.executable, "-m", "taos_persona.sweep", "--registry", self.server.url(self.database),
                               "--json"], capture_output=True, text=True, cwd=REPO, timeout=120,
                              env=child_env(TAOS_TEST_FILES=self.files_dir, TAOS_PERSONA_LEASE=str(lease)))
        self.assertEqual(done.returncode, 0, done.stderr)
        return json.loads(done.stdout)

    def sweep_until_swept(self, lease: float) -> dict:
        reports = []
        wait_until(lambda: bool(reports.append(self.sweep(lease)) or reports[-1]["swept_runs"]), timeout=120,
                   what="a sweep that takes the cut-off run")
        return reports[-1]

    def test_a_dead_machine_is_swept_within_lease_plus_keepalive(self) -> None:
        owner = self.start_owner(3, LEASE)
        run_id = wait_for_line(owner, "ready").split()[1]
        self.link(up=False)
        cut = time.monotonic()
        kill_and_wait(owner)  # its FIN never reaches the server: the link is down
        report = self.sweep_until_swept(LEASE)
        took = time.monotonic() - cut
        print(f"\n[netns] dead machine swept {took:.1f}s after the cut (lease {LEASE:g}s + keepalive "
              f"<= {KEEPALIVE_BOUND:g}s)", file=sys.stderr)
        self.assertEqual(report["swept_runs"], [run_id])
        self.assertEqual(self.survivors(), [])

    def test_a_partition_shorter_than_the_lease_releases_nothing(self) -> None:
        owner = self.start_owner(2, 60.0)
        wait_for_line(owner, "ready")
        self.link(up=False)
        cut = time.monotonic()
        wait_until(lambda: self.sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == "0",
                   what="the server ending the silent owner's session (keepalive)")
        print(f"\n[netns] the server dropped the cut owner's session {time.monotonic() - cut:.1f}s after the cut",
              file=sys.stderr)
        self.assertEqual(self.sweep(60.0)["swept_runs"], [])  # its lock is free, its heartbeat is fresh
        self.link(up=True)
        owner.stdin.write("acquire\n")
        owner.stdin.flush()
        self.assertEqual(wait_for_line(owner, "acquired", timeout=120), "acquired")
        self.assertEqual(len(self.survivors()), 3)
        owner.stdin.close()
        self.assertEqual(owner.wait(120), 0)
        self.assertEqual(self.survivors(), [])

    def test_a_partition_longer_than_the_lease_fences_the_owner(self) -> None:
        owner = self.start_owner(2, LEASE)
        run_id = wait_for_line(owner, "ready").split()[1]
        self.link(up=False)
        self.assertEqual(self.sweep_until_swept(LEASE)["swept_runs"], [run_id])
        self.assertEqual(self.survivors(), [])
        self.link(up=True)
        owner.stdin.write("acquire\n")
        owner.stdin.flush()
        refused = wait_for_line(owner, "refused", timeout=120)
        self.assertIn("FencedError", refused)
        self.assertIn("released under it: file #1", refused)
        owner.stdin.close()
        self.assertEqual(owner.wait(120), 0)
        self.assertIn("was swept by", owner.stderr.read())  # its exit reports what was released under it
        self.assertEqual(self.survivors(), [])
        self.assertEqual(self.sql("SELECT count(*) FROM taos_persona_runs"), "0")


if __name__ == "__main__":
    unittest.main()
