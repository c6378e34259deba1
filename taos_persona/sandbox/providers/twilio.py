"""Twilio in the sandbox: REST API 2010-04-01 under ``/twilio`` (base ``https://api.twilio.com``).

Follows Twilio's OpenAPI description (``../shared/specs/twilio_api_v2010.json``):
HTTP basic auth with the account SID and auth token, form-encoded bodies,
JSON answers with every field of the spec's schemas, list pages with
``start``/``end``/``page``/``page_size``/``uri``/``*_page_uri``, newest first.
Routes: the country list and ``AvailablePhoneNumbers/{CountryCode}.json``;
search ``.../Local.json`` and ``.../TollFree.json`` (``AreaCode``, ``Contains``
with ``*`` for any digit, ``InRegion``); buy (also through
``IncomingPhoneNumbers/{Local,Mobile,TollFree}.json``), list (``FriendlyName``
exact, ``PhoneNumber`` partial with ``*`` wildcards, per the spec's parameter
descriptions), fetch, update (``POST .../{Sid}.json``) and delete
``IncomingPhoneNumbers``; list and fetch ``Messages`` (``To``, ``From``).
``date_created`` is the store's creation time (backdatable for tests).
Area codes come from a table of real NANP ones (never N11, never N9X, which
NANPA reserves), each with its state and city.

Errors carry Twilio's body ``{"code", "message", "more_info", "status"}``:
wrong or missing credentials 401/20003, unknown resource 404/20404, a number
someone already owns 400/21422, an invalid number 400/21421 (also used, as a
guess, when neither ``PhoneNumber`` nor ``AreaCode`` is given). Unserved
routes answer 404/20404 and unserved methods 405/20004 in the same body.

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
import re
import secrets
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple
from urllib.parse import urlencode

from aiohttp import BasicAuth, web

from ..store import Entry, SandboxStore

__all__ = ["CREDENTIALS", "TEST_CREDENTIALS", "PREFIX", "ERROR_PAGES", "setup"]

CREDENTIALS: Dict[str, str] = {"TWILIO_ACCOUNT_SID": "AC" + "5a4d" * 8,
                               "TWILIO_AUTH_TOKEN": "sandbox-twilio-auth-token"}
TEST_CREDENTIALS: Dict[str, str] = {"TWILIO_ACCOUNT_SID": "AC" + "7e57" * 8,
                                    "TWILIO_AUTH_TOKEN": "sandbox-twilio-test-token"}
PREFIX = "/twilio"
_PROVIDER = "twilio"
_API = "/2010-04-01/Accounts/{AccountSid}"
_MAGIC = {"+15005550006": None, "+15005550000": (21422, "is not available"),
          "+15005550001": (21421, "is invalid")}
_COUNTRIES = {"US": "United States", "CA": "Canada"}
"""Countries whose numbers the sandbox sells (NANP: +1, area code, 7 digits)."""
_AREAS: Dict[str, Tuple[str, str, str]] = {
    "201": ("US", "NJ", "Jersey City"), "206": ("US", "WA", "Seattle"), "212": ("US", "NY", "New York"),
    "213": ("US", "CA", "Los Angeles"), "305": ("US", "FL", "Miami"), "312": ("US", "IL", "Chicago"),
    "404": ("US", "GA", "Atlanta"), "415": ("US", "CA", "San Francisco"), "503": ("US", "OR", "Portland"),
    "512": ("US", "TX", "Austin"), "602": ("US", "AZ", "Phoenix"), "617": ("US", "MA", "Boston"),
    "702": ("US", "NV", "Las Vegas"), "720": ("US", "CO", "Denver"), "808": ("US", "HI", "Honolulu"),
    "416": ("CA", "ON", "Toronto"), "514": ("CA", "QC", "Montreal"), "604": ("CA", "BC", "Vancouver"),
}
"""Real NANP area codes the sandbox sells local numbers in: code -> (country, region, locality)."""
_TOLL_FREE = ("800", "833", "844", "855", "866", "877", "888")
_TYPES = {"Local": "local", "Mobile": "mobile", "TollFree": "tollfree"}
"""IncomingPhoneNumbers subresources and the ``type`` each sets."""
_UPDATABLE = ("FriendlyName", "SmsApplicationSid", "SmsFallbackMethod", "SmsFallbackUrl", "SmsMethod",
              "SmsUrl", "StatusCallback", "StatusCallbackMethod", "VoiceApplicationSid",
              "VoiceFallbackMethod", "VoiceFallbackUrl", "VoiceMethod", "VoiceUrl", "TrunkSid",
              "IdentitySid", "AddressSid", "BundleSid", "EmergencyAddressSid", "EmergencyStatus",
              "VoiceReceiveMode")
"""Form fields of ``POST IncomingPhoneNumbers/{Sid}.json`` (spec) that the sandbox keeps."""

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


def _unserved(request: web.Request, status: int) -> web.Response:
    """Twilio's JSON error for a route (404/20404) or method (405/20004) it does not have."""
    if status == 405:
        return _error(405, 20004, "Method not allowed")
    return _not_found(request)


