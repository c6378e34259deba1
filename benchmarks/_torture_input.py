"""Torture by input: generated garbage in the registry, hostile directories, hostile names.

The generator is a seeded ``random.Random``: the same seed writes the same
files. Each round puts good orphan runs (real resources at the witness
provider) beside every kind of bad entry, then runs the sweep CLI twice. The
sweep must never crash or hang, must sweep every good run, and must move or
report every bad entry: nothing ignored silently.
"""
from __future__ import annotations

import json
import os
import random
import socket
from typing import Any, Callable, Dict, List, Optional, Tuple

from taos_persona.records import HELD, RunRecord
from taos_persona.registry import MAX_RECORD_BYTES, Registry

from ._torture_kit import Row, TrialDirs, count_files, registry_runs, sweep_cli, torture_env

__all__ = ["bad_input", "BAD_NAMES"]

WRONG_VALUES: Tuple[Any, ...] = (None, True, -1, 10 ** 400, 1.5, "x", [], {}, float("nan"))
"""Replacements of the wrong type (or out of range) for every field of a record."""
BAD_NAMES = ("", ".", "..", "../x", "x/..", "a/b", "a\\b", "/abs", "a\x00b", "x" * 65, "-a", "a..b",
             "a b", "\u00e4", "a\nb", "a:b", "nul\x00", "..\\..", "\u2215etc")
"""Persona names and run ids that must be refused before anything touches the disk."""


