"""``import taos_persona`` is cheap: public names load their submodule on first use (PEP 562)."""
from __future__ import annotations

import subprocess
import sys
import unittest

from tests._support import REPO, child_env


def run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                            env=child_env(), timeout=60)
    if result.returncode != 0:
        raise AssertionError(result.stderr)
    return result.stdout.strip()


class LazyImportTest(unittest.TestCase):
    def test_import_loads_no_submodule_but_errors(self) -> None:
        loaded = run_python("import sys, taos_persona; "
                            "print(sorted(m for m in sys.modules if m.startswith(('taos_persona', 'asyncio'))))")
        self.assertEqual(loaded, "['taos_persona', 'taos_persona.errors']")

    def test_names_resolve_on_first_use_and_stay(self) -> None:
        out = run_python("import sys, taos_persona as t; f = t.PersonaFixture; "
                         "print(f.__module__, 'PersonaFixture' in vars(t), 'taos_persona.fixture' in sys.modules, "
                         "'taos_persona.testcase' in sys.modules)")
        self.assertEqual(out, "taos_persona.fixture True True False")

    def test_from_import_and_dir_and_unknown_names(self) -> None:
        out = run_python("import taos_persona as t; from taos_persona import sweep_registry, PersonaTestCase; "
                         "print(callable(sweep_registry), set(t.__all__) <= set(dir(t)), hasattr(t, 'no_such_name'))")
        self.assertEqual(out, "True True False")


if __name__ == "__main__":
    unittest.main()
