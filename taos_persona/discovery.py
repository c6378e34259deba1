"""Provider-side discovery: release what carries our name prefix when no registry knows it.

The last layer of the guarantee (issue 10). A CI runner's ``.taos/`` dies with
the runner; what its runs held is then known only to the providers. Like
Terraform's test sweepers, ``sweep --discover`` asks each backend that can list
(:meth:`Backend.discover`) what the provider holds under the project's name
prefix, and releases a resource only when all three hold:

(a) its name carries the prefix (``$TAOS_PERSONA_PREFIX``, default ``taos``, case-sensitive),
    then ``-`` or ``_`` and a well-formed run id (``YYYYmmddtHHMMSS-<12 hex>``,
    :func:`.naming.run_id_in_name`): another project's names, or a person's
    (``taos_smith``), are never touched;
(b) the run id inside its name is not a run this sweeper can see in its
    registry, unless the file sweep just proved that run dead;
(c) the provider's own creation time is older than ``older_than`` minutes
    (when the provider gives none, the run id's start time; when neither is
    known, only ``older_than=0`` releases it).

Resources with no client-chosen name (sms-activate's activations) are listed
for the operator and never released here.
"""
from __future__ import annotations

import asyncio
import calendar
import enum
import re
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from .backends import BACKENDS, Backend, backend_class, load_builtin
from .backends._discovered import Discovered
from .backends.base import Shared
from .errors import ConfigurationError
from .naming import name_prefix, run_id_in_name
from .registry import Registry
from .releaser import DEFAULT_CONCURRENCY
from .sweeper import load_plugins
from ._redact import describe_error

__all__ = ["DEFAULT_DISCOVER_OLDER_THAN", "Verdict", "Finding", "DiscoveryReport", "discover_sweep",
           "discover_sweep_async", "discoverable_backends", "print_discovery"]

DEFAULT_DISCOVER_OLDER_THAN = 60.0
"""Minutes a resource must have existed at the provider before discovery releases it."""

_RUN_TIME = re.compile(r"(\d{8}t\d{6})(?:-|\Z)", re.IGNORECASE)


class Verdict(str, enum.Enum):
    """What discovery did with one resource it found. ``str`` so JSON shows the word."""

    RELEASED = "released"
    WOULD_RELEASE = "would release"
    KEPT = "kept"
    """Its release failed: still alive at the provider; exit status 1."""
    LIVE_RUN = "live run"
    """Its run is in the registry and not proven dead: never touched."""
    TOO_YOUNG = "too young"
    AGE_UNKNOWN = "age unknown"
    """Neither the provider nor the name says when it was made: only --older-than 0 releases it."""
    UNNAMED = "unnamed"
    """The provider keeps no name we chose: nothing says whose it is, so it is only listed."""

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Finding:
    """One resource found at a provider, and what discovery made of it."""

    backend: str
    identity: str
    name: Optional[str]
    run_id: Optional[str]
    created: Optional[float]
    verdict: Verdict
    error: Optional[str] = None

    def to_json(self) -> Dict[str, Any]:
        return {"backend": self.backend, "identity": self.identity, "name": self.name,
                "run_id": self.run_id, "created": self.created, "result": self.verdict.value,
                "error": self.error}


@dataclass
class DiscoveryReport:
    """What a discovery sweep found and did; ``exit_status`` 1 if a release or a listing failed."""

    prefix: str
    older_than: float
    dry_run: bool = False
    findings: List[Finding] = field(default_factory=list)
    skipped: List[Dict[str, str]] = field(default_factory=list)
    problems: List[Dict[str, str]] = field(default_factory=list)

    def count(self, verdict: Verdict) -> int:
        return sum(1 for finding in self.findings if finding.verdict is verdict)

    @property
    def exit_status(self) -> int:
        return 1 if self.problems or self.count(Verdict.KEPT) else 0

    def to_json(self) -> Dict[str, Any]:
        return {"prefix": self.prefix, "older_than": self.older_than, "dry_run": self.dry_run,
                "exit_status": self.exit_status, "skipped": self.skipped, "problems": self.problems,
                "resources": [finding.to_json() for finding in self.findings]}


