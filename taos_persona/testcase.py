"""unittest glue: ``self.persona`` ready in every test, released at the end of every test.

The normal path is an async cleanup registered in ``asyncSetUp``. Ctrl-C and
SIGTERM do not run unittest cleanups (nor pytest teardowns), so for those the
fixture's own signal handlers (:mod:`.lifetime`) do the release. After a
``KeyboardInterrupt`` unittest still cancels the test loop's tasks before it
closes the loop: a guard task, cancelled then, leaves the fixture (releasing
whatever is left, closing its HTTP session) so nothing is left unclosed.
"""
from __future__ import annotations

import asyncio
import unittest
from typing import Any, ClassVar, Dict, Optional

from .errors import ConfigurationError
from .fixture import PersonaFixture

__all__ = ["PersonaMixin", "PersonaTestCase"]


class PersonaMixin:
    """Mix into an ``IsolatedAsyncioTestCase``; set ``persona_name`` on the class.

    ``persona_options`` holds keyword arguments for :class:`PersonaFixture`
    (``registry_dir``, ``backends``, ...). Override ``asyncSetUp`` freely, but
    call ``await super().asyncSetUp()`` first.
    """

    persona_name: ClassVar[Optional[str]] = None
    persona_options: ClassVar[Dict[str, Any]] = {}
    persona: PersonaFixture

    async def asyncSetUp(self) -> None:
        await super().asyncSetUp()  # type: ignore[misc]
        if not self.persona_name:
            raise ConfigurationError(f"{type(self).__name__} has no persona_name; set the class "
                                     "attribute, e.g. persona_name = 'novice_sarah'")
        fixture = PersonaFixture(self.persona_name, **self.persona_options)
        self.persona = await fixture.__aenter__()
        guard = asyncio.ensure_future(self._persona_mixin_guard(fixture))
        self.addAsyncCleanup(self._persona_mixin_release, fixture, guard)  # type: ignore[attr-defined]

    async def _persona_mixin_release(self, fixture: PersonaFixture, guard: "asyncio.Future[None]") -> None:
        try:
            await fixture.__aexit__(None, None, None)
        finally:
            guard.cancel()

    @staticmethod
    async def _persona_mixin_guard(fixture: PersonaFixture) -> None:
        """Wait until cancelled (by the cleanup, or by unittest's teardown after an interrupt), then
        leave the fixture: a no-op after the cleanup, the whole exit when no cleanup ran."""
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            await fixture.__aexit__(None, None, None)


class PersonaTestCase(PersonaMixin, unittest.IsolatedAsyncioTestCase):
    """An ``IsolatedAsyncioTestCase`` whose tests each get a fresh ``self.persona``."""
