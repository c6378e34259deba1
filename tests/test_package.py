"""The package as a user meets it: a light import, the public names, a read-only home."""
from __future__ import annotations

import importlib.util
import io
import os
import unittest

import taos_persona
from tests._support import REPO, TempDirTestCase, posix_only, run_python


class PackageTest(unittest.TestCase):
    def test_import_pulls_in_no_aiohttp(self) -> None:
        code = "import sys, taos_persona, taos_persona.backends; taos_persona.backends.load_builtin(); " \
               "print(sorted(m for m in sys.modules if m.split('.')[0] in ('aiohttp', 'multidict', 'yarl')))"
        result = run_python(code)
        self.assertEqual((result.returncode, result.stdout.strip()), (0, "[]"), result.stderr)

    def test_public_names_exist_and_py_typed_ships(self) -> None:
        for name in taos_persona.__all__:
            self.assertTrue(hasattr(taos_persona, name), name)
        self.assertTrue(os.path.exists(os.path.join(os.path.dirname(taos_persona.__file__), "py.typed")))
        self.assertTrue(callable(taos_persona.sweep_registry), "taos_persona.sweep_registry is the function")


@unittest.skipUnless(importlib.util.find_spec("docutils"), "needs docutils (the test extra)")
class ReadmeTest(unittest.TestCase):
    def test_readme_is_valid_restructuredtext(self) -> None:
        """Every table, link target and literal block of README.rst parses (PyPI renders it)."""
        import docutils.core  # type: ignore[import-untyped]  # no stubs: a test-only tool

        warnings = io.StringIO()
        with open(os.path.join(REPO, "README.rst"), encoding="utf-8") as handle:
            docutils.core.publish_doctree(handle.read(), settings_overrides={
                "warning_stream": warnings, "report_level": 1, "halt_level": 5})
        self.assertEqual(warnings.getvalue(), "")


@posix_only
class ReadOnlyHomeTest(TempDirTestCase):
    def test_fixture_and_sweep_never_write_to_home(self) -> None:
        home = "/proc/self/no-such-home"  # unwritable, even for root
        child = self.start_child("--count", "2", HOME=home, XDG_CACHE_HOME=home)
        self.assertEqual(child.wait(60), 0, child.stderr.read())
        self.assertEqual(self.survivors(), [])
        self.assertEqual(self.run_sweep_cli(HOME=home).returncode, 0)


if __name__ == "__main__":
    unittest.main()
