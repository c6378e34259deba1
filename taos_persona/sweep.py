"""``python -m taos_persona.sweep``: release what dead runs left behind.

Exit status: 0 nothing left, 1 something could not be released, would be
kept (dry run), was unreadable or refused, or a run record was quarantined;
2 bad usage. ``--forget RUN_ID:SEQ`` drops an entry an operator checked by
hand (never one of a live run). The logic lives in :mod:`taos_persona.sweeper`;
this module only parses arguments and prints.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import List, Optional, Sequence, TextIO, Tuple

from .errors import PersonaError
from .outcomes import Result, plural
from .discovery import DEFAULT_DISCOVER_OLDER_THAN, DiscoveryReport, discover_sweep, print_discovery
from .stores import is_postgres_url
from .sweep_report import SweepReport
from .sweeper import DEFAULT_OLDER_THAN, forget_entries, sweep_registry

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m taos_persona.sweep",
        description="Release the resources of persona test runs that died. Live runs are never touched.")
    parser.add_argument("--dir", help="registry directory (default: $TAOS_PERSONA_DIR, else "
                        ".taos/test-fixtures in the project root)")
    parser.add_argument("--registry", default=os.environ.get("TAOS_PERSONA_REGISTRY") or None, metavar="URL",
                        help="a postgresql:// fleet registry to sweep instead of a directory (default: "
                        "$TAOS_PERSONA_REGISTRY); --json then lists the live runs of every machine too")
    parser.add_argument("--older-than", type=float, default=None, metavar="MINUTES",
                        help=f"sweep runs written by other hosts only when this old (default "
                        f"{DEFAULT_OLDER_THAN:g}); with --discover, also release only what the provider "
                        f"made this long ago (default {DEFAULT_DISCOVER_OLDER_THAN:g})")
    parser.add_argument("--discover", action="store_true",
                        help="then ask each provider that can list what it holds under our name prefix "
                        "($TAOS_PERSONA_PREFIX, default 'taos') and release what no visible run owns")
    parser.add_argument("--backend", action="append", default=[], metavar="NAME",
                        help="with --discover: list only this backend; repeatable (default: every one that can)")
    parser.add_argument("--dry-run", action="store_true", help="report what would be released, change nothing")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import MODULE first (it registers backends); repeatable")
    parser.add_argument("--concurrency", type=int, default=8, metavar="N",
                        help="release requests in flight per backend, across all runs "
                        "(default %(default)s)")
    parser.add_argument("--forget", action="append", default=[], type=_entry, metavar="RUN_ID:SEQ",
                        help="drop this entry from the registry after checking it by hand, instead of "
                        "sweeping (refused for a live run); repeatable")
    return parser


def _entry(text: str) -> Tuple[str, int]:
    run_id, _, seq = text.rpartition(":")
    if not run_id or not seq.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not RUN_ID:SEQ (for example 20260101T120000-ab12cd:3)")
    return run_id, int(seq)


def _fleet(args: argparse.Namespace) -> bool:
    """A ``postgresql://`` registry (``--registry`` or ``$TAOS_PERSONA_REGISTRY``), unless ``--dir`` says otherwise."""
    return is_postgres_url(args.registry) and not args.dir


def _run(args: argparse.Namespace) -> SweepReport:
    older_than = DEFAULT_OLDER_THAN if args.older_than is None else args.older_than
    if _fleet(args):
        from .stores.pgsweep import sweep_url  # noqa: PLC0415 - the fleet's code only when asked for

        return asyncio.run(sweep_url(args.registry, dry_run=args.dry_run, plugins=args.plugin,
                                     concurrency=args.concurrency))
    directory = args.dir or args.registry
    if args.forget:
        return forget_entries(directory, args.forget, older_than=older_than, plugins=args.plugin)
    return sweep_registry(directory, older_than=older_than, dry_run=args.dry_run,
                          plugins=args.plugin, concurrency=args.concurrency, describe_live_runs=True)


def _discover(args: argparse.Namespace, report: SweepReport) -> Optional[DiscoveryReport]:
    """The provider-side pass after the sweep, if asked for (``--discover``); a run still on
    record in a fleet registry is alive to it, whatever any directory says."""
    if not args.discover:
        return None
    older_than = DEFAULT_DISCOVER_OLDER_THAN if args.older_than is None else args.older_than
    on_record = [run["run_id"] for run in getattr(report, "fleet", [])]
    return discover_sweep(None if _fleet(args) else args.dir or args.registry, older_than=older_than,
                          backends=args.backend, dry_run=args.dry_run, concurrency=args.concurrency,
                          dead_runs=report.swept_runs, live_runs=on_record)


