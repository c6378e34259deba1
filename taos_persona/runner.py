"""``python -m taos_persona run``: hold a persona for a command's life, serve it over a Unix socket.

The holder opens a :class:`~taos_persona.fixture.PersonaFixture`, listens on
a Unix socket (mode 0600, in a private 0700 temporary directory) named to
the command by ``TAOS_PERSONA_SOCKET``, starts the command, forwards SIGINT
and SIGTERM to it, and when it ends (however it ends) releases everything
and exits with its status (128+N for death by signal N). A SIGKILLed holder
leaves a dead run in the registry, which the next sweep releases.

Protocol: one JSON object per line each way. Requests ``{"op": "acquire",
"backend", "options"}``, ``{"op": "wait_message", "address", "subject",
"timeout"}``, ``{"op": "wait_code", "number", "timeout"}``; answers
``{"ok": true, "value": {...}}`` or ``{"ok": false, "error": "..."}``.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
from typing import Any, Dict, Iterator, List, Optional, Sequence

from ._redact import describe_error
from .errors import ConfigurationError, PersonaError
from .fixture import KIND_BACKENDS
from .resources import _LINK_RE, Message

__all__ = ["SOCKET_VARIABLE", "hold", "request", "public_value", "message_json", "RunnerError"]

SOCKET_VARIABLE = "TAOS_PERSONA_SOCKET"
PYTHON_VARIABLE = "TAOS_PERSONA_PYTHON"
"""The interpreter ``run`` runs on, for scripts that call ``python -m taos_persona acquire``."""
KINDS = ("email", "sms", "user", "token")
"""``acquire email`` is ``acquire <the email backend>``: the kinds the named helpers serve."""
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_PRIVATE_FIELDS = ("reader", "extra")
"""Value fields never printed: readers are code, ``OAuthGrant.extra`` may hold a refresh token."""


def _chosen_by_run(kind: str, backend: str) -> str:
    """Why ``acquire KIND`` meant ``backend``: ``run``'s environment chose it, not the command's."""
    example = " (acquire sql --option database=/path/app.db --option create_table=true)" if kind == "user" else ""
    return (f"acquire {kind} is the {backend} backend here, chosen by ${KIND_BACKENDS[kind][0]} in the "
            "environment `run` started in; setting it inside COMMAND changes nothing: set it before `run`, "
            f"or name a backend{example}")


class RunnerError(PersonaError):
    """A request to the ``run`` holder failed; the message says why and what to do."""


def public_value(value: Any) -> Dict[str, Any]:
    """What ``acquire`` prints: the value's fields, without readers and extras.

    A user's ``password``, an API token's ``secret`` and a grant's
    ``access_token`` are included: the command needs them to act as the
    persona. Provider credentials are never part of a value.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)
                if f.name not in _PRIVATE_FIELDS}
    return {"value": _jsonable(value)}


def _jsonable(data: Any) -> Any:
    try:
        json.dumps(data)
        return data
    except (TypeError, ValueError):
        return str(data)


def message_json(message: Message) -> Dict[str, Any]:
    """An email as ``wait-message`` prints it, with its code and every link extracted."""
    body = message.text or message.html
    return dict(public_value(message), code=message.code(), link=message.link(),
                links=_LINK_RE.findall(body))


