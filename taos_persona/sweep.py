"""``python -m taos_persona.sweep``: release what dead runs left behind.

Exit status: 0 nothing left, 1 something could not be released (or was
unreadable), 2 bad usage. The logic lives in :mod:`taos_persona.sweeper`;
this module only parses arguments and prints.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import List, Optional, TextIO

from .errors import PersonaError
from .discovery import DEFAULT_DISCOVER_OLDER_THAN, discover_sweep, print_discovery
from .stores import is_postgres_url
from .sweeper import DEFAULT_OLDER_THAN, SweepReport, sweep

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
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.older_than is not None and args.older_than < 0) or args.concurrency < 1:
        parser.error("--older-than must be >= 0 and --concurrency >= 1")
    if args.backend and not args.discover:
        parser.error("--backend needs --discover")
    try:
        found = None
        fleet = is_postgres_url(args.registry) and not args.dir
        if fleet:
            from .stores.pgsweep import sweep_url  # noqa: PLC0415 - the fleet's code only when asked for

            report: SweepReport = asyncio.run(sweep_url(args.registry, dry_run=args.dry_run, plugins=args.plugin,
                                                        concurrency=args.concurrency))
        else:
            report = sweep(args.dir or args.registry, dry_run=args.dry_run, plugins=args.plugin,
                           older_than=DEFAULT_OLDER_THAN if args.older_than is None else args.older_than,
                           concurrency=args.concurrency)
        if args.discover:  # a run still on record in the fleet is alive to discovery, whatever its files say
            on_record = [run["run_id"] for run in getattr(report, "fleet", [])]
            found = discover_sweep(None if fleet else args.dir or args.registry, older_than=DEFAULT_DISCOVER_OLDER_THAN
                                   if args.older_than is None else args.older_than, backends=args.backend,
                                   dry_run=args.dry_run, concurrency=args.concurrency, dead_runs=report.swept_runs,
                                   live_runs=on_record)
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
    """A short human table: one row per resource touched, then a summary line."""
    out.write(f"sweep of {report.directory}{' (dry run)' if report.dry_run else ''}\n")
    rows = [("RUN", "#", "BACKEND", "STATE", "RESULT")]
    rows += [(o.run_id, str(o.seq), o.backend, o.state, o.result.value + (f": {o.error}" if o.error else ""))
             for o in report.outcomes]
    if len(rows) > 1:
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        for row in rows:
            out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4] + "\n")
    for item in report.quarantined:
        out.write(f"quarantined {item['file']}: {item['reason']}\n")
    for item in report.problems:
        out.write(f"problem {item['file']}: {item['error']}\n")
    done = "would be released" if report.dry_run else "released"
    count = len(report.outcomes) if report.dry_run else len(report.released)
    out.write(f"{len(report.swept_runs)} dead runs swept: {count} resources {done}, "
              f"{len(report.kept)} left; {len(report.live_runs)} live runs untouched; "
              f"{len(report.young_foreign_runs)} runs of other hosts too young; "
              f"{len(report.quarantined)} files quarantined\n")


if __name__ == "__main__":
    sys.exit(main())
