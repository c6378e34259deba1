"""The example app's HTML pages over real HTTP, as a browser asks for them (the browser run is make e2e)."""
from __future__ import annotations

import shutil
import tempfile
import unittest
from typing import Tuple

from tests._sandbox import SandboxEnvironment
from tests._support import needs_aiohttp

HTML = {"Accept": "text/html,application/xhtml+xml"}


@needs_aiohttp
class ExamplePagesTest(SandboxEnvironment, unittest.TestCase):
    def test_signup_page_has_the_form_the_browser_test_fills(self) -> None:
        status, page = self.sandbox.request("GET", "/example_app/pages/signup", headers=HTML)
        self.assertEqual(status, 200)
        for needle in ('id="email"', 'id="phone"', 'id="submit"', "/example_app/signup", "localStorage"):
            self.assertIn(needle, page)

    def test_emailed_link_is_a_page_for_a_browser_and_json_for_a_client(self) -> None:
        address, path = self.signed_up_link()
        status, page = self.sandbox.request("GET", path, headers=HTML)
        self.assertEqual(status, 200)
        for needle in ('id="verified"', address, 'id="sms-code"', 'id="confirm"'):
            self.assertIn(needle, page)
        status, answer = self.sandbox.request("GET", path)
        self.assertEqual((status, answer), (200, {"verified": "email", "email": address}))

    def test_a_bad_link_shows_an_error_page(self) -> None:
        address, path = self.signed_up_link()
        status, page = self.sandbox.request("GET", path.replace("code=", "code=9"), headers=HTML)
        self.assertEqual(status, 400)
        self.assertIn("id='error'", page)
        self.assertNotIn(address, page)

    def signed_up_link(self) -> Tuple[str, str]:
        """Sign a persona up through the JSON API; (its address, the emailed link's path and query)."""
        from taos_persona import SyncPersonaFixture

        registry = tempfile.mkdtemp(prefix="taos-pages-test-")
        self.addCleanup(shutil.rmtree, registry, True)
        with SyncPersonaFixture("page_reader", registry_dir=registry) as persona:
            email = persona.disposable_email()
            status, _ = self.sandbox.request("POST", "/example_app/signup", body={"email": email.address})
            self.assertEqual(status, 201)
            link = email.wait_for_message(subject="Verify", timeout=30).link("/verify")
        self.assertTrue(link and link.startswith(self.sandbox.url), link)
        return email.address, link[len(self.sandbox.url):]


if __name__ == "__main__":
    unittest.main()
