"""The github, google and oauth_rfc7009 backends against the sandbox, over real HTTP."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import unittest
from typing import Any, ClassVar, Dict

from taos_persona.errors import (ConfigurationError, ProviderAuthError, ProviderError,
                                 RetryableProviderError)
from taos_persona.resources import OAuthGrant

from ._front import start_front
from ._sandboxed import BackendSandboxCase, ContractBase
from ._support import needs_aiohttp


class _OAuthContract(ContractBase):
    """What every OAuth backend must do; subclasses name the backend and its sandbox routes."""

    name: ClassVar[str]
    prefix: ClassVar[str]
    token_path: ClassVar[str]
    client_id_env: ClassVar[str]
    secret_env: ClassVar[str]
    release_needs_secret: ClassVar[bool] = True

    def usable(self, access_token: str) -> bool:
        raise NotImplementedError

    def mint_code(self, **extra: str) -> str:
        """An authorization code, as if the persona had clicked "Authorize"."""
        status, body = self.http("POST", "/_sandbox/oauth/code", body=dict(extra, provider=self.prefix))
        self.assertEqual(status, 201, body)
        return body["code"]

    def obtain(self, **extra: str) -> Dict[str, Any]:
        """Tokens obtained by the app's own code exchange, for a backend to adopt."""
        form = {"grant_type": "authorization_code", "code": self.mint_code(**extra),
                "client_id": os.environ[self.client_id_env], "client_secret": os.environ[self.secret_env]}
        status, body = self.http("POST", self.token_path, form=form, headers={"Accept": "application/json"})
        self.assertEqual(status, 200, body)
        return body

    def adoptable(self, tokens: Dict[str, Any]) -> Dict[str, Any]:
        """The acquire options that hand over every token the persona holds."""
        return {k: tokens[k] for k in ("access_token", "refresh_token") if k in tokens}

    def grant_alive(self, access_token: str) -> bool:
        """Whether the sandbox still holds a grant issued with ``access_token``."""
        return any(r["data"]["access_token"] == access_token for r in self.sandbox.resources(self.prefix))

    async def acquire(self, **options: Any) -> Any:
        backend = self.backend(self.name)
        return await backend.acquire(self.sarah, **backend.plan(self.sarah, **options))

    async def test_code_exchange_use_release_and_release_again(self) -> None:
        lease = await self.acquire(code=self.mint_code(scope="read:user repo"))
        grant = lease.value
        self.assertIsInstance(grant, OAuthGrant)
        self.assertEqual((grant.provider, tuple(grant.scopes)), (self.name, ("read:user", "repo")))
        self.assertTrue(self.usable(grant.access_token))
        self.assertNotIn(grant.access_token, repr(grant))
        self.assertNotIn(os.environ[self.secret_env], json.dumps(lease.token))
        await self.backend(self.name).release(lease.token)  # a fresh instance, as the sweep has
        self.assertFalse(self.usable(grant.access_token))
        self.assertFalse(self.grant_alive(grant.access_token))
        await self.backend(self.name).release(lease.token)  # already revoked: still fine

    async def test_adopted_token_is_revoked(self) -> None:
        tokens = self.obtain()
        lease = await self.acquire(scopes="a b", **self.adoptable(tokens))
        self.assertEqual((lease.value.access_token, tuple(lease.value.scopes)),
                         (tokens["access_token"], ("a", "b")))
        self.assertTrue(self.grant_alive(tokens["access_token"]))
        await self.backend(self.name).release(lease.token)
        self.assertFalse(self.grant_alive(tokens["access_token"]))
        self.assertFalse(self.usable(tokens["access_token"]))

    async def test_release_after_the_provider_dropped_the_grant(self) -> None:
        lease = await self.acquire(code=self.mint_code())
        rid = next(r["rid"] for r in self.sandbox.resources(self.prefix)
                   if r["data"]["access_token"] == lease.value.access_token)
        self.assertTrue(self.sandbox.drop(self.prefix, rid))
        await self.backend(self.name).release(lease.token)
        self.assertFalse(self.grant_alive(lease.value.access_token))

    async def test_wrong_client_secret_on_exchange_names_the_variable(self) -> None:
        os.environ[self.secret_env] = "wrong-secret-4711"
        code = self.mint_code()
        with self.assertRaises(ProviderAuthError) as caught:
            await self.acquire(code=code)
        self.assertIn(self.secret_env, str(caught.exception))
        self.assert_no_secrets(caught.exception, "wrong-secret-4711", code)

    async def test_wrong_client_secret_on_release(self) -> None:
        lease = await self.acquire(code=self.mint_code())
        os.environ[self.secret_env] = "wrong-secret-4711"
        if not self.release_needs_secret:
            await self.backend(self.name).release(lease.token)
            self.assertFalse(self.grant_alive(lease.value.access_token))
            return
        with self.assertRaises(ProviderAuthError) as caught:
            await self.backend(self.name).release(lease.token)
        self.assertIn(self.secret_env, str(caught.exception))
        self.assert_no_secrets(caught.exception, "wrong-secret-4711", lease.value.access_token)
        self.assertTrue(self.grant_alive(lease.value.access_token))

    async def test_429_then_success(self) -> None:
        self.sandbox.inject("429", count=2, retry_after=0, provider=self.prefix)
        lease = await self.acquire(code=self.mint_code())
        self.assertEqual(self.queued_faults(), [])
        await self.backend(self.name).release(lease.token)
        self.assertFalse(self.grant_alive(lease.value.access_token))

    async def test_500s_past_the_retry_budget_are_retryable(self) -> None:
        lease = await self.acquire(code=self.mint_code())
        self.sandbox.inject("500", count=10, provider=self.prefix)
        with self.assertRaises(RetryableProviderError) as caught:
            await self.backend(self.name).release(lease.token)
        self.assert_no_secrets(caught.exception, lease.value.access_token)
        self.assertTrue(self.grant_alive(lease.value.access_token))
        self.sandbox.clear_faults()
        await self.backend(self.name).release(lease.token)
        self.assertFalse(self.grant_alive(lease.value.access_token))

    async def test_recover_an_adopted_token(self) -> None:
        tokens = self.obtain()
        backend = self.backend(self.name)
        planned = backend.plan(self.sarah, **self.adoptable(tokens))
        await backend.acquire(self.sarah, **planned)  # "crash": the lease is never recorded
        token = await self.backend(self.name).recover(planned)
        self.assertIsNotNone(token)
        await self.backend(self.name).release(token)
        self.assertFalse(self.grant_alive(tokens["access_token"]))

    async def test_recover_after_a_crash_past_the_code_exchange(self) -> None:
        backend = self.backend(self.name)
        planned = backend.plan(self.sarah, code=self.mint_code())
        lease = await backend.acquire(self.sarah, **planned)  # never recorded
        self.assertIsNone(await self.backend(self.name).recover(planned))
        # The replayed code made the server revoke what it had issued (RFC 6749 4.1.2).
        self.assertFalse(self.grant_alive(lease.value.access_token))

    async def test_recover_a_code_never_exchanged_and_one_never_issued(self) -> None:
        backend = self.backend(self.name)
        token = await backend.recover(backend.plan(self.sarah, code=self.mint_code()))
        self.assertIsNotNone(token)
        self.assertTrue(self.grant_alive(token["access_token"]))
        await backend.release(token)
        self.assertFalse(self.grant_alive(token["access_token"]))
        self.assertIsNone(await backend.recover(backend.plan(self.sarah, code="never-issued")))

    async def test_plan_needs_exactly_one_of_token_and_code(self) -> None:
        backend = self.backend(self.name)
        for options in ({}, {"access_token": "a", "code": "c"}, {"code": "c", "colour": "red"}):
            with self.assertRaises(ConfigurationError):
                backend.plan(self.sarah, **options)

    async def test_a_refused_code_is_a_provider_error(self) -> None:
        with self.assertRaises(ProviderError) as caught:
            await self.acquire(code="never-issued")
        self.assertNotIsInstance(caught.exception, ProviderAuthError)
        self.assert_no_secrets(caught.exception)


