"""Origin: where a resource lives, compared before anything is released (no server needed)."""
from __future__ import annotations

import unittest

from taos_persona.backends._origin import ORIGIN_FIELD, Origin, account_of, check_origin
from taos_persona.errors import EndpointMismatchError

KEY = "a-provider-key-that-must-never-show"


class OriginTest(unittest.TestCase):
    def test_account_of_names_a_key_without_showing_it(self) -> None:
        self.assertEqual(account_of(KEY), account_of(KEY))
        self.assertNotEqual(account_of(KEY), account_of(KEY + "x"))
        self.assertRegex(account_of(KEY), r"^key:[0-9a-f]{12}$")
        self.assertNotIn(KEY, account_of(KEY))

    def test_a_base_url_with_a_password_is_never_recorded_with_it(self) -> None:
        origin = Origin("https://admin:hunter2@app.test/api", account_of(KEY))
        self.assertEqual(origin.endpoint, "https://app.test/api")
        self.assertNotIn("hunter2", repr(origin.stamp({})))

    def test_same_place_passes_up_to_case_and_trailing_slash(self) -> None:
        recorded = Origin("HTTP://Sandbox.test:8000/mailtm/", "key:1").stamp({"id": "x"})
        check_origin(recorded, Origin("http://sandbox.test:8000/mailtm", "key:1"), "mailtm mailbox")

    def test_another_endpoint_is_refused_with_the_setting_that_points_there(self) -> None:
        recorded = Origin("http://127.0.0.1:4001/mailtm").stamp({})
        today = Origin("http://127.0.0.1:4002/mailtm", endpoint_env="TAOS_PERSONA_MAILTM_URL")
        with self.assertRaises(EndpointMismatchError) as caught:
            check_origin(recorded, today, "mailtm mailbox")
        message = str(caught.exception)
        self.assertIn("created at http://127.0.0.1:4001/mailtm", message)
        self.assertIn("set TAOS_PERSONA_SANDBOX=http://127.0.0.1:4001", message)
        self.assertIn("TAOS_PERSONA_MAILTM_URL=http://127.0.0.1:4001/mailtm", message)

    def test_the_fix_names_the_base_url_setting_without_the_collection_path(self) -> None:
        recorded = Origin("https://app.test/api/users").stamp({})
        today = Origin("https://staging.test/api/users", endpoint_env="TAOS_PERSONA_APP_URL", path="/users")
        with self.assertRaisesRegex(EndpointMismatchError, r"set TAOS_PERSONA_APP_URL=https://app\.test/api and"):
            check_origin(recorded, today, "rest_user user")

    def test_another_account_is_refused_naming_the_variable(self) -> None:
        recorded = Origin("https://mailsac.com/api", account_of(KEY)).stamp({})
        today = Origin("https://mailsac.com/api", account_of("other"), account_env="MAILSAC_API_KEY")
        with self.assertRaisesRegex(EndpointMismatchError, "in account key:.*set MAILSAC_API_KEY"):
            check_origin(recorded, today, "mailsac address")

    def test_a_record_without_origin_is_kept(self) -> None:
        for recorded in ({}, {ORIGIN_FIELD: "http://x"}, {ORIGIN_FIELD: {"endpoint": 3}}):
            with self.subTest(recorded=recorded):
                with self.assertRaisesRegex(EndpointMismatchError, "recorded without the endpoint"):
                    check_origin(recorded, Origin("https://api.mail.tm"), "mailtm mailbox")


if __name__ == "__main__":
    unittest.main()
