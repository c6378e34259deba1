"""Fault injection: make the next N provider requests fail the ways real providers do.

``POST /_sandbox/faults`` queues a fault: ``{"count": N, "kind": "500" | "429" |
"delay" | "drop" | "drop_after", "retry_after": s, "delay": s, "provider": name,
"method": "POST", "path": "/mailtm/accounts"}`` (``provider``, ``method`` and
``path``, a path prefix, are optional filters). Each request to a provider
route (never to ``/_sandbox/``) takes one use from the oldest queued fault
that matches it. ``DELETE /_sandbox/faults`` clears the queue.

A ``drop`` closes the connection before the provider acts, without any
response, which a client sees as "server disconnected". ``drop_after`` lets
the provider act first and then drops the connection: the resource exists but
the client never hears of it, the case ``plan``/``recover`` and create
retries must survive.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Dict, List, NoReturn, Optional

from aiohttp import web

__all__ = ["Fault", "FAULTS", "KINDS", "fault_middleware", "parse_fault", "add_fault_routes"]

KINDS = ("500", "429", "delay", "drop", "drop_after")

try:
    FAULTS: Any = web.AppKey("taos_persona_faults", list)
except AttributeError:  # aiohttp < 3.9 has no AppKey
    FAULTS = "taos_persona_faults"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Fault:
    """One queued fault and how many more requests it will hit."""

    kind: str
    count: int = 1
    provider: Optional[str] = None
    retry_after: float = 1
    delay: float = 1.0
    method: Optional[str] = None
    path: Optional[str] = None

    def matches(self, request: web.Request, provider: str) -> bool:
        return (self.count > 0 and self.provider in (None, provider)
                and self.method in (None, request.method)
                and (self.path is None or request.path.startswith(self.path)))

    def as_json(self) -> Dict[str, Any]:
        return {"kind": self.kind, "count": self.count, "provider": self.provider,
                "retry_after": self.retry_after, "delay": self.delay, "method": self.method,
                "path": self.path}


def parse_fault(body: Dict[str, Any]) -> Fault:
    """A :class:`Fault` from a request body; ValueError says what is wrong."""
    kind = str(body.get("kind", ""))
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    count = int(body.get("count", 1))
    if count < 1:
        raise ValueError("count must be at least 1")
    method = body.get("method")
    return Fault(kind=kind, count=count, provider=body.get("provider") or None,
                 retry_after=float(body.get("retry_after", 1)), delay=float(body.get("delay", 1.0)),
                 method=str(method).upper() if method else None, path=body.get("path") or None)


def _take(faults: List[Fault], request: web.Request, provider: str) -> Optional[Fault]:
    """Use up one hit of the oldest fault matching this request."""
    for fault in faults:
        if fault.matches(request, provider):
            fault.count -= 1
            if fault.count == 0:
                faults.remove(fault)
            return fault
    return None


def _retry_after(seconds: float) -> str:
    """A Retry-After header value: whole seconds when whole, as real servers send."""
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


@web.middleware
async def fault_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Apply the next matching fault to a provider request, then (maybe) serve it."""
    provider = request.path.strip("/").split("/", 1)[0]
    if provider == "_sandbox":
        return await handler(request)
    fault = _take(request.app[FAULTS], request, provider)
    if fault is None:
        return await handler(request)
    if fault.kind == "500":
        return web.json_response({"error": "Internal Server Error (injected by the sandbox)"},
                                 status=500)
    if fault.kind == "429":
        return web.json_response({"error": "Too Many Requests (injected by the sandbox)"},
                                 status=429, headers={"Retry-After": _retry_after(fault.retry_after)})
    if fault.kind == "drop":
        _drop(request)
    if fault.kind == "drop_after":
        await handler(request)
        _drop(request)
    await request.read()  # a slow provider has the whole request: it acts even if the client
    await asyncio.sleep(fault.delay)  # stops waiting (a create in flight outlives its sender)
    return await handler(request)


def _drop(request: web.Request) -> NoReturn:
    """Close the connection without writing a response."""
    if request.transport is not None:
        request.transport.abort()
    raise asyncio.CancelledError()  # nothing can be written to an aborted connection


async def _add(request: web.Request) -> web.Response:
    try:
        fault = parse_fault(await request.json())
    except (ValueError, TypeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    request.app[FAULTS].append(fault)
    return web.json_response({"queued": [f.as_json() for f in request.app[FAULTS]]}, status=201)


async def _list(request: web.Request) -> web.Response:
    return web.json_response({"queued": [f.as_json() for f in request.app[FAULTS]]})


async def _clear(request: web.Request) -> web.Response:
    request.app[FAULTS].clear()
    return web.json_response({"queued": []})


def add_fault_routes(app: web.Application) -> None:
    """Install the fault queue, its middleware-visible state and its ``/_sandbox/faults`` routes."""
    app[FAULTS] = []
    app.router.add_post("/_sandbox/faults", _add)
    app.router.add_get("/_sandbox/faults", _list)
    app.router.add_delete("/_sandbox/faults", _clear)
