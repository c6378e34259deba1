"""The rest_user and rest_token backends, and the example app's signup flow, over real HTTP."""
from __future__ import annotations

import json
import os
import unittest
from typing import Any, ClassVar, Dict

from taos_persona.errors import (ConfigurationError, InvalidTokenError, ProviderAuthError, ProviderError,
                                 RetryableProviderError)
from taos_persona.resources import ApiToken, UserAccount

from ._sandboxed import BackendSandboxCase, ContractBase
from ._support import needs_aiohttp


class _RestContract(ContractBase):
    """What rest_user and rest_token share; subclasses say how the persona uses the resource."""

    name: ClassVar[str]
    namespace: ClassVar[str]
    key_field: ClassVar[str]

    def usable(self, value: Any) -> bool:
        raise NotImplementedError

    def exists(self, rid: Any) -> bool:
        return any(r["rid"] == rid for r in self.sandbox.resources(self.namespace))

    async def acquire(self, **options: Any) -> Any:
        backend = self.backend(self.name)
        return await backend.acquire(self.sarah, **backend.plan(self.sarah, **options))

    async def test_acquire_use_release_and_release_again(self) -> None:
        lease = await self.acquire()
        self.assertTrue(getattr(lease.value, self.key_field).startswith(self.sarah.prefix))
        self.assertTrue(self.usable(lease.value))
        self.assertTrue(self.exists(lease.value.id))
        self.assertEqual(set(json.loads(json.dumps(lease.token))), {"id", self.key_field, "origin"})
        await self.backend(self.name).release(lease.token)
        self.assertFalse(self.usable(lease.value))
        self.assertFalse(self.exists(lease.value.id))
        await self.backend(self.name).release(lease.token)  # 404 now: still fine

    async def test_a_token_naming_one_row_and_the_id_of_another_deletes_neither(self) -> None:
        """Kind 7: the row is looked up by its name first; another row's id is refused."""
        mine, other = await self.acquire(), await self.acquire()
        token = dict(mine.token, id=other.token["id"])
        with self.assertRaises(InvalidTokenError):
            await self.backend(self.name).release(token)
        self.assertTrue(self.exists(mine.value.id) and self.exists(other.value.id))
        for lease in (mine, other):
            await self.backend(self.name).release(lease.token)

    async def test_a_tampered_id_is_refused_and_never_sent(self) -> None:
        """Kind 4: an id is one path segment of the app's format; ``..`` or ``/`` would reach another
        route (``DELETE /example_app/users/..`` is ``DELETE /example_app``)."""
        lease = await self.acquire()
        backend = self.backend(self.name)
        for bad in (".", "..", "", "../tokens/1", "1?x=1", "1#x", "1%2f2", None, 1.5, True, ["1"]):
            with self.subTest(id=bad):
                with self.assertRaises(InvalidTokenError):
                    await backend.release(dict(lease.token, id=bad))
                with self.assertRaises(InvalidTokenError):
                    await backend.recover(dict(lease.token, **{self.key_field: "../x"}))
        self.assertTrue(self.exists(lease.value.id))
        await backend.release(lease.token)

    async def test_release_after_the_app_dropped_it(self) -> None:
        lease = await self.acquire()
        self.assertTrue(self.sandbox.drop(self.namespace, lease.value.id))
        await self.backend(self.name).release(lease.token)

    async def test_wrong_admin_token_names_the_variable(self) -> None:
        os.environ["TAOS_PERSONA_APP_TOKEN"] = "wrong-admin-token-4711"
        with self.assertRaises(ProviderAuthError) as caught:
            await self.acquire()
        self.assertIn("TAOS_PERSONA_APP_TOKEN", str(caught.exception))
        self.assert_no_secrets(caught.exception, "wrong-admin-token-4711")

    async def test_missing_admin_token_is_a_configuration_error(self) -> None:
        lease = await self.acquire()
        del os.environ["TAOS_PERSONA_APP_TOKEN"]
        with self.assertRaises(ConfigurationError) as caught:
            await self.backend(self.name).release(lease.token)
        self.assertIn("TAOS_PERSONA_APP_TOKEN", str(caught.exception))
        self.assertTrue(self.exists(lease.value.id))

    async def test_429_then_success(self) -> None:
        self.sandbox.inject("429", count=2, retry_after=0, provider="example_app")
        lease = await self.acquire()
        self.assertEqual(self.queued_faults(), [])
        await self.backend(self.name).release(lease.token)
        self.assertFalse(self.exists(lease.value.id))

    async def test_500s_past_the_retry_budget_are_retryable(self) -> None:
        lease = await self.acquire()
        self.sandbox.inject("500", count=10, provider="example_app")
        with self.assertRaises(RetryableProviderError) as caught:
            await self.backend(self.name).release(lease.token)
        self.assert_no_secrets(caught.exception)
        self.assertTrue(self.exists(lease.value.id))

    async def test_recover_finds_what_a_crash_left_and_none_for_nothing(self) -> None:
        backend = self.backend(self.name)
        planned = backend.plan(self.sarah)
        json.dumps(planned)
        self.assertIsNone(await backend.recover(planned))  # not created yet
        lease = await backend.acquire(self.sarah, **planned)  # "crash": never recorded
        token = await self.backend(self.name).recover(planned)
        self.assertEqual(token, lease.token)
        await self.backend(self.name).release(token)
        self.assertFalse(self.exists(lease.value.id))
        self.assertIsNone(await backend.recover(planned))  # released: nothing left

    async def test_a_chosen_name_must_carry_the_persona_prefix(self) -> None:
        backend = self.backend(self.name)
        with self.assertRaises(ConfigurationError):
            backend.plan(self.sarah, **{self.key_field: "sarah"})
        with self.assertRaises(ConfigurationError):
            backend.plan(self.sarah, colour="red")
        name = self.sarah.prefix + "-chosen"
        self.assertEqual(backend.plan(self.sarah, **{self.key_field: name})[self.key_field], name)

    async def test_app_url_setting_without_the_sandbox(self) -> None:
        del os.environ["TAOS_PERSONA_SANDBOX"]
        with self.assertRaises(ConfigurationError) as caught:
            await self.acquire()
        self.assertIn("TAOS_PERSONA_APP_URL", str(caught.exception))
        os.environ["TAOS_PERSONA_APP_URL"] = self.sandbox.url + "/example_app/"
        lease = await self.acquire()
        await self.backend(self.name).release(lease.token)
        self.assertFalse(self.exists(lease.value.id))


