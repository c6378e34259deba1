"""Each provider on a port of its own, laid out as the provider's own host is.

Clients that derive one URL from another (PyGithub builds its OAuth URLs
from the host of ``base_url`` and drops any path) miss a provider that lives
under a path prefix such as ``/github``. A :class:`ProviderPort` listens on a
port of its own and forwards every request to the sandbox's single port with
the provider's prefix put in front: ``GET http://127.0.0.1:P/user`` reaches
``/github/user``. Everything stays in the one sandbox (store, OAuth codes,
faults, ``/_sandbox/``), so the two layouts can be used side by side.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from aiohttp import ClientSession, web

__all__ = ["LAYOUTS", "ProviderPort"]

LAYOUTS: Dict[str, Tuple[str, str]] = {
    "mailtm": ("", "/mailtm"),                   # https://api.mail.tm
    "mailsac": ("/api", "/mailsac"),             # https://mailsac.com/api
    "sms_activate": ("", "/sms_activate"),       # https://api.sms-activate.org/stubs/handler_api.php
    "twilio": ("", "/twilio"),                   # https://api.twilio.com
    "github": ("", "/github"),                   # https://github.com and https://api.github.com
    "google": ("", "/google"),                   # https://oauth2.googleapis.com, accounts.google.com
    "oauth": ("", "/oauth"),                     # any RFC 6749/7009 server
    "example_app": ("", "/example_app"),         # the app under test
}
"""provider -> (the base path of its real API on its own host, its prefix on the sandbox's port)."""

_HOP_BY_HOP = {"host", "connection", "keep-alive", "transfer-encoding", "content-length", "te", "trailer",
               "upgrade", "proxy-authorization", "proxy-authenticate", "content-encoding"}


class ProviderPort:
    """One provider served on a port of its own by forwarding to the sandbox at ``target``."""

    def __init__(self, name: str, target: str, host: str) -> None:
        self.name = name
        self.base_path, self.prefix = LAYOUTS[name]
        self.target = target.rstrip("/")
        self.host = host
        self.port = 0
        self._runner: Optional[web.AppRunner] = None
        self._session: Optional[ClientSession] = None

    @property
    def url(self) -> str:
        """The provider's base URL on its own port, as a client's ``base_url`` takes it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.base_path}"

    async def start(self) -> None:
        """Bind port 0 on the sandbox's host and read the real port back."""
        self._session = ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, 0).start()
        self.port = self._runner.addresses[0][1]

    def _path(self, request: web.Request) -> str:
        """The sandbox path for a request on this port: the base path swapped for the prefix."""
        path = request.raw_path  # as sent, query string included, nothing re-encoded
        if self.base_path and path.startswith(self.base_path):
            path = path[len(self.base_path):]
        return self.prefix + path

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        """Forward one request as it came (no redirects followed) and answer what the sandbox said."""
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self._session.request(request.method, self.target + self._path(request), headers=headers,
                                         data=await request.read(), allow_redirects=False) as answer:
            body = await answer.read()
            kept: Any = [(k, v) for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP]
        response = web.Response(status=answer.status, body=body)
        for key, value in kept:
            response.headers.add(key, value)
        return response

    async def close(self) -> None:
        """Stop listening; safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        session, self._session = self._session, None
        if session is not None:
            await session.close()