class _Holder:
    """The socket server's side: answers requests with the fixture it holds."""

    def __init__(self, fixture: Any) -> None:
        self.fixture = fixture
        self.mailboxes: Dict[str, Any] = {}
        self.numbers: Dict[str, Any] = {}

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection: read request lines, write one answer line for each."""
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                writer.write(json.dumps(await self._answer_line(line)).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _answer_line(self, line: bytes) -> Dict[str, Any]:
        try:
            body = json.loads(line)
            return {"ok": True, "value": await self._dispatch(body if isinstance(body, dict) else {})}
        except ValueError as exc:
            return {"ok": False, "error": f"bad request: {exc}"}
        except Exception as exc:  # noqa: BLE001 - the client prints it; the holder keeps serving
            return {"ok": False, "error": describe_error(exc)}

    async def _dispatch(self, body: Dict[str, Any]) -> Dict[str, Any]:
        op = body.get("op")
        if op == "acquire":
            return await self._acquire(str(body.get("backend", "")), dict(body.get("options") or {}))
        if op == "wait_message":
            mailbox = self._held(self.mailboxes, str(body.get("address", "")), "mailbox")
            message = await mailbox.wait_for_message(subject=body.get("subject"),
                                                     timeout=float(body.get("timeout", 60)))
            return message_json(message)
        if op == "wait_code":
            number = self._held(self.numbers, str(body.get("number", "")), "number")
            return {"number": number.number,
                    "code": await number.wait_for_code(timeout=float(body.get("timeout", 120)))}
        raise RunnerError(f"unknown op {op!r}; known: acquire, wait_message, wait_code")

    async def _acquire(self, backend: str, options: Dict[str, Any]) -> Dict[str, Any]:
        name = self.fixture.backend_for(backend) if backend in KINDS else backend
        try:
            value = await self.fixture.acquire(name, **options)
        except ConfigurationError as exc:
            if name == backend:
                raise
            raise ConfigurationError(f"{exc} ({_chosen_by_run(backend, name)})") from None
        if hasattr(value, "wait_for_message"):
            self.mailboxes[value.address.lower()] = value
        if hasattr(value, "wait_for_code"):
            self.numbers[value.number] = value
        return public_value(value)

    @staticmethod
    def _held(table: Dict[str, Any], key: str, what: str) -> Any:
        found = table.get(key.lower() if what == "mailbox" else key)
        if found is None:
            raise RunnerError(f"no {what} {key!r} was acquired in this run; acquire it first "
                              f"(held: {', '.join(sorted(table)) or 'none'})")
        return found


def _exit_status(returncode: int) -> int:
    """A shell's view of a child's end: its status, or 128+N for death by signal N."""
    return 128 - returncode if returncode < 0 else returncode


async def _serve_command(fixture: Any, command: Sequence[str], socket_path: str) -> int:
    """Serve ``fixture`` on ``socket_path`` while ``command`` runs; its exit status."""
    holder = _Holder(fixture)
    server = await asyncio.start_unix_server(holder.answer, path=socket_path)
    os.chmod(socket_path, 0o600)
    try:
        env = dict(os.environ, **{SOCKET_VARIABLE: socket_path, PYTHON_VARIABLE: sys.executable})
        process = await asyncio.create_subprocess_exec(*command, env=env)
        with _forwarding(process):
            return _exit_status(await process.wait())
    finally:
        server.close()


@contextlib.contextmanager
def _forwarding(process: "asyncio.subprocess.Process") -> Iterator[None]:
    """Forward SIGINT and SIGTERM to the command while it runs; the handlers from before come back after.

    Those are :mod:`.lifetime`'s while the fixture is open, so a signal during
    the release after the command ended is handled as in any persona test.
    """
    loop = asyncio.get_running_loop()
    before = {signum: signal.getsignal(signum) for signum in FORWARDED_SIGNALS}
    for signum in FORWARDED_SIGNALS:
        loop.add_signal_handler(signum, _forward, process, signum)
    try:
        yield
    finally:
        for signum, handler in before.items():
            loop.remove_signal_handler(signum)
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def _forward(process: "asyncio.subprocess.Process", signum: int) -> None:
    if process.returncode is None and not (signum == signal.SIGINT and _terminal_sent_it_too(process.pid)):
        process.send_signal(signum)


def _terminal_sent_it_too(pid: int) -> bool:
    """True when a Ctrl-C at our terminal reached the command already.

    The terminal sends SIGINT to its whole foreground process group; when
    that group is ours and the command's, forwarding would deliver it twice
    (and a second Ctrl-C ends many programs without their cleanup).
    """
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False  # no controlling terminal: the signal came from kill, CI or a parent
    try:
        return os.tcgetpgrp(fd) == os.getpgrp() == os.getpgid(pid)
    except OSError:
        return False
    finally:
        os.close(fd)


async def _hold_async(command: Sequence[str], persona: str, registry_dir: Optional[str],
                      socket_path: str) -> int:
    from .fixture import PersonaFixture

    async with PersonaFixture(persona, registry_dir=registry_dir) as fixture:
        return await _serve_command(fixture, command, socket_path)


def hold(command: Sequence[str], *, persona: str = "shell", registry_dir: Optional[str] = None) -> int:
    """Run ``command`` holding a persona; everything released after it ends. Its exit status.

    Raises :class:`PersonaError` when the fixture cannot open, ``OSError``
    when the command cannot start.
    """
    private = tempfile.mkdtemp(prefix="taos-persona-run-")  # mkdtemp makes it 0700
    try:
        return asyncio.run(_hold_async(command, persona, registry_dir, os.path.join(private, "socket")))
    finally:
        shutil.rmtree(private, ignore_errors=True)


def request(body: Dict[str, Any], *, timeout: float = 120.0, socket_path: Optional[str] = None) -> Any:
    """Send one request to the ``run`` holder and return its ``value``; RunnerError if it failed."""
    path = socket_path or os.environ.get(SOCKET_VARIABLE)
    if not path:
        raise RunnerError(f"{SOCKET_VARIABLE} is not set: run this inside "
                          "python -m taos_persona run [--persona NAME] -- COMMAND")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(path)
            conn.sendall(json.dumps(body).encode() + b"\n")
            answer = json.loads(_read_line(conn))
    except (OSError, ValueError) as exc:
        raise RunnerError(f"cannot talk to the persona holder at {SOCKET_VARIABLE}={path}: {exc}; "
                          "is the python -m taos_persona run that started this command still running?") from exc
    if not answer.get("ok"):
        raise RunnerError(str(answer.get("error")))
    return answer.get("value")


def _read_line(conn: socket.socket) -> bytes:
    chunks: List[bytes] = []
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        if chunk.endswith(b"\n"):
            break
    return b"".join(chunks)
