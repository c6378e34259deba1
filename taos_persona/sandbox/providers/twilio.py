"""Twilio in the sandbox: REST API 2010-04-01 under ``/twilio`` (base ``https://api.twilio.com``).

Follows Twilio's OpenAPI description (``../shared/specs/twilio_api_v2010.json``):
HTTP basic auth with the account SID and auth token, form-encoded bodies,
JSON answers with every field of the spec's schemas, list pages with
``start``/``end``/``page``/``page_size``/``uri``/``*_page_uri``, newest first.
Routes: search ``AvailablePhoneNumbers/{CountryCode}/Local.json``; buy, list
(``FriendlyName``, ``PhoneNumber`` filters), fetch and delete
``IncomingPhoneNumbers``; list ``Messages.json`` (``To``, ``From`` filters).

Errors carry Twilio's body ``{"code", "message", "more_info", "status"}``:
wrong or missing credentials 401/20003, unknown resource 404/20404, a number
someone already owns 400/21422, an invalid number 400/21421 (also used, as a
guess, when neither ``PhoneNumber`` nor ``AreaCode`` is given).

``TEST_CREDENTIALS`` act like Twilio's test credentials: they may only buy
(magic ``+15005550006`` succeeds, ``+15005550000`` is unavailable, anything
else invalid), nothing they buy is stored, and every other request is
403/20008. An SMS delivered through ``/_sandbox/deliver/sms`` is an inbound
message of the number it was sent to.
"""
from __future__ import annotations

import email.utils
import hmac
import random
import secrets
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional
from urllib.parse import urlencode

from aiohttp import BasicAuth, web

from ..store import SandboxStore

__all__ = ["CREDENTIALS", "TEST_CREDENTIALS", "PREFIX", "setup"]

CREDENTIALS: Dict[str, str] = {"TWILIO_ACCOUNT_SID": "AC" + "5a4d" * 8,
                               "TWILIO_AUTH_TOKEN": "sandbox-twilio-auth-token"}
TEST_CREDENTIALS: Dict[str, str] = {"TWILIO_ACCOUNT_SID": "AC" + "7e57" * 8,
                                    "TWILIO_AUTH_TOKEN": "sandbox-twilio-test-token"}
PREFIX = "/twilio"
_PROVIDER = "twilio"
_API = "/2010-04-01/Accounts/{AccountSid}"
_MAGIC = {"+15005550006": None, "+15005550000": (21422, "is not available"),
          "+15005550001": (21421, "is invalid")}
_COUNTRY_CODES = {"US": "1", "CA": "1"}
"""Countries whose local numbers the sandbox sells (NANP: +1, area code, 7 digits)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _date(timestamp: float) -> str:
    """RFC 2822 in GMT, as Twilio writes dates: ``Tue, 01 Jul 2025 12:00:00 +0000``."""
    return email.utils.formatdate(timestamp).replace("-0000", "+0000")


def _error(status: int, code: int, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message, "status": status,
                              "more_info": f"https://www.twilio.com/docs/errors/{code}"},
                             status=status)


def _not_found(request: web.Request) -> web.Response:
    return _error(404, 20404, f"The requested resource {request.path[len(PREFIX):]} was not found")


def _credentials(request: web.Request) -> Optional[str]:
    """``"live"`` or ``"test"`` for valid basic auth of the path's account, else None."""
    try:
        auth = BasicAuth.decode(request.headers.get("Authorization", ""))
    except ValueError:
        return None
    for kind, expected in (("live", CREDENTIALS), ("test", TEST_CREDENTIALS)):
        sid, token = expected["TWILIO_ACCOUNT_SID"], expected["TWILIO_AUTH_TOKEN"]
        if (hmac.compare_digest(auth.login.encode(), sid.encode())
                and hmac.compare_digest(auth.password.encode(), token.encode())
                and request.match_info.get("AccountSid") == sid):
            return kind
    return None


def _authenticated(handler: Handler, *, test_allowed: bool = False) -> Handler:
    """401/20003 without valid credentials; 403/20008 for test credentials where Twilio refuses them."""

    async def check(request: web.Request) -> web.StreamResponse:
        kind = _credentials(request)
        if kind is None:
            response = _error(401, 20003, "Authenticate")
            response.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
            return response
        if kind == "test" and not test_allowed:
            return _error(403, 20008, "Resource not accessible with Test Account Credentials")
        return await handler(request)

    return check


