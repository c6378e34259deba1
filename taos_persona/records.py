"""The content of a registry file: one run, and the resources it still holds.

A resource goes ``intent`` (written before the provider call) -> ``held``
(its release token recorded) -> released (dropped from the file). The file
keeps only what is still alive, so its size, and the cost of rewriting it,
follows the live resources, not the run's history.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from . import liveness
from .errors import RegistryError
from .naming import validate_persona_name, validate_run_id

__all__ = ["SCHEMA", "INTENT", "HELD", "ResourceRecord", "RunRecord", "CorruptRecordError",
           "FutureSchemaError"]

SCHEMA = 1
INTENT = "intent"
HELD = "held"
_STATES = (INTENT, HELD)


class CorruptRecordError(RegistryError):
    """A registry file that is not a run record we can read: it goes to quarantine."""


class FutureSchemaError(RegistryError):
    """A run record written by a newer taos-persona: left in place for that version."""


def _need(data: Dict[str, Any], key: str, kind: Any, *, optional: bool = False) -> Any:
    """``data[key]`` if it has the JSON type ``kind``, else a CorruptRecordError naming it."""
    value = data.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise CorruptRecordError(f"field {key!r} is missing or not of type {getattr(kind, '__name__', kind)}")
    return value


def _seconds(data: Dict[str, Any], key: str) -> float:
    """A finite timestamp field; a 400-digit integer or ``Infinity`` is corrupt, not a crash."""
    value = _need(data, key, (int, float))
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds):
        raise CorruptRecordError(f"field {key!r} is not a finite timestamp")
    return seconds


@dataclass
class ResourceRecord:
    """One resource of a run, as the registry stores it."""

    seq: int
    backend: str
    backend_path: str
    state: str
    planned: Dict[str, Any] = field(repr=False)  # may hold a persona's credential (kind 6)
    token: Optional[Dict[str, Any]] = field(default=None, repr=False)
    parent: Optional[int] = None
    created: float = field(default_factory=time.time)
    attempts: int = 0
    last_error: Optional[str] = None
    deadline: Optional[float] = None
    """For an intent: the last moment (epoch seconds) a create request of it could still land."""
    _encoded: Optional[bytes] = field(default=None, init=False, repr=False, compare=False)

    def __setattr__(self, name: str, value: Any) -> None:
        """Any change forgets the cached encoding (``planned`` and ``token`` are replaced, never
        edited in place)."""
        object.__setattr__(self, name, value)
        if name != "_encoded":
            object.__setattr__(self, "_encoded", None)

    def encoded(self) -> bytes:
        """This record as compact JSON, encoded once and kept until the record changes.

        A run file is rewritten whole on every change; re-encoding only what changed
        keeps that rewrite from going quadratic when a run holds many resources.
        """
        if self._encoded is None:
            self._encoded = json.dumps(self.to_json(), separators=(",", ":"), sort_keys=True).encode()
        return self._encoded

    def to_json(self) -> Dict[str, Any]:
        data: Dict[str, Any] = {"seq": self.seq, "backend": self.backend, "path": self.backend_path,
                                "state": self.state, "planned": self.planned, "created": self.created}
        for key in ("token", "parent", "last_error", "deadline"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        if self.attempts:
            data["attempts"] = self.attempts
        return data

    @classmethod
    def from_json(cls, data: Any) -> "ResourceRecord":
        if not isinstance(data, dict):
            raise CorruptRecordError("a resource entry is not an object")
        state = _need(data, "state", str)
        if state not in _STATES:
            raise CorruptRecordError(f"resource state {state!r} is not one of {_STATES}")
        token = _need(data, "token", dict, optional=True)
        if state == HELD and token is None:
            raise CorruptRecordError("a held resource has no token")
        return cls(seq=_need(data, "seq", int), backend=_need(data, "backend", str),
                   backend_path=_need(data, "path", str), state=state,
                   planned=_need(data, "planned", dict), token=token,
                   parent=_need(data, "parent", int, optional=True),
                   created=_seconds(data, "created"),
                   attempts=_need(data, "attempts", int, optional=True) or 0,
                   last_error=_need(data, "last_error", str, optional=True),
                   deadline=_seconds(data, "deadline") if data.get("deadline") is not None else None)


@dataclass
class RunRecord:
    """One fixture lifetime: who owns it, and what it still holds, by sequence number.

    ``machine`` and ``proc_start`` are the owner's witness (see :mod:`.liveness`):
    by default this machine and this process, as the owner writes its record.
    ``disowned`` says the owner finished with resources left: only its lock,
    not its still-running process, speaks for it from then on.
    """

    run_id: str
    persona: str
    host: str
    pid: int
    started: float = field(default_factory=time.time)
    updated: float = 0.0
    next_seq: int = 1
    released: int = 0
    resources: Dict[int, ResourceRecord] = field(default_factory=dict)
    machine: Optional[str] = field(default_factory=liveness.machine_id)
    proc_start: Optional[str] = field(default_factory=liveness.own_start)
    disowned: bool = False

    def witness(self) -> "liveness.Verdict":
        """What the owner's pid and start time say of it, on this machine."""
        if self.disowned:
            return liveness.Verdict.UNKNOWN
        return liveness.judge(self.machine, self.pid, self.proc_start)

    def add_intent(self, backend: str, backend_path: str, planned: Dict[str, Any],
                   parent: Optional[int] = None) -> ResourceRecord:
        record = ResourceRecord(self.next_seq, backend, backend_path, INTENT, planned, parent=parent)
        self.resources[record.seq] = record
        self.next_seq += 1
        return record

    def drop(self, seq: int) -> None:
        """Forget a released (or never created) resource."""
        if self.resources.pop(seq, None) is not None:
            self.released += 1

    def live(self) -> List[ResourceRecord]:
        return list(self.resources.values())

    def to_bytes(self) -> bytes:
        self.updated = time.time()
        head = {"schema": SCHEMA, "run_id": self.run_id, "persona": self.persona, "host": self.host,
                "pid": self.pid, "started": self.started, "updated": self.updated,
                "next_seq": self.next_seq, "released": self.released, "machine": self.machine,
                "proc_start": self.proc_start}
        if self.disowned:
            head["disowned"] = True
        encoded = json.dumps(head, separators=(",", ":"), sort_keys=True).encode()
        resources = b",".join(record.encoded() for record in self.resources.values())
        return b"".join((encoded[:-1], b',"resources":[', resources, b"]}"))

    @classmethod
    def from_bytes(cls, raw: bytes) -> "RunRecord":
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # deep nesting: RecursionError
            raise CorruptRecordError(f"not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise CorruptRecordError("the document is not a JSON object")
        schema = _need(data, "schema", int)
        if schema > SCHEMA:
            raise FutureSchemaError(f"schema {schema} is newer than this taos-persona's {SCHEMA}; "
                                    "sweep it with the newer version")
        if schema < 1:
            raise CorruptRecordError(f"schema {schema} is not a valid version")
        return cls._from_fields(data)

    @classmethod
    def _from_fields(cls, data: Dict[str, Any]) -> "RunRecord":
        try:
            run_id = validate_run_id(_need(data, "run_id", str))
            persona = validate_persona_name(_need(data, "persona", str))
        except ValueError as exc:
            raise CorruptRecordError(str(exc)) from None
        entries = [ResourceRecord.from_json(item) for item in _need(data, "resources", list)]
        run = cls(run_id=run_id, persona=persona, host=_need(data, "host", str),
                  pid=_need(data, "pid", int), started=_seconds(data, "started"),
                  updated=_seconds(data, "updated"),
                  next_seq=_need(data, "next_seq", int), released=_need(data, "released", int),
                  resources={entry.seq: entry for entry in entries},
                  machine=_need(data, "machine", str, optional=True),
                  proc_start=_need(data, "proc_start", str, optional=True),
                  disowned=bool(_need(data, "disowned", bool, optional=True)))
        if len(run.resources) != len(entries):
            raise CorruptRecordError("two resources share a sequence number")
        return run
