"""The providers' own public clients against the sandbox (issue 12), their answers checked against the specs.

Each class drives one client, unchanged, through the lifecycle our backends
use and through every gap the issue lists. The clients are test-only
dependencies pinned in ``requirements/clients.txt`` (the ``test`` extra);
a client that is not installed skips its class with a line saying so.
Where ``../shared/specs`` has the provider's OpenAPI file, the client talks
through the recording proxy of :mod:`tests._openapi` and every exchange is
checked against the spec, ``null`` only where the spec says ``nullable``.
The clients are synchronous (requests), so they run in a worker thread
while the proxy serves from the test's event loop.
"""
from __future__ import annotations

import asyncio
import email
import importlib.util
import os
import re
import tempfile
import unittest
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, Optional, TypeVar
from unittest import mock
from urllib.parse import parse_qs, quote, urlparse

from tests._openapi import OpenApiConformance, spec_path
from tests._sandbox import SandboxTestCase
from tests._support import REPO, needs_aiohttp

T = TypeVar("T")
REQUIREMENTS = os.path.join(REPO, "requirements", "clients.txt")


def _pins() -> Dict[str, str]:
    """Import name -> pinned requirement, from requirements/clients.txt (``req  # import: module``)."""
    pins = {}
    with open(REQUIREMENTS, encoding="utf-8") as handle:
        for line in handle:
            requirement, _, module = line.partition("# import:")
            if requirement.strip() and not requirement.startswith("#"):
                pins[module.strip()] = requirement.strip()
    return pins


PINS = _pins()
TWILIO_SPEC = spec_path("TAOS_PERSONA_TWILIO_SPEC", "twilio_api_v2010.json")
MAILSAC_SPEC = spec_path("TAOS_PERSONA_MAILSAC_SPEC", "mailsac_openapi.json")
CLIENT_URL_ENV = "TAOS_TEST_CLIENT_URL"
"""Where the recording proxy listens; read back by the test that started it."""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a dotted name whose parent is missing
        return False


def needs(*modules: str) -> Callable[[T], T]:
    """Skip unless every client module is importable, saying which pinned package to install."""
    missing = [m for m in modules if not _installed(m)]
    reason = (f"needs {', '.join(PINS[m] for m in missing)} "
              "(pip install -r requirements/clients.txt, or pip install -e '.[test]')")
    return unittest.skipIf(bool(missing), reason)


def needs_spec(path: str) -> Callable[[T], T]:
    return unittest.skipUnless(os.path.exists(path), f"needs the provider's OpenAPI file at {path}")


class PinsTest(unittest.TestCase):
    def test_the_clients_extra_pins_what_requirements_pin(self) -> None:
        try:
            import tomllib
        except ModuleNotFoundError:
            self.skipTest("tomllib needs Python 3.11")
        with open(os.path.join(REPO, "pyproject.toml"), "rb") as handle:
            extras = tomllib.load(handle)["project"]["optional-dependencies"]
        self.assertEqual(sorted(extras["clients"]), sorted(PINS.values()))
        self.assertIn("taos-persona[clients]", extras["test"])
        self.assertEqual(set(PINS), {"twilio", "pymailtm", "smsactivate", "github", "authlib", "google.auth",
                                     "requests"})


class StrictSpec(OpenApiConformance):
    """The spec checks, stricter on ``null``: OpenAPI 3.0 allows it only where ``nullable: true``."""

    def check_type(self, value: Any, schema: Dict[str, Any]) -> None:
        if value is None:
            self.assertTrue(schema.get("nullable") or not schema.get("type"),  # type: ignore[attr-defined]
                            f"null where the spec's schema {schema} does not allow it")
            return
        super().check_type(value, schema)


