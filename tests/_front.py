"""A loopback server in front of the sandbox that answers one route its own way.

Providers sometimes give one status two meanings (GitHub's 404 for a missing
grant and for wrong app credentials; mailsac's 400 for "released" and "not
yours"). The sandbox answers each the honest way; this front lets a test give
the other meaning on one route while every other request reaches the sandbox.
"""
from __future__ import annotations

import os
import unittest
from typing import Any, Dict


async def start_front(case: unittest.IsolatedAsyncioTestCase, sandbox_url: str, env_name: str, prefix: str,
                      method: str, path: str, status: int, answer: Dict[str, Any]) -> None:
    """Point ``env_name`` at a front for the sandbox's ``prefix``; closed after the test.

    It answers ``method`` on paths under ``path`` with ``status`` and JSON ``answer``,
    and forwards every other request to ``sandbox_url + prefix``.
    """
    import aiohttp
    from aiohttp import web

    session = aiohttp.ClientSession()
    case.addAsyncCleanup(session.close)

    async def handle(request: web.Request) -> web.Response:
        if request.method == method and request.path.startswith(path):
            return web.json_response(answer, status=status)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with session.request(request.method, sandbox_url + prefix + request.path_qs,
                                   data=await request.read(), headers=headers) as forwarded:
            return web.Response(status=forwarded.status, body=await forwarded.read(),
                                content_type=forwarded.content_type)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    case.addAsyncCleanup(runner.cleanup)
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    os.environ[env_name] = f"http://127.0.0.1:{runner.addresses[0][1]}"
