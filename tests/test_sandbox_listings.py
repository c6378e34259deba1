"""The sandbox lists what each provider holds, the way the provider lists it (issue 10's discovery).

Raw HTTP, as a discovery sweep would speak it: Twilio's ``IncomingPhoneNumbers``
with ``FriendlyName`` and paging, mailsac's ``GET /addresses``, sms-activate's
``getActiveActivations``, the example app's ``?prefix=`` listings; each with
the provider-side creation time, which ``/_sandbox/.../backdate`` moves back
so that a test can make a resource "older than 60 minutes" without waiting.
"""
from __future__ import annotations

import email.utils
import json
import urllib.parse
from datetime import datetime, timedelta, timezone
from typing import List

from tests._support import needs_aiohttp
from tests._wire import WireCase

HOUR = 3600.0


@needs_aiohttp
class ListingTest(WireCase):
    def age(self, when: datetime) -> timedelta:
        return datetime.now(timezone.utc) - when

    # --- Twilio ---

    def test_twilio_lists_by_friendly_name_in_pages_with_provider_dates(self) -> None:
        bought = [self.twilio(201, "POST", "/IncomingPhoneNumbers.json",
                              form={"AreaCode": "415", "FriendlyName": f"taos-disc-{i}"}) for i in range(3)]
        self.twilio(201, "POST", "/IncomingPhoneNumbers.json", form={"AreaCode": "212", "FriendlyName": "other-1"})
        self.assertTrue(self.sandbox.backdate("twilio", bought[0]["sid"], 2 * HOUR))
        page = self.twilio(200, "GET", "/IncomingPhoneNumbers.json?" + urllib.parse.urlencode(
            {"FriendlyName": "taos-disc-0", "PageSize": 1}))
        self.assertEqual([n["sid"] for n in page["incoming_phone_numbers"]], [bought[0]["sid"]])
        created = email.utils.parsedate_to_datetime(page["incoming_phone_numbers"][0]["date_created"])
        self.assertGreater(self.age(created), timedelta(minutes=119))
        seen: List[str] = []
        uri = "/IncomingPhoneNumbers.json?PageSize=2"
        while uri:  # follow next_page_uri as the twilio client does
            answer = self.twilio(200, "GET", uri.split("/" + self.env["TWILIO_ACCOUNT_SID"], 1)[-1])
            seen += [n["friendly_name"] for n in answer["incoming_phone_numbers"]]
            uri = answer["next_page_uri"]
        self.assertLessEqual({"taos-disc-0", "taos-disc-1", "taos-disc-2", "other-1"}, set(seen))
        self.assertEqual(len(seen), len(set(seen)))

    # --- mailsac ---

    def test_mailsac_lists_owned_addresses_with_created(self) -> None:
        key = {"Mailsac-Key": self.env["MAILSAC_API_KEY"]}
        self.expect(200, "POST", "/mailsac/addresses/taos-disc-a@mailsac.com", headers=key)
        self.assertTrue(self.sandbox.backdate("mailsac", "taos-disc-a@mailsac.com", 2 * HOUR))
        listed = {a["_id"]: a for a in self.expect(200, "GET", "/mailsac/addresses", headers=key)}
        created = datetime.fromisoformat(listed["taos-disc-a@mailsac.com"]["created"].replace("Z", "+00:00"))
        self.assertGreater(self.age(created), timedelta(minutes=119))
        self.expect(200, "DELETE", "/mailsac/addresses/taos-disc-a@mailsac.com", headers=key)
        self.assertNotIn("taos-disc-a@mailsac.com", [a["_id"] for a in self.expect(200, "GET", "/mailsac/addresses",
                                                                                 headers=key)])

    # --- sms-activate ---

    def test_sms_activate_active_activations_with_moscow_time(self) -> None:
        _, activation, phone = self.sms(action="getNumber", service="ot", country="0").split(":")
        self.assertTrue(self.sandbox.backdate("sms_activate", activation, 2 * HOUR))
        active = self.sms(action="getActiveActivations")
        self.assertEqual(active["status"], "success")
        mine = [a for a in active["activeActivations"] if a["activationId"] == activation][0]
        self.assertEqual(mine["phoneNumber"], phone)
        moscow = datetime.strptime(mine["activationTime"], "%Y-%m-%d %H:%M:%S").replace(
            tzinfo=timezone(timedelta(hours=3)))
        self.assertGreater(self.age(moscow), timedelta(minutes=119))
        self.assertEqual(self.sms(action="setStatus", id=activation, status="8"), "ACCESS_CANCEL")
        left = self.sms(action="getActiveActivations")
        self.assertNotIn(activation, [a["activationId"] for a in left.get("activeActivations", [])])

    # --- the example app (rest_user / rest_token) ---

    def test_example_app_lists_users_and_tokens_by_prefix_with_created_at(self) -> None:
        admin = {"Authorization": "Bearer " + self.env["TAOS_PERSONA_APP_TOKEN"]}
        for name in ("taos-disc-u1", "other-u1"):
            self.expect(201, "POST", "/example_app/users", body={"username": name, "password": "pw"}, headers=admin)
        token = self.expect(201, "POST", "/example_app/tokens", body={"name": "taos-disc-t1"}, headers=admin)
        users = self.expect(200, "GET", "/example_app/users?prefix=taos-disc-", headers=admin)
        self.assertEqual([u["username"] for u in users], ["taos-disc-u1"])
        self.assertTrue(self.sandbox.backdate("example_app.users", users[0]["id"], 2 * HOUR))
        again = self.expect(200, "GET", "/example_app/users?prefix=taos-disc-", headers=admin)[0]
        created = datetime.fromisoformat(again["created_at"].replace("Z", "+00:00"))
        self.assertGreater(self.age(created), timedelta(minutes=119))
        tokens = self.expect(200, "GET", "/example_app/tokens?prefix=taos-disc-", headers=admin)
        self.assertEqual([(t["id"], t["name"]) for t in tokens], [(token["id"], "taos-disc-t1")])
        self.assertNotIn("token", tokens[0])  # a listing never shows the secret
        self.assertNotIn("token_digest", tokens[0])

    def test_backdating_what_is_not_alive_is_false(self) -> None:
        self.assertFalse(self.sandbox.backdate("twilio", "PN" + "0" * 32, HOUR))
        status, _ = self.sandbox.request("POST", "/_sandbox/resources/twilio/x/backdate", body={"seconds": "x"})
        self.assertEqual(status, 400)


