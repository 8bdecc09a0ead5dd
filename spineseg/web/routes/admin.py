"""User and token administration (admin role): JSON under ``/api/users`` and ``/api/tokens``,
and the ``/admin`` page with forms. The audit trail's routes live in ``admin_audit``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from spineseg.errors import InputError, strip_server_paths
from spineseg.store import accounts, audit
from spineseg.store.models import ApiToken, User
from spineseg.web import flash
from spineseg.web.auth import Principal
from spineseg.web.deps import Admin, DbSession
from spineseg.web.routes.admin_audit import AuditFilters, audit_filters, chain_state, event_json
from spineseg.web.routes.admin_audit import router as audit_router

router = APIRouter(tags=["admin"])
router.include_router(audit_router)

NOT_FOUND = {404: {"description": "no such user or token"}}
REFUSED = {422: {"description": "a value that is not allowed, named in `detail`"}}


class NewUser(BaseModel):
    username: str = Field(description="1-64 letters, digits or . _ - @")
    password: str = Field(description="at least 8 characters")
    role: str = Field(description="viewer, clinician, researcher or admin")


class UserChange(BaseModel):
    role: str | None = None
    active: bool | None = None
    password: str | None = Field(None, description="a new password (ends the user's sessions)")


def user_json(user: User) -> dict[str, Any]:
    return {"username": user.username, "role": user.role, "active": user.active,
            "created_at": user.created_at.isoformat()}


def token_json(row: ApiToken) -> dict[str, Any]:
    state = "revoked" if row.revoked else "expired" if accounts.token_is_expired(row) else "active"
    return {"id": row.id, "username": row.user.username, "name": row.name, "prefix": row.prefix,
            "created_at": row.created_at.isoformat(),
            "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None,
            "expires_at": row.expires_at.isoformat() if row.expires_at else None, "state": state}


def _check_not_self(admin: Principal, username: str, *, disable: bool = False, demote: bool = False,
                    remove: bool = False) -> None:
    if username == admin.username and (disable or demote or remove):
        raise InputError("username", f"{username!r} is you: you cannot disable, demote or delete yourself")


def change_user(session: Any, admin: Principal, username: str, change: UserChange) -> User:
    """Apply ``change`` to ``username`` (sessions end on a new password or disabling) and audit it."""
    _check_not_self(admin, username, disable=change.active is False,
                    demote=bool(change.role and change.role != "admin"))
    user = accounts.update_user(session, username=username, role=change.role, active=change.active,
                                password=change.password)
    if change.role is not None or change.active is not None:
        accounts.record(session, username=admin.username, action="user.change", target=username,
                        detail=f"role={user.role} active={user.active}")
    if change.password is not None:
        accounts.record(session, username=admin.username, action="user.password_reset", target=username)
    return user


NO_EFFECTS = {"studies": 0, "tokens": 0, "active_tokens": 0, "uploads": 0}


def delete_user(session: Any, admin: Principal, username: str) -> dict[str, int]:
    """Delete ``username`` (``accounts.delete_user``) and audit it; returns what it touched:
    ``studies`` kept without an owner, ``tokens`` deleted, ``uploads`` discarded."""
    _check_not_self(admin, username, remove=True)
    user = accounts.get_user(session, username=username)
    effects = accounts.deletion_effects(session).get(user.id, NO_EFFECTS) if user is not None else NO_EFFECTS
    accounts.delete_user(session, username=username)
    accounts.record(session, username=admin.username, action="user.delete", target=username,
                    detail=f"{effects['studies']} studies kept without owner, {effects['tokens']} tokens deleted, "
                           f"{effects['uploads']} unfinished uploads discarded")
    return {"studies_kept": effects["studies"], "tokens_deleted": effects["tokens"],
            "uploads_discarded": effects["uploads"]}


def create_token_for(session: Any, admin: Principal, username: str, name: str,
                     days: int | None) -> tuple[ApiToken, str]:
    """A new API token for ``username`` (the page and the API; the CLI has ``tokens create``):
    the row and its secret, shown once. ``InputError`` naming the field."""
    row, secret = accounts.create_token(session, username=username, name=" ".join(name.split()), days=days)
    accounts.record(session, username=admin.username, action="token.create", target=str(row.id),
                    detail=f"{username} {row.name}".strip())
    return row, secret


def revoke_token(session: Any, admin: Principal, token_id: int) -> ApiToken:
    row = accounts.revoke_token(session, token_id=token_id)
    accounts.record(session, username=admin.username, action="token.revoke", target=str(token_id),
                    detail=f"{row.user.username} {row.name}".strip())
    return row


@router.get("/api/users", summary="List users (admin)")
def users(_admin: Admin, session: DbSession) -> list[dict[str, Any]]:
    return [user_json(u) for u in accounts.list_users(session)]


@router.post("/api/users", status_code=201, summary="Create a user (admin)", responses=REFUSED)
def create_user(body: NewUser, admin: Admin, session: DbSession) -> dict[str, Any]:
    user = accounts.create_user(session, username=body.username, password=body.password, role=body.role)
    accounts.record(session, username=admin.username, action="user.create", target=user.username, detail=user.role)
    return user_json(user)


@router.patch("/api/users/{username}", summary="Change a user's role, active flag or password (admin)",
              responses=REFUSED)
def patch_user(username: str, body: UserChange, admin: Admin, session: DbSession) -> dict[str, Any]:
    return user_json(change_user(session, admin, username, body))


@router.delete("/api/users/{username}", summary="Delete a user (admin) with their sessions, API tokens and unfinished "
                                                "uploads; their studies stay, owner shown as deleted",
               responses=REFUSED)
def remove_user(username: str, admin: Admin, session: DbSession) -> dict[str, Any]:
    return {"deleted": username} | delete_user(session, admin, username)


@router.get("/api/tokens", summary="API tokens of all users, or of one (admin)")
def tokens(_admin: Admin, session: DbSession, username: str | None = None) -> list[dict[str, Any]]:
    return [token_json(t) for t in accounts.list_tokens(session, username=username)]


@router.delete("/api/tokens/{token_id}", summary="Revoke an API token (admin); it stops working at once",
               responses=REFUSED)
def remove_token(token_id: int, admin: Admin, session: DbSession) -> dict[str, Any]:
    return token_json(revoke_token(session, admin, token_id))


def _page(request: Request, admin: Principal, session: Any, filters: AuditFilters, status_code: int = 200,
          error: str | None = None, verify: bool = False, errors: dict[str, str] | None = None,
          values: dict[str, Any] | None = None, new_token: dict[str, Any] | None = None) -> HTMLResponse:
    from spineseg.web.routes.pages import render

    events = audit.search(session, **filters.query(), limit=filters.limit)
    chain, checked_at = chain_state(request, session, fresh=verify)
    users = accounts.list_users(session)
    effects = accounts.deletion_effects(session)
    return render(request, "admin.html", admin, status_code, users=users,
                  deletion={u.username: effects.get(u.id, NO_EFFECTS) for u in users},
                  tokens=[token_json(t) for t in accounts.list_tokens(session)], events=[event_json(e) for e in events],
                  chain=chain, checked_at=checked_at, actions=audit.actions(session), filters=filters, error=error,
                  errors=errors or {}, values=values or {}, new_token=new_token,
                  default_token_days=accounts.DEFAULT_TOKEN_DAYS, max_token_days=accounts.MAX_TOKEN_DAYS)


@router.get("/admin", include_in_schema=False)
def admin_page(request: Request, admin: Admin, session: DbSession, filters: Annotated[AuditFilters, audit_filters],
               error: str | None = None, verify: bool = False) -> HTMLResponse:
    kept = flash.take(request, "admin")
    page = _page(request, admin, session, filters, error=error or kept["errors"].get(""), verify=verify,
                 errors=kept["errors"], values=kept["values"])
    return page


def _redirect() -> Response:
    return RedirectResponse("/admin", status_code=303)


def _refused(request: Request, session: Any, exc: InputError, prefix: str, values: dict[str, Any] | None = None,
             fields: tuple[str, ...] = ()) -> Response:
    """Post/redirect/get for a refused admin form: back to /admin, the message beside the form
    (``prefix`` + field) and, for the new-user form, its values (never a password)."""
    session.rollback()
    if not prefix.endswith(":"):  # one user's row: the reason beside it
        errors = {prefix: strip_server_paths(exc.reason)}
    else:  # the new-user form: beside its field, or above the page when it names none
        errors = {(prefix + name) if name else "": text for name, text in flash.field_errors(exc, fields).items()}
    return flash.redirect_with(request, "/admin", "admin", values=values, errors=errors)


@router.post("/admin/users", include_in_schema=False)
def admin_create_user(request: Request, admin: Admin, session: DbSession, username: Annotated[str, Form()],
                      password: Annotated[str, Form()], role: Annotated[str, Form()]) -> Response:
    try:
        accounts.create_user(session, username=username, password=password, role=role)
    except InputError as exc:
        return _refused(request, session, exc, "new:", {"username": username, "role": role},
                        ("username", "password", "role"))
    accounts.record(session, username=admin.username, action="user.create", target=username, detail=role)
    return _redirect()


@router.post("/admin/users/{username}", include_in_schema=False)
def admin_change_user(request: Request, username: str, admin: Admin, session: DbSession,
                      role: Annotated[str, Form()], active: Annotated[str, Form()] = "") -> Response:
    try:
        change_user(session, admin, username, UserChange(role=role, active=bool(active)))
    except InputError as exc:  # e.g. demoting yourself: the page again, the reason in your row
        return _refused(request, session, exc, f"user:{username}")
    return _redirect()


@router.post("/admin/users/{username}/password", include_in_schema=False)
def admin_reset_password(request: Request, username: str, admin: Admin, session: DbSession,
                         password: Annotated[str, Form()]) -> Response:
    try:
        change_user(session, admin, username, UserChange(password=password))
    except InputError as exc:
        return _refused(request, session, exc, f"user:{username}")
    return _redirect()


@router.post("/admin/users/{username}/delete", include_in_schema=False)
def admin_delete_user(request: Request, username: str, admin: Admin, session: DbSession) -> Response:
    try:
        delete_user(session, admin, username)
    except InputError as exc:
        return _refused(request, session, exc, f"user:{username}")
    return _redirect()


class NewToken(BaseModel):
    username: str = Field(max_length=64)
    name: str = Field("", max_length=100, description="what the token is for")
    days: int | None = Field(accounts.DEFAULT_TOKEN_DAYS, description=f"valid for 1-{accounts.MAX_TOKEN_DAYS} days; "
                                                                        "null: no expiry")


@router.post("/api/tokens", status_code=201, summary="Create an API token for a user (admin); the secret is in this "
                                                     "answer only")
def api_create_token(body: NewToken, admin: Admin, session: DbSession) -> dict[str, Any]:
    row, secret = create_token_for(session, admin, body.username, body.name, body.days)
    return token_json(row) | {"token": secret}


@router.post("/admin/tokens", include_in_schema=False)
def admin_create_token(request: Request, admin: Admin, session: DbSession,
                       filters: Annotated[AuditFilters, audit_filters], username: Annotated[str, Form()],
                       name: Annotated[str, Form()] = "",
                       days: Annotated[str, Form()] = "") -> Response:
    """The admin page again with the new token's secret shown once (never kept, so not redirected)."""
    values = {"token_username": username, "token_name": name, "token_days": days}
    try:
        chosen = int(days) if days.strip() else None
    except ValueError:
        return _refused(request, session, InputError("days", f"expected a whole number of days, got {days[:20]!r}"),
                        "token:", values, ("days",))
    try:
        row, secret = create_token_for(session, admin, username, name, chosen)
    except InputError as exc:
        return _refused(request, session, exc, "token:", values, ("username", "name", "days"))
    return _page(request, admin, session, filters, new_token={"id": row.id, "username": username, "secret": secret,
                                                              "expires_at": token_json(row)["expires_at"]})


@router.post("/admin/tokens/{token_id}/revoke", include_in_schema=False)
def admin_revoke_token(token_id: int, admin: Admin, session: DbSession) -> Response:
    revoke_token(session, admin, token_id)
    return _redirect()
