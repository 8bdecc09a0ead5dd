"""Promotion proposals (two-person production changes, ``services.promotions``): list the
waiting ones, approve (an admin other than the proposer) or reject / withdraw, through the API
and the models page's forms."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from spineseg.services.model_governance import PromotionRefused
from spineseg.services.promotions import (
    MAX_NOTE,
    ProposalClosed,
    ProposalNotFound,
    SecondPersonRequired,
    approve,
    pending_proposals,
    proposal_json,
    reject,
)
from spineseg.web import flash
from spineseg.web.auth import Principal
from spineseg.web.deps import DbSession, Services, _gate, run_in_session
from spineseg.web.routes.models import history_json, known_versions
from spineseg.web.training_deps import Trainer

router = APIRouter(tags=["models"])
Approver = Annotated[Principal, Depends(_gate("admin", "approve a production change (an admin does)"))]

REFUSALS = {403: {"description": "you proposed it (another admin approves), or you may not close it"},
            404: {"description": "no such proposal"},
            409: {"description": "the proposal is no longer waiting, or the promotion is refused as it stands"}}


class RejectRequest(BaseModel):
    note: str = Field("", description=f"why (optional, at most {MAX_NOTE} characters)")


def _refusal(exc: Exception) -> HTTPException:
    if isinstance(exc, ProposalNotFound):
        return HTTPException(404, str(exc))
    if isinstance(exc, SecondPersonRequired):
        return HTTPException(403, str(exc))
    if isinstance(exc, PromotionRefused):
        return HTTPException(409, exc.message)
    return HTTPException(409, str(exc))


def _approve(proposal_id: int, admin: Any, session: Any, services: Any) -> dict[str, Any]:
    try:
        with known_versions():
            model, review, proposal = approve(services.registry, session, proposal_id, actor=admin.username,
                                              cache_dir=services.settings.data_dir / "promotion-reviews",
                                              device=services.settings.device)
    except (ProposalNotFound, ProposalClosed, SecondPersonRequired, PromotionRefused) as exc:
        raise _refusal(exc) from exc
    services.production_changed()
    session.commit()  # before the answer: the next request must see it
    return {"production": model.id, "proposal": proposal_json(proposal), "review": review.to_json(),
            "history": history_json(services.registry)}


def _reject(proposal_id: int, user: Any, session: Any, note: str) -> dict[str, Any]:
    try:
        proposal = reject(session, proposal_id, actor=user.username, is_admin=user.role == "admin", note=note)
    except (ProposalNotFound, ProposalClosed, SecondPersonRequired) as exc:
        raise _refusal(exc) from exc
    session.commit()
    return proposal_json(proposal)


@router.get("/api/promotions", summary="Promotion proposals waiting for an admin's approval, oldest first")
def proposals(_user: Trainer, session: DbSession, services: Services) -> dict[str, Any]:
    return {"approval": services.settings.promotion_approval,
            "pending": [proposal_json(p) for p in pending_proposals(session)]}


@router.post("/api/promotions/{proposal_id}/approve", responses=REFUSALS,
             summary="Approve a proposal (an admin other than the proposer): its version becomes production")
def approve_proposal(proposal_id: int, admin: Approver, session: DbSession, services: Services) -> dict[str, Any]:
    return _approve(proposal_id, admin, session, services)


@router.post("/api/promotions/{proposal_id}/reject", responses=REFUSALS,
             summary="Reject a proposal (an admin), or withdraw it (its proposer); production is unchanged")
def reject_proposal(proposal_id: int, user: Trainer, session: DbSession,
                    body: RejectRequest | None = None) -> dict[str, Any]:
    return _reject(proposal_id, user, session, (body or RejectRequest()).note)


@router.post("/models/proposals/{proposal_id}/approve", include_in_schema=False)
def approve_from_page(request: Request, proposal_id: int, admin: Approver, session: DbSession,
                      services: Services) -> Response:
    try:
        data = _approve(proposal_id, admin, session, services)
    except HTTPException as exc:
        return flash.redirect_with(request, "/models", "models", message=str(exc.detail))
    return flash.redirect_with(request, "/models", "models",
                               notice=f"approved: {data['production']} is now the production version")


@router.post("/models/proposals/{proposal_id}/reject", include_in_schema=False)
async def reject_from_page(request: Request, proposal_id: int, user: Trainer, services: Services) -> Response:
    form = await request.form()
    note = str(form.get("note", ""))
    try:
        data = await run_in_session(services, lambda session: _reject(proposal_id, user, session, note))
    except HTTPException as exc:
        return flash.redirect_with(request, "/models", "models", message=str(exc.detail))
    return flash.redirect_with(request, "/models", "models",
                               notice=f"proposal {proposal_id} ({data['version_id']}) {data['status']}")
