"""What a sweep found and did: one :class:`SweepReport` per pass, read alike by the table,
the JSON document and the exit status (all through :class:`.outcomes.Result`)."""
from __future__ import annotations

import dataclasses
import enum
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from .outcomes import Outcome, Result

__all__ = ["Status", "RunInfo", "SweepReport", "QUARANTINE_FIX"]

QUARANTINE_FIX = ("check by hand what this run record held (open it: JSON, or what is left of it), "
                  "release that at the provider, then delete the file")
"""What an operator does about a run record in ``quarantine/``: until then it counts as left."""


class Status(str, enum.Enum):
    """What the sweep made of a run: dead (so swept, or in a dry run would be), live, or too young
    to judge (another host's run, or one whose lock file was gone, not old enough yet)."""

    SWEPT = "dead"
    LIVE = "live"
    YOUNG = "too young to judge"


@dataclass(frozen=True)
class RunInfo:
    """What an operator needs to know of one run: whose, where, how old, and what we made of it.

    ``age_seconds`` is measured on this machine's clock from the run's start, for runs of
    this machine only; ``idle_seconds`` is how long ago its file was last written, by the
    registry file system's clock (a run of another host is judged by this one).
    """

    run_id: str
    status: Status
    persona: Optional[str] = None
    host: Optional[str] = None
    pid: Optional[int] = None
    age_seconds: Optional[float] = None
    idle_seconds: Optional[float] = None

    def to_json(self) -> Dict[str, Any]:
        data = dataclasses.asdict(self)
        data["status"] = self.status.value
        return data


@dataclass
class SweepReport:
    """What a sweep did. Table, JSON and ``exit_status`` all read the same outcomes.

    ``exit_status`` is 0 when nothing is left: no resource kept (or, in a dry run,
    predicted kept), no problem, no run record quarantined now or left in ``quarantine/``.
    """

    directory: str
    dry_run: bool = False
    outcomes: List[Outcome] = field(default_factory=list)
    runs: List[RunInfo] = field(default_factory=list)
    quarantined: List[Dict[str, str]] = field(default_factory=list)
    problems: List[Dict[str, str]] = field(default_factory=list)
    left_in_quarantine: List[Dict[str, str]] = field(default_factory=list)
    """Run records an earlier sweep quarantined, still there: ``file`` (path) and ``fix``."""
    foreign: List[Dict[str, str]] = field(default_factory=list)
    """Entries not named like our run files: reported, never touched (``file``, ``note``)."""

    def _run_ids(self, status: Status) -> List[str]:
        return [run.run_id for run in self.runs if run.status is status]

    @property
    def swept_runs(self) -> List[str]:
        return self._run_ids(Status.SWEPT)

    @property
    def live_runs(self) -> List[str]:
        return self._run_ids(Status.LIVE)

    @property
    def young_foreign_runs(self) -> List[str]:
        """Runs we could not judge dead (another host, or a lock file that was missing) and too young."""
        return self._run_ids(Status.YOUNG)

    @property
    def released(self) -> List[Outcome]:
        """Resources the provider confirmed released now: a dry run releases none."""
        return [outcome for outcome in self.outcomes if outcome.result is Result.RELEASED]

    @property
    def kept(self) -> List[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.kept]

    @property
    def quarantined_runs(self) -> List[Dict[str, str]]:
        """Run records quarantined now or still in quarantine from an earlier sweep: what they
        held may be alive, so they count as left until an operator deletes them."""
        return [item for item in self.quarantined if item["file"].endswith(".json")] + self.left_in_quarantine

    def counts(self) -> Dict[Result, int]:
        """How many resources ended each way, in the order of :class:`Result`."""
        found = Counter(outcome.result for outcome in self.outcomes)
        return {result: found[result] for result in Result if found[result]}

    @property
    def exit_status(self) -> int:
        return 1 if self.kept or self.problems or self.quarantined_runs else 0

    def to_json(self) -> Dict[str, object]:
        return {"directory": self.directory, "dry_run": self.dry_run, "exit_status": self.exit_status,
                "swept_runs": self.swept_runs, "live_runs": self.live_runs,
                "young_foreign_runs": self.young_foreign_runs, "quarantined": self.quarantined,
                "problems": self.problems, "left_in_quarantine": self.left_in_quarantine,
                "foreign": self.foreign, "runs": [run.to_json() for run in self.runs],
                "counts": {result.value: count for result, count in self.counts().items()},
                "resources": [outcome.to_json() for outcome in self.outcomes]}
