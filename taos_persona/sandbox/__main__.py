"""``python -m taos_persona.sandbox``: serve the sandbox until SIGINT or SIGTERM.

Prints the URL on stdout (and writes it to ``--url-file``) once it listens,
so a script can start it with ``--port 0`` and read back where it is. With
``--per-provider-ports`` each provider is also served on a port of its own,
laid out as its real host, and a ``NAME URL`` line per provider follows.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import signal
import sqlite3
import sys
import tempfile
from typing import Dict, List, Optional

from ..errors import ConfigurationError
from .server import Sandbox, check_loopback

__all__ = ["main"]


def _port(text: str) -> int:
    """An argparse type: a TCP port number, 0 meaning "any free port"."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return port


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m taos_persona.sandbox",
        description="Serve fake provider APIs on loopback for taos-persona tests.")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=0, help="port to bind (default 0: any free port)")
    parser.add_argument("--state", metavar="FILE", help="sqlite file that keeps state across restarts")
    parser.add_argument("--url-file", metavar="FILE", help="also write the URL to this file")
    parser.add_argument("--per-provider-ports", action="store_true",
                        help="also serve each provider on a port of its own, laid out as its real host "
                             "(paths at the root); prints one 'NAME URL' line per provider after the URL")
    parser.add_argument("--print-env", action="store_true",
                        help="print export lines (TAOS_PERSONA_SANDBOX and the credentials it accepts) for "
                             "eval, instead of the bare URL, once it listens")
    return parser


def _write_atomically(path: str, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader never sees half of it."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temp = tempfile.mkstemp(dir=directory, prefix=".sandbox-url-")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


def _export_lines(env: Dict[str, str]) -> str:
    """``export NAME='value'`` lines a POSIX shell can ``eval``.

    Adds ``TAOS_PERSONA_USER_BACKEND=rest_user``: ``user_account()`` defaults to
    ``sql``, which the sandbox does not serve; its example app serves users over REST.
    """
    env = dict(env, TAOS_PERSONA_USER_BACKEND="rest_user")
    return "\n".join(f"export {name}={shlex.quote(value)}" for name, value in sorted(env.items()))


async def _serve(args: argparse.Namespace) -> None:
    """Serve until SIGINT or SIGTERM arrives."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows: Ctrl-C raises KeyboardInterrupt
            pass
    async with Sandbox(args.state, host=args.host, port=args.port,
                       per_provider_ports=args.per_provider_ports) as sandbox:
        if args.url_file:
            _write_atomically(args.url_file, sandbox.url + "\n")
        print(_export_lines(sandbox.env()) if args.print_env else sandbox.url, flush=True)
        for name, url in sandbox.provider_urls.items():
            print(f"# {name} {url}" if args.print_env else f"{name} {url}", flush=True)
        await stop.wait()


def main(argv: Optional[List[str]] = None) -> int:
    """Run the sandbox; 0 on a signal-driven stop, 2 on bad arguments, 1 if it cannot bind."""
    args = _parser().parse_args(argv)
    try:
        check_loopback(args.host)
        asyncio.run(_serve(args))
    except ConfigurationError as exc:
        print(f"python -m taos_persona.sandbox: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"python -m taos_persona.sandbox: error: cannot serve: {exc}", file=sys.stderr)
        return 1
    except sqlite3.Error as exc:
        print(f"python -m taos_persona.sandbox: error: cannot use --state {args.state}: {exc}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