def _page(request: web.Request, key: str, items: List[Dict[str, Any]]) -> web.Response:
    """One page of a Twilio list answer, with its paging fields."""
    try:
        size = min(max(int(request.query.get("PageSize", "50")), 1), 1000)
        page = max(int(request.query.get("Page", "0")), 0)
    except ValueError:
        return _error(400, 20001, "PageSize and Page must be integers")
    chunk = items[page * size:(page + 1) * size]
    filters = {k: v for k, v in request.query.items() if k not in ("Page", "PageSize", "PageToken")}

    def uri(number: int) -> str:
        return request.path[len(PREFIX):] + "?" + urlencode(dict(filters, PageSize=size, Page=number))

    more = (page + 1) * size < len(items)
    return web.json_response({
        key: chunk, "start": page * size, "end": page * size + max(len(chunk) - 1, 0),
        "page": page, "page_size": size, "uri": uri(page), "first_page_uri": uri(0),
        "next_page_uri": uri(page + 1) if more else None,
        "previous_page_uri": uri(page - 1) if page > 0 else None})


def _local_number(country: str, area_code: Optional[str]) -> str:
    area = area_code or str(random.randint(201, 989))
    return f"+{_COUNTRY_CODES[country]}{area}{random.randint(2000000, 9999999)}"


def _available(phone: str, country: str) -> Dict[str, Any]:
    """An AvailablePhoneNumberLocal resource with every field of the spec."""
    return {"friendly_name": f"({phone[2:5]}) {phone[5:8]}-{phone[8:]}", "phone_number": phone,
            "lata": "722", "locality": "Sandbox", "rate_center": "SANDBOX", "latitude": 37.77,
            "longitude": -122.42, "region": "CA", "postal_code": "94103", "iso_country": country,
            "address_requirements": "none", "beta": False,
            "capabilities": {"voice": True, "sms": True, "mms": True, "fax": False}}


def _incoming(account: str, sid: str, phone: str, name: str, created: float) -> Dict[str, Any]:
    """An IncomingPhoneNumber resource with every field of the spec."""
    return {
        "account_sid": account, "address_sid": None, "address_requirements": "none",
        "api_version": "2010-04-01", "beta": False,
        "capabilities": {"voice": True, "sms": True, "mms": True, "fax": False},
        "date_created": _date(created), "date_updated": _date(created), "friendly_name": name,
        "identity_sid": None, "phone_number": phone, "origin": "twilio", "sid": sid,
        "sms_application_sid": "", "sms_fallback_method": "POST", "sms_fallback_url": "",
        "sms_method": "POST", "sms_url": "", "status_callback": "", "status_callback_method": "POST",
        "trunk_sid": None, "uri": f"{_API.format(AccountSid=account)}/IncomingPhoneNumbers/{sid}.json",
        "voice_receive_mode": "voice", "voice_application_sid": None, "voice_caller_id_lookup": False,
        "voice_fallback_method": "POST", "voice_fallback_url": None, "voice_method": "POST",
        "voice_url": None, "emergency_status": "Inactive", "emergency_address_sid": None,
        "emergency_address_status": "unregistered", "bundle_sid": None, "status": "in-use",
        "type": "local"}


def _message(account: str, stored: Dict[str, Any]) -> Dict[str, Any]:
    """A Message resource (inbound, received) for an SMS delivered to the sandbox."""
    sid = f"SM{stored['seq']:032x}"
    uri = f"{_API.format(AccountSid=account)}/Messages/{sid}.json"
    date = _date(stored["created"])
    return {"body": stored.get("text", ""), "num_segments": "1", "direction": "inbound",
            "from": stored.get("from") or "+15005550100", "to": stored.get("to", ""),
            "date_updated": date, "price": None, "error_message": None, "uri": uri,
            "account_sid": account, "num_media": "0", "status": "received",
            "messaging_service_sid": None, "sid": sid, "date_sent": date, "date_created": date,
            "error_code": None, "price_unit": "USD", "api_version": "2010-04-01",
            "subresource_uris": {"media": uri.replace(".json", "/Media.json")}}


