"""Sandboxed SMS-Activate: the ``handler_api.php`` protocol under ``/sms_activate``.

GET or POST ``/sms_activate/stubs/handler_api.php?api_key=...&action=...``,
answered with the provider's plain-text words and status 200, errors included
(``BAD_KEY``, ``BAD_ACTION``, ``BAD_SERVICE``, ``NO_NUMBERS``, ``NO_ACTIVATION``,
``BAD_STATUS``, ``EARLY_CANCEL_DENIED``). Actions: ``getNumber``, ``getNumberV2``
(JSON), ``getStatus``, ``getFullSms``, ``setStatus`` (1 ready, 3 another code,
6 finish, 8 cancel), ``getActiveActivations`` (JSON, what a discovery sweep
lists), ``getBalance`` and ``getBalanceAndCashBack`` (``ACCESS_BALANCE:<n>``),
``getPrices``, ``getNumbersStatus`` and ``getCountries`` (JSON), in the shapes
the protocol's published clients parse (sms-activate/SMSActivateApi,
smsactivate 1.5). A finished activation keeps reporting ``STATUS_OK:<code>``
(its last code) and only a cancelled one ``STATUS_CANCEL``.

Chosen where the protocol cannot be seen offline: the balance is a constant
``100.00`` (nothing is charged); ``activationTime`` is Moscow time (UTC+3,
``YYYY-MM-DD HH:MM:SS`` without a zone), as the provider's own panel and
answers show it; ``activationCost`` is ``"12.50"``; ``getCountries`` lists a
handful of countries, though 0-200 all sell numbers.

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
import json
import os
import random
import re
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, List, Mapping, Optional

from aiohttp import web

from ...resources import extract_code
from ..store import SandboxStore

__all__ = ["setup", "CREDENTIALS", "PROVIDER", "EARLY_CANCEL_ENV"]

PROVIDER = "sms_activate"
CREDENTIALS = {"SMS_ACTIVATE_API_KEY": "sandbox-sms-activate-key"}
EARLY_CANCEL_ENV = "TAOS_PERSONA_SANDBOX_SMS_ACTIVATE_EARLY_CANCEL"

_SERVICE_RE = re.compile(r"[a-z0-9]{2,5}\Z")
_COUNTRIES = range(0, 201)
_NAMED_COUNTRIES = {0: ("Россия", "Russia", "俄罗斯"), 1: ("Украина", "Ukraine", "乌克兰"),
                    6: ("Индонезия", "Indonesia", "印度尼西亚"), 16: ("Великобритания", "United Kingdom", "英国"),
                    187: ("США", "USA", "美国")}
_SERVICES = ("vk", "ok", "wa", "tg", "go", "ig", "fb", "tw", "ot")
_MOSCOW = timezone(timedelta(hours=3))
BALANCE = "100.00"
COST = "12.50"

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
    """A new activation: ``ACCESS_NUMBER:<id>:<phone>``, or the error word."""
    made = _activate(store, params)
    return made if isinstance(made, str) else f"ACCESS_NUMBER:{made['id']}:{made['phone']}"


def _get_number_v2(store: SandboxStore, params: Params) -> str:
    """A new activation as ``getNumberV2``'s JSON, or the error word."""
    made = _activate(store, params)
    if isinstance(made, str):
        return made
    return json.dumps({"activationId": int(made["id"]), "phoneNumber": made["phone"], "activationCost": COST,
                       "countryCode": made["country"], "canGetAnotherSms": True,
                       "activationTime": _moscow(time.time()), "activationOperator": "any"})


def _moscow(timestamp: float) -> str:
    """A time as the provider writes it: Moscow local time without a zone."""
    return datetime.fromtimestamp(timestamp, _MOSCOW).strftime("%Y-%m-%d %H:%M:%S")


def _activate(store: SandboxStore, params: Params) -> Any:
    """Create an activation and return its data, or the protocol's error word."""
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
            "after_seq": _last_seq(store, phone), "retry_code": None}
    store.create(PROVIDER, activation, data, key=phone)
    return data