@needs_aiohttp
class GitHubTest(_OAuthContract, BackendSandboxCase):
    name = "github"
    prefix = "github"
    token_path = "/github/login/oauth/access_token"
    client_id_env = "GITHUB_CLIENT_ID"
    secret_env = "GITHUB_CLIENT_SECRET"

    def usable(self, access_token: str) -> bool:
        return self.http("GET", "/github/user", headers={"Authorization": f"Bearer {access_token}"})[0] == 200

    async def test_revoke_token_keeps_the_grant_and_revoke_grant_ends_it(self) -> None:
        only_token = await self.acquire(code=self.mint_code(user="octocat"), revoke="token")
        sibling = await self.acquire(code=self.mint_code(user="octocat"))
        await self.backend(self.name).release(only_token.token)
        self.assertFalse(self.usable(only_token.value.access_token))
        self.assertTrue(self.usable(sibling.value.access_token))
        third = self.obtain(user="octocat")  # another token of the same user and app
        await self.backend(self.name).release(sibling.token)
        self.assertFalse(self.usable(sibling.value.access_token))
        self.assertFalse(self.usable(third["access_token"]))

    async def test_adopting_needs_the_release_credentials_now(self) -> None:
        del os.environ["GITHUB_CLIENT_SECRET"]
        with self.assertRaises(ConfigurationError) as caught:
            await self.acquire(access_token="gho_whatever")
        self.assertIn("GITHUB_CLIENT_SECRET", str(caught.exception))

    async def test_each_github_host_has_its_own_setting(self) -> None:
        del os.environ["TAOS_PERSONA_SANDBOX"]
        os.environ["TAOS_PERSONA_GITHUB_URL"] = self.sandbox.url + "/github"
        os.environ["TAOS_PERSONA_GITHUB_API_URL"] = self.sandbox.url + "/github/"
        lease = await self.acquire(code=self.mint_code())
        await self.backend(self.name).release(lease.token)
        self.assertFalse(self.grant_alive(lease.value.access_token))

    async def test_unknown_revoke_kind_is_refused(self) -> None:
        with self.assertRaises(ConfigurationError):
            self.backend(self.name).plan(self.sarah, code="c", revoke="everything")

    async def test_a_404_on_release_is_confirmed_with_the_personas_own_token(self) -> None:
        """Kind 7: GitHub's 404 also means "wrong app credentials": gone only once the token
        itself is refused (GET /user: 401), else the grant is kept."""
        # GitHub's answer to wrong app credentials, for every grant; GET /user stays real.
        await start_front(self, self.sandbox.url, "TAOS_PERSONA_GITHUB_API_URL", "/github", "DELETE",
                          "/applications/", 404, {"message": "Not Found"})
        lease = await self.acquire(code=self.mint_code())
        with self.assertRaisesRegex(ProviderAuthError, "404.*still works.*GITHUB_CLIENT_SECRET") as caught:
            await self.backend(self.name).release(lease.token)
        self.assert_no_secrets(caught.exception, lease.value.access_token)
        self.assertTrue(self.grant_alive(lease.value.access_token), "kept: the grant is alive")
        for found in self.sandbox.resources(self.prefix):  # now it is really gone
            if found["data"]["access_token"] == lease.value.access_token:
                self.sandbox.drop(self.prefix, found["rid"])
        await self.backend(self.name).release(lease.token)  # 404, and GET /user says 401: gone


