"""The torture's witness provider: the file backend of the tests, with a tamper-proof diary.

``torture_file`` creates and releases files exactly like ``tests._backends.FileBackend``,
and appends one JSON line per create and per release call to
``$TAOS_TORTURE_EVENTS``: the resource name, the run that made it, the pid
doing it and the wall-clock time. The torture judges "released while its run
was alive" from this diary and from its own kill log, never from the
registry that is under test. Lines are written with one ``write`` on an
``O_APPEND`` descriptor, so concurrent processes never interleave them.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Dict

from taos_persona.backends import Lease, register
from taos_persona.naming import Persona
from tests._backends import FileBackend

__all__ = ["TortureFileBackend", "EVENTS_ENV", "log_event"]

EVENTS_ENV = "TAOS_TORTURE_EVENTS"


def log_event(event: str, path: str, run_id: str) -> None:
    """Append one diary line, if a diary is configured."""
    diary = os.environ.get(EVENTS_ENV)
    if not diary:
        return
    line = json.dumps({"event": event, "name": os.path.basename(path), "run": run_id,
                       "pid": os.getpid(), "t": time.time()}) + "\n"
    fd = os.open(diary, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _run_of(path: str) -> str:
    """The run id in a resource name ``taos-<run id>-<hex>`` (lower case, as the prefix is)."""
    name = os.path.basename(path)
    return name[len("taos-"):].rsplit("-", 1)[0]


@register("torture_file")
class TortureFileBackend(FileBackend):
    """A file resource whose every create and release call is written in the diary."""

    async def acquire(self, persona: Persona, **planned: Any) -> Lease:
        lease = await super().acquire(persona, **planned)
        log_event("create", planned["path"], persona.run_id.lower())
        return lease

    async def release(self, token: Dict[str, Any]) -> None:
        log_event("release", str(token.get("path", "")), _run_of(str(token.get("path", ""))))
        await super().release(token)
