"""Production changes need a second person (issue 28): with ``SPINESEG_PROMOTION_APPROVAL`` at
its default ``two-person``, promoting a version only *proposes* it (``propose``: the review and
its acknowledgements are checked as for a promotion, nothing changes); an admin other than the
proposer approves it (``approve``: the promotion itself, through
``model_governance.promote_checked``), or rejects it; the proposer may withdraw it (``reject``).
Each step is audited (``model.propose``, ``model.approve`` + ``model.promote``,
``model.reject`` / ``model.withdraw``). With ``single`` (a single-user install) whoever may
promote does it alone, as before.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from spineseg.errors import InputError, SpineSegError
from spineseg.registry import RegisteredModel, Registry
from spineseg.services.model_governance import (
    PromotionReview,
    audit_detail,
    check_promotion,
    promote_checked,
    review_for,
)
from spineseg.store import accounts
from spineseg.store.training_models import PromotionProposal

TWO_PERSON = "two-person"
MAX_NOTE = 500


class ProposalNotFound(SpineSegError):
    """No proposal with that id (404)."""


class ProposalClosed(SpineSegError):
    """The proposal was already approved, rejected or withdrawn (409)."""


class SecondPersonRequired(SpineSegError):
    """The proposer cannot approve their own proposal, nor reject someone else's unless an admin (403)."""


def _field_error(field: str, reason: str) -> InputError:
    """An ``InputError`` about ``field`` (422 naming it)."""
    error = InputError(field, reason)
    error.field = field
    return error


def needs_second_person(approval: str) -> bool:
    return approval == TWO_PERSON


def proposal_json(proposal: PromotionProposal) -> dict[str, Any]:
    return {"id": proposal.id, "version_id": proposal.version_id, "production_id": proposal.production_id,
            "proposed_by": proposal.proposed_by, "proposed_at": proposal.proposed_at.isoformat(),
            "confirm": proposal.confirm, "force": proposal.force, "status": proposal.status,
            "decided_by": proposal.decided_by,
            "decided_at": proposal.decided_at.isoformat() if proposal.decided_at else None, "note": proposal.note}


def pending_proposals(session: Session) -> list[PromotionProposal]:
    return list(session.scalars(select(PromotionProposal).where(PromotionProposal.status == "pending")
                                .order_by(PromotionProposal.proposed_at)))


def _pending(session: Session, proposal_id: int) -> PromotionProposal:
    proposal = session.get(PromotionProposal, proposal_id)
    if proposal is None:
        raise ProposalNotFound(f"no promotion proposal with id {proposal_id}")
    if proposal.status != "pending":
        raise ProposalClosed(f"proposal {proposal_id} ({proposal.version_id}) was already {proposal.status}"
                             + (f" by {proposal.decided_by}" if proposal.decided_by else ""))
    return proposal


def propose(registry: Registry, session: Session, version_id: str, *, actor: str, confirm: bool = False,
            force: bool = False, cache_dir: Path | None = None,
            device: str = "auto") -> tuple[PromotionProposal, PromotionReview]:
    """Check the promotion as ``promote_checked`` would (``PromotionRefused`` until the lower or
    unvalidated candidate is acknowledged; the admin requirement of ``force`` is met by the
    approver) and record a pending proposal; ``InputError`` (field ``version``) for the current
    production version or one already waiting."""
    review = review_for(registry, session, version_id, cache_dir=cache_dir, device=device)
    check_promotion(review, confirm=confirm, force=force, is_admin=True)
    production = registry.production_id()
    if version_id == production:
        raise _field_error("version", f"{version_id} is already the production version")
    waiting = next((p for p in pending_proposals(session) if p.version_id == version_id), None)
    if waiting is not None:
        raise _field_error("version", f"{version_id} is already proposed (proposal {waiting.id} by "
                                    f"{waiting.proposed_by}); an admin approves or rejects it")
    proposal = PromotionProposal(version_id=version_id, production_id=production, proposed_by=actor,
                                 confirm=confirm, force=force and review.missing, status="pending", note="")
    session.add(proposal)
    session.flush()
    accounts.record(session, username=actor, action="model.propose", target=version_id,
                    detail=f"proposal {proposal.id}; " + audit_detail(review, forced=proposal.force,
                                                                      confirmed=confirm))
    return proposal, review


def approve(registry: Registry, session: Session, proposal_id: int, *, actor: str, cache_dir: Path | None = None,
            device: str = "auto") -> tuple[RegisteredModel, PromotionReview, PromotionProposal]:
    """An admin (the caller checks the role) other than the proposer makes the proposed version
    production, with the acknowledgements the proposer gave; ``SecondPersonRequired`` for the
    proposer, ``ProposalClosed`` / ``ProposalNotFound`` otherwise."""
    proposal = _pending(session, proposal_id)
    if proposal.proposed_by == actor:
        raise SecondPersonRequired(f"you proposed {proposal.version_id} (proposal {proposal_id}): another admin "
                                   "must approve it")
    model, review = promote_checked(registry, session, proposal.version_id, actor=actor, is_admin=True,
                                    confirm=proposal.confirm, force=proposal.force, cache_dir=cache_dir,
                                    device=device)
    _decide(proposal, "approved", actor, "")
    accounts.record(session, username=actor, action="model.approve", target=proposal.version_id,
                    detail=f"proposal {proposal_id} by {proposal.proposed_by}")
    return model, review, proposal


def reject(session: Session, proposal_id: int, *, actor: str, is_admin: bool, note: str = "") -> PromotionProposal:
    """An admin rejects the proposal, or its proposer withdraws it (``note``: why, optional)."""
    proposal = _pending(session, proposal_id)
    own = proposal.proposed_by == actor
    if not (own or is_admin):
        raise SecondPersonRequired(f"only an admin or its proposer ({proposal.proposed_by}) may close proposal "
                                   f"{proposal_id}")
    note = note.strip()
    if len(note) > MAX_NOTE:
        raise _field_error("note", f"at most {MAX_NOTE} characters, got {len(note)}")
    status = "withdrawn" if own else "rejected"
    _decide(proposal, status, actor, note)
    accounts.record(session, username=actor, action="model.withdraw" if own else "model.reject",
                    target=proposal.version_id, detail=f"proposal {proposal_id} by {proposal.proposed_by}"
                                                       + (f": {note}" if note else ""))
    return proposal


def _decide(proposal: PromotionProposal, status: str, actor: str, note: str) -> None:
    proposal.status, proposal.decided_by, proposal.decided_at, proposal.note = status, actor, datetime.now(UTC), note
