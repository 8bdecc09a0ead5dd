"""Every request body is bounded before anything parses it, in this one ASGI middleware.

A body (JSON, form, anything) may hold at most ``MAX_BODY_BYTES``; a larger one gets 413 with
the reason in the usual error shape, before the route runs: one whose Content-Length is over
the limit without a byte of it being read, a chunked one as soon as it passes the limit (it is
read up to the limit before the route sees it). A 300 MB dataset "name" once took 71 s and 3 GB
to be refused. A route that takes more says so with FastAPI's ``max_body_size=`` on its
decorator (which FastAPI enforces too):

- ``ANNOUNCE_MAX_BYTES``: the announce of a resumable upload lists up to 10,000 file names;
- ``STREAMED_BODY``: the route streams its body to disk under limits of its own (multipart
  uploads: ``web.uploads.receive_upload``, SPINESEG_MAX_UPLOAD_MB; resumable chunks:
  ``web.chunks.append_chunk``, ``MAX_CHUNK_BYTES``).

Why not ``FastAPI(max_body_size=...)`` alone: its limiter answers a body declared too large with
a plain-text "Content Too Large" (it replaces whatever the app answers), and only once the
route reads the body. Small requests cost nothing here: routes are looked up only for a body
that declares more than ``MAX_BODY_BYTES`` or declares no length.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass

from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 256 * 1024
ANNOUNCE_MAX_BYTES = 2 * 2**20  # 10,000 files of ~200 bytes of JSON each
STREAMED_BODY = sys.maxsize  # no limit here: the route bounds what it streams itself


@dataclass(frozen=True)
class RouteLimit:
    methods: frozenset[str]
    path: re.Pattern[str]
    max_bytes: int


def route_limits(routes: Iterable[object]) -> list[RouteLimit]:
    """The routes among ``routes`` that declare their own ``max_body_size``."""
    return [RouteLimit(frozenset(route.methods), route.path_regex, route.max_body_size) for route in routes
            if isinstance(route, APIRoute) and getattr(route, "max_body_size", None) is not None]


def too_large(limit: int, sent: int | None) -> JSONResponse:
    what = f"the request body ({sent:,} bytes)" if sent is not None else "the request body"
    return JSONResponse({"detail": f"{what} is over this route's limit of {limit:,} bytes ({limit / 1024:.0f} kB); "
                                   "nothing was read or changed",
                         "field": None, "source": None}, 413, headers={"Connection": "close"})


class BodyLimit:
    """The ASGI middleware: 413 for a body over its route's limit (``MAX_BODY_BYTES`` unless the
    route is in ``limits``), before the route runs."""

    def __init__(self, app: ASGIApp, limits: Iterable[RouteLimit] = (), max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limits = tuple(limits)
        self.max_bytes = max_bytes

    def limit_for(self, method: str, path: str) -> int:
        for route in self.limits:
            if method in route.methods and route.path.match(path):
                return route.max_bytes
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None:
            length = int(declared) if declared.strip().isdigit() else None
            if length is not None and length > self.max_bytes:
                limit = self.limit_for(scope["method"], scope["path"])
                if length > limit:
                    await too_large(limit, length)(scope, receive, send)
                    return
            await self.app(scope, receive, send)  # the server delivers no more than it declares
            return
        if b"chunked" not in headers.get(b"transfer-encoding", b"").lower():
            await self.app(scope, receive, send)  # no body
            return
        limit = self.limit_for(scope["method"], scope["path"])
        if limit >= STREAMED_BODY:
            await self.app(scope, receive, send)
            return
        buffered = await _read_up_to(receive, limit)
        if buffered is None:
            await too_large(limit, None)(scope, receive, send)
            return
        await self.app(scope, _replay(buffered, receive), send)


async def _read_up_to(receive: Receive, limit: int) -> list[Message] | None:
    """The body's messages, or None as soon as they hold more than ``limit`` bytes."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages  # the client went away: the route sees that too
        size += len(message.get("body", b""))
        if size > limit:
            return None
        if not message.get("more_body", False):
            return messages


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay
