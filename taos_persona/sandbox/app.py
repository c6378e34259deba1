"""The sandbox's aiohttp application: every provider under its prefix, plus ``/_sandbox/``.

Each provider module ``taos_persona.sandbox.providers.<name>`` has a
``setup(app, store)`` that adds the provider's real routes under
``/<name>`` (paths relative to the real base URL the backend uses) and a
``CREDENTIALS`` dict of the fake env var values the sandbox accepts. A
module may also have ``ERROR_PAGES``, ``{"/<prefix>": page(request, status)}``:
what an unserved route under that prefix answers (a 404 or 405 in the
provider's own error format, never aiohttp's text/plain page).
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Awaitable, Callable, Dict, List, Optional

from aiohttp import web

from .faults import add_fault_routes, fault_middleware
from .store import SandboxStore

__all__ = ["PROVIDER_MODULES", "STORE", "ErrorPage", "make_app", "provider_modules"]

PROVIDER_MODULES = ("mailtm", "mailsac", "sms_activate", "twilio", "oauth", "example_app", "example_pages")
"""Provider route modules under ``taos_persona.sandbox.providers``, mounted in this order."""

ErrorPage = Callable[[web.Request, int], web.Response]
"""A provider's answer to an unserved route: ``page(request, 404 or 405)``."""
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

try:
    STORE: Any = web.AppKey("taos_persona_store", SandboxStore)
    ERROR_PAGES: Any = web.AppKey("taos_persona_error_pages", dict)
except AttributeError:  # aiohttp < 3.9 has no AppKey
    STORE = "taos_persona_store"
    ERROR_PAGES = "taos_persona_error_pages"


def provider_modules() -> List[ModuleType]:
    """The provider modules that exist; a listed one that is not written yet is skipped."""
    found = []
    for name in PROVIDER_MODULES:
        qualified = f"{__package__}.providers.{name}"
        try:
            found.append(importlib.import_module(qualified))
        except ModuleNotFoundError as exc:
            if exc.name != qualified:  # the module exists but one of its imports is missing
                raise
    return found


@web.middleware
async def _provider_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer aiohttp's own 404/405 (no such route or method) in the provider's error format."""
    try:
        return await handler(request)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as exc:
        page: Optional[ErrorPage] = request.app[ERROR_PAGES].get("/" + request.path.strip("/").split("/", 1)[0])
        if page is None or exc.text != f"{exc.status}: {exc.reason}":  # a handler's own error stays
            raise
        return page(request, exc.status)


async def _alive(request: web.Request) -> web.Response:
    alive = request.app[STORE].alive()
    return web.json_response({"alive": alive, "total": sum(alive.values())})


async def _body(request: web.Request, *required: str) -> Dict[str, Any]:
    """The JSON body, or a 400 naming the fields it lacks."""
    try:
        body = await request.json()
    except ValueError:
        body = None
    missing = [k for k in required if not isinstance(body, dict) or not body.get(k)]
    if missing:
        raise web.HTTPBadRequest(text=f"JSON body needs {', '.join(missing)}")
    return dict(body)


async def _deliver_email(request: web.Request) -> web.Response:
    body = await _body(request, "to")
    message = {"to": body["to"].strip().lower(), "from": body.get("from") or "sender@example.com",
               "subject": body.get("subject", ""), "text": body.get("text", ""),
               "html": body.get("html", "")}
    stored = request.app[STORE].add_message(message["to"], message)
    return web.json_response(stored, status=201)


async def _deliver_sms(request: web.Request) -> web.Response:
    body = await _body(request, "to", "text")
    message = {"to": body["to"].strip(), "from": body.get("from", ""), "text": body["text"]}
    stored = request.app[STORE].add_message(message["to"], message)
    return web.json_response(stored, status=201)


async def _resources(request: web.Request) -> web.Response:
    store = request.app[STORE]
    rows = store.list(request.match_info["provider"], request.query.get("prefix", ""))
    return web.json_response([{"rid": rid, "data": data} for rid, data in rows])


async def _drop(request: web.Request) -> web.Response:
    """Delete a resource behind the backend's back, as a provider's own expiry would."""
    gone = request.app[STORE].delete(request.match_info["provider"], request.match_info["rid"])
    return web.json_response({"deleted": gone}, status=200 if gone else 404)


async def _backdate(request: web.Request) -> web.Response:
    """Make a resource look ``{"seconds": N}`` older at its provider, as if created N s ago."""
    body = await _body(request, "seconds")
    try:
        seconds = float(body["seconds"])
    except (TypeError, ValueError):
        raise web.HTTPBadRequest(text="seconds must be a number") from None
    gone = not request.app[STORE].backdate(request.match_info["provider"], request.match_info["rid"], seconds)
    return web.json_response({"backdated": not gone}, status=404 if gone else 200)


def _add_sandbox_routes(app: web.Application) -> None:
    app.router.add_get("/_sandbox/alive", _alive)
    app.router.add_post("/_sandbox/deliver/email", _deliver_email)
    app.router.add_post("/_sandbox/deliver/sms", _deliver_sms)
    app.router.add_get("/_sandbox/resources/{provider}", _resources)
    app.router.add_delete("/_sandbox/resources/{provider}/{rid}", _drop)
    app.router.add_post("/_sandbox/resources/{provider}/{rid}/backdate", _backdate)
    add_fault_routes(app)


def make_app(store: SandboxStore) -> web.Application:
    """The whole sandbox: test routes under ``/_sandbox/`` and every provider that exists."""
    app = web.Application(middlewares=[fault_middleware, _provider_errors])
    app[STORE] = store
    app[ERROR_PAGES] = {}
    _add_sandbox_routes(app)
    for module in provider_modules():
        module.setup(app, store)
        app[ERROR_PAGES].update(getattr(module, "ERROR_PAGES", {}))
    return app
