"""Issue 12's gaps over plain HTTP, so that they stay pinned where the providers' clients are not installed.

``tests/test_sandbox_clients.py`` drives the real clients through the same
gaps; these tests speak each provider's wire protocol with urllib only.
"""
from __future__ import annotations

import urllib.parse
import uuid
from typing import Dict

from tests._support import needs_aiohttp
from tests._wire import WireCase


@needs_aiohttp
class ProviderGapsTest(WireCase):
    def mailtm_account(self) -> Dict[str, str]:
        """A new mail.tm account: its address and bearer header."""
        address = f"gap-{uuid.uuid4().hex[:12]}@mailtm.sandbox.test"
        self.expect(201, "POST", "/mailtm/accounts", body={"address": address, "password": "pw"})
        token = self.expect(200, "POST", "/mailtm/token", body={"address": address, "password": "pw"})["token"]
        return {"address": address, "Authorization": f"Bearer {token}"}

    def test_mailtm_pages_by_30_and_serves_download_sources_patch_delete(self) -> None:
        account = self.mailtm_account()
        auth = {"Authorization": account["Authorization"]}
        for n in range(35):
            self.sandbox.deliver_email(account["address"], f"m{n}", f"body {n}")
        sizes = [len(self.expect(200, "GET", f"/mailtm/messages?page={p}", headers=auth)["hydra:member"])
                 for p in (1, 2, 3)]
        self.assertEqual(sizes, [30, 5, 0])
        newest = self.expect(200, "GET", "/mailtm/messages", headers=auth)["hydra:member"][0]
        self.assertIn("Subject: m34", self.expect(200, "GET", "/mailtm" + newest["downloadUrl"], headers=auth))
        self.assertIn("body 34", self.expect(200, "GET", f"/mailtm/sources/{newest['id']}", headers=auth)["data"])
        self.assertEqual(self.expect(200, "PATCH", f"/mailtm/messages/{newest['id']}", body={"seen": True},
                                     headers=auth), {"seen": True})
        self.expect(204, "DELETE", f"/mailtm/messages/{newest['id']}", headers=auth)
        self.expect(404, "GET", f"/mailtm/messages/{newest['id']}", headers=auth)

    def test_mailsac_release_deletes_mail_and_limit_me_availability_one_message(self) -> None:
        key, inbox = {"Mailsac-Key": self.env["MAILSAC_API_KEY"]}, "gap-inbox@mailsac.com"
        self.expect(200, "POST", f"/mailsac/addresses/{inbox}", headers=key)
        for n in range(3):
            self.sandbox.deliver_email(inbox, f"n{n}", "body")
        limited = self.expect(200, "GET", f"/mailsac/addresses/{inbox}/messages?limit=1", headers=key)
        self.assertEqual([m["subject"] for m in limited], ["n2"])
        self.assertNotIn("savedBy", limited[0])
        one = self.expect(200, "GET", f"/mailsac/addresses/{inbox}/messages/{limited[0]['_id']}", headers=key)
        self.assertEqual(one["_id"], limited[0]["_id"])
        self.assertEqual(self.expect(200, "GET", "/mailsac/me", headers=key)["_id"], "sandbox-account")
        self.assertFalse(self.expect(200, "GET", f"/mailsac/addresses/{inbox}/availability",
                                     headers=key)["available"])
        self.assertNotIn("catchAll", self.expect(200, "GET", f"/mailsac/addresses/{inbox}", headers=key))
        self.expect(200, "DELETE", f"/mailsac/addresses/{inbox}?deleteAddressMessages=true", headers=key)
        self.assertEqual(self.expect(200, "GET", f"/mailsac/addresses/{inbox}/messages", headers=key), [])

    def test_sms_activate_actions_and_a_finished_activation_stays_ok(self) -> None:
        self.assertEqual(self.sms(action="getBalance"), "ACCESS_BALANCE:100.00")
        for action in ("getPrices", "getNumbersStatus", "getCountries", "getActiveActivations"):
            with self.subTest(action=action):
                self.assertIsInstance(self.sms(action=action), dict)
        v2 = self.sms(action="getNumberV2", service="ot", country="0")
        activation = str(v2["activationId"])
        self.sandbox.deliver_sms(v2["phoneNumber"], "Your code is 3141")
        self.assertEqual(self.sms(action="getFullSms", id=activation), "FULL_SMS:Your code is 3141")
        self.assertEqual(self.sms(action="setStatus", id=activation, status="6"), "ACCESS_ACTIVATION")
        self.assertEqual(self.sms(action="getStatus", id=activation), "STATUS_OK:3141")

    def test_twilio_update_typed_routes_country_toll_free_and_message_fetch(self) -> None:
        bought = self.twilio(201, "POST", "/IncomingPhoneNumbers/Local.json",
                             form={"AreaCode": "512", "FriendlyName": "gap-1"})
        self.assertIn(bought["sid"], [n["sid"] for n in self.twilio(200, "GET", "/IncomingPhoneNumbers/Local.json")
                                      ["incoming_phone_numbers"]])
        self.assertEqual(self.twilio(200, "POST", f"/IncomingPhoneNumbers/{bought['sid']}.json",
                                     form={"FriendlyName": "gap-2"})["friendly_name"], "gap-2")
        self.assertEqual(self.twilio(200, "GET", "/AvailablePhoneNumbers/US.json")["country_code"], "US")
        self.assertTrue(self.twilio(200, "GET", "/AvailablePhoneNumbers/US/TollFree.json")["available_phone_numbers"])
        self.sandbox.deliver_sms(bought["phone_number"], "hello")
        listed = self.twilio(200, "GET", "/Messages.json?" + urllib.parse.urlencode({"To": bought["phone_number"]}))
        sid = listed["messages"][0]["sid"]
        self.assertEqual(self.twilio(200, "GET", f"/Messages/{sid}.json")["body"], "hello")
        self.assertEqual(self.twilio(404, "GET", "/Messages/SM" + "0" * 32 + ".json")["code"], 20404)
        self.assertEqual(self.twilio(400, "GET", "/AvailablePhoneNumbers/US/Local.json?AreaCode=911")["code"], 21452)
        self.twilio(204, "DELETE", f"/IncomingPhoneNumbers/{bought['sid']}.json")

    def test_github_user_has_id_name_email_and_google_refreshes(self) -> None:
        code = self.expect(201, "POST", "/_sandbox/oauth/code", body={"provider": "github", "user": "gap-user"})
        token = self.expect(200, "POST", "/github/login/oauth/access_token", headers={"Accept": "application/json"},
                            form={"code": code["code"], "client_id": self.env["GITHUB_CLIENT_ID"],
                                  "client_secret": self.env["GITHUB_CLIENT_SECRET"]})["access_token"]
        user = self.expect(200, "GET", "/github/user", headers={"Authorization": f"token {token}"})
        self.assertEqual(user["login"], "gap-user")
        self.assertIsInstance(user["id"], int)
        self.assertTrue(user["name"] and user["email"])
        client = {"client_id": self.env["GOOGLE_CLIENT_ID"], "client_secret": self.env["GOOGLE_CLIENT_SECRET"]}
        code = self.expect(201, "POST", "/_sandbox/oauth/code", body={"provider": "google"})
        first = self.expect(200, "POST", "/google/token",
                            form=dict(client, grant_type="authorization_code", code=code["code"]))
        renewed = self.expect(200, "POST", "/google/token",
                              form=dict(client, grant_type="refresh_token", refresh_token=first["refresh_token"]))
        self.assertNotEqual(renewed["access_token"], first["access_token"])
        self.assertNotIn("refresh_token", renewed)
        self.expect(200, "GET", "/google/tokeninfo?access_token=" + renewed["access_token"])
