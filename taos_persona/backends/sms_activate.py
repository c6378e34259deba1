"""SMS-Activate (and its protocol-compatible successors): one number per activation.

The protocol is one endpoint, ``/stubs/handler_api.php``, with the action and
the API key as query parameters and short plain-text answers
(``ACCESS_NUMBER:<id>:<phone>``, ``STATUS_OK:<code>``, ``NO_NUMBERS``...).
Most errors arrive with status 200, so every answer is read here; successors
that answer with 4xx carry the same words in the body and are read the same way.

Choices where the provider leaves room:

* **Release** asks ``getStatus`` first. An activation that has received a code
  is *finished* (``setStatus`` 6: the provider has charged for it and will not
  cancel it); one that has not is *cancelled* (``setStatus`` 8: refunded).
  ``NO_ACTIVATION`` and ``STATUS_CANCEL`` mean it is already over: success.
* **EARLY_CANCEL_DENIED** (no cancel during the first minutes of an
  activation): by default release raises :class:`RetryableProviderError` at
  once, so the registry keeps the activation and a later sweep cancels it; a
  test run is not held up for minutes on its way out. Set
  ``TAOS_PERSONA_SMS_ACTIVATE_CANCEL_WAIT`` to a number of seconds to keep
  retrying the cancel for that long instead.
* **No recover.** The provider lets the client choose no name, so an
  activation created just before a crash cannot be told apart from one that a
  concurrent run with the same API key holds: ``getActiveActivations`` shows
  service, country and a provider-local time without a zone. Cancelling on a
  guess could break a live run, so :meth:`recover` is not implemented and the
  sweep reports such intents. The provider itself ends an activation after its
  lifetime (typically 20 minutes) and refunds it when no SMS arrived, which
  bounds what such an orphan costs; past :attr:`max_lifetime` (25 minutes,
  a margin over that) the sweep drops the intent as expired. The same holds for a ``getNumber`` whose
  answer was lost and that the HTTP layer retried: the first activation is
  never recorded, but no app sends an SMS to a number nobody was given, so
  it expires unused and refunded.
* The API key travels as a query parameter, so it is read from
  ``SMS_ACTIVATE_API_KEY`` for each request and never written into a message:
  errors quote the provider's answer word, never the URL's query.
"""
from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import time
from typing import Any, Dict, List

from ..errors import (ConfigurationError, InvalidTokenError, ProviderAuthError, ProviderError,
                      RetryableProviderError)
from ..naming import Persona
from ..resources import PhoneNumber
from ._http import HttpBackend, _env_number, _host
from ._origin import account_of
from ._discovered import Discovered
from .base import Lease, register

__all__ = ["SmsActivateBackend", "API_KEY_ENV", "URL_ENV", "CANCEL_WAIT_ENV", "HANDLER_PATH",
           "DEFAULT_URL"]

API_KEY_ENV = "SMS_ACTIVATE_API_KEY"
URL_ENV = "TAOS_PERSONA_SMS_ACTIVATE_URL"
"""The full handler URL of the provider (or of a successor that speaks the same protocol)."""
CANCEL_WAIT_ENV = "TAOS_PERSONA_SMS_ACTIVATE_CANCEL_WAIT"
"""Seconds release keeps retrying a cancel the provider refuses as too early (default 0)."""
HANDLER_PATH = "/stubs/handler_api.php"
DEFAULT_URL = "https://api.sms-activate.ae" + HANDLER_PATH

STATUS_FINISH = 6
"""setStatus: complete the activation (the code was received and used)."""
STATUS_CANCEL = 8
"""setStatus: the number is not needed, cancel the activation (refunded if no SMS came)."""

_OPTIONS = {"service": "service", "country": "country", "operator": "operator",
            "max_price": "maxPrice"}
"""Our option name -> the getNumber query parameter it becomes."""
_OVER = ("NO_ACTIVATION", "WRONG_ACTIVATION_ID", "STATUS_CANCEL", "ACCESS_CANCEL",
         "ALREADY_CANCEL", "ALREADY_FINISH", "ACCESS_ACTIVATION")
"""Answers that mean the activation is already over: release has nothing left to do."""
_CODE_RECEIVED = ("STATUS_OK", "STATUS_WAIT_RETRY")
_WAITING = ("STATUS_WAIT_CODE", "STATUS_WAIT_RESEND")
_AUTH_ANSWERS = ("BAD_KEY", "NO_KEY")
_ERROR_STATUSES = (400, 401, 403, 404)
"""Statuses with which some successors send the protocol's error words; read like 200s."""
_ID_RE = re.compile(r"[0-9A-Za-z_-]{1,64}\Z")


