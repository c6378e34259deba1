"""HTML pages for the example app, so that a real browser can sign a persona up.

- ``GET /example_app/pages/signup``: a form (``#email``, ``#phone``, ``#submit``)
  that posts JSON to ``/example_app/signup``; then ``#sent`` says "check your inbox".
- The emailed link, ``GET /example_app/verify?email=&code=``, answers a browser
  (``Accept: text/html``) with a page instead of JSON: ``#verified`` and a form
  for the SMS code (``#sms-code``, ``#confirm``), which posts to
  ``/example_app/verify``; then ``#done`` says the sign-up is complete. A bad
  link shows ``#error``. The phone number travels in the browser's
  ``localStorage`` from the first page to the second, as a real app's session would.

Only presentation lives here: every decision is the JSON API's in ``example_app``.
"""
from __future__ import annotations

import html
import json
from typing import Awaitable, Callable

from aiohttp import web

from ..store import SandboxStore
from .example_app import PREFIX

__all__ = ["setup", "SIGNUP_PAGE"]

SIGNUP_PAGE = f"{PREFIX}/pages/signup"

_STYLE = "body{font-family:sans-serif;max-width:32em;margin:3em auto} label{display:block;margin:.5em 0}"

_SIGNUP_BODY = f"""
<h1>Sign up for Example App</h1>
<form id="signup">
  <label>Email <input id="email" name="email" type="email" required></label>
  <label>Phone <input id="phone" name="phone" type="tel" required></label>
  <button id="submit" type="submit">Sign up</button>
</form>
<p id="error" hidden></p>
<script>
document.getElementById("signup").addEventListener("submit", async (event) => {{
  event.preventDefault();
  const email = document.getElementById("email").value, phone = document.getElementById("phone").value;
  const answer = await fetch("{PREFIX}/signup", {{method: "POST", headers: {{"Content-Type": "application/json"}},
                                              body: JSON.stringify({{email, phone}})}});
  if (answer.status !== 201) {{ return show("error", "Sign-up failed: " + (await answer.json()).error); }}
  localStorage.setItem("example_app.phone", phone);
  document.getElementById("signup").hidden = true;
  show("sent", "Check your inbox at " + email + " for the verification link.");
}});
</script>
"""

_VERIFIED_BODY = f"""
<h1 id="verified">Email verified: %(email)s</h1>
<form id="sms">
  <label>The code we texted you <input id="sms-code" name="code" inputmode="numeric" required></label>
  <button id="confirm" type="submit">Confirm</button>
</form>
<p id="error" hidden></p>
<script>
document.getElementById("sms").addEventListener("submit", async (event) => {{
  event.preventDefault();
  const phone = localStorage.getItem("example_app.phone"), code = document.getElementById("sms-code").value;
  const answer = await fetch("{PREFIX}/verify", {{method: "POST", headers: {{"Content-Type": "application/json"}},
                                              body: JSON.stringify({{phone, code}})}});
  if (answer.status !== 200) {{ return show("error", "Wrong code: " + (await answer.json()).error); }}
  document.getElementById("sms").hidden = true;
  show("done", "Welcome! Your sign-up is complete.");
}});
</script>
"""

_SHOW = """<script>
function show(id, text) {
  let node = document.getElementById(id);
  if (!node) { node = document.createElement("p"); node.id = id; document.body.appendChild(node); }
  node.textContent = text; node.hidden = false;
}
</script>"""


def _page(title: str, body: str, status: int = 200) -> web.Response:
    text = (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>{_STYLE}</style></head><body>{_SHOW}{body}</body></html>")
    return web.Response(text=text, status=status, content_type="text/html")


async def _signup_page(request: web.Request) -> web.Response:
    return _page("Sign up", _SIGNUP_BODY)


def _wants_html(request: web.Request) -> bool:
    return request.method == "GET" and "text/html" in request.headers.get("Accept", "")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _verify_page(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The emailed link, opened in a browser: the JSON API's answer rendered as a page."""
    response = await handler(request)
    if request.path != f"{PREFIX}/verify" or not _wants_html(request) or not isinstance(response, web.Response):
        return response
    answer = json.loads(response.text or "{}")
    if response.status != 200:
        return _page("Verification failed", f"<p id='error'>{html.escape(str(answer.get('error')))}</p>",
                     status=response.status)
    return _page("Email verified", _VERIFIED_BODY % {"email": html.escape(str(answer.get("email")))})


def setup(app: web.Application, store: SandboxStore) -> None:
    """Mount the signup page and render the verify link for browsers."""
    app.router.add_get(SIGNUP_PAGE, _signup_page)
    app.middlewares.append(_verify_page)
