"""``make demo`` as a user runs it: examples/demo.py in a subprocess, judged by its status and output."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

from tests._support import REPO, needs_aiohttp, posix_only, run_files

DEMO = os.path.join(REPO, "examples", "demo.py")


@needs_aiohttp
@posix_only
class DemoTest(unittest.TestCase):
    """The demo kills a persona test, shows its orphans, sweeps them, and finds no survivor."""

    def run_demo(self, work: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TAOS_PERSONA_")}
        return subprocess.run([sys.executable, DEMO, "--work-dir", work], capture_output=True, text=True,
                              env=env, cwd=REPO, timeout=60)

    def test_demo_shows_orphans_then_no_survivors(self) -> None:
        work = tempfile.mkdtemp(prefix="taos-demo-test-")
        self.addCleanup(shutil.rmtree, work, True)
        done = self.run_demo(work)
        out = done.stdout
        self.assertEqual(done.returncode, 0, out + done.stderr)
        self.assertIn("examples/test_signup.py passed", out)
        self.assertIn("orphans in the sandbox: alive mailtm=1 sms_activate=1 (total 2)", out)
        self.assertRegex(out, r"#1 mailtm +held .*@")
        self.assertRegex(out, r"#2 sms_activate +held ")
        self.assertRegex(out, r"\| .* sms_activate +held +released")
        self.assertIn("after the sweep: sandbox alive nothing (total 0), registry entries none", out)
        self.assertTrue(out.rstrip().endswith("0 survivors"), out)
        self.assertLess(out.index("orphans in the sandbox"), out.index("after the sweep"))
        self.assertEqual(run_files(os.path.join(work, "registry")), [])

    def test_refuses_to_clear_a_directory_it_did_not_make(self) -> None:
        work = tempfile.mkdtemp(prefix="taos-demo-test-")
        self.addCleanup(shutil.rmtree, work, True)
        keep = os.path.join(work, "precious.txt")
        open(keep, "w").close()
        done = self.run_demo(work)
        self.assertEqual(done.returncode, 1, done.stdout + done.stderr)
        self.assertIn("was not made by the demo", done.stdout)
        self.assertTrue(os.path.exists(keep))


if __name__ == "__main__":
    unittest.main()
