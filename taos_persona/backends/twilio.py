"""Twilio: buy a phone number, read the SMS it receives, release it.

REST API 2010-04-01, form-encoded, HTTP basic auth with ``TWILIO_ACCOUNT_SID``
and ``TWILIO_AUTH_TOKEN`` (read at acquire *and* at release time, never stored).
Every route, method, parameter and response field used here is checked
against Twilio's own OpenAPI description by ``tests/test_backend_twilio.py``.

* ``plan`` chooses the number's ``FriendlyName`` (the persona's unique name),
  so :meth:`recover` can find a number bought just before a crash with
  ``GET IncomingPhoneNumbers.json?FriendlyName=...``.
* ``release`` is ``DELETE IncomingPhoneNumbers/{Sid}.json``; a 404 with Twilio's
  code 20404 means the number is already gone, which is success.
* **Test credentials** (``TWILIO_TEST_CREDENTIALS=1``): Twilio's test account
  can "buy" the magic number +15005550006 but answers every other request with
  403 (code 20008), and nothing it buys exists. In that mode acquire buys the
  magic number (or the ``phone_number`` option) without searching, the token
  says ``test_credentials``, release does nothing (there is nothing to release;
  it logs that at INFO), recover answers ``None`` and reading SMS raises a
  ConfigurationError, since test credentials cannot list messages. The mode is
  an explicit flag because a test account SID looks exactly like a live one.
"""
from __future__ import annotations

import functools
import logging
import os
import re
from typing import Any, Dict, List, Optional
from urllib.parse import parse_qsl, urlsplit

from ..errors import ConfigurationError, InvalidTokenError, ProviderAuthError, ProviderError
from ..naming import Persona
from ..resources import PhoneNumber
from ._http import HttpBackend, HttpResponse
from ._discovered import Discovered, carries_prefix, provider_time
from .base import Lease, register

__all__ = ["TwilioBackend", "ACCOUNT_SID_ENV", "AUTH_TOKEN_ENV", "TEST_CREDENTIALS_ENV",
           "MAGIC_NUMBER", "ROUTES"]

ACCOUNT_SID_ENV = "TWILIO_ACCOUNT_SID"
AUTH_TOKEN_ENV = "TWILIO_AUTH_TOKEN"  # noqa: S105 - the variable's name, not its value
TEST_CREDENTIALS_ENV = "TWILIO_TEST_CREDENTIALS"
MAGIC_NUMBER = "+15005550006"
"""The number Twilio's test credentials can always buy."""

_ACCOUNT = "/2010-04-01/Accounts/{AccountSid}"
ROUTES = {
    "search": ("GET", _ACCOUNT + "/AvailablePhoneNumbers/{CountryCode}/Local.json"),
    "buy": ("POST", _ACCOUNT + "/IncomingPhoneNumbers.json"),
    "find": ("GET", _ACCOUNT + "/IncomingPhoneNumbers.json"),
    "fetch": ("GET", _ACCOUNT + "/IncomingPhoneNumbers/{Sid}.json"),
    "delete": ("DELETE", _ACCOUNT + "/IncomingPhoneNumbers/{Sid}.json"),
    "messages": ("GET", _ACCOUNT + "/Messages.json"),
}
"""Name -> (method, path template, as in Twilio's OpenAPI description) of every call made."""

_OPTIONS = ("country", "area_code", "phone_number")
_CANDIDATES = 3
"""How many available numbers acquire tries when others buy them first (error 21422)."""
_FRIENDLY_NAME_MAX = 64
_LIST_PAGE = 1000
"""Twilio's largest page: discovery reads the whole account in as few requests as it can."""
_NOT_FOUND = 20404
_NOT_AVAILABLE = 21422
_TEST_ONLY = 20008
_ACCOUNT_SID_RE = re.compile(r"AC[0-9a-fA-F]{32}\Z")
_NUMBER_SID_RE = re.compile(r"PN[0-9a-f]{32}\Z")
_PHONE_RE = re.compile(r"\+[1-9][0-9]{5,14}\Z")
_COUNTRY_RE = re.compile(r"[A-Za-z]{2}\Z")
_FRIENDLY_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")

log = logging.getLogger(__name__)


