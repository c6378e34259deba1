"""Sandboxed SMS-Activate: the ``handler_api.php`` protocol under ``/sms_activate``.

GET or POST ``/sms_activate/stubs/handler_api.php?api_key=...&action=...``,
answered with the provider's plain-text words and status 200, errors included
(``BAD_KEY``, ``BAD_ACTION``, ``BAD_SERVICE``, ``NO_NUMBERS``, ``NO_ACTIVATION``,
``BAD_STATUS``, ``EARLY_CANCEL_DENIED``). Actions: ``getNumber``, ``getStatus``,
``setStatus`` (1 ready, 3 another code, 6 finish, 8 cancel).

An SMS delivered through ``/_sandbox/deliver/sms`` to the number (with or
without its ``+``) after the activation began shows up as ``STATUS_OK:<code>``.
The real provider refuses cancels during an activation's first two minutes;
the sandbox does so for ``TAOS_PERSONA_SANDBOX_SMS_ACTIVATE_EARLY_CANCEL``
seconds, read on each request (default 0, so ordinary tests release at once).
Countries 0-200 have numbers; any other country answers ``NO_NUMBERS``.
"""
from __future__ import annotations

import functools
import hmac
import os
import random
import re
import time
from typing import Any, Callable, Dict, List, Mapping

from aiohttp import web

from ...resources import extract_code
from ..store import SandboxStore

__all__ = ["setup", "CREDENTIALS", "PROVIDER", "EARLY_CANCEL_ENV"]

PROVIDER = "sms_activate"
CREDENTIALS = {"SMS_ACTIVATE_API_KEY": "sandbox-sms-activate-key"}
EARLY_CANCEL_ENV = "TAOS_PERSONA_SANDBOX_SMS_ACTIVATE_EARLY_CANCEL"

_SERVICE_RE = re.compile(r"[a-z0-9]{2,5}\Z")
_COUNTRIES = range(0, 201)

Params = Mapping[str, str]


def setup(app: web.Application, store: SandboxStore) -> None:
    """Mount the handler under ``/sms_activate``, GET and POST like the real one."""
    handler = functools.partial(_handle, store)
    app.router.add_get(f"/{PROVIDER}/stubs/handler_api.php", handler)
    app.router.add_post(f"/{PROVIDER}/stubs/handler_api.php", handler)


async def _handle(store: SandboxStore, request: web.Request) -> web.Response:
    """Check the key, dispatch on ``action``, answer in plain text."""
    params: Dict[str, str] = dict(request.query)
    if request.method == "POST":
        params.update({k: str(v) for k, v in (await request.post()).items()})
    key = params.get("api_key", "").encode()
    if not hmac.compare_digest(key, CREDENTIALS["SMS_ACTIVATE_API_KEY"].encode()):
        return web.Response(text="BAD_KEY")
    action = _ACTIONS.get(params.get("action", ""))
    return web.Response(text=action(store, params) if action else "BAD_ACTION")


def _get_number(store: SandboxStore, params: Params) -> str:
    """A new activation: ``ACCESS_NUMBER:<id>:<phone>``."""
    service, country = params.get("service", ""), params.get("country", "0")
    if not _SERVICE_RE.match(service):
        return "BAD_SERVICE"
    if not country.isdigit() or int(country) not in _COUNTRIES:
        return "NO_NUMBERS"
    activation = str(random.randint(10 ** 8, 10 ** 9 - 1))
    while store.get(PROVIDER, activation) or store.was_deleted(PROVIDER, activation):
        activation = str(random.randint(10 ** 8, 10 ** 9 - 1))
    phone = "79" + "".join(random.choice("0123456789") for _ in range(9))
    data = {"id": activation, "phone": phone, "service": service, "country": country,
            "created": time.time(), "after_seq": _last_seq(store, phone), "retry_code": None}
    store.create(PROVIDER, activation, data, key=phone)
    return f"ACCESS_NUMBER:{activation}:{phone}"


def _get_status(store: SandboxStore, params: Params) -> str:
    """``STATUS_WAIT_CODE``, ``STATUS_OK:<code>``, ``STATUS_WAIT_RETRY:<code>`` or gone."""
    activation = params.get("id", "")
    data = store.get(PROVIDER, activation)
    if data is None:
        return "STATUS_CANCEL" if store.was_deleted(PROVIDER, activation) else "NO_ACTIVATION"
    code = _new_code(store, data)
    if code is not None:
        return f"STATUS_OK:{code}"
    if data.get("retry_code"):
        return f"STATUS_WAIT_RETRY:{data['retry_code']}"
    return "STATUS_WAIT_CODE"


def _set_status(store: SandboxStore, params: Params) -> str:
    """Move an activation on: 1 ready, 3 wait for another code, 6 finish, 8 cancel."""
    activation, status = params.get("id", ""), params.get("status", "")
    data = store.get(PROVIDER, activation)
    if data is None:
        return "NO_ACTIVATION"
    code = _new_code(store, data)
    received = code is not None or bool(data.get("retry_code"))
    if status == "1":
        return "ACCESS_READY"
    if status == "3" and received:
        data.update(retry_code=code or data["retry_code"], after_seq=_last_seq(store, data["phone"]))
        store.update(PROVIDER, activation, data)
        return "ACCESS_RETRY_GET"
    if status == "6":
        store.delete(PROVIDER, activation)
        return "ACCESS_ACTIVATION"
    if status == "8" and not received:
        window = float(os.environ.get(EARLY_CANCEL_ENV, "") or 0)
        if time.time() - data["created"] < window:
            return "EARLY_CANCEL_DENIED"
        store.delete(PROVIDER, activation)
        return "ACCESS_CANCEL"
    return "BAD_STATUS"


def _texts(store: SandboxStore, phone: str) -> List[Dict[str, Any]]:
    """Messages delivered to ``phone`` with or without its ``+``, oldest first."""
    found = store.messages(phone) + store.messages("+" + phone)
    return sorted(found, key=lambda message: message["seq"])


def _last_seq(store: SandboxStore, phone: str) -> int:
    return max((message["seq"] for message in _texts(store, phone)), default=0)


def _new_code(store: SandboxStore, data: Dict[str, Any]) -> Any:
    """The code of the newest SMS since the activation began (or since a retry), else None."""
    fresh = [m for m in _texts(store, data["phone"]) if m["seq"] > data["after_seq"]]
    if not fresh:
        return None
    text = str(fresh[-1].get("text", ""))
    return extract_code(text) or text


_ACTIONS: Dict[str, Callable[[SandboxStore, Params], str]] = {
    "getNumber": _get_number,
    "getStatus": _get_status,
    "setStatus": _set_status,
}