@register("sms_activate")
class SmsActivateBackend(HttpBackend):
    """Rents a number for one activation; ``release`` cancels or finishes it."""

    provider = "sms_activate"
    default_base_url = DEFAULT_URL
    max_lifetime = 25 * 60.0  # activations end after 20 minutes; the margin covers clock skew
    base_url_env = URL_ENV
    account_env = API_KEY_ENV

    @property
    def host(self) -> str:
        """``scheme://host:port`` of the handler, for messages."""
        return _host(self.base_url)

    def account(self) -> str:
        """A keyed hash of ``SMS_ACTIVATE_API_KEY``: which account, never the key."""
        return account_of(self.credential(API_KEY_ENV))

    @property
    def base_url(self) -> str:
        """The handler URL: ``TAOS_PERSONA_SMS_ACTIVATE_URL`` > sandbox > the real provider.

        The override may be the full handler URL or just the host; the sandbox
        serves the real path under ``/sms_activate``.
        """
        override = os.environ.get(URL_ENV, "").strip().rstrip("/")
        if override:
            has_path = override.split("://", 1)[-1].count("/") > 0
            return override if has_path else override + HANDLER_PATH
        url = super().base_url
        return url if url.endswith(HANDLER_PATH) else url + HANDLER_PATH

    def plan(self, persona: Persona, **options: Any) -> Dict[str, Any]:
        """Check the options (``service``, ``country``, ``operator``, ``max_price``); no names."""
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise ConfigurationError(
                f"sms_activate does not know the option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(_OPTIONS))}")
        planned = {"service": "ot"}  # "ot" is the provider's "any other service"
        planned.update({k: v for k, v in options.items() if v is not None})
        return self.stamp(planned)

    async def acquire(self, persona: Persona, **options: Any) -> Lease:
        """``getNumber``: one activation, whose id is the release token."""
        self.take_origin(options, "activation")
        planned = self.plan(persona, **options)
        query = {_OPTIONS[k]: v for k, v in planned.items() if k in _OPTIONS}
        answer = await self._call("getNumber", **query)
        parts = answer.split(":")
        if parts[0] != "ACCESS_NUMBER" or len(parts) != 3 or not _ID_RE.match(parts[1]):
            raise self._refusal("getNumber", answer)
        activation, phone = parts[1], parts[2]
        token = self.stamp({"id": activation, "phone": phone, "service": planned["service"],
                            "created": time.time()})
        number = phone if phone.startswith("+") else "+" + phone
        reader = functools.partial(self._codes, activation)
        return Lease(PhoneNumber(number, reader), token)

    async def release(self, token: Dict[str, Any]) -> None:
        """Finish an activation that got a code, cancel one that did not; gone is fine."""
        activation = _activation_id(token)
        self.check_origin(token, f"activation {activation}")
        status = await self._call("getStatus", id=activation)
        if _word(status) in _OVER:
            return
        if _word(status) in _CODE_RECEIVED:
            answer = await self._call("setStatus", id=activation, status=STATUS_FINISH)
        elif _word(status) in _WAITING:
            answer = await self._cancel(activation)
        else:
            raise self._refusal("getStatus", status)
        if _word(answer) not in _OVER:
            raise self._refusal("setStatus", answer)

    async def _cancel(self, activation: str) -> str:
        """``setStatus`` 8, retried while the provider refuses it as too early, within a bound."""
        wait = _env_number(CANCEL_WAIT_ENV, 0.0)
        deadline = time.monotonic() + wait
        while True:
            answer = await self._call("setStatus", id=activation, status=STATUS_CANCEL)
            if _word(answer) == "BAD_STATUS":
                # A code arrived between getStatus and the cancel: finish it instead.
                return await self._call("setStatus", id=activation, status=STATUS_FINISH)
            if _word(answer) != "EARLY_CANCEL_DENIED":
                return answer
            left = deadline - time.monotonic()
            if left <= 0:
                raise RetryableProviderError(
                    f"sms_activate: activation {activation} cannot be cancelled yet "
                    f"(EARLY_CANCEL_DENIED: the provider refuses cancels in an activation's "
                    f"first minutes); it stays in the registry for the next sweep, or set "
                    f"{CANCEL_WAIT_ENV}=<seconds> to wait for it")
            await asyncio.sleep(min(5.0, max(wait / 10, 0.05), left))

    async def _codes(self, activation: str) -> List[str]:
        """The reader of the PhoneNumber: the code the provider extracted, once there is one."""
        answer = await self._call("getStatus", id=activation)
        word, _, code = answer.partition(":")
        if word in _CODE_RECEIVED and code:
            return [code]
        if word in _WAITING or word in _CODE_RECEIVED:
            return []
        if word in _OVER:
            raise ProviderError(f"sms_activate: activation {activation} is over ({word}: "
                                "cancelled or expired) and will receive no code")
        raise self._refusal("getStatus", answer)

    async def _call(self, action: str, **params: Any) -> str:
        """One request to the handler; returns the answer text, raising for account-level errors."""
        query = {"api_key": self.credential(API_KEY_ENV), "action": action}
        query.update({k: str(v) for k, v in params.items()})
        response = await self.request("GET", "", params=query, ok=(200,), gone=_ERROR_STATUSES,
                                      credential_env=(API_KEY_ENV,), creates=action == "getNumber")
        answer = response.text.strip()
        word = _word(answer)
        if word in _AUTH_ANSWERS or (response.status in (401, 403) and not word.isupper()):
            raise ProviderAuthError(f"sms_activate at {self.host}: {action} was refused ({word or response.status}"
                                    f"); check {API_KEY_ENV}")
        if word == "ERROR_SQL":
            raise RetryableProviderError(f"sms_activate at {self.host}: {action} failed with the provider's "
                                         "ERROR_SQL; try again later")
        if word == "BANNED":
            raise ProviderError(f"sms_activate: the account is banned ({answer[:60]}); "
                                f"see the provider's account page for {API_KEY_ENV}'s account")
        return answer

    async def discover(self, prefix: str) -> List[Discovered]:
        """``getActiveActivations``: the account's activations, all of them.

        Activations carry no client-chosen name (``name`` is None) and their
        ``activationTime`` is provider-local without a zone (``created`` is None), so
        the discovery sweep lists them for the operator and never releases one on its own.
        """
        answer = await self._call("getActiveActivations")
        if _word(answer) in ("NO_ACTIVATIONS", "NO_ACTIVATION"):
            return []
        try:
            rows = json.loads(answer).get("activeActivations") or []
        except (ValueError, AttributeError):
            rows = None
        if not isinstance(rows, list):
            raise self._refusal("getActiveActivations", answer)
        return [Discovered({"id": str(row["activationId"]), "phone": str(row.get("phoneNumber", "")),
                            "service": str(row.get("serviceCode", ""))}, None,
                           "+" + str(row.get("phoneNumber", "")).lstrip("+"))
                for row in rows if isinstance(row, dict) and row.get("activationId") is not None]

    def _refusal(self, action: str, answer: str) -> ProviderError:
        """The error for an answer that ends the operation (``NO_NUMBERS``, ``BAD_SERVICE``...)."""
        hints = {"NO_NUMBERS": "no number is free for this service/country now; try another "
                               "country or later",
                 "NO_BALANCE": "top up the account's balance",
                 "BAD_SERVICE": "the service code is wrong; see the provider's list",
                 "BAD_STATUS": "the activation is in a state that does not allow this"}
        word = _word(answer)
        shown = word if word.isupper() else repr(_scrub(answer, os.environ.get(API_KEY_ENV, "")))
        hint = hints.get(word, "unexpected answer")
        return ProviderError(f"sms_activate at {self.host}: {action} answered {shown}: {hint}")


def _word(answer: str) -> str:
    """The protocol word of an answer: ``STATUS_OK`` of ``STATUS_OK:1234``."""
    return answer.split(":", 1)[0].strip()


def _scrub(text: str, secret: str) -> str:
    """A short excerpt of ``text`` without ``secret`` in it."""
    text = " ".join(text.split())[:100]
    return text.replace(secret, "***") if len(secret) >= 4 else text


def _activation_id(token: Dict[str, Any]) -> str:
    """The activation id of a token, checked so that a tampered registry cannot inject a query."""
    activation = str(token.get("id", ""))
    if not _ID_RE.match(activation):
        raise InvalidTokenError(f"sms_activate: token has no valid activation id: {activation!r}")
    return activation
