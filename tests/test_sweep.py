"""The sweep: bad input never stops it, other hosts wait their turn, the CLI says what it did."""
from __future__ import annotations

import asyncio
import json
import os
import time
import unittest
from typing import Any, Callable, Dict, List
from unittest import mock

import tests._backends  # noqa: F401  registers the file backends
from taos_persona import PersonaFixture, fixture as fixture_module, sweep_registry as sweep
from taos_persona.backends.mailtm import MailTmBackend
from taos_persona.errors import NotARegistryError, RegistryError, ResourceLeftWarning
from taos_persona.naming import Persona, new_run_id
from taos_persona.outcomes import Result
from taos_persona.records import HELD, RunRecord
from taos_persona.registry import Registry, default_registry_dir
from taos_persona.sweep_report import Status
from tests._support import TempDirTestCase, posix_only, read_bytes, read_text, run_python, wait_for_line


class OrphanFactory(TempDirTestCase):
    """Writes the registry file a dead run would leave: held file resources, no live lock."""

    def make_orphan(self, resources: int = 2, host: str = "", age: float = 0.0) -> str:
        import socket
        registry = Registry(self.registry_dir)
        registry.ensure()
        run = RunRecord(new_run_id(), "novice_sarah", host or socket.gethostname(), 999999)
        if host:  # another machine: no machine id of ours, no witness we could check
            run.machine, run.proc_start = f"machine-of-{host}", None
        for _ in range(resources):
            path = os.path.join(self.files_dir, f"res-{run.run_id}-{run.next_seq}")
            open(path, "w").close()
            record = run.add_intent("file", "tests._backends:FileBackend", {"path": path})
            record.token, record.state = {"path": path}, HELD
        registry.write(run)
        if age:
            path = self.edit(run.run_id, lambda data: data.update(updated=time.time() - age))
            os.utime(path, (time.time() - age, time.time() - age))
        return run.run_id

    def edit(self, run_id: str, change: Callable[[Dict[str, Any]], None]) -> str:
        """Pass a run file's JSON document through ``change`` (a tampering, a lying clock)."""
        path = os.path.join(self.registry_dir, f"{run_id}.json")
        data = json.loads(read_text(path))
        change(data)
        with open(path, "w") as handle:
            json.dump(data, handle)
        return path

    def put(self, name: str, content: bytes) -> str:
        path = os.path.join(self.registry_dir, name)
        with open(path, "wb") as handle:
            handle.write(content)
        return path