def main(argv: Optional[List[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.older_than is not None and args.older_than < 0) or args.concurrency < 1:
        parser.error("--older-than must be >= 0 and --concurrency >= 1")
    if args.backend and not args.discover:
        parser.error("--backend needs --discover")
    if args.forget and (args.discover or args.dry_run):
        parser.error("--forget cannot be combined with --discover or --dry-run")
    if args.dir == "":
        parser.error("--dir '' names no directory (it would be the current one); name the registry "
                     "directory, or leave --dir out for the default")
    if args.forget and _fleet(args):
        parser.error("--forget edits a registry directory (--dir); a fleet registry has no --forget yet")
    try:
        report = _run(args)
        found = _discover(args, report)
    except PersonaError as exc:
        print(f"taos-persona sweep: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        document = dict(report.to_json(), **({"discovery": found.to_json()} if found else {}))
        json.dump(document, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        print_table(report, sys.stdout)
        if found is not None:
            print_discovery(found, sys.stdout)
    return max(report.exit_status, found.exit_status if found else 0)


def print_table(report: SweepReport, out: TextIO) -> None:
    """A short human table: one row per run, one per resource touched, then a summary line."""
    out.write(f"sweep of {report.directory}{' (dry run)' if report.dry_run else ''}\n")
    _columns(out, [("RUN", "STATUS", "PERSONA", "HOST", "PID", "AGE", "IDLE")] + [
        (run.run_id, run.status.value, run.persona or "?", run.host or "?", str(run.pid or "?"),
         _seconds(run.age_seconds), _seconds(run.idle_seconds)) for run in report.runs])
    _columns(out, [("RUN", "#", "BACKEND", "STATE", "RESULT", "IDENTITY")] + [
        (o.run_id, str(o.seq), o.backend, o.state, o.result.value,
         (o.identity or "-") + (f" ({o.error})" if o.error else "")) for o in report.outcomes])
    for item in report.quarantined:
        out.write(f"{'would quarantine' if report.dry_run else 'quarantined'} {item['file']}: {item['reason']}\n")
    for item in report.left_in_quarantine:
        out.write(f"left in quarantine {item['file']}: {item['fix']}\n")
    for item in report.foreign:
        out.write(f"foreign {item['file']}: {item['note']}\n")
    for item in report.problems:
        out.write(f"problem {item['file']}: {item['error']}\n")
    out.write(summary(report) + "\n")


_PHRASES = {Result.RELEASED: "released", Result.NOTHING_CREATED: "found never created",
            Result.EXPIRED: "expired at the provider", Result.FORGOTTEN: "forgotten", Result.KEPT: "kept",
            Result.WOULD_RELEASE: "would be released", Result.WOULD_KEEP: "would be kept"}
"""How the summary line says each result of a resource (``2 resources would be released``)."""


def summary(report: SweepReport) -> str:
    """One line that counts each outcome as what it is (a dry run says what would be), e.g.
    ``1 dead run would be swept: 2 resources would be released; 0 would be left; ...``."""
    counts = report.counts()
    results = ", ".join(f"{plural(count, 'resource')} {_PHRASES[result]}" for result, count in counts.items())
    left = sum(count for result, count in counts.items() if result.left) + len(report.quarantined_runs)
    swept, left_word = ("would be swept", "would be left") if report.dry_run else ("swept", "left")
    quarantined = plural(len(report.quarantined), "file")
    return (f"{plural(len(report.swept_runs), 'dead run')} {swept}: {results or 'no resources'}; "
            f"{left} {left_word}; {plural(len(report.live_runs), 'live run')} untouched; "
            f"{plural(len(report.young_foreign_runs), 'run')} too young to judge; {quarantined} quarantined"
            + (f" ({plural(len(report.quarantined_runs), 'run record')}, counted as left)"
               if report.quarantined_runs else ""))


def _columns(out: TextIO, rows: Sequence[Tuple[str, ...]]) -> None:
    """Rows as aligned columns (the last one free), if there is any row besides the header."""
    if len(rows) < 2:
        return
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1] + "\n")


def _seconds(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return f"{value / 60:.0f}m" if value >= 120 else f"{value:.0f}s"


if __name__ == "__main__":
    sys.exit(main())