def discoverable_backends(names: Sequence[str] = ()) -> Dict[str, type]:
    """Name -> class of the backends to list: ``names``, else every registered one that can.

    A named backend that is unknown or cannot list is a :class:`ConfigurationError`.
    """
    if not names:
        load_builtin()
        return {name: cls for name, cls in sorted(BACKENDS.items()) if cls.can_discover()}
    chosen = {name: backend_class(name) for name in names}
    unable = sorted(name for name, cls in chosen.items() if not cls.can_discover())
    if unable:
        able = ", ".join(sorted(discoverable_backends()))
        raise ConfigurationError(f"backend(s) {', '.join(unable)} cannot list what the provider holds "
                                 f"(mail.tm, for one, has no listing); these can: {able}")
    return chosen


def _key(text: str) -> str:
    """Names and run ids compared alike: lower case, ``_`` as ``-`` (sql names use ``_``)."""
    return text.lower().replace("_", "-")


def _visible_runs(registry: Registry, dead: Iterable[str]) -> Set[str]:
    """Keys of every run with a file in the registry, but those the file sweep proved dead."""
    present = {entry.run_id for entry in registry.entries() if entry.run_id and entry.kind != "probe"}
    return {_key(run_id) for run_id in present - set(dead)}


def _run_of(name: str, prefix: str, visible: Set[str]) -> Tuple[Optional[str], bool]:
    """(the run id inside ``name``, whether that run is visible); (None, False) for a name not ours."""
    run_id = run_id_in_name(name, prefix)
    return run_id, run_id is not None and _key(run_id) in visible


def _age_basis(item: Discovered, run_id: Optional[str]) -> Optional[float]:
    """The provider's creation time, else the start time in a default run id (UTC), else None."""
    if item.created is not None:
        return item.created
    match = _RUN_TIME.match(run_id or "")
    if match is None:
        return None
    return float(calendar.timegm(time.strptime(match.group(1).upper(), "%Y%m%dT%H%M%S")))


def _judge(backend: str, item: Discovered, prefix: str, visible: Set[str], older_than: float,
           dry_run: bool) -> Optional[Finding]:
    """The finding for one listed resource; None for a name without our prefix."""
    if item.name is None:
        return Finding(backend, item.identity, None, None, item.created, Verdict.UNNAMED)
    run_id, alive = _run_of(item.name, prefix, visible)
    if run_id is None:
        return None  # not a name we chose (carries_prefix): another project's, or a person's
    since = _age_basis(item, run_id)
    if alive:
        verdict = Verdict.LIVE_RUN
    elif since is None and older_than > 0:
        verdict = Verdict.AGE_UNKNOWN
    elif since is not None and time.time() - since < older_than * 60.0:
        verdict = Verdict.TOO_YOUNG
    else:
        verdict = Verdict.WOULD_RELEASE if dry_run else Verdict.RELEASED
    return Finding(backend, item.identity, item.name, run_id, item.created, verdict)


def _stamped(backend: Backend, token: Dict[str, Any]) -> Dict[str, Any]:
    """The token with today's origin recorded (:meth:`Backend.stamp`): discovery found the
    resource at today's endpoint and account, so that is where it lives."""
    return backend.stamp(token)


async def _settle(backend: Backend, finding: Finding, token: Dict[str, Any],
                  limit: asyncio.Semaphore) -> Finding:
    """Release a finding judged releasable; a failure keeps it (the provider still holds it)."""
    if finding.verdict is not Verdict.RELEASED:
        return finding
    async with limit:
        try:
            await backend.release(_stamped(backend, token))
        except Exception as exc:  # noqa: BLE001 - one failure must not stop the others
            return Finding(finding.backend, finding.identity, finding.name, finding.run_id,
                           finding.created, Verdict.KEPT, describe_error(exc))
    return finding