def _get_status(store: SandboxStore, params: Params) -> str:
    """``STATUS_WAIT_CODE``, ``STATUS_OK:<code>``, ``STATUS_WAIT_RETRY:<code>`` or gone."""
    activation = params.get("id", "")
    entry = store.entry(PROVIDER, activation)
    if entry is None:
        return "NO_ACTIVATION"
    data = entry.data
    if not entry.alive:  # finished activations keep their code; only cancelled ones are cancelled
        return f"STATUS_OK:{data['final_code']}" if data.get("final_code") else "STATUS_CANCEL"
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
        store.update(PROVIDER, activation, dict(data, final_code=code or data.get("retry_code")))
        store.delete(PROVIDER, activation)
        return "ACCESS_ACTIVATION"
    if status == "8" and not received:
        window = float(os.environ.get(EARLY_CANCEL_ENV, "") or 0)
        if time.time() - _created(store, activation) < window:
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


def _created(store: SandboxStore, activation: str) -> float:
    entry = store.entry(PROVIDER, activation)
    return entry.created if entry is not None else 0.0


def _full_sms(store: SandboxStore, params: Params) -> str:
    """``FULL_SMS:<text>`` of the newest SMS of the activation, else its waiting or ended word."""
    entry = store.entry(PROVIDER, params.get("id", ""))
    if entry is None:
        return "NO_ACTIVATION"
    fresh = [m for m in _texts(store, entry.data["phone"]) if m["seq"] > entry.data["after_seq"]]
    if fresh:
        return f"FULL_SMS:{fresh[-1].get('text', '')}"
    return "STATUS_WAIT_CODE" if entry.alive else "STATUS_CANCEL"


def _active(store: SandboxStore, params: Params) -> str:
    """``getActiveActivations``: this key's activations with their Moscow-time ``activationTime``."""
    listed = []
    for entry in store.entries(PROVIDER):
        code: Optional[str] = _new_code(store, entry.data)
        listed.append({"activationId": entry.rid, "serviceCode": entry.data["service"],
                       "phoneNumber": entry.data["phone"], "activationCost": COST,
                       "activationStatus": "2" if code else "4", "smsCode": [code] if code else None,
                       "smsText": None, "activationTime": _moscow(entry.created), "discount": "0.00",
                       "repeated": "0", "countryCode": entry.data["country"],
                       "countryName": _country_names(int(entry.data["country"]))[1],
                       "canGetAnotherSms": "1"})
    if not listed:
        return json.dumps({"status": "error", "error": "NO_ACTIVATIONS"})
    return json.dumps({"status": "success", "activeActivations": listed})


def _country_names(country: int) -> Any:
    return _NAMED_COUNTRIES.get(country, (f"Страна {country}", f"Country {country}", f"国家 {country}"))


def _prices(store: SandboxStore, params: Params) -> str:
    """``{country: {service: {"cost", "count"}}}``, narrowed by ``country`` and ``service``."""
    countries = [int(params["country"])] if params.get("country", "").isdigit() else list(_NAMED_COUNTRIES)
    services = [params["service"]] if params.get("service") else list(_SERVICES)
    return json.dumps({str(c): {s: {"cost": float(COST), "count": 100} for s in services} for c in countries})


def _numbers_status(store: SandboxStore, params: Params) -> str:
    """``{"<service>_0": "<count>"}``: numbers on sale per service (no forwarding)."""
    return json.dumps({f"{service}_0": "100" for service in _SERVICES})


def _countries(store: SandboxStore, params: Params) -> str:
    return json.dumps({str(c): {"id": c, "rus": names[0], "eng": names[1], "chn": names[2], "visible": 1,
                                "retry": 1, "rent": 0, "multiService": 1}
                       for c, names in _NAMED_COUNTRIES.items()})


_ACTIONS: Dict[str, Callable[[SandboxStore, Params], str]] = {
    "getNumber": _get_number,
    "getNumberV2": _get_number_v2,
    "getStatus": _get_status,
    "getFullSms": _full_sms,
    "setStatus": _set_status,
    "getActiveActivations": _active,
    "getBalance": lambda store, params: f"ACCESS_BALANCE:{BALANCE}",
    "getBalanceAndCashBack": lambda store, params: f"ACCESS_BALANCE:{BALANCE}",
    "getPrices": _prices,
    "getNumbersStatus": _numbers_status,
    "getCountries": _countries,
}
