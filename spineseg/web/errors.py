"""Every error becomes one JSON shape, in this one place: ``{"detail": message, "field": name
or null, "source": file or parameter or null}``. HTML pages get a redirect to the login page
(401) or a small error page instead.

========================  ======  ==============================================
exception                 status  why
========================  ======  ==============================================
InputError                422     a file or value we cannot use (names it; server paths stripped)
InputTooLarge             413     an input over a size/voxel/memory limit (an InputError)
UploadRefused             400/408/413/415 malformed body / stalled / too large / not multipart
(web.body_limit)          413     a body over its route's limit, refused before it is parsed
NotAuthenticated          401     no valid session or token
Forbidden                 403     role may not do this, or CSRF token missing
ModelNotFoundError        503     no production model installed: the service cannot segment
ModelUnavailableError     503     its weights are missing or corrupt: work is refused, with why
StorageFullError          507     not enough free disk (minus a reserve) for what was announced
OSError ENOSPC/EDQUOT     507     the disk filled during the request: nothing of it was kept
OperationalError (full)   507     SQLite's 'database or disk is full': nothing was changed
IntegrityError            500     stored data failed its checksum (says so)
OperationalError (SQL)    503     database locked or unreachable: nothing changed, retry
any other exception       500     a reference to the server log, never a traceback
HTTPException             as set  404s with a reason, etc.
========================  ======  ==============================================

Messages quote the values they refuse, never whole: ``error_body`` bounds every detail and the
validation handler never shows a pydantic error's ``input``.
"""

from __future__ import annotations

import logging
import secrets
from urllib.parse import quote, urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from spineseg.errors import (
    InputError,
    IntegrityError,
    ModelNotFoundError,
    ModelUnavailableError,
    StorageFullError,
    bounded,
    strip_server_paths,
)
from spineseg.web.auth import SESSION_ID, Forbidden, NotAuthenticated, csrf_token
from spineseg.web.uploads import UploadRefused

log = logging.getLogger(__name__)


MAX_DETAIL_CHARS = 1000  # a message that quotes values never sends them back whole (``bounded``)


def error_body(detail: object, *, field: str | None = None, source: str | None = None) -> dict[str, object]:
    if isinstance(detail, str):
        detail = bounded(detail, MAX_DETAIL_CHARS)
    return {"detail": detail, "field": field and bounded(field, 200), "source": source and bounded(source, 200)}


def validation_problem(error: dict[str, object]) -> str:
    """One pydantic error as ``body.name: message``: never its ``input`` (the value may be
    megabytes, or a secret), and a location that quotes a dict key of the body is bounded."""
    loc = error.get("loc", ())
    where = ".".join(bounded(str(part), 60) for part in loc) if isinstance(loc, (list, tuple)) else ""
    return f"{where}: {bounded(str(error.get('msg', 'invalid')), 300)}"


def _wants_html(request: Request) -> bool:
    return not request.url.path.startswith("/api") and "text/html" in request.headers.get("accept", "")


def _error_answer(request: Request, status: int, message: str) -> Response:
    """``message`` with ``status``: the error page for a browser, the JSON error body otherwise."""
    if _wants_html(request):
        return _html_error(request, status, message)
    return JSONResponse(error_body(message), status)


def _html_error(request: Request, status: int, message: str) -> Response:
    """The error page inside the usual layout: the caller's navigation (when a route's
    dependencies found who it is) and a way back, never a dead end."""
    templates = request.app.state.templates
    message = bounded(message, MAX_DETAIL_CHARS)
    user = getattr(request.state, "principal", None)
    referer = urlsplit(request.headers.get("referer", ""))
    back = (referer.path + (f"?{referer.query}" if referer.query else "")
            if referer.netloc == request.url.netloc and referer.path.startswith("/") else None)
    context = {"status": status, "message": message, "user": user, "back": back,
               "csrf": csrf_token(request) if user else ""}
    return templates.TemplateResponse(request, "error.html", context, status_code=status)


def _session_expired(request: Request) -> bool:
    """The request carried a login session cookie that no longer authenticates (it expired,
    was logged out elsewhere, or the password changed)."""
    return "session" in request.scope and isinstance(request.session.get(SESSION_ID), str)