class _Discovery:
    """One discovery pass over a set of backends, with one shared HTTP session."""

    def __init__(self, report: DiscoveryReport, visible: Set[str], concurrency: int, named: bool) -> None:
        self.report, self.visible, self.named = report, visible, named
        self.concurrency = max(1, concurrency)
        self.shared = Shared()

    async def run(self, classes: Dict[str, type]) -> None:
        try:
            found = await asyncio.gather(*(self._one(name, cls) for name, cls in classes.items()))
        finally:
            await self.shared.aclose()
        for findings in found:
            self.report.findings.extend(findings)

    async def _one(self, name: str, cls: type) -> List[Finding]:
        backend: Backend = cls().attach(self.shared)
        try:
            return await self._list_and_release(name, backend)
        finally:
            await backend.aclose()

    async def _list_and_release(self, name: str, backend: Backend) -> List[Finding]:
        report = self.report
        try:
            items = await backend.discover(report.prefix)
        except ConfigurationError as exc:
            target = report.problems if self.named else report.skipped
            target.append({"backend": name, "error": describe_error(exc)})
            return []
        except Exception as exc:  # noqa: BLE001 - a provider that cannot list is reported
            report.problems.append({"backend": name, "error": describe_error(exc)})
            return []
        limit = asyncio.Semaphore(self.concurrency)
        judged = [(_judge(name, item, report.prefix, self.visible, report.older_than, report.dry_run), item)
                  for item in items]
        return list(await asyncio.gather(*(_settle(backend, finding, item.token, limit)
                                           for finding, item in judged if finding is not None)))


async def discover_sweep_async(directory: Optional[str] = None, *,
                               older_than: float = DEFAULT_DISCOVER_OLDER_THAN,
                               backends: Sequence[str] = (), dry_run: bool = False,
                               plugins: Sequence[str] = (), concurrency: int = DEFAULT_CONCURRENCY,
                               dead_runs: Iterable[str] = (), live_runs: Iterable[str] = ()) -> DiscoveryReport:
    """List every discoverable backend (or ``backends``) and release what (a)-(c) allow.

    ``directory`` is the registry whose runs are protected (default as for the
    sweep); ``dead_runs`` are run ids the file sweep just proved dead, whose
    names may be released even though their files are still there; ``live_runs``
    are run ids alive in a registry other than ``directory`` (a fleet registry).
    Raises :class:`ConfigurationError` for an unknown backend or one that cannot list.
    """
    load_plugins(plugins)
    classes = discoverable_backends(backends)
    report = DiscoveryReport(name_prefix(), older_than, dry_run)
    visible = _visible_runs(Registry(directory), dead_runs) | {_key(run_id) for run_id in live_runs}
    await _Discovery(report, visible, concurrency, bool(backends)).run(classes)
    report.findings.sort(key=lambda finding: (finding.backend, finding.identity))
    return report


def discover_sweep(directory: Optional[str] = None, **options: Any) -> DiscoveryReport:
    """Blocking :func:`discover_sweep_async`, for code with no event loop running."""
    return asyncio.run(discover_sweep_async(directory, **options))


def print_discovery(report: DiscoveryReport, out: Any) -> None:
    """One line per resource found (what was done, backend, resource, run), then a summary line."""
    out.write(f"discovery of names {report.prefix}-* older than {report.older_than:g} min"
              f"{' (dry run)' if report.dry_run else ''}\n")
    for f in report.findings:
        out.write(f"{f.verdict.value:<13}  {f.backend:<12}  {f.identity}  (run {f.run_id or '-'})"
                  f"{': ' + f.error if f.error else ''}\n")
    for item in report.skipped:
        out.write(f"skipped {item['backend']}: {item['error']}\n")
    for item in report.problems:
        out.write(f"problem {item['backend']}: {item['error']}\n")
    done = Verdict.WOULD_RELEASE if report.dry_run else Verdict.RELEASED
    out.write(f"{len(report.findings)} found: {report.count(done)} {done}, {report.count(Verdict.KEPT)} "
              f"kept; untouched: {report.count(Verdict.LIVE_RUN)} of live runs, "
              f"{report.count(Verdict.TOO_YOUNG)} too young, {report.count(Verdict.AGE_UNKNOWN)} of "
              f"unknown age, {report.count(Verdict.UNNAMED)} unnamed\n")
