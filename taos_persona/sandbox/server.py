"""Running the sandbox: :class:`Sandbox` (async) and :class:`SandboxThread` (sync, background).

Like aiohttp's test servers, both bind 127.0.0.1 port 0, read the real port
back, and can be closed twice. Only loopback addresses are accepted: the
sandbox accepts fake credentials and must never be reachable from outside.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from types import TracebackType
from typing import Any, Dict, List, Optional, Tuple, Type

from aiohttp import web

from ..errors import ConfigurationError
from .app import make_app
from .credentials import sandbox_env
from .ports import LAYOUTS, ProviderPort
from .store import SandboxStore

__all__ = ["Sandbox", "SandboxThread", "SandboxRequestError", "check_loopback"]


def check_loopback(host: str) -> str:
    """Return ``host`` if it is a loopback address, else raise ConfigurationError."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigurationError(
            f"the sandbox binds loopback addresses only (127.0.0.1, ::1, localhost), not {host!r}: "
            "it accepts fake credentials and must not be reachable from other machines")
    return host


class SandboxRequestError(Exception):
    """A ``/_sandbox/`` request from the test side was refused; ``status`` says how."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Sandbox:
    """The sandbox server in the running event loop: ``async with Sandbox() as sb: sb.url``."""

    def __init__(self, state_path: Optional[str] = None, *, host: str = "127.0.0.1",
                 port: int = 0, per_provider_ports: bool = False) -> None:
        self.host = check_loopback(host)
        self.port = port
        self.state_path = state_path
        self.per_provider_ports = per_provider_ports
        self.store: Optional[SandboxStore] = None
        self._runner: Optional[web.AppRunner] = None
        self._ports: List[ProviderPort] = []

    @property
    def provider_urls(self) -> Dict[str, str]:
        """With ``per_provider_ports``: provider -> its base URL on a port of its own, else ``{}``."""
        return {port.name: port.url for port in self._ports}

    @property
    def url(self) -> str:
        if self._runner is None:
            raise RuntimeError("the sandbox is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def env(self) -> Dict[str, str]:
        """``TAOS_PERSONA_SANDBOX`` plus every provider's sandbox credentials."""
        return sandbox_env(self.url)

    async def start(self) -> None:
        """Open the store, bind, and read the real port back."""
        self.store = SandboxStore(self.state_path)
        self._runner = web.AppRunner(make_app(self.store), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await self.close()
            raise
        self.port = self._runner.addresses[0][1]
        if self.per_provider_ports:
            await self._start_ports()

    async def _start_ports(self) -> None:
        """One :class:`ProviderPort` per provider, each forwarding to this sandbox's port."""
        try:
            for name in LAYOUTS:
                self._ports.append(ProviderPort(name, self.url, self.host))
                await self._ports[-1].start()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop serving and close the store; safe to call twice."""
        ports, self._ports = self._ports, []
        for port in ports:
            await port.close()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        store, self.store = self.store, None
        if store is not None:
            store.close()

    async def __aenter__(self) -> "Sandbox":
        await self.start()
        return self

    async def __aexit__(self, exc_type: Optional[Type[BaseException]],
                        exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        await self.close()


class SandboxThread:
    """A :class:`Sandbox` served from a background thread, for sync tests and subprocesses.

    ``with SandboxThread() as sandbox: env = sandbox.env()``. It never touches
    ``os.environ``: ``os.environ.update(sandbox.env())`` points this process's
    backends at it (add ``TAOS_PERSONA_USER_BACKEND=rest_user`` for ``user_account``).
    The helper methods talk to the ``/_sandbox/`` routes over real HTTP with urllib.
    """

    def __init__(self, state_path: Optional[str] = None, *, host: str = "127.0.0.1",
                 port: int = 0, per_provider_ports: bool = False) -> None:
        self.sandbox = Sandbox(state_path, host=host, port=port, per_provider_ports=per_provider_ports)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._ready = threading.Event()
        self._error: Optional[BaseException] = None

    @property
    def url(self) -> str:
        return self.sandbox.url

    def env(self) -> Dict[str, str]:
        return self.sandbox.env()

    @property
    def provider_urls(self) -> Dict[str, str]:
        """provider -> base URL on its own port (``per_provider_ports=True``), else ``{}``."""
        return self.sandbox.provider_urls

    def start(self) -> "SandboxThread":
        """Start the thread and wait until the server listens (or failed to)."""
        self._thread = threading.Thread(target=self._serve, name="taos-persona-sandbox", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def _serve(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self.sandbox.start())
        except BaseException as exc:  # reported to start() in the caller's thread
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self.sandbox.close())
            loop.close()

    def close(self) -> None:
        """Stop the server and join the thread; safe to call twice."""
        loop, thread, self._thread = self._loop, self._thread, None
        if thread is None or loop is None:
            return
        if thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
        thread.join()

    def __enter__(self) -> "SandboxThread":
        return self.start()

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()

    def request(self, method: str, path: str, *, body: Any = None,
                form: Optional[Dict[str, str]] = None,
                headers: Optional[Dict[str, str]] = None) -> Tuple[int, Any]:
        """One request to the sandbox, JSON ``body`` or urlencoded ``form``, as a test client.

        Returns ``(status, answer)``: the answer parsed as JSON when it is JSON,
        else the text. Error statuses are answers too, not exceptions.
        """
        data, kind = None, None
        if form is not None:
            data, kind = urllib.parse.urlencode(form).encode(), "application/x-www-form-urlencoded"
        elif body is not None:
            data, kind = json.dumps(body).encode(), "application/json"
        sent = dict(headers or {}, **({"Content-Type": kind} if kind else {}))
        # S310: self.url is always http://<loopback>:<port>, never a caller's scheme.
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=sent)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read().decode()
            exc.close()
        try:
            return status, json.loads(text) if text else None
        except ValueError:
            return status, text

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """A ``/_sandbox/`` request that must succeed: its JSON answer, else SandboxRequestError."""
        status, answer = self.request(method, path, body=body)
        if status >= 400:
            raise SandboxRequestError(f"{method} {path} answered {status}: {answer}", status)
        return answer

    def alive(self) -> Dict[str, int]:
        """``{provider: alive resource count}``."""
        return dict(self.call("GET", "/_sandbox/alive")["alive"])

    def resources(self, provider: str, prefix: str = "") -> Any:
        """``[{"rid", "data"}]`` of the provider's alive resources whose key starts with ``prefix``."""
        query = "?" + urllib.parse.urlencode({"prefix": prefix}) if prefix else ""
        return self.call("GET", f"/_sandbox/resources/{provider}{query}")

    def drop(self, provider: str, rid: str) -> bool:
        """Delete a resource behind the backend's back; False if it was not alive."""
        path = f"/_sandbox/resources/{provider}/{urllib.parse.quote(rid, safe='')}"
        status, answer = self.request("DELETE", path)
        if status not in (200, 404):
            raise SandboxRequestError(f"DELETE {path} answered {status}: {answer}", status)
        return status == 200

    def backdate(self, provider: str, rid: str, seconds: float) -> bool:
        """Make a resource look created ``seconds`` earlier at its provider; False if it is not alive."""
        path = f"/_sandbox/resources/{provider}/{urllib.parse.quote(rid, safe='')}/backdate"
        status, answer = self.request("POST", path, body={"seconds": seconds})
        if status not in (200, 404):
            raise SandboxRequestError(f"POST {path} answered {status}: {answer}", status)
        return status == 200

    def inject(self, kind: str, count: int = 1, **options: Any) -> None:
        """Queue a fault: ``kind`` in 500/429/delay/drop/drop_after.

        Options: ``retry_after``, ``delay``, and the filters ``provider``,
        ``method`` and ``path`` (a path prefix such as ``/mailtm/accounts``).
        """
        self.call("POST", "/_sandbox/faults", dict(options, kind=str(kind), count=count))

    def clear_faults(self) -> None:
        self.call("DELETE", "/_sandbox/faults")

    def deliver_email(self, to: str, subject: str, text: str, *,
                      sender: str = "noreply@example.com", html: str = "") -> Dict[str, Any]:
        """Deliver an email to ``to`` as the app under test would."""
        return dict(self.call("POST", "/_sandbox/deliver/email",
                              {"to": to, "from": sender, "subject": subject, "text": text, "html": html}))

    def deliver_sms(self, to: str, text: str, *, sender: str = "") -> Dict[str, Any]:
        """Deliver an SMS to the number ``to``."""
        return dict(self.call("POST", "/_sandbox/deliver/sms", {"to": to, "text": text, "from": sender}))