@needs_aiohttp
class GoogleTest(_OAuthContract, BackendSandboxCase):
    name = "google"
    prefix = "google"
    token_path = "/google/token"
    client_id_env = "GOOGLE_CLIENT_ID"
    secret_env = "GOOGLE_CLIENT_SECRET"
    release_needs_secret = False

    def usable(self, access_token: str) -> bool:
        return self.http("GET", "/google/tokeninfo?access_token=" + access_token)[0] == 200

    async def test_release_needs_no_client_credentials(self) -> None:
        lease = await self.acquire(code=self.mint_code())
        del os.environ["GOOGLE_CLIENT_ID"], os.environ["GOOGLE_CLIENT_SECRET"]
        await self.backend(self.name).release(lease.token)
        self.assertFalse(self.grant_alive(lease.value.access_token))


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


@needs_aiohttp
class RFC7009Test(_OAuthContract, BackendSandboxCase):
    name = "oauth_rfc7009"
    prefix = "oauth"
    token_path = "/oauth/token"
    client_id_env = "TAOS_PERSONA_OAUTH_CLIENT_ID"
    secret_env = "TAOS_PERSONA_OAUTH_CLIENT_SECRET"

    def usable(self, access_token: str) -> bool:
        bearer = {"Authorization": f"Bearer {access_token}"}
        return self.http("GET", "/oauth/userinfo", headers=bearer)[0] == 200

    async def test_pkce_verifier_is_sent(self) -> None:
        verifier = "v" * 50
        code = self.mint_code(code_challenge=_s256(verifier), redirect_uri="http://127.0.0.1/cb")
        with self.assertRaises(ProviderError):
            await self.acquire(code=code, redirect_uri="http://127.0.0.1/cb", code_verifier="w" * 50)
        lease = await self.acquire(code=code, redirect_uri="http://127.0.0.1/cb", code_verifier=verifier)
        self.assertTrue(self.usable(lease.value.access_token))
        await self.backend(self.name).release(lease.token)

    async def test_revoking_the_access_token_alone_would_leave_the_grant(self) -> None:
        tokens = self.obtain()
        lease = await self.acquire(access_token=tokens["access_token"])  # refresh token not given
        await self.backend(self.name).release(lease.token)
        self.assertFalse(self.usable(tokens["access_token"]))
        self.assertTrue(self.grant_alive(tokens["access_token"]))  # its refresh token lives on
        lease = await self.acquire(access_token=tokens["access_token"],
                                   refresh_token=tokens["refresh_token"])
        await self.backend(self.name).release(lease.token)
        self.assertFalse(self.grant_alive(tokens["access_token"]))

    async def test_endpoints_need_a_setting_outside_the_sandbox(self) -> None:
        del os.environ["TAOS_PERSONA_SANDBOX"]
        with self.assertRaises(ConfigurationError) as caught:
            await self.acquire(access_token="at_whatever")
        self.assertIn("TAOS_PERSONA_OAUTH_REVOKE_URL", str(caught.exception))
        os.environ["TAOS_PERSONA_OAUTH_TOKEN_URL"] = self.sandbox.url + "/oauth/token"
        os.environ["TAOS_PERSONA_OAUTH_REVOKE_URL"] = self.sandbox.url + "/oauth/revoke"
        lease = await self.acquire(code=self.mint_code())
        await self.backend(self.name).release(lease.token)
        self.assertFalse(self.grant_alive(lease.value.access_token))


if __name__ == "__main__":
    unittest.main()