ERROR_PAGES = {PREFIX: _unserved}


def _snake(name: str) -> str:
    """``SmsFallbackUrl`` -> ``sms_fallback_url``: a form field's resource property."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _pattern(text: str) -> "re.Pattern[str]":
    """A phone-number pattern: digits literal, ``*`` any one digit (Twilio's ``Contains``/``PhoneNumber``)."""
    return re.compile("".join(r"\d" if c == "*" else re.escape(c) for c in text))


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


def _local_number(area: str) -> str:
    """A NANP number in ``area``: the exchange starts with 2-9 and is never N11."""
    exchange = random.choice([n for n in range(200, 1000) if n % 100 != 11])
    return f"+1{area}{exchange}{random.randint(0, 9999):04d}"


def _available(phone: str, country: str) -> Dict[str, Any]:
    """An AvailablePhoneNumber resource with every field of the spec (toll-free: no place)."""
    place = _AREAS.get(phone[2:5])
    return {"friendly_name": f"({phone[2:5]}) {phone[5:8]}-{phone[8:]}", "phone_number": phone,
            "lata": "722" if place else None, "locality": place[2] if place else None,
            "rate_center": place[2].upper().replace(" ", "") if place else None,
            "latitude": 37.77 if place else None, "longitude": -122.42 if place else None,
            "region": place[1] if place else None, "postal_code": "94103" if place else None,
            "iso_country": country, "address_requirements": "none", "beta": False,
            "capabilities": {"voice": True, "sms": True, "mms": True, "fax": False}}


def _candidates(areas: List[str], contains: str, count: int) -> List[str]:
    """Up to ``count`` numbers for sale in ``areas`` that contain ``contains`` (``*``: any digit).

    The pattern is laid over random national numbers at every offset, and a
    number is kept only if its area code is one of ``areas`` and its exchange
    is valid: a pattern no number there can match gives none, as at Twilio.
    """
    wanted, found = _pattern(contains), set()
    digits = contains.lstrip("+")[-10:]
    for area in areas:
        for offset in range(0, 11 - len(digits)) if digits else [0]:
            for _ in range(max(count // max(len(areas), 1), 8)):  # 8 tries: some draws make a bad exchange
                national = list(_local_number(area)[2:])
                national[offset:offset + len(digits)] = [c if c != "*" else random.choice("0123456789")
                                                         for c in digits]
                phone = "+1" + "".join(national)
                if phone[2:5] == area and re.fullmatch(r"[2-9](?!11)\d\d", phone[5:8]) and wanted.search(phone):
                    found.add(phone)
    return sorted(found)


def _areas(country: str, kind: str, query: Any) -> List[str]:
    """The area codes a search may draw from: by kind, country, ``AreaCode`` and ``InRegion``."""
    if kind == "TollFree":
        return [a for a in _TOLL_FREE if query.get("AreaCode") in (None, a)]
    return [code for code, (where, region, _) in _AREAS.items()
            if where == country and query.get("AreaCode") in (None, code)
            and query.get("InRegion", region).upper() == region]


def _incoming(account: str, sid: str, phone: str, name: str, created: float,
              kind: str = "local") -> Dict[str, Any]:
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
        "type": kind}


def _shown(entry: Entry, typed: bool = False) -> Dict[str, Any]:
    """A stored number as the API shows it: dates from the store (creation may be backdated).

    Through a typed route (``IncomingPhoneNumbers/Local.json``...) it has no
    ``type``, as the spec's Local, Mobile and TollFree schemas have none.
    """
    public = {k: v for k, v in entry.data.items() if not k.startswith("_") and not (typed and k == "type")}
    return dict(public, date_created=_date(entry.created),
                date_updated=_date(max(entry.data.get("_updated", 0), entry.created)))


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

    def _owned(self) -> List[Entry]:
        """This account's numbers, newest first."""
        return list(reversed(self.store.entries(_PROVIDER)))

    async def countries(self, request: web.Request) -> web.Response:
        account = request.match_info["AccountSid"]
        return _page(request, "countries", [_country(account, code) for code in _COUNTRIES])

    async def country(self, request: web.Request) -> web.Response:
        code = request.match_info["CountryCode"].upper()
        if code not in _COUNTRIES:
            return _not_found(request)
        return web.json_response(_country(request.match_info["AccountSid"], code))

    async def search(self, request: web.Request) -> web.Response:
        """Numbers for sale; an area code that is not a NANP one is 400/21452, no match an empty page."""
        country, kind = request.match_info["CountryCode"].upper(), request.match_info["Type"]
        if country not in _COUNTRIES:
            return _not_found(request)
        area = request.query.get("AreaCode")
        if area is not None and not re.fullmatch(r"[2-9](?!11)(?!9)\d\d", area):
            return _error(400, 21452, "No phone numbers found in the requested area code")
        size = int(request.query["PageSize"]) if request.query.get("PageSize", "").isdigit() else 30
        found = _candidates(_areas(country, kind, request.query), request.query.get("Contains", ""), min(size, 30))
        free = [phone for phone in found if self.store.find(_PROVIDER, phone) is None]
        chosen = sorted(random.sample(free, min(size, 30, len(free))))  # a spread of the areas, not the first
        items = [_available(phone, country) for phone in chosen]
        return _page(request, "available_phone_numbers", items)

    async def buy(self, request: web.Request) -> web.Response:
        form = await request.post()
        phone, area = str(form.get("PhoneNumber", "")), str(form.get("AreaCode", ""))
        if _credentials(request) == "test":
            failure = _MAGIC.get(phone, (21421, "is invalid"))
            if failure is not None:
                return _error(400, failure[0], f"PhoneNumber {phone} {failure[1]}")
        elif not phone and area:
            if area not in _AREAS:
                return _error(400, 21452, "No phone numbers found in the requested area code")
            phone = _local_number(area)
        elif not phone.startswith("+") or not phone[1:].isdigit() or not 7 <= len(phone) <= 16:
            return _error(400, 21421, f"PhoneNumber {phone!r} is invalid; a 'PhoneNumber' or "
                                      "'AreaCode' is required")
        if self.store.find(_PROVIDER, phone) is not None:
            return _error(400, 21422, f"PhoneNumber {phone} is not available")
        account, sid, now = request.match_info["AccountSid"], "PN" + secrets.token_hex(16), time.time()
        kind = _TYPES.get(request.match_info.get("Type", ""), "tollfree" if phone[2:5] in _TOLL_FREE
                          else "local")
        number = _incoming(account, sid, phone, str(form.get("FriendlyName") or phone), now, kind)
        if _credentials(request) == "live":
            self.store.create(_PROVIDER, sid, number, key=phone)
        if "Type" in request.match_info:
            number.pop("type")
        return web.json_response(number, status=201)

    async def find(self, request: web.Request) -> web.Response:
        """List owned numbers: ``FriendlyName`` exact, ``PhoneNumber`` partial with ``*`` wildcards."""
        name, phone = request.query.get("FriendlyName"), request.query.get("PhoneNumber")
        kind = _TYPES.get(request.match_info.get("Type", ""))
        wanted = _pattern(phone) if phone is not None else None
        items = [_shown(e, typed=kind is not None) for e in self._owned()
                 if (name is None or e.data["friendly_name"] == name)
                 and (wanted is None or wanted.search(e.data["phone_number"]))
                 and (kind is None or e.data.get("type") == kind)]
        return _page(request, "incoming_phone_numbers", items)

    async def fetch(self, request: web.Request) -> web.Response:
        entry = self.store.entry(_PROVIDER, request.match_info["Sid"])
        return web.json_response(_shown(entry)) if entry and entry.alive else _not_found(request)

    async def update(self, request: web.Request) -> web.Response:
        """``POST IncomingPhoneNumbers/{Sid}.json``: set the given fields, answer the number."""
        entry = self.store.entry(_PROVIDER, request.match_info["Sid"])
        if entry is None or not entry.alive:
            return _not_found(request)
        form = await request.post()
        changed = {_snake(k): str(form[k]) for k in _UPDATABLE if k in form}
        data = dict(entry.data, **changed, _updated=time.time())
        self.store.update(_PROVIDER, entry.rid, data)
        return web.json_response(_shown(entry._replace(data=data)))

    async def delete(self, request: web.Request) -> web.Response:
        if not self.store.delete(_PROVIDER, request.match_info["Sid"]):
            return _not_found(request)
        return web.Response(status=204)

    def _inbound(self, to: Optional[str]) -> List[Dict[str, Any]]:
        """SMS delivered to ``to`` (or to any owned number), newest first."""
        numbers = [to] if to else [e.data["phone_number"] for e in self._owned()]
        found = [m for number in numbers for m in self.store.messages(number)]
        return sorted(found, key=lambda m: m["seq"], reverse=True)

    async def messages(self, request: web.Request) -> web.Response:
        sender, account = request.query.get("From"), request.match_info["AccountSid"]
        found = [m for m in self._inbound(request.query.get("To")) if sender is None or m.get("from") == sender]
        return _page(request, "messages", [_message(account, m) for m in found])

    def _find_message(self, request: web.Request) -> Optional[Dict[str, Any]]:
        sid = request.match_info["Sid"]
        return next((m for m in self._inbound(None) if f"SM{m['seq']:032x}" == sid), None)

    async def message(self, request: web.Request) -> web.Response:
        found = self._find_message(request)
        if found is None:
            return _not_found(request)
        return web.json_response(_message(request.match_info["AccountSid"], found))

    async def delete_message(self, request: web.Request) -> web.Response:
        found = self._find_message(request)
        if found is None or not self.store.delete_messages(found["to"], [found["seq"]]):
            return _not_found(request)
        return web.Response(status=204)


def _country(account: str, code: str) -> Dict[str, Any]:
    """An AvailablePhoneNumberCountry resource (spec example's fields)."""
    base = f"{_API.format(AccountSid=account)}/AvailablePhoneNumbers/{code}"
    return {"country_code": code, "country": _COUNTRIES[code], "uri": base + ".json", "beta": False,
            "subresource_uris": {"local": base + "/Local.json", "toll_free": base + "/TollFree.json"}}


def setup(app: web.Application, store: SandboxStore) -> None:
    """Mount Twilio's routes under ``/twilio``; typed number routes before ``{Sid}``."""
    api = _Twilio(store)
    base = PREFIX + _API
    numbers = base + "/IncomingPhoneNumbers"
    available = base + "/AvailablePhoneNumbers"
    routes: List[Tuple[str, str, Handler]] = [
        ("GET", available + ".json", api.countries),
        ("GET", available + "/{CountryCode}.json", api.country),
        ("GET", available + "/{CountryCode}/{Type:Local|TollFree}.json", api.search),
        ("GET", numbers + ".json", api.find),
        ("GET", numbers + "/{Type:Local|Mobile|TollFree}.json", api.find),
        ("POST", numbers + "/{Type:Local|Mobile|TollFree}.json", api.buy),
        ("GET", numbers + "/{Sid}.json", api.fetch),
        ("POST", numbers + "/{Sid}.json", api.update),
        ("DELETE", numbers + "/{Sid}.json", api.delete),
        ("GET", base + "/Messages.json", api.messages),
        ("GET", base + "/Messages/{Sid}.json", api.message),
        ("DELETE", base + "/Messages/{Sid}.json", api.delete_message),
    ]
    app.router.add_post(numbers + ".json", _authenticated(api.buy, test_allowed=True))
    for method, path, handler in routes:
        app.router.add_route(method, path, _authenticated(handler))