class _Round:
    """One registry directory full of generated entries, and the good runs among them."""

    def __init__(self, root: str, rng: random.Random) -> None:
        self.rng = rng
        self.dirs = TrialDirs.make(root)
        self.registry = Registry(self.dirs.registry)
        self.registry.ensure()
        self.good: List[str] = []
        self.bad: Dict[str, str] = {}  # entry name -> what it is
        self.serial = 0

    def run_id(self) -> str:
        self.serial += 1
        return f"r{self.serial:05d}-{self.rng.randrange(1 << 32):08x}"

    def record(self, run_id: str, resources: int, real: bool, payload: int = 0) -> RunRecord:
        """A dead run holding ``resources`` witness files (real ones only for good runs)."""
        run = RunRecord(run_id, "tortured", socket.gethostname(), 999999)
        for _ in range(resources):
            path = os.path.join(self.dirs.files, f"{run_id}-{run.next_seq}")
            if real:
                open(path, "w").close()
            record = run.add_intent("file", "tests._backends:FileBackend", {"path": path, "pad": "p" * payload})
            record.token, record.state = {"path": path}, HELD
        return run

    def put(self, name: str, data: bytes, what: str) -> None:
        fd = os.open(os.path.join(self.dirs.registry, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        self.bad[name] = what

    def add_good(self, payload: int = 0) -> str:
        run_id = self.run_id()
        self.registry.write(self.record(run_id, 2, real=True, payload=payload))
        self.good.append(run_id)
        return run_id

    def base_doc(self, run_id: str) -> Dict[str, Any]:
        return json.loads(self.record(run_id, 2, real=False).to_bytes().decode())


def _random_bytes(rnd: _Round, count: int) -> None:
    for _ in range(count):
        size = rnd.rng.choice((0, 1, 2, 17, 300, 3000))
        rnd.put(f"{rnd.run_id()}.json", bytes(rnd.rng.randrange(256) for _ in range(size)), "random bytes")


def _truncations(rnd: _Round, every: bool) -> None:
    raw = json.dumps(rnd.base_doc("truncme")).encode()
    offsets = range(len(raw)) if every else sorted(rnd.rng.sample(range(len(raw)), 40))
    for offset in offsets:
        run_id = rnd.run_id()
        rnd.put(f"{run_id}.json", raw[:offset].replace(b"truncme", run_id.encode()[:7]), f"truncated at {offset}")


def _mutations(rnd: _Round) -> None:
    """Every field of the run and of a resource: missing, then each wrong value."""
    keys = list(rnd.base_doc("x"))
    resource_keys = list(rnd.base_doc("x")["resources"][0])
    for key, inner in [(k, False) for k in keys] + [(k, True) for k in resource_keys]:
        for value in (_MISSING,) + WRONG_VALUES:
            run_id = rnd.run_id()
            doc = rnd.base_doc(run_id)
            target = doc["resources"][0] if inner else doc
            if value is _MISSING:
                target.pop(key)
            else:
                target[key] = value
            where = f"resources[0].{key}" if inner else key
            rnd.put(f"{run_id}.json", json.dumps(doc).encode(), f"{where} = {value!r:.20}")


_MISSING = object()


def _structural(rnd: _Round) -> None:
    """Documents that parse as JSON but not as a run, or barely: the corner cases."""
    def doc(change: Callable[[Dict[str, Any]], None], encoding: str = "utf-8", prefix: bytes = b"") -> None:
        run_id = rnd.run_id()
        data = rnd.base_doc(run_id)
        change(data)
        rnd.put(f"{run_id}.json", prefix + json.dumps(data).encode(encoding), change.__doc__ or "")

    def cycle(d: Dict[str, Any]) -> None:
        """parents form a cycle"""
        d["resources"][0]["parent"], d["resources"][1]["parent"] = 2, 1

    def self_parent(d: Dict[str, Any]) -> None:
        """a resource is its own parent"""
        d["resources"][0]["parent"] = d["resources"][0]["seq"]

    def duplicate_seq(d: Dict[str, Any]) -> None:
        """two resources share a seq"""
        d["resources"][1]["seq"] = d["resources"][0]["seq"]

    def unknown_backend(d: Dict[str, Any]) -> None:
        """a backend nobody registered"""
        d["resources"][0].update(backend="no_such_backend", path="no_such_module:Nothing")

    def evil_path(d: Dict[str, Any]) -> None:
        """a backend path that names a function"""
        d["resources"][0]["path"] = "os:system"

    def other_run(d: Dict[str, Any]) -> None:
        """run_id escaping the directory"""
        d["run_id"] = "../../escape"

    def future(d: Dict[str, Any]) -> None:
        """a newer schema"""
        d["schema"] = 99

    def extra(d: Dict[str, Any]) -> None:
        """unknown extra fields"""
        d["surprise"] = {"nested": [1, 2, 3]}

    for change in (cycle, self_parent, duplicate_seq, unknown_backend, evil_path, other_run, future, extra):
        doc(change)
    doc(extra, prefix=b"\xef\xbb\xbf")
    doc(extra, encoding="utf-16")
    rnd.put(f"{rnd.run_id()}.json", b"[" * 100000 + b"]" * 100000, "nested 100000 deep")
    rnd.put(f"{rnd.run_id()}.json", b'{"schema": 1e999, "x": NaN}', "Infinity and NaN")
    rnd.put(f"{rnd.run_id()}.json", b'{"schema":1,"run_id":"a\\u0000b"}', "NUL in the run id")


def _filesystem(rnd: _Round, quarantine_blocked: bool) -> None:
    """Entries that are not regular files, or are too big, or point elsewhere."""
    reg = rnd.dirs.registry
    outside = os.path.join(rnd.dirs.root, "outside.json")
    with open(outside, "w") as handle:
        handle.write("precious")

    def special(name: str, what: str, make: Callable[[str], None]) -> None:
        make(os.path.join(reg, name))
        rnd.bad[name] = what

    special(f"{rnd.run_id()}.json", "symlink to a file outside", lambda p: os.symlink(outside, p))
    special(f"{rnd.run_id()}.json", "symlink to /dev/zero", lambda p: os.symlink("/dev/zero", p))
    special(f"{rnd.run_id()}.json", "dangling symlink", lambda p: os.symlink(p + ".nowhere", p))
    special(f"{rnd.run_id()}.json", "a FIFO", os.mkfifo)
    special(f"{rnd.run_id()}.json", "a directory", os.mkdir)
    special(f"{rnd.run_id()}.json", "a unix socket", _socket_file)
    special(f"{rnd.run_id()}.json", "sparse, over the size limit",
            lambda p: _sparse(p, MAX_RECORD_BYTES + 1))
    special(f"{rnd.run_id()}.lock", "a lone lock that is a directory", os.mkdir)
    special(f"{rnd.run_id()}.lock", "a lone lock that is a FIFO", os.mkfifo)
    special(f".{rnd.run_id()}.json.dead.tmp", "a lone temp file", lambda p: _write(p, b"{half"))
    special("notes.txt", "a foreign file", lambda p: _write(p, b"hello"))
    special("-x.json", "a name that is no run id", lambda p: _write(p, b"{}"))
    rnd.add_good(payload=MAX_RECORD_BYTES // 3)  # a large but valid record, within the limit
    for what, make in (("directory", os.mkdir), ("symlink", lambda p: os.symlink(outside, p))):
        good = rnd.add_good()
        special(f"{good}.lock", f"the lock of a good run is a {what}", make)
        if quarantine_blocked:  # the bad lock cannot be moved aside, so the run cannot be locked:
            rnd.good.remove(good)  # it must be reported, not swept
            rnd.bad[f"{good}.json"] = f"a run whose lock is a {what} that cannot be quarantined"
    if quarantine_blocked:
        special("quarantine", "quarantine is a file", lambda p: _write(p, b"in the way"))


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)


def _sparse(path: str, size: int) -> None:
    with open(path, "wb") as handle:
        handle.truncate(size)


def _socket_file(path: str) -> None:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.close()


def _check_round(rnd: _Round, row: Row, report: Optional[Dict[str, Any]], label: str) -> None:
    """Good runs swept; every bad entry moved or reported; files outside untouched."""
    reported = json.dumps(report or {})
    left = set(os.listdir(rnd.dirs.registry))
    for run_id in rnd.good:
        if f"{run_id}.json" in left:
            row.fail(f"{label}: good run {run_id} was not swept")
    alive = sum(1 for name in os.listdir(rnd.dirs.files) if any(name.startswith(g) for g in rnd.good))
    row.survivors += alive
    if alive:
        row.fail(f"{label}: {alive} resources of good runs survived")
    silent = [f"{name} ({what})" for name, what in rnd.bad.items()
              if name in left and name != "quarantine" and name not in reported
              and name.split(".")[0] not in reported]
    if silent:
        row.fail(f"{label}: left in place without a word: {silent[:8]}")
    with open(os.path.join(rnd.dirs.root, "outside.json")) as handle:
        if handle.read() != "precious":
            row.fail(f"{label}: a file outside the registry was changed through a symlink")


def _bad_input_round(root: str, rng: random.Random, number: int, every: bool) -> Row:
    rnd = _Round(root, rng)
    for _ in range(3):
        rnd.add_good()
    _random_bytes(rnd, 12)
    _truncations(rnd, every)
    _mutations(rnd)
    _structural(rnd)
    _filesystem(rnd, quarantine_blocked=number % 3 == 2)
    row = Row("bad registry input", trials=len(rnd.bad) + len(rnd.good), faults=len(rnd.bad))
    env = torture_env()
    for attempt in ("first", "second"):
        status, report, err = sweep_cli(rnd.dirs.registry, env, rnd.dirs.root, timeout=180)
        label = f"round {number}, {attempt} sweep"
        if status not in (0, 1) or report is None or "Traceback" in err:
            row.sweeper_exceptions += 1
            row.fail(f"{label}: status {status}, stderr {err[-600:]}")
        _check_round(rnd, row, report, label)
    quarantined = count_files(os.path.join(rnd.dirs.registry, "quarantine"))
    row.notes.append(f"bad input round {number}: {len(rnd.bad)} bad entries beside {len(rnd.good)} good "
                     f"runs; {quarantined} quarantined, {len(registry_runs(rnd.dirs.registry))} "
                     "left and reported")
    return row


def bad_input(root: str, rng: random.Random, rounds: int, every: bool) -> Row:
    """``rounds`` generated registries; ``every``: truncate at every offset, not a sample."""
    row = Row("bad registry input")
    for number in range(rounds):
        row.merge(_bad_input_round(root, random.Random(rng.random()), number, every))
    return row
