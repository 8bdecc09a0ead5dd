"""Dependencies of the training routes: the researcher gate and the training scheduler."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from spineseg.jobs.train_scheduler import TrainingScheduler
from spineseg.web.auth import Forbidden, Principal
from spineseg.web.deps import CurrentUser


def _researcher(principal: CurrentUser) -> Principal:
    if not principal.may("evaluate"):
        raise Forbidden(f"role {principal.role!r} may not manage datasets, training or model versions "
                        "(researcher role needed)")
    return principal


def get_scheduler(request: Request) -> TrainingScheduler:
    return request.app.state.training


Trainer = Annotated[Principal, Depends(_researcher)]
Scheduler = Annotated[TrainingScheduler, Depends(get_scheduler)]
