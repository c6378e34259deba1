"""``python -m taos_persona``: ``run``, and inside it ``acquire``, ``wait-message``, ``wait-code``.

``run`` holds a persona for a command's life (see :mod:`.runner`); the other
three ask that holder over its Unix socket and print one JSON object on
stdout. User errors end with one line on stderr and status 2 (bad
arguments) or 1 (the request failed), never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List, Optional

from .errors import PersonaError

__all__ = ["main"]

PROG = "python -m taos_persona"
_REPLY_MARGIN = 30.0
"""Seconds the client waits beyond the holder's own wait timeout before giving up on it."""


def _option(text: str) -> tuple:  # type: ignore[type-arg]
    """An argparse type: ``KEY=VALUE``; VALUE is read as JSON when it parses, else kept as text."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Persona resources for any language, through a shell.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="hold a persona while COMMAND runs; release everything after")
    run.add_argument("--persona", default="shell", help="persona name (default: shell)")
    run.add_argument("--registry", metavar="DIR", help="registry directory (default: $TAOS_PERSONA_DIR, "
                                                       "else .taos/test-fixtures in the project root)")
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]")
    acquire = commands.add_parser("acquire", help="acquire a resource; print its value as JSON")
    acquire.add_argument("backend", help="a backend name (mailtm, twilio, rest_user, ...) or a kind: "
                                         "email, sms, user, token")
    acquire.add_argument("--option", action="append", type=_option, default=[], metavar="KEY=VALUE",
                         help="an option for the backend (VALUE parsed as JSON when it can be)")
    message = commands.add_parser("wait-message", help="wait for an email; print it with its code and links")
    message.add_argument("address")
    message.add_argument("--subject", help="only a message whose subject contains this")
    message.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS")
    code = commands.add_parser("wait-code", help="wait for an SMS code to NUMBER; print it")
    code.add_argument("number")
    code.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS")
    return parser


def _ask(args: argparse.Namespace) -> Any:
    from .runner import request

    body: Dict[str, Any]
    timeout = getattr(args, "timeout", 0.0) + _REPLY_MARGIN
    if args.command == "acquire":
        body = {"op": "acquire", "backend": args.backend, "options": dict(args.option)}
        timeout = 300.0
    elif args.command == "wait-message":
        body = {"op": "wait_message", "address": args.address, "subject": args.subject, "timeout": args.timeout}
    else:
        body = {"op": "wait_code", "number": args.number, "timeout": args.timeout}
    return request(body, timeout=timeout)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from .runner import hold

    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not command:
        parser.error("run needs a command after --, e.g. run -- node examples/persona.mjs")
    try:
        return hold(command, persona=args.persona, registry_dir=args.registry)
    except OSError as exc:
        print(f"{PROG} run: error: cannot start {command[0]!r}: {exc}", file=sys.stderr)
        return 127


def main(argv: Optional[List[str]] = None) -> int:
    """The CLI; returns the exit status (``run``: the command's)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return _run(parser, args)
        print(json.dumps(_ask(args)), flush=True)
    except PersonaError as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return 0
