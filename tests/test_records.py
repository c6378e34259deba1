"""Run records: the cached per-resource encoding follows every change, and round-trips."""
from __future__ import annotations

import json
import unittest

from taos_persona.records import HELD, INTENT, CorruptRecordError, RunRecord


class EncodingCacheTest(unittest.TestCase):
    def test_every_change_reaches_the_bytes(self) -> None:
        run = RunRecord("20250101T000000-abcdef", "novice_sarah", "host", 42)
        first = run.add_intent("rest_user", "taos_persona.backends.rest:RestUser", {"username": "a"})
        second = run.add_intent("rest_user", "taos_persona.backends.rest:RestUser", {"username": "b"},
                                parent=first.seq)
        before = json.loads(run.to_bytes())
        self.assertEqual([r["state"] for r in before["resources"]], [INTENT, INTENT])
        second.token, second.state = {"id": "u_1", "username": "b"}, HELD
        first.attempts += 1
        first.last_error = "provider said no"
        after = json.loads(run.to_bytes())
        self.assertEqual(after["resources"][1]["state"], HELD)
        self.assertEqual(after["resources"][1]["token"], {"id": "u_1", "username": "b"})
        self.assertEqual((after["resources"][0]["attempts"], after["resources"][0]["last_error"]),
                         (1, "provider said no"))
        run.drop(first.seq)
        self.assertEqual([r["seq"] for r in json.loads(run.to_bytes())["resources"]], [second.seq])

    def test_round_trip(self) -> None:
        run = RunRecord("20250101T000000-abcdef", "novice_sarah", "host", 42)
        record = run.add_intent("file", "tests._backends:FileBackend", {"path": "/x"})
        record.token, record.state, record.attempts = {"path": "/x"}, HELD, 2
        again = RunRecord.from_bytes(run.to_bytes())
        self.assertEqual(again.resources, run.resources)
        self.assertEqual((again.run_id, again.next_seq, again.pid), (run.run_id, run.next_seq, run.pid))
        documents = [json.loads(record.to_bytes()) for record in (again, run)]
        for document in documents:
            document.pop("updated")
        self.assertEqual(documents[0], documents[1])

    def test_records_without_a_witness_still_read(self) -> None:
        document = json.loads(RunRecord("r1", "novice_sarah", "host", 42).to_bytes())
        for key in ("machine", "proc_start"):
            document.pop(key)
        old = RunRecord.from_bytes(json.dumps(document).encode())
        self.assertEqual((old.machine, old.proc_start, old.disowned), (None, None, False))

    def test_witness_fields_are_checked(self) -> None:
        for key, value in (("machine", 7), ("proc_start", ["x"]), ("disowned", "yes")):
            with self.subTest(key=key):
                document = json.loads(RunRecord("r1", "novice_sarah", "host", 42).to_bytes())
                document[key] = value
                with self.assertRaises(CorruptRecordError):
                    RunRecord.from_bytes(json.dumps(document).encode())


if __name__ == "__main__":
    unittest.main()
