"""User administration and the audit trail (admin role): JSON under ``/api/users`` and
``/api/audit``, and the ``/admin`` page with forms."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from spineseg.errors import InputError
from spineseg.store import accounts
from spineseg.store.models import AuditEvent, User
from spineseg.web.deps import Admin, DbSession

router = APIRouter(tags=["admin"])


class NewUser(BaseModel):
    username: str = Field(description="1-64 letters, digits or . _ - @")
    password: str = Field(description="at least 8 characters")
    role: str = Field(description="viewer, clinician, researcher or admin")


class UserChange(BaseModel):
    role: str | None = None
    active: bool | None = None
    password: str | None = None


def user_json(user: User) -> dict[str, Any]:
    return {"username": user.username, "role": user.role, "active": user.active,
            "created_at": user.created_at.isoformat()}


def event_json(event: AuditEvent) -> dict[str, Any]:
    return {"at": event.at.isoformat(), "username": event.username, "action": event.action,
            "target": event.target, "detail": event.detail}


@router.get("/api/users", summary="List users (admin)")
def users(_admin: Admin, session: DbSession) -> list[dict[str, Any]]:
    return [user_json(u) for u in accounts.list_users(session)]


@router.post("/api/users", status_code=201, summary="Create a user (admin)")
def create_user(body: NewUser, admin: Admin, session: DbSession) -> dict[str, Any]:
    user = accounts.create_user(session, username=body.username, password=body.password, role=body.role)
    accounts.record(session, username=admin.username, action="user.create", target=user.username, detail=user.role)
    return user_json(user)


@router.patch("/api/users/{username}", summary="Change a user's role, active flag or password (admin)")
def change_user(username: str, body: UserChange, admin: Admin, session: DbSession) -> dict[str, Any]:
    if username == admin.username and (body.active is False or (body.role and body.role != "admin")):
        raise InputError("username", "you cannot disable or demote yourself")
    user = accounts.update_user(session, username=username, role=body.role, active=body.active,
                                password=body.password)
    changed = ", ".join(k for k, v in body.model_dump().items() if v is not None)
    accounts.record(session, username=admin.username, action="user.change", target=username, detail=changed)
    return user_json(user)


@router.get("/api/audit", summary="Recent audit events, newest first (admin)")
def audit(_admin: Admin, session: DbSession, limit: int = 200) -> list[dict[str, Any]]:
    return [event_json(e) for e in accounts.recent_events(session, limit=min(max(limit, 1), 1000))]


@router.get("/admin", include_in_schema=False)
def admin_page(request: Request, admin: Admin, session: DbSession, error: str | None = None) -> HTMLResponse:
    from spineseg.web.routes.pages import render

    return render(request, "admin.html", admin, users=accounts.list_users(session),
                  events=accounts.recent_events(session, limit=50), error=error)


@router.post("/admin/users", include_in_schema=False)
def admin_create_user(request: Request, admin: Admin, session: DbSession, username: Annotated[str, Form()],
                      password: Annotated[str, Form()], role: Annotated[str, Form()]) -> Response:
    from spineseg.web.routes.pages import render

    try:
        accounts.create_user(session, username=username, password=password, role=role)
    except InputError as exc:
        return render(request, "admin.html", admin, 422, users=accounts.list_users(session),
                      events=accounts.recent_events(session, limit=50), error=str(exc))
    accounts.record(session, username=admin.username, action="user.create", target=username, detail=role)
    return RedirectResponse("/admin", status_code=303)


@router.post("/admin/users/{username}", include_in_schema=False)
def admin_change_user(username: str, admin: Admin, session: DbSession, role: Annotated[str, Form()],
                      active: Annotated[str, Form()] = "") -> Response:
    if username == admin.username and (role != "admin" or not active):
        raise InputError("username", "you cannot disable or demote yourself")
    accounts.update_user(session, username=username, role=role, active=bool(active))
    accounts.record(session, username=admin.username, action="user.change", target=username,
                    detail=f"role={role} active={bool(active)}")
    return RedirectResponse("/admin", status_code=303)
