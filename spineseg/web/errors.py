"""Every error becomes one JSON shape, in this one place: ``{"detail": message, "field": name
or null, "source": file or parameter or null}``. HTML pages get a redirect to the login page
(401) or a small error page instead.

========================  ======  ==============================================
exception                 status  why
========================  ======  ==============================================
InputError                422     a file or value we cannot use (names it)
UploadRefused             400/413/415 malformed body / too large / not multipart
NotAuthenticated          401     no valid session or token
Forbidden                 403     role may not do this, or CSRF token missing
ModelNotFoundError        503     no production model installed: the service cannot segment
IntegrityError            500     stored data failed its checksum (says so)
HTTPException             as set  404s with a reason, etc.
========================  ======  ==============================================
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from spineseg.errors import InputError, IntegrityError, ModelNotFoundError
from spineseg.web.auth import Forbidden, NotAuthenticated
from spineseg.web.uploads import UploadRefused

log = logging.getLogger(__name__)


def error_body(detail: object, *, field: str | None = None, source: str | None = None) -> dict[str, object]:
    return {"detail": detail, "field": field, "source": source}


def _wants_html(request: Request) -> bool:
    return not request.url.path.startswith("/api") and "text/html" in request.headers.get("accept", "")


def _html_error(request: Request, status: int, message: str) -> Response:
    templates = request.app.state.templates
    return templates.TemplateResponse(request, "error.html", {"status": status, "message": message},
                                      status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    """Register the mapping above on ``app``."""

    @app.exception_handler(InputError)
    async def input_error(request: Request, exc: InputError) -> Response:
        field = getattr(exc, "field", None)
        if _wants_html(request):
            return _html_error(request, 422, str(exc))
        return JSONResponse(error_body(f"{exc.source}: {exc.reason}", field=field, source=exc.source), 422)

    @app.exception_handler(UploadRefused)
    async def upload_refused(request: Request, exc: UploadRefused) -> Response:
        return JSONResponse(error_body(exc.message, field=exc.field), exc.status)

    @app.exception_handler(NotAuthenticated)
    async def not_authenticated(request: Request, exc: NotAuthenticated) -> Response:
        if _wants_html(request):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
        return JSONResponse(error_body("authentication required: log in or send Authorization: Bearer <token>"),
                            401, headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        if _wants_html(request):
            return _html_error(request, 403, exc.message)
        return JSONResponse(error_body(exc.message), 403)

    @app.exception_handler(ModelNotFoundError)
    async def no_model(request: Request, exc: ModelNotFoundError) -> Response:
        return JSONResponse(error_body(f"the service cannot segment right now: {exc}"), 503)

    @app.exception_handler(IntegrityError)
    async def integrity(request: Request, exc: IntegrityError) -> Response:
        log.error("integrity check failed: %s", exc)
        return JSONResponse(error_body(f"stored data failed its integrity check; ask an administrator: {exc}"),
                            500)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if _wants_html(request):
            return _html_error(request, exc.status_code, str(exc.detail))
        return JSONResponse(error_body(exc.detail), exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation(request: Request, exc: RequestValidationError) -> Response:
        problems = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()]
        return JSONResponse(error_body("; ".join(problems) or "invalid request"), 422)