@needs_aiohttp
class RestUserTest(_RestContract, BackendSandboxCase):
    name = "rest_user"
    namespace = "example_app.users"
    key_field = "username"

    def usable(self, value: UserAccount) -> bool:
        body = {"username": value.username, "password": value.password}
        return self.http("POST", "/example_app/login", body=body)[0] == 200

    async def test_user_value_and_what_is_kept_where(self) -> None:
        backend = self.backend(self.name)
        planned = backend.plan(self.sarah, email="sarah@example.test")
        lease = await backend.acquire(self.sarah, **planned)
        user = lease.value
        self.assertIsInstance(user, UserAccount)
        self.assertEqual(user.email, "sarah@example.test")
        self.assertGreaterEqual(len(user.password), 20)
        for kept in (planned, lease.token):
            self.assertNotIn(user.password, json.dumps(kept))
        self.assertNotIn(user.password, repr(user))
        await backend.release(lease.token)

    async def test_users_path_setting(self) -> None:
        os.environ["TAOS_PERSONA_APP_USERS_PATH"] = "tokens"  # the wrong collection: no username
        with self.assertRaises(ProviderError):  # 400: the tokens collection wants a name
            await self.acquire()
        os.environ["TAOS_PERSONA_APP_USERS_PATH"] = "/users/"
        lease = await self.acquire()
        await self.backend(self.name).release(lease.token)
        self.assertFalse(self.exists(lease.value.id))


@needs_aiohttp
class RestTokenTest(_RestContract, BackendSandboxCase):
    name = "rest_token"
    namespace = "example_app.tokens"
    key_field = "name"

    def usable(self, value: ApiToken) -> bool:
        return self.http("GET", "/example_app/me", headers={"Authorization": f"Bearer {value}"})[0] == 200

    async def test_token_value(self) -> None:
        lease = await self.acquire()
        self.assertIsInstance(lease.value, ApiToken)
        self.assertNotIn(lease.value.secret, repr(lease.value) + json.dumps(lease.token))
        status, body = self.http("GET", "/example_app/me", headers={"Authorization": f"Bearer {lease.value}"})
        self.assertEqual((status, body["token_name"]), (200, lease.value.name))
        await self.backend(self.name).release(lease.token)


@needs_aiohttp
class ExampleAppSignupTest(BackendSandboxCase):
    """The demo's signup: the app mails a code and a link and texts a code."""

    async def acquire_from(self, name: str) -> Any:
        backend = self.backend(name)
        lease = await backend.acquire(self.sarah, **backend.plan(self.sarah))
        self.addAsyncCleanup(backend.release, lease.token)
        return lease.value

    async def test_signup_mail_and_sms_reach_the_persona_and_verify(self) -> None:
        mailbox, phone = await self.acquire_from("mailtm"), await self.acquire_from("sms_activate")
        address = mailbox.address.upper()  # the app stores addresses lower-cased, as mail is routed
        signup = {"email": address, "phone": phone.number}
        status, body = self.http("POST", "/example_app/signup", body=signup)
        self.assertEqual(status, 201, body)
        mail = await mailbox.wait_for_message(subject="Verify your email", timeout=10)
        code, link = mail.code(), mail.link("/example_app/verify")
        self.assertIsNotNone(code)
        self.assertIn(f"code={code}", link)
        wrong = {"email": address, "code": "x"}
        self.assertEqual(self.http("POST", "/example_app/verify", body=wrong)[0], 400)
        self.assertEqual(self.http("POST", "/example_app/verify", body={"email": address, "code": code}),
                         (200, {"verified": "email", "email": mailbox.address.lower()}))
        self.assertEqual(self.http("GET", link[len(self.sandbox.url):])[0], 200)
        by_phone = {"phone": phone.number, "code": await phone.wait_for_code(timeout=10)}
        self.assertEqual(self.http("POST", "/example_app/verify", body=by_phone)[0], 200)

    def test_signup_needs_an_email_and_admin_routes_need_the_token(self) -> None:
        self.assertEqual(self.http("POST", "/example_app/signup", body={"phone": "+1500"})[0], 400)
        status, body = self.http("GET", "/example_app/users")
        self.assertEqual(status, 401)
        admin: Dict[str, str] = {"Authorization": f"Bearer {os.environ['TAOS_PERSONA_APP_TOKEN']}"}
        self.assertEqual(self.http("GET", "/example_app/users", headers=admin)[0], 200)


if __name__ == "__main__":
    unittest.main()