def install_error_handlers(app: FastAPI) -> None:
    """Register the mapping above on ``app``."""

    @app.exception_handler(InputError)
    async def input_error(request: Request, exc: InputError) -> Response:
        field = getattr(exc, "field", None)
        status = getattr(exc, "status", 422)  # InputTooLarge: 413
        source, reason = strip_server_paths(exc.source), strip_server_paths(exc.reason)
        if _wants_html(request):
            return _html_error(request, status, f"{source}: {reason}")
        return JSONResponse(error_body(f"{source}: {reason}", field=field, source=source), status)

    @app.exception_handler(UploadRefused)
    async def upload_refused(request: Request, exc: UploadRefused) -> Response:
        return JSONResponse(error_body(exc.message, field=exc.field), exc.status)

    @app.exception_handler(NotAuthenticated)
    async def not_authenticated(request: Request, exc: NotAuthenticated) -> Response:
        expired = _session_expired(request)
        if _wants_html(request):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target)}" + ("&expired=1" if expired else ""),
                                    status_code=303)
        message = ("your session expired: log in again" if expired
                   else "authentication required: log in or send Authorization: Bearer <token>")
        return JSONResponse(error_body(message) | {"login": "/login?expired=1" if expired else "/login"},
                            401, headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        return _error_answer(request, 403, exc.message)

    @app.exception_handler(ModelNotFoundError)
    async def no_model(request: Request, exc: ModelNotFoundError) -> Response:
        return JSONResponse(error_body(f"the service cannot segment right now: {strip_server_paths(str(exc))}"),
                            503)

    @app.exception_handler(ModelUnavailableError)
    async def model_unusable(request: Request, exc: ModelUnavailableError) -> Response:
        message = f"the service cannot segment right now: {strip_server_paths(str(exc))}"
        return _error_answer(request, 503, message)

    @app.exception_handler(StorageFullError)
    async def storage_full(request: Request, exc: StorageFullError) -> Response:
        message = strip_server_paths(str(exc))
        return _error_answer(request, 507, message)

    @app.exception_handler(IntegrityError)
    async def integrity(request: Request, exc: IntegrityError) -> Response:
        log.error("integrity check failed: %s", exc)
        return JSONResponse(error_body("stored data failed its integrity check; ask an administrator: "
                                       + strip_server_paths(str(exc))), 500)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if _wants_html(request):
            return _html_error(request, exc.status_code, str(exc.detail))
        return JSONResponse(error_body(exc.detail), exc.status_code, headers=getattr(exc, "headers", None))

    def disk_full(request: Request, exc: BaseException) -> Response:
        from spineseg.services.disk_room import disk_full_message

        log.warning("disk full during %s %s: %s", request.method, request.url.path, exc)
        services = getattr(request.app.state, "services", None)
        if services is not None:  # measure now: a full disk gives up the room kept for deletions
            services.disk_room().forget()
            services.disk_room().room()
        message = disk_full_message()
        return _error_answer(request, 507, message)

    @app.exception_handler(OSError)
    async def os_error(request: Request, exc: OSError) -> Response:
        from spineseg.services.disk_room import is_disk_full

        if is_disk_full(exc):
            return disk_full(request, exc)
        return await unexpected(request, exc)

    @app.exception_handler(OperationalError)
    async def database_busy(request: Request, exc: OperationalError) -> Response:
        from spineseg.services.disk_room import is_disk_full

        if is_disk_full(exc):
            return disk_full(request, exc)
        # A locked or unreachable database: nothing was changed (the session rolled back), so
        # the client may simply try again.
        log.warning("database unavailable for %s %s: %s", request.method, request.url.path, exc.orig)
        return JSONResponse(error_body("the database is busy or unavailable; nothing was changed, try again "
                                       "in a few seconds"), 503, headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        # The one place a bug surfaces: the log gets the traceback and a reference, the client
        # only the reference (never a server path or a stack).
        reference = secrets.token_hex(4)
        log.error("unexpected error %s in %s %s", reference, request.method, request.url.path, exc_info=exc)
        message = f"internal error (reference {reference}); the server's log has the details"
        return _error_answer(request, 500, message)

    @app.exception_handler(RequestValidationError)
    async def validation(request: Request, exc: RequestValidationError) -> Response:
        problems = [validation_problem(e) for e in exc.errors()[:20]]
        return JSONResponse(error_body("; ".join(problems) or "invalid request"), 422)
