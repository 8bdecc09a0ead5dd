"""Post/redirect/get for the HTML forms: a refused form is not rendered from the POST (a reload
would send it again) but redirected to its page, which finds the user's values and a message
per field here, once.

The values ride in the signed session cookie until the next page reads them, so only small
forms use it and secrets never do (``SECRET_FIELDS`` are dropped).
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from starlette.requests import Request

from spineseg.errors import InputError, bounded, strip_server_paths

FLASH_KEY = "flash"
SECRET_FIELDS = frozenset({"password", "csrf_token", "new_password"})
MAX_VALUE = 2000


def field_errors(exc: Exception, fields: tuple[str, ...] = ()) -> dict[str, str]:
    """``{field: message}`` for a refused form: one entry per pydantic error (by its field), or
    the ``InputError``'s field (its ``field``, or its source when that names a form field);
    ``""`` holds a message that belongs to no field."""
    if isinstance(exc, ValidationError):
        errors: dict[str, str] = {}
        for error in exc.errors():
            loc = [str(p) for p in error.get("loc", ())]
            name = next((p for p in reversed(loc) if p in fields), loc[-1] if loc else "")
            message = bounded(str(error.get("msg", "invalid")).removeprefix("Value error, "))
            errors[name] = f"{errors[name]}; {message}" if name in errors else message
        return errors
    if isinstance(exc, InputError):
        name = getattr(exc, "field", None) or (str(exc.source) if str(exc.source) in fields else "")
        text = strip_server_paths(exc.reason if name else f"{exc.source}: {exc.reason}")
        return {name: bounded(text)}  # a refused value is quoted, never whole
    return {"": str(exc)}


def redirect_with(request: Request, url: str, form: str, *, values: dict[str, Any] | None = None,
                  errors: dict[str, str] | None = None, message: str = "", notice: str = "") -> RedirectResponse:
    """Remember what ``form`` needs to be shown again, then 303 to ``url``."""
    kept = {str(k): (v if isinstance(v, list) else str(v))[:MAX_VALUE] for k, v in (values or {}).items()
            if k not in SECRET_FIELDS}
    request.session[FLASH_KEY] = {"form": form, "values": kept, "errors": dict(errors or {}),
                                  "message": message, "notice": notice}
    return RedirectResponse(url, status_code=303)


def take(request: Request, form: str) -> dict[str, Any]:
    """What ``redirect_with`` kept for ``form`` (then forgotten), or empty values and errors."""
    flash = request.session.get(FLASH_KEY)
    if not isinstance(flash, dict) or flash.get("form") != form:
        return {"values": {}, "errors": {}, "message": "", "notice": ""}
    request.session.pop(FLASH_KEY, None)
    return {"values": flash.get("values") or {}, "errors": flash.get("errors") or {},
            "message": flash.get("message") or "", "notice": flash.get("notice") or ""}


def form_values(form: Any, names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """A submitted form as a plain dict (repeated fields as lists)."""
    out: dict[str, Any] = {}
    for key in form:
        if names is not None and key not in names:
            continue
        items = form.getlist(key)
        out[key] = [str(v) for v in items] if len(items) > 1 else str(items[0]) if items else ""
    return out
