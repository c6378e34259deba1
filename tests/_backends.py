"""Test backends: a fake provider whose resources are files in a directory.

A survivor is a file that still exists, so tests count real external state,
not our bookkeeping. Knobs (environment, so a child process and the sweep
read the same): TAOS_TEST_RELEASE_DELAY (seconds per release),
TAOS_TEST_FAIL_RELEASE (a path: while it exists, releases fail),
TAOS_TEST_LEAK_VAR (that failure message then carelessly quotes this variable's value),
TAOS_TEST_RELEASE_LOG (a file each release appends its resource name to).
"""
from __future__ import annotations

import asyncio
import os
from typing import Any, Dict, Optional

from taos_persona.backends import Backend, Lease, register
from taos_persona.errors import RetryableProviderError
from taos_persona.naming import Persona


@register("file")
class FileBackend(Backend):
    """Creates ``<directory>/<name>``; releases by deleting it; recovers by looking for it."""

    def plan(self, persona: Persona, *, directory: Optional[str] = None, delay: float = 0.0) -> Dict[str, Any]:
        directory = os.path.abspath(directory or os.environ["TAOS_TEST_FILES"])
        return {"path": os.path.join(directory, persona.unique_name()), "delay": delay}

    async def acquire(self, persona: Persona, *, path: str, delay: float = 0.0) -> Lease:
        await asyncio.sleep(delay)
        with open(path, "x") as handle:
            handle.write(persona.run_id)
        return Lease(os.path.basename(path), {"path": path})

    async def release(self, token: Dict[str, Any]) -> None:
        await asyncio.sleep(float(os.environ.get("TAOS_TEST_RELEASE_DELAY", "0")))
        failing = os.environ.get("TAOS_TEST_FAIL_RELEASE")
        if failing and os.path.exists(failing):
            leak = os.environ.get(os.environ.get("TAOS_TEST_LEAK_VAR", ""), "")  # a careless backend
            raise RetryableProviderError(f"injected release failure for {os.path.basename(token['path'])} {leak}")
        try:
            os.unlink(token["path"])
        except FileNotFoundError:
            pass  # already gone is success
        log = os.environ.get("TAOS_TEST_RELEASE_LOG")
        if log:
            with open(log, "a") as handle:
                handle.write(os.path.basename(token["path"]) + "\n")

    async def recover(self, planned: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        return {"path": planned["path"]} if os.path.exists(planned["path"]) else None


@register("file_norecover")
class FileNoRecoverBackend(FileBackend):
    """The same provider, but a backend that cannot look up what a crash created."""

    recover = Backend.recover  # type: ignore[assignment]


@register("file_expiring")
class FileExpiringBackend(FileNoRecoverBackend):
    """Cannot recover, but its provider ends every resource within a second (max_lifetime)."""

    max_lifetime = 1.0


@register("file_cancelling")
class FileCancellingBackend(FileBackend):
    """A buggy backend: while the path in TAOS_TEST_CANCEL_RELEASE exists, its release raises
    ``asyncio.CancelledError`` on its own (nobody cancelled anything)."""

    async def release(self, token: Dict[str, Any]) -> None:
        trigger = os.environ.get("TAOS_TEST_CANCEL_RELEASE")
        if trigger and os.path.exists(trigger):
            raise asyncio.CancelledError("a buggy backend's release")
        await super().release(token)