class ClientCase(SandboxTestCase):
    """A sandbox per class; ``self.run_client(fn)`` runs a blocking client call off the event loop."""

    async def run_client(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(function, *args, **kwargs)

    def assertGone(self, provider: str, key: str, sandbox: Any = None) -> None:
        """Nothing alive at the provider under ``key`` (rid or lookup key): counted there, not by us."""
        rows = (sandbox or self.sandbox).resources(provider)
        self.assertEqual([r for r in rows if key in (r["rid"], r["data"].get("address"),
                                                     r["data"].get("access_token"), r["data"].get("phone"))], [])


class SpecClientCase(StrictSpec, ClientCase):
    """A client talking through the recording proxy; its exchanges are checked after each test."""

    async def asyncSetUp(self) -> None:
        await super().asyncSetUp()
        self.records = await self.start_recorder(CLIENT_URL_ENV)

    async def asyncTearDown(self) -> None:
        if self.records:  # a test that asks the sandbox directly has none
            self.check_records(self.records)
        await super().asyncTearDown()


# --- Twilio ---------------------------------------------------------------------------------------

_TWILIO_ERROR = {"type": "object", "properties": {
    "code": {"type": "integer"}, "message": {"type": "string"}, "more_info": {"type": "string"},
    "status": {"type": "integer"}}}


@needs_aiohttp
@needs("twilio")
@needs_spec(TWILIO_SPEC)
class TwilioClientTest(SpecClientCase):
    """twilio-python against the sandbox's Twilio, every exchange checked against Twilio's spec."""

    provider = "twilio"
    spec_file = TWILIO_SPEC
    error_schema = _TWILIO_ERROR

    async def asyncSetUp(self) -> None:
        from twilio.rest import Client

        await super().asyncSetUp()
        env = self.sandbox.env()
        self.client = Client(env["TWILIO_ACCOUNT_SID"], env["TWILIO_AUTH_TOKEN"])
        self.client.api.base_url = os.environ[CLIENT_URL_ENV]

    async def buy(self, name: str, area_code: int = 415) -> Any:
        found = await self.run_client(self.client.available_phone_numbers("US").local.list,
                                      area_code=area_code, limit=1)
        return await self.run_client(self.client.incoming_phone_numbers.create,
                                     phone_number=found[0].phone_number, friendly_name=name)

    async def test_lifecycle_buy_list_fetch_update_read_sms_release(self) -> None:
        number = await self.buy("taos-life-1")
        listed = await self.run_client(self.client.incoming_phone_numbers.list, friendly_name="taos-life-1")
        self.assertEqual([n.sid for n in listed], [number.sid])
        updated = await self.run_client(self.client.incoming_phone_numbers(number.sid).update,
                                        friendly_name="taos-life-renamed", sms_url="https://app.test/sms")
        self.assertEqual((updated.friendly_name, updated.sms_url), ("taos-life-renamed", "https://app.test/sms"))
        self.sandbox.deliver_sms(number.phone_number, "Your code is 551177")
        messages = await self.run_client(self.client.messages.list, to=number.phone_number)
        fetched = await self.run_client(self.client.messages(messages[0].sid).fetch)
        self.assertEqual(fetched.body, "Your code is 551177")
        self.assertTrue(await self.run_client(self.client.incoming_phone_numbers(number.sid).delete))
        self.assertGone("twilio", number.sid)

    async def test_unserved_routes_are_twilio_errors_20404(self) -> None:
        from twilio.base.exceptions import TwilioRestException

        for call in (self.client.messages("SM" + "0" * 32).fetch,
                     self.client.incoming_phone_numbers("PN" + "0" * 32).fetch):
            with self.subTest(call=call), self.assertRaises(TwilioRestException) as caught:
                await self.run_client(call)
            self.assertEqual((caught.exception.status, caught.exception.code), (404, 20404))

    async def test_country_and_toll_free_searches(self) -> None:
        country = await self.run_client(self.client.available_phone_numbers("US").fetch)
        self.assertEqual(country.country_code, "US")
        free = await self.run_client(self.client.available_phone_numbers("US").toll_free.list, limit=3)
        self.assertTrue(free)
        self.assertTrue(all(n.phone_number[2:5] in ("800", "833", "844", "855", "866", "877", "888")
                            for n in free))

    async def test_search_filters_and_real_area_codes(self) -> None:
        local = self.client.available_phone_numbers("US").local
        contains = await self.run_client(local.list, contains="415***77", limit=5)
        self.assertTrue(contains)
        self.assertTrue(all(re.search(r"415\d{3}77", n.phone_number) for n in contains))
        texas = await self.run_client(local.list, in_region="TX", limit=5)
        self.assertTrue(texas)
        self.assertEqual({n.region for n in texas}, {"TX"})
        for number in await self.run_client(local.list, limit=30):
            area, exchange = number.phone_number[2:5], number.phone_number[5:8]
            with self.subTest(number=number.phone_number):
                self.assertRegex(area, r"^[2-9](?!11)[0-8]\d$")  # never N11 nor N9X
                self.assertRegex(exchange, r"^[2-9](?!11)\d\d$")

    async def test_typed_subresources_are_not_sids(self) -> None:
        found = await self.run_client(self.client.available_phone_numbers("US").local.list, limit=1)
        bought = await self.run_client(self.client.incoming_phone_numbers.local.create,
                                       phone_number=found[0].phone_number, friendly_name="taos-local-1")
        listed = await self.run_client(self.client.incoming_phone_numbers.local.list)
        self.assertIn(bought.sid, [n.sid for n in listed])
        self.assertEqual(await self.run_client(self.client.incoming_phone_numbers.toll_free.list), [])
        await self.run_client(self.client.incoming_phone_numbers(bought.sid).delete)

    async def test_listing_by_name_and_wildcard_number_paged_with_real_dates(self) -> None:
        """What discovery needs: FriendlyName and PhoneNumber filters, paging, provider-side dates."""
        bought = [await self.buy(f"taos-page-{i}") for i in range(5)]
        self.assertTrue(self.sandbox.backdate("twilio", bought[0].sid, 7200))
        numbers = self.client.incoming_phone_numbers
        every = await self.run_client(numbers.list, page_size=2)  # follows next_page_uri
        self.assertEqual({n.sid for n in every}, {n.sid for n in bought})
        first = await self.run_client(numbers.page, page_size=2)
        self.assertEqual(len(list(first)), 2)
        self.assertIsNotNone(first.next_page_url)
        wildcard = bought[1].phone_number[:-2] + "**"
        hits = await self.run_client(numbers.list, phone_number=wildcard)
        self.assertIn(bought[1].sid, [n.sid for n in hits])
        oldest = (await self.run_client(numbers.list, friendly_name="taos-page-0"))[0]
        age = datetime.now(timezone.utc) - oldest.date_created
        self.assertGreater(age, timedelta(minutes=115))
        for number in bought:
            await self.run_client(numbers(number.sid).delete)


# --- mailsac, through its OpenAPI file ------------------------------------------------------------

@needs_aiohttp
@needs("requests")
@needs_spec(MAILSAC_SPEC)
class MailsacSpecClientTest(SpecClientCase):
    """requests in the form of mailsac's OpenAPI file: paths built from the spec's templates."""

    provider = "mailsac"
    spec_file = MAILSAC_SPEC
    exact_fields = False
    error_schema = {"$ref": "#/components/schemas/ErrorResponseBody"}

    async def asyncSetUp(self) -> None:
        await super().asyncSetUp()
        self.key = self.sandbox.env()["MAILSAC_API_KEY"]

    async def call(self, method: str, template: str, params: Optional[Dict[str, str]] = None,
                   **values: str) -> Any:
        """One operation of the spec, by its path template; the response."""
        import requests

        self.assertIn(method.lower(), self.spec["paths"][template])
        path = template.format(**{k: quote(v, safe="@") for k, v in values.items()})
        return await self.run_client(requests.request, method, os.environ[CLIENT_URL_ENV] + path,
                                     params=params, headers={"Mailsac-Key": self.key}, timeout=30)

    def address(self) -> str:
        return f"taos-{self.persona().run_id}@mailsac.com".lower()  # mailsac addresses are lower case

    async def test_lifecycle_and_release_with_delete_address_messages(self) -> None:
        email_address = self.address()
        self.assertEqual((await self.call("POST", "/addresses/{email}", email=email_address)).status_code, 200)
        listed = (await self.call("GET", "/addresses")).json()
        self.assertIn(email_address, [a["_id"] for a in listed])
        self.assertTrue(all(a.get("created") for a in listed))
        self.sandbox.deliver_email(email_address, "Verify", "Your code is 731904")
        messages = (await self.call("GET", "/addresses/{email}/messages", email=email_address)).json()
        one = await self.call("GET", "/addresses/{email}/messages/{messageId}", email=email_address,
                              messageId=messages[0]["_id"])
        self.assertEqual(one.json()["subject"], "Verify")
        released = await self.call("DELETE", "/addresses/{email}", {"deleteAddressMessages": "true"},
                                   email=email_address)
        self.assertEqual(released.status_code, 200)
        self.assertEqual((await self.call("GET", "/addresses/{email}/messages", email=email_address)).json(), [])
        self.assertGone("mailsac", email_address)

    async def test_limit_me_availability_and_message_delete(self) -> None:
        email_address = self.address()
        await self.call("POST", "/addresses/{email}", email=email_address)
        for n in range(5):
            self.sandbox.deliver_email(email_address, f"n{n}", "body")
        limited = (await self.call("GET", "/addresses/{email}/messages", {"limit": "2"}, email=email_address)).json()
        self.assertEqual([m["subject"] for m in limited], ["n4", "n3"])
        self.assertEqual((await self.call("GET", "/me")).status_code, 200)
        free = (await self.call("GET", "/addresses/{email}/availability", email=email_address)).json()
        self.assertEqual((free["available"], free["owned"]), (False, True))
        gone = await self.call("DELETE", "/addresses/{email}/messages/{messageId}", email=email_address,
                               messageId=limited[0]["_id"])
        self.assertEqual(gone.status_code, 200)
        missing = await self.call("GET", "/addresses/{email}/messages/{messageId}", email=email_address,
                                  messageId=limited[0]["_id"])
        self.assertEqual(missing.status_code, 404)
        await self.call("DELETE", "/addresses/{email}", email=email_address)

    def test_unserved_routes_answer_error_response_body(self) -> None:
        status, body = self.sandbox.request("GET", "/mailsac/no/such/route", headers={"Mailsac-Key": self.key})
        self.assertEqual(status, 404)
        self.check_fields(body, self.error_schema)
        status, body = self.sandbox.request("PATCH", "/mailsac/addresses/x@mailsac.com",
                                            headers={"Mailsac-Key": self.key})
        self.assertEqual(status, 405)
        self.check_fields(body, self.error_schema)


# --- mail.tm --------------------------------------------------------------------------------------

@needs_aiohttp
@needs("pymailtm")
class PymailtmClientTest(ClientCase):
    """pymailtm against the sandbox's mail.tm (no OpenAPI file exists for it)."""

    def setUp(self) -> None:
        super().setUp()
        import pymailtm.pymailtm as module

        home = tempfile.mkdtemp(prefix="taos-pymailtm-")
        for name, value in (("api_address", self.sandbox.url + "/mailtm"),
                            ("db_file", os.path.join(home, "account.json"))):
            patcher = mock.patch.object(module.MailTm, name, value)
            patcher.start()
            self.addCleanup(patcher.stop)
        pacing = mock.patch.object(module, "sleep", lambda seconds: None)  # the client's 2 s per message
        pacing.start()
        self.addCleanup(pacing.stop)
        self.module = module

    async def account(self) -> Any:
        """A new account, deleted after the test whatever happens (a second delete is a no-op)."""
        account = await self.run_client(self.module.MailTm().get_account)
        self.addCleanup(account.delete_account)
        return account

    async def get(self, account: Any, path: str) -> Any:
        import requests

        return await self.run_client(requests.get, account.api_address + path, headers=account.auth_headers,
                                     timeout=30)

    async def test_lifecycle_create_read_delete(self) -> None:
        account = await self.account()
        self.sandbox.deliver_email(account.address, "Verify", "Your code is 120934")
        messages = await self.run_client(account.get_messages)
        self.assertEqual((messages[0].subject, messages[0].text), ("Verify", "Your code is 120934"))
        self.assertTrue(await self.run_client(account.delete_account))
        self.assertGone("mailtm", account.address)

    async def test_pages_of_30_end_in_an_empty_page(self) -> None:
        account = await self.account()
        for n in range(35):
            self.sandbox.deliver_email(account.address, f"m{n}", "body")
        sizes, page = [], 1
        while page <= 10:  # a reader that stops at the first empty page, bounded
            sizes.append(len(await self.run_client(account.get_messages, page)))
            if sizes[-1] == 0:
                break
            page += 1
        self.assertEqual(sizes, [30, 5, 0])
        view = (await self.get(account, "/messages?page=1")).json()["hydra:view"]
        self.assertEqual((view["hydra:next"], view["hydra:last"]), ("/messages?page=2", "/messages?page=2"))

    async def test_download_sources_patch_and_delete_a_message(self) -> None:
        import requests

        account = await self.account()
        self.sandbox.deliver_email(account.address, "Raw", "Your code is 664411")
        listed = (await self.get(account, "/messages")).json()["hydra:member"][0]
        raw = await self.get(account, listed["downloadUrl"])
        self.assertEqual((raw.status_code, raw.headers["Content-Type"]), (200, "message/rfc822"))
        self.assertEqual(email.message_from_bytes(raw.content)["Subject"], "Raw")
        source = (await self.get(account, f"/sources/{listed['id']}")).json()
        self.assertIn("664411", source["data"])
        headers = dict(account.auth_headers, **{"Content-Type": "application/merge-patch+json"})
        seen = await self.run_client(requests.patch, f"{account.api_address}/messages/{listed['id']}",
                                     json={"seen": True}, headers=headers, timeout=30)
        self.assertEqual(seen.status_code, 200)
        self.assertTrue((await self.get(account, f"/messages/{listed['id']}")).json()["seen"])
        gone = await self.run_client(requests.delete, f"{account.api_address}/messages/{listed['id']}",
                                     headers=account.auth_headers, timeout=30)
        self.assertEqual(gone.status_code, 204)
        missing = await self.get(account, f"/messages/{listed['id']}")
        self.assertEqual((missing.status_code, missing.json()["@type"]), (404, "hydra:Error"))

    async def test_unserved_routes_are_hydra_errors(self) -> None:
        account = await self.account()
        for path in ("/no/such/route", "/messages/x/y/z"):
            answer = await self.get(account, path)
            with self.subTest(path=path):
                self.assertEqual(answer.status_code, 404)
                self.assertEqual(answer.headers["Content-Type"].split(";")[0], "application/ld+json")
                self.assertEqual(answer.json()["@type"], "hydra:Error")


# --- sms-activate ---------------------------------------------------------------------------------

@needs_aiohttp
@needs("smsactivate")
class SmsActivateClientTest(ClientCase):
    """smsactivate 1.5 (SMSActivateAPI) against the sandbox's handler_api.php."""

    def setUp(self) -> None:
        super().setUp()
        from smsactivate.api import SMSActivateAPI

        self.api = SMSActivateAPI(self.sandbox.env()["SMS_ACTIVATE_API_KEY"])
        self.api._SMSActivateAPI__api_url = self.sandbox.url + "/sms_activate/stubs/handler_api.php"

    async def test_lifecycle_number_code_finish_stays_ok(self) -> None:
        number = await self.run_client(self.api.getNumber, service="ot", country=0)
        self.assertNotIn("error", number)
        self.sandbox.deliver_sms(str(number["phone"]), "Your code is 908172")
        self.assertEqual(await self.run_client(self.api.getStatus, number["activation_id"]), "STATUS_OK:908172")
        self.assertEqual(await self.run_client(self.api.setStatus, number["activation_id"], status=6),
                         "ACCESS_ACTIVATION")
        after = await self.run_client(self.api.getStatus, number["activation_id"])
        self.assertEqual(after, "STATUS_OK:908172")  # finished, not "Activation canceled"
        self.assertGone("sms_activate", str(number["activation_id"]))

    async def test_balance_prices_numbers_status_countries(self) -> None:
        self.assertEqual(await self.run_client(self.api.getBalance), {"balance": "100.00"})
        prices = await self.run_client(self.api.getPrices, service="ot", country=0)
        self.assertIn("cost", prices["0"]["ot"])
        status = await self.run_client(self.api.getNumbersStatus, country=0)
        self.assertTrue(all(k.endswith("_0") for k in status))
        countries = await self.run_client(self.api.getCountries)
        self.assertEqual(countries["0"]["eng"], "Russia")

    async def test_number_v2_full_sms_active_activations_cancel(self) -> None:
        v2 = await self.run_client(self.api.getNumberV2, service="ot", country=0)
        activation = str(v2["activationId"])
        self.assertTrue(self.sandbox.backdate("sms_activate", activation, 3600))
        active = await self.run_client(self.api.getActiveActivations)
        mine = [a for a in active["activeActivations"] if a["activationId"] == activation]
        self.assertEqual(mine[0]["phoneNumber"], v2["phoneNumber"])
        moscow = datetime.strptime(mine[0]["activationTime"], "%Y-%m-%d %H:%M:%S")
        now_moscow = datetime.now(timezone(timedelta(hours=3))).replace(tzinfo=None)
        self.assertGreater(now_moscow - moscow, timedelta(minutes=55))
        self.assertEqual(await self.run_client(self.api.getFullSms, activation), "STATUS_WAIT_CODE")
        self.sandbox.deliver_sms(v2["phoneNumber"], "Code 4411 for you")
        self.assertEqual(await self.run_client(self.api.getFullSms, activation), "FULL_SMS:Code 4411 for you")
        await self.run_client(self.api.setStatus, activation, status=6)
        left = await self.run_client(self.api.getActiveActivations)
        self.assertNotIn(activation, [a["activationId"] for a in left.get("activeActivations", [])])
        cancelled = await self.run_client(self.api.getNumber, service="ot", country=0)
        self.assertEqual(await self.run_client(self.api.setStatus, cancelled["activation_id"], status=8),
                         "ACCESS_CANCEL")
        ended = await self.run_client(self.api.getStatus, cancelled["activation_id"])
        self.assertEqual(ended["error"], "STATUS_CANCEL")  # the client's word for a cancelled activation


# --- GitHub ---------------------------------------------------------------------------------------

@needs_aiohttp
@needs("github", "requests")
class PyGithubClientTest(ClientCase):
    """PyGithub on the per-provider port: its OAuth URLs derive from ``base_url``'s host."""

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        from taos_persona.sandbox import SandboxThread

        cls.ports = SandboxThread(per_provider_ports=True).start()
        cls.addClassCleanup(cls.ports.close)

    async def test_web_flow_token_user_and_revoke(self) -> None:
        import requests
        from github import Auth, Github

        env, base = self.ports.env(), self.ports.provider_urls["github"]
        app = Github(base_url=base).get_oauth_application(env["GITHUB_CLIENT_ID"], env["GITHUB_CLIENT_SECRET"])
        login_url = app.get_login_url(redirect_uri="http://127.0.0.1:9/cb", state="s1", login="novice-sarah")
        self.assertTrue(login_url.startswith(base + "/login/oauth/authorize?"))
        redirect = await self.run_client(requests.get, login_url, allow_redirects=False, timeout=30)
        code = parse_qs(urlparse(redirect.headers["Location"]).query)["code"][0]
        token = await self.run_client(app.get_access_token, code)
        user = await self.run_client(lambda: Github(auth=Auth.Token(token.token), base_url=base).get_user().login)
        self.assertEqual(user, "novice-sarah")
        me = Github(auth=Auth.Token(token.token), base_url=base).get_user()
        await self.run_client(lambda: me.login)
        self.assertIsInstance(me.id, int)
        self.assertTrue(me.name and me.email)
        revoked = await self.run_client(requests.delete, f"{base}/applications/{env['GITHUB_CLIENT_ID']}/grant",
                                        json={"access_token": token.token}, timeout=30,
                                        auth=(env["GITHUB_CLIENT_ID"], env["GITHUB_CLIENT_SECRET"]))
        self.assertEqual(revoked.status_code, 204)
        self.assertGone("github", token.token, self.ports)

    def test_every_provider_has_a_port_of_its_own_with_its_own_errors(self) -> None:
        import requests

        urls = self.ports.provider_urls
        self.assertEqual(set(urls), {"mailtm", "mailsac", "sms_activate", "twilio", "github", "google",
                                     "oauth", "example_app"})
        answer = requests.get(urls["github"] + "/no/such/route", timeout=30)
        self.assertEqual((answer.status_code, answer.json()["message"]), (404, "Not Found"))
        twilio = requests.get(urls["twilio"] + "/2010-04-01/Nowhere.json", timeout=30)
        self.assertEqual(twilio.json()["code"], 20404)


# --- Google and a generic RFC 6749 server ---------------------------------------------------------

@needs_aiohttp
@needs("google.auth", "requests")
class GoogleAuthClientTest(ClientCase):
    """google-auth refreshing a user credential at the sandbox's Google token endpoint."""

    async def test_refresh_then_use_then_revoke(self) -> None:
        import google.auth.transport.requests
        import google.oauth2.credentials
        import requests

        env, base = self.sandbox.env(), self.sandbox.url + "/google"
        code = self.sandbox.call("POST", "/_sandbox/oauth/code", {"provider": "google", "scope": "email"})["code"]
        first = await self.run_client(requests.post, base + "/token", timeout=30, data={
            "grant_type": "authorization_code", "code": code, "client_id": env["GOOGLE_CLIENT_ID"],
            "client_secret": env["GOOGLE_CLIENT_SECRET"]})
        credentials = google.oauth2.credentials.Credentials(
            None, refresh_token=first.json()["refresh_token"], token_uri=base + "/token",
            client_id=env["GOOGLE_CLIENT_ID"], client_secret=env["GOOGLE_CLIENT_SECRET"])
        await self.run_client(credentials.refresh, google.auth.transport.requests.Request())
        self.assertTrue(credentials.token.startswith("ya29."))
        self.assertNotEqual(credentials.token, first.json()["access_token"])
        info = await self.run_client(requests.get, base + "/tokeninfo", params={"access_token": credentials.token},
                                     timeout=30)
        self.assertEqual(info.status_code, 200)
        await self.run_client(requests.post, base + "/revoke", data={"token": credentials.refresh_token},
                              timeout=30)
        self.assertGone("google", credentials.token)


@needs_aiohttp
@needs("authlib", "requests")
class AuthlibClientTest(ClientCase):
    """Authlib's OAuth2Session through the code flow, a refresh and RFC 7009 revocation."""

    async def test_code_flow_refresh_userinfo_revoke(self) -> None:
        import requests
        from authlib.integrations.requests_client import OAuth2Session

        env, base = self.sandbox.env(), self.sandbox.url + "/oauth"
        with mock.patch.dict(os.environ, {"AUTHLIB_INSECURE_TRANSPORT": "1"}):  # loopback http
            session = OAuth2Session(env["TAOS_PERSONA_OAUTH_CLIENT_ID"], env["TAOS_PERSONA_OAUTH_CLIENT_SECRET"],
                                    redirect_uri="http://127.0.0.1:9/cb", scope="profile")
            url, state = session.create_authorization_url(base + "/authorize")
            redirect = await self.run_client(requests.get, url, allow_redirects=False, timeout=30)
            token = await self.run_client(session.fetch_token, base + "/token",
                                          authorization_response=redirect.headers["Location"])
            self.assertEqual(parse_qs(urlparse(redirect.headers["Location"]).query)["state"], [state])
            self.assertEqual((await self.run_client(session.get, base + "/userinfo", timeout=30)).status_code, 200)
            renewed = await self.run_client(session.refresh_token, base + "/token")
            self.assertNotEqual(renewed["access_token"], token["access_token"])
            answer = await self.run_client(session.revoke_token, base + "/revoke",
                                           token=renewed["refresh_token"], token_type_hint="refresh_token")
            self.assertEqual(answer.status_code, 200)
        self.assertGone("oauth", renewed["access_token"])