@register("twilio")
class TwilioBackend(HttpBackend):
    """Buys a number named after the persona; ``release`` deletes it from the account."""

    name_fields = ("friendly_name",)

    provider = "twilio"
    default_base_url = "https://api.twilio.com"
    base_url_env = "TAOS_PERSONA_TWILIO_URL"
    account_env = ACCOUNT_SID_ENV

    def account(self) -> str:
        """The account SID: Twilio shows it in every URL; it is not a secret.

        The auth token is checked here too, so that a missing one fails in ``plan``,
        before an intent is written for a purchase that could never be made.
        """
        self.credential(AUTH_TOKEN_ENV)
        return self._account_sid()

    def plan(self, persona: Persona, **options: Any) -> Dict[str, Any]:
        """Choose the FriendlyName; check ``country``, ``area_code`` and ``phone_number``."""
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise ConfigurationError(f"twilio does not know the option(s) {', '.join(unknown)}; "
                                     f"known: {', '.join(_OPTIONS)}")
        name = persona.unique_name()
        if len(name) > _FRIENDLY_NAME_MAX:
            raise ConfigurationError(f"twilio: the name {name!r} is longer than Twilio's "
                                     f"{_FRIENDLY_NAME_MAX}-character FriendlyName; use a shorter run id")
        planned: Dict[str, Any] = {"friendly_name": name, "account_sid": self._account_sid(),
                                   "country": str(options.get("country") or "US").upper(),
                                   "test_credentials": _test_mode()}
        for key in ("area_code", "phone_number"):
            if options.get(key):
                planned[key] = str(options[key])
        _check_planned(planned)
        return self.stamp(planned)

    async def acquire(self, persona: Persona, **options: Any) -> Lease:
        """Buy a number (searching for one unless ``phone_number`` is given), named as planned."""
        self.take_origin(options, "number")
        planned = options if "friendly_name" in options else self.plan(persona, **options)
        _check_planned(planned)
        if not str(planned["friendly_name"]).startswith(persona.prefix):
            raise ConfigurationError(f"twilio: FriendlyName {planned['friendly_name']!r} does not "
                                     f"start with the run's prefix {persona.prefix!r}")
        account = self._account_sid(planned.get("account_sid"))
        if planned.get("phone_number") or planned.get("test_credentials"):
            candidates = [planned.get("phone_number") or MAGIC_NUMBER]
        else:
            candidates = await self._available(account, planned)
        bought = await self._buy(account, candidates, planned)
        token = self.stamp(self._token(bought, account, bool(planned.get("test_credentials"))))
        reader = functools.partial(self._texts, token)
        return Lease(PhoneNumber(token["phone_number"], reader), token)

    async def release(self, token: Dict[str, Any]) -> None:
        """Delete the number from the account; Twilio's 20404 means it is already gone."""
        if token.get("test_credentials"):
            log.info("twilio: %s was bought with test credentials; nothing exists to release",
                     token.get("phone_number"))
            return
        sid = str(token.get("sid", ""))
        if not _NUMBER_SID_RE.match(sid):
            raise InvalidTokenError(f"twilio: token has no valid IncomingPhoneNumber sid: {sid!r}")
        self.check_origin(token, f"number {sid}")
        account = self._account_sid(token.get("account_sid"))
        if not await self._still_ours(account, sid, token.get("friendly_name")):
            return
        response = await self._api("delete", account, ok=(204,), gone=(404,), Sid=sid)
        if response.status == 404 and _error_code(response) != _NOT_FOUND:
            raise _twilio_error(response)

    async def _still_ours(self, account: str, sid: str, name: Any) -> bool:
        """Fetch number ``sid``: False if it is gone; True if its FriendlyName is the record's
        ``name`` (which carries the run); else :class:`InvalidTokenError`, nothing deleted."""
        if not isinstance(name, str) or not _FRIENDLY_NAME_RE.match(name):
            raise InvalidTokenError(f"twilio: the record of number {sid} names no FriendlyName we make "
                                    f"({str(name)[:80]!r}); not deleted")
        response = await self._api("fetch", account, ok=(200,), gone=(404,), Sid=sid)
        if response.status == 404:
            if _error_code(response) != _NOT_FOUND:
                raise _twilio_error(response)
            return False
        found = response.field("friendly_name")
        if found != name:
            raise InvalidTokenError(f"twilio: number {sid} is named {found[:80]!r}, not the record's "
                                    f"{name!r}: another run's or the account's own; not deleted")
        return True

    async def recover(self, planned: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        """The token of the number bought under the planned FriendlyName, or None."""
        if planned.get("test_credentials"):
            return None  # test credentials never create anything
        self.check_origin(planned, "number")
        name = planned.get("friendly_name")
        if not isinstance(name, str) or not _FRIENDLY_NAME_RE.match(name):
            raise InvalidTokenError(f"twilio: the intent's friendly_name {name!r} is not one we make")
        account = self._account_sid(planned.get("account_sid"))
        found = await self._named(account, name)
        return self.stamp(self._token(found, account, False)) if found else None

    async def _available(self, account: str, planned: Dict[str, Any]) -> List[str]:
        """A few SMS-capable local numbers that are for sale now."""
        params: Dict[str, Any] = {"SmsEnabled": "true", "PageSize": _CANDIDATES}
        if planned.get("area_code"):
            params["AreaCode"] = planned["area_code"]
        response = await self._api("search", account, params=params, CountryCode=planned["country"])
        numbers = [str(n["phone_number"]) for n in response.rows("available_phone_numbers")
                   if n.get("phone_number")]
        if not numbers:
            where = " ".join(str(planned[k]) for k in ("country", "area_code") if planned.get(k))
            raise ProviderError(f"twilio: no SMS-capable local number is for sale in {where}; "
                                "try another area_code or country")
        return numbers

    async def _buy(self, account: str, candidates: List[str], planned: Dict[str, Any]) -> Dict[str, Any]:
        """Buy the first candidate nobody else bought in the meantime.

        "Not available" (21422) can also mean that *we* bought it: a retried
        POST whose first answer was lost. The planned FriendlyName tells.
        """
        name = planned["friendly_name"]
        for number in candidates:
            response = await self._api("buy", account, ok=(201,), gone=(400,),
                                       data={"PhoneNumber": number, "FriendlyName": name})
            if response.status == 201:
                return _number(response)
            if _error_code(response) != _NOT_AVAILABLE:
                raise _twilio_error(response)
            ours = None if planned.get("test_credentials") else await self._named(account, name)
            if ours is not None:
                return ours
        raise ProviderError(f"twilio: {', '.join(candidates)} could not be bought: Twilio error "
                            "21422, not available (someone else bought it first); choose another "
                            "number or try again")

    async def _named(self, account: str, name: str) -> Optional[Dict[str, Any]]:
        """The account's number named ``name``, or None; more than one is an error."""
        response = await self._api("find", account, params={"FriendlyName": name, "PageSize": 20})
        found = [n for n in response.rows("incoming_phone_numbers") if n.get("friendly_name") == name
                 and _NUMBER_SID_RE.match(str(n.get("sid", "")))]
        if len(found) > 1:
            raise ProviderError(f"twilio: {len(found)} numbers are named {name!r}; expected at most "
                                "one, release them by hand in the Twilio console")
        return found[0] if found else None

    async def _texts(self, token: Dict[str, Any]) -> List[str]:
        """The reader of the PhoneNumber: bodies of inbound SMS to the number, newest first."""
        if token.get("test_credentials"):
            raise ConfigurationError(
                f"twilio: test credentials cannot read messages ({TEST_CREDENTIALS_ENV}=1); use live "
                "credentials, or the sandbox (TAOS_PERSONA_SANDBOX), to wait for an SMS code")
        account = self._account_sid(token.get("account_sid"))
        response = await self._api("messages", account,
                                   params={"To": token["phone_number"], "PageSize": 20})
        return [str(m.get("body") or "") for m in response.rows("messages")
                if m.get("direction") == "inbound"]

    async def _api(self, route: str, account: str, *, params: Optional[Dict[str, Any]] = None,
                   data: Optional[Dict[str, Any]] = None, ok: Any = (200,), gone: Any = (),
                   **path: str) -> HttpResponse:
        """One call of :data:`ROUTES`, authenticated with the account's SID and auth token."""
        method, template = ROUTES[route]
        auth = (account, self.credential(AUTH_TOKEN_ENV))
        try:
            return await self.request(method, template.format(AccountSid=account, **path),
                                      params=params, data=data, auth=auth, ok=ok, gone=gone,
                                      credential_env=(ACCOUNT_SID_ENV, AUTH_TOKEN_ENV))
        except ProviderAuthError as exc:
            if str(_TEST_ONLY) not in str(exc):
                raise
            raise ProviderAuthError(f"{exc}; these look like Twilio test credentials, which can only "
                                    f"buy magic numbers: set {TEST_CREDENTIALS_ENV}=1") from None

    async def discover(self, prefix: str) -> List[Discovered]:
        """The account's numbers whose FriendlyName carries ``prefix``, every page of
        ``GET IncomingPhoneNumbers.json`` read (Twilio's FriendlyName filter is an exact match)."""
        if _test_mode():
            return []  # test credentials own nothing and may not list
        account = self._account_sid()
        found: List[Discovered] = []
        params: Optional[Dict[str, Any]] = {"PageSize": _LIST_PAGE}
        while params is not None:
            page = (await self._api("find", account, params=params)).json()
            for number in page["incoming_phone_numbers"]:
                name = number.get("friendly_name")
                if carries_prefix(name, prefix):
                    found.append(Discovered(self._token(number, account, False), name,
                                            number["phone_number"], provider_time(number.get("date_created"))))
            following = page.get("next_page_uri")
            params = dict(parse_qsl(urlsplit(following).query)) if following else None
        return found

    def _account_sid(self, expected: Optional[str] = None) -> str:
        """TWILIO_ACCOUNT_SID, checked against the account a token or intent was made in."""
        account = self.credential(ACCOUNT_SID_ENV)
        if not _ACCOUNT_SID_RE.match(account):
            raise ConfigurationError(f"{ACCOUNT_SID_ENV} is not a Twilio account SID "
                                     "(AC followed by 32 hex digits)")
        if expected and expected != account:
            raise ConfigurationError(
                f"twilio: this number belongs to account {expected}, but {ACCOUNT_SID_ENV} is "
                f"{account}; run the release with that account's credentials")
        return account

    @staticmethod
    def _token(number: Dict[str, Any], account: str, test_credentials: bool) -> Dict[str, Any]:
        """The release token of an IncomingPhoneNumber resource: ids only, nothing secret."""
        return {"sid": number["sid"], "account_sid": account, "phone_number": number["phone_number"],
                "friendly_name": number.get("friendly_name"), "test_credentials": test_credentials}


def _test_mode() -> bool:
    return os.environ.get(TEST_CREDENTIALS_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _check_planned(planned: Dict[str, Any]) -> None:
    """Refuse values that would not fit in a URL path or that Twilio would reject anyway."""
    if not _COUNTRY_RE.match(str(planned.get("country", "US"))):
        raise ConfigurationError(f"twilio: country must be an ISO 3166-1 alpha-2 code like 'US', "
                                 f"not {planned.get('country')!r}")
    phone = planned.get("phone_number")
    if phone and not _PHONE_RE.match(str(phone)):
        raise ConfigurationError(f"twilio: phone_number must be in E.164 form like '+15005550006', "
                                 f"not {phone!r}")


def _number(response: HttpResponse) -> Dict[str, Any]:
    """The IncomingPhoneNumber resource of a purchase's answer."""
    number = response.json()
    if not isinstance(number, dict) or not _NUMBER_SID_RE.match(str(number.get("sid", ""))):
        raise ProviderError(f"{response.what} answered {response.status} without a phone number sid")
    return number


def _error_code(response: HttpResponse) -> Optional[int]:
    """Twilio's own error code from an error body, if it has one."""
    try:
        body = response.json()
    except ProviderError:
        return None
    return body.get("code") if isinstance(body, dict) else None


def _twilio_error(response: HttpResponse) -> ProviderError:
    """A ProviderError quoting Twilio's code and message."""
    try:
        body = response.json()
    except ProviderError as exc:
        return exc
    body = body if isinstance(body, dict) else {}
    return ProviderError(f"{response.what} answered {response.status}: Twilio error "
                         f"{body.get('code')}: {str(body.get('message', ''))[:200]} "
                         f"({body.get('more_info', 'https://www.twilio.com/docs/errors')})")