class BadInputTest(OrphanFactory):
    """Every bad file is quarantined or reported, and the good runs beside it are still swept."""

    def test_corrupt_truncated_files_quarantined_foreign_left_good_runs_swept(self) -> None:
        good = self.make_orphan(3)
        raw = read_bytes(os.path.join(self.registry_dir, f"{good}.json"))
        self.put(f"{new_run_id()}.json", b"{not json")
        self.put(f"{new_run_id()}.json", raw[: len(raw) // 3])
        self.put("notes.txt", b"hello")
        report = sweep(self.registry_dir)
        self.assertEqual(self.survivors(), [], "the good run was swept")
        self.assertEqual(len(report.quarantined), 2)
        self.assertEqual(report.foreign, [{"file": "notes.txt", "note": "not a run file of ours: left alone"}])
        self.assertEqual(self.registry_files(), ["notes.txt", "quarantine"])
        self.assertEqual(len(os.listdir(os.path.join(self.registry_dir, "quarantine"))), 2)
        self.assertEqual(report.exit_status, 1, "two quarantined run records may name live resources")

    def test_future_schema_left_alone_and_reported(self) -> None:
        self.make_orphan(1)
        future = self.put(f"{new_run_id()}.json", json.dumps({"schema": 7}).encode())
        report = sweep(self.registry_dir)
        self.assertTrue(os.path.exists(future), "a newer version's record is not ours to move")
        self.assertEqual(report.exit_status, 1)
        self.assertIn("newer", report.problems[0]["error"])
        self.assertEqual(self.survivors(), [])

    @posix_only
    def test_symlinks_are_quarantined_not_followed(self) -> None:
        self.make_orphan(1)
        outside = os.path.join(self.tmp, "outside.json")
        with open(outside, "w") as handle:
            handle.write("precious")
        os.symlink(outside, os.path.join(self.registry_dir, f"{new_run_id()}.json"))
        report = sweep(self.registry_dir)
        self.assertEqual(read_text(outside), "precious")
        self.assertEqual(len(report.quarantined), 1)
        self.assertEqual(self.survivors(), [])

    @posix_only
    def test_lock_path_that_is_a_directory(self) -> None:
        run_id = self.make_orphan(2)
        os.mkdir(os.path.join(self.registry_dir, f"{run_id}.lock"))
        report = sweep(self.registry_dir)
        self.assertEqual(self.survivors(), [], "the run is still swept")
        self.assertEqual([item["file"] for item in report.quarantined], [f"{run_id}.lock"])

    def test_wrong_field_types_quarantined(self) -> None:
        run_id = self.make_orphan(1)
        self.edit(run_id, lambda data: data["resources"][0].update(seq="one"))
        report = sweep(self.registry_dir)
        self.assertIn("seq", report.quarantined[0]["reason"])


class HostsAndModesTest(OrphanFactory):
    def test_other_host_swept_only_when_old(self) -> None:
        young = self.make_orphan(1, host="elsewhere", age=60)
        old = self.make_orphan(1, host="elsewhere", age=3600)
        report = sweep(self.registry_dir, older_than=30)
        self.assertEqual(report.young_foreign_runs, [young])
        self.assertEqual(report.swept_runs, [old])
        self.assertEqual(len(self.survivors()), 1)

    def test_dry_run_changes_nothing(self) -> None:
        self.make_orphan(2)
        before = sorted(os.listdir(self.registry_dir))
        report = sweep(self.registry_dir, dry_run=True)
        self.assertEqual(len(report.outcomes), 2)
        self.assertEqual(len(self.survivors()), 2)
        self.assertEqual(sorted(os.listdir(self.registry_dir)), before)

    def test_failed_release_kept_with_attempts_then_swept(self) -> None:
        run_id = self.make_orphan(2)
        flag = os.path.join(self.tmp, "fail")
        open(flag, "w").close()
        os.environ["TAOS_TEST_FAIL_RELEASE"] = flag
        self.addCleanup(os.environ.pop, "TAOS_TEST_FAIL_RELEASE")
        report = sweep(self.registry_dir)
        self.assertEqual(report.exit_status, 1)
        data = json.loads(read_text(os.path.join(self.registry_dir, f"{run_id}.json")))
        self.assertEqual([r["attempts"] for r in data["resources"]], [1, 1])
        self.assertIn("injected release failure", data["resources"][0]["last_error"])
        os.unlink(flag)
        self.assertEqual(sweep(self.registry_dir).exit_status, 0)
        self.assertEqual(self.survivors(), [])


class SweepCliTest(OrphanFactory):
    def test_table_json_and_status(self) -> None:
        self.make_orphan(2)
        result = self.run_sweep_cli("--dry-run")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("would release", result.stdout)
        self.assertIn("1 dead run would be swept: 2 resources would be released; 0 would be left; "
                      "0 live runs untouched", result.stdout.splitlines()[-1])
        self.assertEqual(len(self.survivors()), 2)
        result = self.run_sweep_cli("--json")
        self.assertEqual(result.returncode, 0, result.stderr)
        report = json.loads(result.stdout)
        self.assertEqual([r["result"] for r in report["resources"]], ["released", "released"])
        self.assertEqual(self.survivors(), [])

    def test_bad_usage_exits_2(self) -> None:
        for args in (["--older-than", "soon"], ["--concurrency", "0"], ["--bogus"]):
            with self.subTest(args=args):
                result = self.run_sweep_cli(*args)
                self.assertEqual(result.returncode, 2)
                self.assertNotIn("Traceback", result.stderr)
        result = self.run_sweep_cli("--plugin", "no_such_module_here")
        self.assertEqual(result.returncode, 2)
        self.assertIn("no_such_module_here", result.stderr)
        self.assertNotIn("Traceback", result.stderr)

    def test_unloadable_backend_reported_not_fatal(self) -> None:
        run_id = self.make_orphan(1)
        self.edit(run_id, lambda data: data["resources"][0].update(backend="gone", path="no.such.module:Backend"))
        result = self.run_sweep_cli()
        self.assertEqual(result.returncode, 1)
        self.assertIn("--plugin", result.stdout)

    def test_secrets_from_environment_never_printed(self) -> None:
        self.make_orphan(1)
        flag = os.path.join(self.tmp, "fail")
        open(flag, "w").close()
        secret = "sk-test-SECRET-value-123456"
        result = self.run_sweep_cli(TAOS_TEST_FAIL_RELEASE=flag, MAILSAC_API_KEY=secret,
                                    TAOS_TEST_LEAK_VAR="MAILSAC_API_KEY")
        self.assertEqual(result.returncode, 1)
        self.assertIn("injected release failure", result.stdout)
        self.assertIn("***", result.stdout, "the careless backend's message was redacted")
        self.assertNotIn(secret, result.stdout + result.stderr)
        for name in os.listdir(self.registry_dir):
            if name.endswith(".json"):
                self.assertNotIn(secret, read_text(os.path.join(self.registry_dir, name)))


class ForeignClockTest(OrphanFactory):
    """Runs of another host are aged by the file system's clock, never by the host's own."""

    def doctor(self, run_id: str, updated_ago: float, written_ago: float) -> None:
        path = self.edit(run_id, lambda data: data.update(updated=time.time() - updated_ago))
        os.utime(path, (time.time() - written_ago, time.time() - written_ago))

    def test_record_claiming_old_but_freshly_written_is_not_swept(self) -> None:
        run_id = self.make_orphan(1, host="elsewhere")
        self.doctor(run_id, updated_ago=31 * 60, written_ago=1)  # its clock runs 31 minutes behind
        report = sweep(self.registry_dir, older_than=30)
        self.assertEqual(report.young_foreign_runs, [run_id])
        self.assertEqual(len(self.survivors()), 1, "a run written a second ago is never swept")

    def test_record_claiming_fresh_but_written_long_ago_is_swept(self) -> None:
        run_id = self.make_orphan(1, host="elsewhere")
        self.doctor(run_id, updated_ago=-3600, written_ago=31 * 60)  # its clock runs an hour ahead
        report = sweep(self.registry_dir, older_than=30)
        self.assertEqual(report.swept_runs, [run_id])
        self.assertEqual(self.survivors(), [])


    def test_our_machine_id_from_another_boot_is_judged_by_age(self) -> None:
        # A cloned VM keeps the machine id; its runs on a shared directory are not ours to judge.
        run_id = self.make_orphan(1)
        self.edit(run_id, lambda data: data.update(proc_start="another-boot/pid:[1]/123"))
        open(os.path.join(self.registry_dir, f"{run_id}.lock"), "w").close()  # free: flock is per host
        self.assertEqual(sweep(self.registry_dir).young_foreign_runs, [run_id])
        self.assertEqual(len(self.survivors()), 1)
        self.doctor(run_id, updated_ago=0, written_ago=31 * 60)
        self.assertEqual(sweep(self.registry_dir).swept_runs, [run_id])
        self.assertEqual(self.survivors(), [])


class RecordIsDataTest(OrphanFactory):
    """A record names a backend; it never makes the sweep import anything."""

    def test_class_path_is_a_hint_never_imported(self) -> None:
        honest = self.make_orphan(1)
        tampered = self.make_orphan(1)
        self.edit(tampered, lambda data: data["resources"][0].update(path="unittest.__main__:X"))
        code = ("import json, sys, tests._backends\nfrom taos_persona import sweep_registry\n"
                "report = sweep_registry(sys.argv[1])\n"
                "print(json.dumps([report.swept_runs, [[o.run_id, o.result.value] for o in report.outcomes], "
                "report.exit_status, 'unittest.__main__' in sys.modules]))")
        done = run_python(code, self.registry_dir)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        swept, outcomes, status, imported = json.loads(done.stdout.strip().splitlines()[-1])
        self.assertFalse(imported, "the record's class path was imported")
        self.assertEqual(sorted(swept), sorted([honest, tampered]))
        self.assertEqual(sorted(outcomes), sorted([[honest, "released"], [tampered, "kept"]]))
        self.assertEqual(status, 1, "the tampered entry is kept and reported")
        self.assertEqual(len(self.survivors()), 1)

    def test_oversized_record_quarantined_unread_and_counted_left(self) -> None:
        self.make_orphan(1)
        with open(os.path.join(self.registry_dir, f"{new_run_id()}.json"), "wb") as handle:
            handle.truncate(65 << 20)  # sparse: 65 MiB of nothing, as a 65 MiB option once wrote
        result = self.run_sweep_cli()
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertIn("counted as left", result.stdout)
        self.assertEqual(self.survivors(), [])


class TruthfulReportTest(OrphanFactory):
    """One outcome type feeds the table, the JSON and the exit status: a dry run predicts."""

    def orphan_intent(self, backend: str, created_ago: float = 0.0) -> str:
        run_id = self.make_orphan(0)
        path = os.path.join(self.registry_dir, f"{run_id}.json")
        run = RunRecord.from_bytes(read_bytes(path))
        target = os.path.join(self.files_dir, f"intent-{run_id}")
        open(target, "w").close()
        record = run.add_intent(backend, f"tests._backends:{'FileNoRecoverBackend' if backend == 'file_norecover' else 'FileExpiringBackend'}",
                                {"path": target})
        record.created -= created_ago
        Registry(self.registry_dir).write(run)
        return run_id

    def test_a_kept_mailtm_intent_is_named_by_its_planned_address(self) -> None:
        run_id = self.make_orphan(0)
        path = os.path.join(self.registry_dir, f"{run_id}.json")
        run = RunRecord.from_bytes(read_bytes(path))
        planned = MailTmBackend().plan(Persona("novice_sarah", run_id))  # origin: mail.tm itself
        run.add_intent("mailtm", "taos_persona.backends.mailtm:MailTmBackend", planned)
        run.add_intent("mailtm", "taos_persona.backends.mailtm:MailTmBackend", dict(planned, domain="x.test"))
        Registry(self.registry_dir).write(run)
        # the sandbox's loopback URL is another origin: kept without a single request
        swept = self.run_sweep_cli(TAOS_PERSONA_MAILTM_URL="http://127.0.0.1:9")
        self.assertEqual(swept.returncode, 1, swept.stdout + swept.stderr)
        rows = [line for line in swept.stdout.splitlines() if "mailtm" in line and "kept" in line]
        self.assertEqual(len(rows), 2, swept.stdout)
        self.assertIn(f"address={planned['local']}@x.test", rows[0])  # newest first
        self.assertIn(f"address={planned['local']}@?", rows[1])
        self.assertNotIn(planned["password"], swept.stdout)

    def test_dry_run_says_would_keep_for_what_the_real_sweep_keeps(self) -> None:
        self.orphan_intent("file_norecover")
        dry = self.run_sweep_cli("--dry-run", "--json")
        report = json.loads(dry.stdout)
        self.assertEqual([r["result"] for r in report["resources"]], ["would keep"])
        self.assertEqual(dry.returncode, 1, "the real sweep keeps it: exit 1")
        real = self.run_sweep_cli("--json")
        self.assertEqual((real.returncode, [r["result"] for r in json.loads(real.stdout)["resources"]]),
                         (1, ["kept"]))

    def test_dry_run_says_would_keep_for_a_young_intent(self) -> None:
        run_id = self.make_orphan(1)
        run = RunRecord.from_bytes(read_bytes(os.path.join(self.registry_dir, f"{run_id}.json")))
        run.add_intent("file", "tests._backends:FileBackend", {"path": os.path.join(self.files_dir, "in-flight")})
        Registry(self.registry_dir).write(run)
        dry = self.run_sweep_cli("--dry-run", "--json", TAOS_PERSONA_INTENT_GRACE="600")
        self.assertEqual([r["result"] for r in json.loads(dry.stdout)["resources"]], ["would keep", "would release"])
        self.assertEqual(dry.returncode, 1)
        self.assertEqual(len(self.survivors()), 1, "a dry run releases nothing")
        real = self.run_sweep_cli("--json", TAOS_PERSONA_INTENT_GRACE="600")
        self.assertEqual([r["result"] for r in json.loads(real.stdout)["resources"]], ["kept", "released"])
        self.assertEqual(real.returncode, 1)

    def test_summary_counts_expired_and_nothing_created_as_such(self) -> None:
        self.orphan_intent("file_expiring", created_ago=60)
        run_id = self.make_orphan(0)
        path = os.path.join(self.registry_dir, f"{run_id}.json")
        run = RunRecord.from_bytes(read_bytes(path))
        run.add_intent("file", "tests._backends:FileBackend", {"path": os.path.join(self.files_dir, "never")})
        Registry(self.registry_dir).write(run)
        dry = self.run_sweep_cli("--dry-run")
        self.assertIn("1 resource expired at the provider", dry.stdout.splitlines()[-1])
        result = self.run_sweep_cli()
        self.assertEqual(result.returncode, 0, result.stdout)
        summary = result.stdout.splitlines()[-1]
        self.assertIn("2 dead runs swept: 1 resource found never created, 1 resource expired at the provider;",
                      summary)
        self.assertNotIn("released", summary.split(";")[0])

    def test_forget_drops_an_entry_checked_by_hand(self) -> None:
        run_id = self.orphan_intent("file_norecover")
        kept = self.run_sweep_cli("--json")
        self.assertEqual(kept.returncode, 1)
        hint = json.loads(kept.stdout)["resources"][0]["error"]
        self.assertIn(f"python -m taos_persona.sweep --forget {run_id}:1", hint, "the kept entry names its fix")
        result = self.run_sweep_cli("--forget", f"{run_id}:1", "--json")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertEqual([r["result"] for r in json.loads(result.stdout)["resources"]], ["forgotten"])
        self.assertEqual(self.registry_files(), [])
        self.assertEqual(self.run_sweep_cli().returncode, 0)

    def test_forget_refuses_a_live_run(self) -> None:
        child = self.start_child("--count", "1", "--hold", "120", "--no-sweep")
        run_id = wait_for_line(child, "ENTERED").split()[1]
        wait_for_line(child, "HOLDING")
        result = self.run_sweep_cli("--forget", f"{run_id}:1")
        self.assertEqual(result.returncode, 1, result.stdout)
        self.assertIn("not forgotten: the run is live", result.stdout)
        self.assertEqual(len(self.survivors()), 1)
        self.assertIn(f"{run_id}.json", self.registry_files())
        bad = self.run_sweep_cli("--forget", "no-seq")
        self.assertEqual(bad.returncode, 2)

    def test_forget_is_not_combined_with_a_dry_run_or_discovery(self) -> None:
        run_id = self.orphan_intent("file_norecover")
        for extra in ("--dry-run", "--discover"):
            result = self.run_sweep_cli("--forget", f"{run_id}:1", extra)
            self.assertEqual(result.returncode, 2, result.stdout)
            self.assertIn("--forget cannot be combined", result.stderr)
        self.assertIn(f"{run_id}.json", self.registry_files(), "nothing forgotten")


class OneNameOneThingTest(unittest.TestCase):
    def test_function_and_module_have_different_names_after_the_cli_is_imported(self) -> None:
        code = ("import sys, taos_persona.sweep, taos_persona\n"
                "from taos_persona import sweep_registry, sweep\n"
                "print(callable(sweep_registry), sweep is sys.modules['taos_persona.sweep'], "
                "'sweep' in taos_persona.__all__, sweep_registry.__module__)")
        done = run_python(code)
        self.assertEqual(done.stdout.strip(), "True True False taos_persona.sweeper", done.stderr)


if __name__ == "__main__":
    unittest.main()


def _not_a_registry(parent: str) -> str:
    """A 0700 directory that looks like a workspace, not a registry: ``.git``, ``src/``, ``.ssh``, notes."""
    place = os.path.join(parent, "workspace")
    os.mkdir(place, 0o700)
    for folder in (".git", "src", ".ssh"):
        os.mkdir(os.path.join(place, folder))
    with open(os.path.join(place, "notes.txt"), "w") as handle:
        handle.write("mine")
    return place


def _tree(place: str) -> List[str]:
    """Every path below ``place``, relative, sorted: what must not change."""
    return sorted(os.path.relpath(os.path.join(root, name), place)
                  for root, folders, files in os.walk(place) for name in folders + files)


class NeverTouchWhatIsNotOursTest(OrphanFactory):
    """Attack 1: only entries named like our run files are ever moved; other places are refused."""

    def test_a_directory_that_is_no_registry_is_refused_whole(self) -> None:
        place = _not_a_registry(self.tmp)
        before = _tree(place)
        report = sweep(place)
        self.assertEqual(_tree(place), before, "nothing moved")
        self.assertEqual(report.quarantined, [])
        self.assertEqual(report.exit_status, 1)
        self.assertIn(place, report.problems[0]["error"])
        self.assertIn(".taos-registry", report.problems[0]["error"], "the message names the fix")
        result = self.run_sweep_cli("--dir", place)
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertIn("does not look like a taos-persona registry", result.stdout)
        self.assertEqual(_tree(place), before, "nothing moved by the CLI either")

    def test_a_node_project_is_no_registry_though_its_files_end_in_json(self) -> None:
        place = os.path.join(self.tmp, "project")
        os.mkdir(place, 0o700)
        for name in ("package.json", "tsconfig.json"):
            with open(os.path.join(place, name), "w") as handle:
                handle.write("{}")
        before = _tree(place)
        with self.assertRaisesRegex(NotARegistryError, "package.json, tsconfig.json"):
            Registry(place).check_is_registry(adopt=True)
        report = sweep(place)
        self.assertEqual(report.exit_status, 1)
        self.assertIn("does not look like a taos-persona registry", report.problems[0]["error"])
        self.assertEqual(_tree(place), before, "nothing moved, no marker written")

    def test_a_fixture_refuses_a_directory_that_is_no_registry(self) -> None:
        place = _not_a_registry(self.tmp)
        before = _tree(place)

        async def enter() -> None:
            async with PersonaFixture("novice_sarah", registry_dir=place):
                pass

        with self.assertRaises(NotARegistryError) as caught:
            asyncio.run(enter())
        self.assertIn(place, str(caught.exception))
        self.assertEqual(_tree(place), before)

    @posix_only
    def test_foreign_entries_in_a_registry_are_reported_and_left(self) -> None:
        self.make_orphan(2)
        for folder in (".git", "src", ".ssh"):
            os.mkdir(os.path.join(self.registry_dir, folder))
        self.put("notes.txt", b"mine")
        os.symlink(self.files_dir, os.path.join(self.registry_dir, "link"))
        report = sweep(self.registry_dir)
        self.assertEqual(self.survivors(), [], "the dead run beside them is still swept")
        self.assertEqual(report.quarantined, [])
        self.assertEqual(sorted(item["file"] for item in report.foreign), [".git", ".ssh", "link", "notes.txt", "src"])
        self.assertEqual(self.registry_files(), [".git", ".ssh", "link", "notes.txt", "src"])
        self.assertEqual(report.exit_status, 0)

    def test_an_empty_registry_path_is_an_error_never_the_cwd(self) -> None:
        with self.assertRaisesRegex(RegistryError, "registry directory is empty"):
            PersonaFixture("novice_sarah", registry_dir="")
        with self.assertRaisesRegex(RegistryError, "registry directory is empty"):
            Registry("")
        with mock.patch.dict(os.environ, {"TAOS_PERSONA_DIR": ""}):
            self.assertTrue(default_registry_dir().endswith(os.path.join(".taos", "test-fixtures")))
        result = self.run_sweep_cli("--dir", "")
        self.assertEqual(result.returncode, 2)
        self.assertIn("--dir", result.stderr)


class QuarantineIsLeftTest(OrphanFactory):
    """Attack 3: a run record in quarantine/ counts as left in every sweep until an operator deletes it."""

    def test_two_sweeps_after_a_truncated_record_both_exit_1(self) -> None:
        run_id = self.make_orphan(2)
        path = os.path.join(self.registry_dir, f"{run_id}.json")
        os.truncate(path, os.path.getsize(path) // 2)
        first = self.run_sweep_cli()
        self.assertEqual(first.returncode, 1, first.stdout)
        second = self.run_sweep_cli("--json")
        self.assertEqual(second.returncode, 1, second.stdout)
        [left] = json.loads(second.stdout)["left_in_quarantine"]
        self.assertIn(f"{run_id}.json.", left["file"])
        self.assertIn("delete the file", left["fix"])
        third = self.run_sweep_cli()
        self.assertEqual(third.returncode, 1)
        self.assertIn(f"left in quarantine {left['file']}", third.stdout)
        self.assertIn("1 left", third.stdout)
        os.unlink(left["file"])  # the operator checked it by hand
        self.assertEqual(self.run_sweep_cli().returncode, 0)

    def test_a_quarantine_that_is_a_symlink_or_a_file_is_a_problem_never_none_left(self) -> None:
        elsewhere = os.path.join(self.tmp, "elsewhere")
        os.mkdir(elsewhere, 0o700)
        with open(os.path.join(elsewhere, "20260101T000000-0123456789ab.json.20260101T000000-abcdef"), "wb"):
            pass
        Registry(self.registry_dir).ensure()
        quarantine = os.path.join(self.registry_dir, "quarantine")
        for make in (lambda: os.symlink(elsewhere, quarantine), lambda: self.put("quarantine", b"{}")):
            with self.subTest(make=make):
                make()
                self.addCleanup(lambda: os.path.lexists(quarantine) and os.unlink(quarantine))
                with self.assertRaisesRegex(RegistryError, "quarantine.*plain directory"):
                    Registry(self.registry_dir).quarantined_records()
                result = self.run_sweep_cli("--json")
                self.assertEqual(result.returncode, 1, result.stdout)
                problems = json.loads(result.stdout)["problems"]
                self.assertTrue(any("quarantine" in problem["file"] for problem in problems), problems)
                os.unlink(quarantine)

    def test_a_startup_sweep_that_finds_one_warns(self) -> None:
        run_id = self.make_orphan(1)
        self.put(f"{run_id}.json", b"{truncated")

        async def enter() -> None:
            async with PersonaFixture("novice_sarah", registry_dir=self.registry_dir):
                pass

        with self.assertWarnsRegex(ResourceLeftWarning, "quarantine"):
            asyncio.run(enter())  # this startup sweep quarantines it
        fixture_module._swept_dirs.discard(os.path.abspath(self.registry_dir))  # as a new process would
        with self.assertWarnsRegex(ResourceLeftWarning, f"{run_id}.json.* is in quarantine"):
            asyncio.run(enter())  # the next one finds it there


class DryRunAgreesTest(OrphanFactory):
    """Attack 10: the dry run judges, quarantines and releases through the real sweep's own path."""

    @posix_only
    def test_lock_replaced_by_a_symlink(self) -> None:
        run_id = self.make_orphan(2)
        target = os.path.join(self.tmp, "elsewhere.lock")
        open(target, "w").close()
        os.symlink(target, os.path.join(self.registry_dir, f"{run_id}.lock"))
        dry = sweep(self.registry_dir, dry_run=True)
        self.assertEqual(len(self.survivors()), 2, "a dry run releases nothing")
        real = sweep(self.registry_dir)
        self.assertEqual(self.survivors(), [])
        self.assertEqual([(r.run_id, r.status) for r in dry.runs], [(run_id, Status.SWEPT)])
        self.assertEqual([(r.run_id, r.status) for r in dry.runs], [(r.run_id, r.status) for r in real.runs])
        self.assertEqual(dry.counts(), {Result.WOULD_RELEASE: 2})
        self.assertEqual(real.counts(), {Result.RELEASED: 2})
        self.assertEqual([i["file"] for i in dry.quarantined], [i["file"] for i in real.quarantined])
        self.assertTrue(os.path.exists(target), "the symlink's target is never touched")

    def test_dry_run_says_would_quarantine(self) -> None:
        Registry(self.registry_dir).ensure()
        self.put(f"{new_run_id()}.json", b"{not json")
        result = self.run_sweep_cli("--dry-run")
        self.assertIn("would quarantine", result.stdout)
        self.assertEqual(result.returncode, 1)
