"""Headers every response carries, added by a plain ASGI middleware: Starlette's
``BaseHTTPMiddleware`` costs a task group and a memory stream per request, which showed in the
latency of ``/api/health`` under 50 polling clients.

- always: no sniffing, no framing, same-origin referrers, and a Content-Security-Policy
  (``CONTENT_SECURITY_POLICY``) under which the pages and the NiiVue viewer work: scripts and
  styles only from this server (no inline script or style anywhere: every page's script is
  a static file; no ``eval``, no WebAssembly: NiiVue 0.69 needs neither for NIfTI volumes,
  checked in Chromium by tests/web/test_patient_data_browser.py), pictures and viewer data
  from this server, ``blob:`` (the overlay image) and ``data:``; no plugins, no framing,
  forms post only here;
- everything but ``/static/`` (API answers and every page, which show patient data):
  ``Cache-Control: no-store``, so no browser or proxy cache keeps a copy;
- over HTTPS (``spineseg serve --tls-cert``, or a TLS proxy with SPINESEG_SECURE_COOKIES):
  ``Strict-Transport-Security``, so browsers never fall back to plain HTTP;
- ``/docs`` (Swagger UI, whose start-up script FastAPI writes inline): the same policy with
  the SHA-256 of that page's own inline scripts allowed, computed from the page itself.

A route that sets one of these headers itself keeps its own value.
"""

from __future__ import annotations

import base64
import hashlib
import re

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP_DIRECTIVES = (
    ("default-src", "'self'"),
    ("script-src", "'self'"),
    ("style-src", "'self'"),
    ("img-src", "'self' data: blob:"),
    ("connect-src", "'self' blob: data:"),
    ("worker-src", "'self' blob:"),
    ("font-src", "'self' data:"),
    ("object-src", "'none'"),
    ("base-uri", "'none'"),
    ("frame-ancestors", "'none'"),
    ("form-action", "'self'"),
)
CONTENT_SECURITY_POLICY = "; ".join(f"{name} {value}" for name, value in CSP_DIRECTIVES)
ALWAYS = (("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"), ("Referrer-Policy", "same-origin"),
          ("Cross-Origin-Opener-Policy", "same-origin"))
NO_STORE = (("Cache-Control", "no-store"),)  # patient data stays out of every cache
HSTS = (("Strict-Transport-Security", "max-age=31536000"),)  # one year; only ever sent over HTTPS
CACHEABLE_PREFIX = "/static/"
DOCS_PATH = "/docs"
_INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.S | re.I)


def policy_with_script_hashes(body: bytes) -> str:
    """``CONTENT_SECURITY_POLICY`` allowing exactly the inline ``<script>`` blocks of ``body``."""
    hashes = " ".join("'sha256-" + base64.b64encode(hashlib.sha256(script).digest()).decode() + "'"
                      for script in _INLINE_SCRIPT.findall(body))
    return CONTENT_SECURITY_POLICY.replace("script-src 'self'", f"script-src 'self' {hashes}".rstrip(), 1)


def _add(message: Message, extra: tuple[tuple[str, str], ...]) -> None:
    headers = MutableHeaders(scope=message)
    for name, value in extra:
        if name not in headers:
            headers.append(name, value)


class SecurityHeaders:
    """Adds the module's headers to every HTTP response (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        extra = ALWAYS + (() if path.startswith(CACHEABLE_PREFIX) else NO_STORE) + (
            HSTS if scope.get("scheme") == "https" else ())
        if path == DOCS_PATH:
            await self._buffered(scope, receive, send, extra)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                _add(message, (*extra, ("Content-Security-Policy", CONTENT_SECURITY_POLICY)))
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _buffered(self, scope: Scope, receive: Receive, send: Send, extra: tuple[tuple[str, str], ...]) -> None:
        """The small Swagger UI page, held until complete so its inline scripts can be hashed."""
        start: Message | None = None
        body = bytearray()

        async def hold(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] == "http.response.body" and start is not None:
                body.extend(message.get("body", b""))
                if message.get("more_body", False):
                    return
                _add(start, (*extra, ("Content-Security-Policy", policy_with_script_hashes(bytes(body)))))
                await send(start)
                await send({"type": "http.response.body", "body": bytes(body), "more_body": False})
                return
            await send(message)

        await self.app(scope, receive, hold)