@needs_aiohttp
class UnservedRoutesTest(WireCase):
    """aiohttp's text/plain 404/405 never reaches a client: each provider answers in its own format."""

    def test_each_provider_answers_its_own_error_body(self) -> None:
        cases = [("GET", "/twilio/2010-04-01/Nowhere.json", 404, lambda b: b["code"] == 20404),
                 ("PUT", "/twilio/2010-04-01/Accounts/AC1/IncomingPhoneNumbers.json", 405,
                  lambda b: b["code"] == 20004),
                 ("GET", "/mailsac/nowhere", 404, lambda b: set(b) == {"error", "message"}),
                 ("GET", "/mailtm/nowhere", 404, lambda b: b["@type"] == "hydra:Error"),
                 ("PUT", "/mailtm/domains", 405, lambda b: b["@type"] == "hydra:Error"),
                 ("GET", "/github/nowhere", 404, lambda b: b["message"] == "Not Found"),
                 ("GET", "/example_app/nowhere", 404, lambda b: b == {"error": "not found"})]
        for method, path, status, fits in cases:
            with self.subTest(method=method, path=path):
                got, body = self.sandbox.request(method, path)
                self.assertEqual(got, status)
                self.assertIsInstance(body, dict, f"not JSON: {body!r}")
                self.assertTrue(fits(body), json.dumps(body))

    def test_the_test_side_routes_are_no_provider(self) -> None:
        status, body = self.sandbox.request("GET", "/_sandbox/nowhere")
        self.assertEqual((status, body), (404, "404: Not Found"))  # the test side's routes are not a provider
