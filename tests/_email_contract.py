"""What every email backend must do against the sandbox: a mixin for SandboxTestCase subclasses.

A subclass sets ``provider`` (the backend's registered name, which is also
its sandbox prefix) and ``create`` (the method and path that create), and implements ``provider_id`` (the sandbox's id of the
resource behind a token).
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

from taos_persona.backends import Backend, Lease, backend_class
from taos_persona.errors import RetryableProviderError
from taos_persona.naming import Persona


def _passwords(record: Dict[str, Any]) -> list:
    """The secret values of a plan or token (a mailbox's own password), to check messages for."""
    return [str(value) for key, value in record.items() if "password" in key]


class EmailBackendContract:
    """Acquire, read, release twice, survive provider-side deletion, retries, recover."""

    provider: str
    create: Tuple[str, str]
    """``(method, path prefix)`` of the provider call that creates the resource."""

    def provider_id(self, token: Dict[str, Any]) -> str:
        raise NotImplementedError

    def make_backend(self) -> Backend:
        """A fresh instance, built as the sweep builds one: by name, with no arguments."""
        return backend_class(self.provider)()

    async def new_backend(self) -> Backend:
        """A fresh instance whose session is closed after the test."""
        backend = self.make_backend()
        self.addAsyncCleanup(backend.aclose)
        return backend

    async def acquire(self) -> Tuple[Backend, Persona, Dict[str, Any], Lease]:
        backend = await self.new_backend()
        persona = self.persona()
        planned = backend.plan(persona)
        lease = await backend.acquire(persona, **planned)
        return backend, persona, planned, lease

    def alive(self, persona: Persona) -> list:
        return self.sandbox.resources(self.provider, persona.prefix)

    async def test_acquire_read_release_release_again(self) -> None:
        backend, persona, _, lease = await self.acquire()
        mailbox = lease.value
        self.assertTrue(mailbox.address.startswith(persona.prefix + "-"))
        self.assertEqual(len(self.alive(persona)), 1)
        self.sandbox.deliver_email(mailbox.address, "Other", "no code here")
        self.sandbox.deliver_email(mailbox.address, "Verify your account",
                                   "Your code is 482913. Or open https://app.test/verify?t=abc now.",
                                   sender="noreply@app.test")
        message = await mailbox.wait_for_message(subject="Verify", timeout=5)
        self.assertEqual((message.code(), message.link("verify")), ("482913", "https://app.test/verify?t=abc"))
        self.assertEqual(message.sender, "noreply@app.test")
        self.assertEqual([m.subject for m in await mailbox.messages()], ["Other", "Verify your account"])
        await backend.release(lease.token)
        self.assertEqual(self.alive(persona), [])
        await backend.release(lease.token)  # already gone: a no-op, not an error
        fresh = await self.new_backend()  # the sweep releases from a new instance
        await fresh.release(lease.token)

    async def test_token_is_json_and_free_of_provider_secrets(self) -> None:
        import json

        _, _, planned, lease = await self.acquire()
        text = json.dumps(lease.token) + json.dumps(planned)
        for secret in self.sandbox.env().values():
            if not secret.startswith("http"):
                self.assertNotIn(secret, text)

    async def test_release_after_the_provider_dropped_it(self) -> None:
        backend, persona, _, lease = await self.acquire()
        self.assertTrue(self.sandbox.drop(self.provider, self.provider_id(lease.token)))
        await backend.release(lease.token)
        self.assertEqual(self.alive(persona), [])

    async def test_429_then_success(self) -> None:
        self.sandbox.inject("429", count=2, retry_after=0, provider=self.provider)
        _, persona, _, lease = await self.acquire()
        self.assertEqual(self.queued_faults(), [])
        self.assertEqual(len(self.alive(persona)), 1)

    async def test_500s_past_the_budget_are_retryable_errors(self) -> None:
        backend = await self.new_backend()
        persona = self.persona()
        planned = backend.plan(persona)
        self.sandbox.inject("500", count=50, provider=self.provider)
        with self.assertRaises(RetryableProviderError) as caught:
            await backend.acquire(persona, **planned)
        self.assertIn("500", str(caught.exception))
        self.assertEqual(self.queued_faults()[0]["count"], 46)  # 1 try + 3 retries
        self.assertNoSecrets(caught.exception, *_passwords(planned))
        self.sandbox.clear_faults()
        self.assertEqual(self.alive(persona), [])

    async def test_release_failing_past_the_budget_keeps_it_alive(self) -> None:
        backend, persona, _, lease = await self.acquire()
        self.sandbox.inject("500", count=50, provider=self.provider)
        with self.assertRaises(RetryableProviderError) as caught:
            await backend.release(lease.token)
        self.assertNoSecrets(caught.exception, *_passwords(lease.token))
        self.sandbox.clear_faults()
        self.assertEqual(len(self.alive(persona)), 1)
        await backend.release(lease.token)  # the next sweep's try succeeds
        self.assertEqual(self.alive(persona), [])

    async def test_create_whose_answer_was_lost_is_still_ours(self) -> None:
        backend = await self.new_backend()
        persona = self.persona()
        planned = backend.plan(persona)
        method, path = self.create
        self.sandbox.inject("drop_after", count=1, method=method, path=path)
        lease = await backend.acquire(persona, **planned)  # created, answer lost, retried
        self.assertEqual(self.queued_faults(), [])
        self.assertEqual(len(self.alive(persona)), 1)
        await backend.release(lease.token)
        self.assertEqual(self.alive(persona), [])

    async def test_recover_finds_created_but_unrecorded(self) -> None:
        backend, persona, planned, lease = await self.acquire()
        fresh = await self.new_backend()
        self.assertEqual(await fresh.recover(planned), lease.token)
        await fresh.release(await fresh.recover(planned))
        self.assertEqual(self.alive(persona), [])
        self.assertIsNone(await fresh.recover(planned))  # released: nothing left to recover

    async def test_recover_returns_none_for_never_created(self) -> None:
        backend = await self.new_backend()
        self.assertIsNone(await backend.recover(backend.plan(self.persona())))
