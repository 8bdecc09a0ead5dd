"""Who may change a study: its owner or an admin, one rule for every change (API and pages):
renaming it, setting its site, choosing its current run, re-running it, cancelling its job,
sending its result to the PACS, deleting it. Viewing, downloading and using it in evaluations
or datasets stay open to every role that may do those."""

from __future__ import annotations

from spineseg.store.models import Study
from spineseg.web.auth import Forbidden, Principal

OWNER_RULE = "only the study's owner or an admin may {action} it"


def require_owner_or_admin(study: Study, user: Principal, action: str) -> None:
    """``Forbidden`` (403) naming the rule unless ``user`` owns ``study`` or is an admin."""
    if user.role == "admin" or (study.owner_id is not None and study.owner_id == user.user_id):
        return
    owner = study.owner.username if study.owner else "no one (its owner was removed)"
    raise Forbidden(OWNER_RULE.format(action=action) + f": study {study.id} belongs to {owner}, "
                    f"you are {user.username!r} ({user.role})")