class _Twilio:
    """The route handlers, over one store."""

    def __init__(self, store: SandboxStore) -> None:
        self.store = store

    def _owned(self) -> List[Dict[str, Any]]:
        """This account's numbers, newest first."""
        return [data for _, data in reversed(self.store.list(_PROVIDER))]

    async def search(self, request: web.Request) -> web.Response:
        country = request.match_info["CountryCode"].upper()
        if country not in _COUNTRY_CODES:
            return _not_found(request)
        area = request.query.get("AreaCode")
        if area is not None and not (area.isdigit() and len(area) == 3):
            return _error(400, 21452, "No phone numbers found in the requested area code")
        size = int(request.query["PageSize"]) if request.query.get("PageSize", "").isdigit() else 30
        found = {_local_number(country, area) for _ in range(min(size, 30))}
        items = [_available(phone, country) for phone in sorted(found)
                 if self.store.find(_PROVIDER, phone) is None]
        return _page(request, "available_phone_numbers", items)

    async def buy(self, request: web.Request) -> web.Response:
        form = await request.post()
        phone, area = str(form.get("PhoneNumber", "")), str(form.get("AreaCode", ""))
        if _credentials(request) == "test":
            failure = _MAGIC.get(phone, (21421, "is invalid"))
            if failure is not None:
                return _error(400, failure[0], f"PhoneNumber {phone} {failure[1]}")
        elif not phone and area.isdigit() and len(area) == 3:
            phone = _local_number("US", area)
        elif not phone.startswith("+") or not phone[1:].isdigit() or not 7 <= len(phone) <= 16:
            return _error(400, 21421, f"PhoneNumber {phone!r} is invalid; a 'PhoneNumber' or "
                                      "'AreaCode' is required")
        if self.store.find(_PROVIDER, phone) is not None:
            return _error(400, 21422, f"PhoneNumber {phone} is not available")
        account = request.match_info["AccountSid"]
        sid = "PN" + secrets.token_hex(16)
        number = _incoming(account, sid, phone, str(form.get("FriendlyName") or phone), time.time())
        if _credentials(request) == "live":
            self.store.create(_PROVIDER, sid, number, key=phone)
        return web.json_response(number, status=201)

    async def find(self, request: web.Request) -> web.Response:
        name, phone = request.query.get("FriendlyName"), request.query.get("PhoneNumber")
        items = [n for n in self._owned() if (name is None or n["friendly_name"] == name)
                 and (phone is None or n["phone_number"] == phone)]
        return _page(request, "incoming_phone_numbers", items)

    async def fetch(self, request: web.Request) -> web.Response:
        number = self.store.get(_PROVIDER, request.match_info["Sid"])
        return web.json_response(number) if number else _not_found(request)

    async def delete(self, request: web.Request) -> web.Response:
        if not self.store.delete(_PROVIDER, request.match_info["Sid"]):
            return _not_found(request)
        return web.Response(status=204)

    async def messages(self, request: web.Request) -> web.Response:
        to, sender = request.query.get("To"), request.query.get("From")
        numbers = [to] if to else [n["phone_number"] for n in self._owned()]
        found = [m for number in numbers for m in self.store.messages(number)
                 if sender is None or m.get("from") == sender]
        found.sort(key=lambda m: m["seq"], reverse=True)
        account = request.match_info["AccountSid"]
        return _page(request, "messages", [_message(account, m) for m in found])


def setup(app: web.Application, store: SandboxStore) -> None:
    """Mount Twilio's routes under ``/twilio``."""
    api = _Twilio(store)
    base = PREFIX + _API
    numbers = base + "/IncomingPhoneNumbers"
    app.router.add_get(base + "/AvailablePhoneNumbers/{CountryCode}/Local.json",
                       _authenticated(api.search))
    app.router.add_post(numbers + ".json", _authenticated(api.buy, test_allowed=True))
    app.router.add_get(numbers + ".json", _authenticated(api.find))
    app.router.add_get(numbers + "/{Sid}.json", _authenticated(api.fetch))
    app.router.add_delete(numbers + "/{Sid}.json", _authenticated(api.delete))
    app.router.add_get(base + "/Messages.json", _authenticated(api.messages))
