"""The first-run page (``/setup?token=...``): creates the first admin account from the one-time
link the start-up log prints, then logs that admin in. Refused (410/404, with the reason) once
any account exists or when the link is wrong, spent or expired. See ``services.first_run``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from spineseg.errors import InputError
from spineseg.services.first_run import SETUP_PATH, FirstRunClosed, create_first_admin, refuse_when_done
from spineseg.store.models import MIN_PASSWORD_LENGTH, PASSWORD_RULE
from spineseg.web.auth import csrf_matches, log_in
from spineseg.web.deps import Services
from spineseg.web.routes.pages import render

router = APIRouter(include_in_schema=False)

FIELD_LABELS = {"username": "Username", "password": "Password", "password_again": "Password again"}


def _form(request: Request, token: str, status_code: int = 200, error: str | None = None,
          field: str | None = None, username: str = "") -> HTMLResponse:
    return render(request, "first_run.html", None, status_code, token=token, error=error, field=field,
                  username=username, password_rule=PASSWORD_RULE, min_password_length=MIN_PASSWORD_LENGTH)


def _closed(request: Request, exc: FirstRunClosed) -> HTMLResponse:
    return render(request, "first_run_closed.html", None, exc.status, message=exc.message)


@router.get(SETUP_PATH)
def setup_page(request: Request, services: Services, token: str = "") -> HTMLResponse:
    try:
        refuse_when_done(services.database, request.app.state.first_run, token)
    except FirstRunClosed as exc:
        return _closed(request, exc)
    return _form(request, token)


@router.post(SETUP_PATH)
async def create_admin(request: Request, services: Services, token: Annotated[str, Form()] = "",
                       username: Annotated[str, Form()] = "", password: Annotated[str, Form()] = "",
                       password_again: Annotated[str, Form()] = "",
                       csrf_token: Annotated[str, Form()] = "") -> Response:
    if not csrf_matches(request, csrf_token):
        return _form(request, token, 403, "the form expired: please try again", username=username)
    try:
        user = await run_in_threadpool(create_first_admin, services.database, request.app.state.first_run,
                                       token=token, username=username.strip(), password=password,
                                       password_again=password_again)
    except FirstRunClosed as exc:
        return _closed(request, exc)
    except InputError as exc:
        label = FIELD_LABELS.get(exc.source, exc.source)
        return _form(request, token, 422, f"{label}: {exc.reason}", field=exc.source, username=username)
    await run_in_threadpool(log_in, request, user)  # writes the session row: not on the event loop
    return RedirectResponse("/studies", status_code=303)
