"""Promoting a version to production with the figures in front of the person who does it.

``review_promotion`` puts the candidate's and the current production's validation Dice side by
side **on the same cases**: the figures stored on the cards when both were validated on the
same case names, else both versions segment the candidate's validation cases (when the caller
can locate them) and those figures are used. ``check_promotion`` refuses, with a message that
says what to do, a candidate that is lower than production unless the caller confirmed it,
and a candidate without validation figures unless an administrator forced it. The web page,
the API and the CLI all go through these two functions; ``audit_detail`` is the one line the
audit chain records with every promote and rollback.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from spineseg.errors import IntegrityError, SpineSegError, strip_server_paths
from spineseg.model.card import ModelCard
from spineseg.model.dataset import CaseSpec
from spineseg.registry import RegisteredModel, Registry
from spineseg.services.datasets import case_specs
from spineseg.services.model_comparison import compare_versions
from spineseg.store import accounts
from spineseg.store.training_runs import runs_by_version

log = logging.getLogger(__name__)

CARD = "card"  # figures as recorded at training
COMPUTED = "computed"  # figures measured now, both versions on the same cases


class PromotionRefused(SpineSegError):
    """The promotion needs an explicit confirmation (``needs``: ``"confirm"`` or ``"force"``)."""

    def __init__(self, message: str, needs: str) -> None:
        super().__init__(message)
        self.message, self.needs = message, needs


@dataclass
class Figures:
    """One version's validation Dice and the cases it is the mean of.

    dice: mean Dice (``None``: never validated). per_case: case name -> Dice, when known.
    cases: the validation case names. source: ``"card"`` or ``"computed"``.
    """

    version_id: str
    dice: float | None
    cases: list[str] = field(default_factory=list)
    per_case: dict[str, float] = field(default_factory=dict)
    source: str = CARD

    def text(self) -> str:
        if self.dice is None:
            return f"{self.version_id}: no validation Dice"
        where = ", ".join(self.cases) if self.cases else "unnamed cases"
        return f"{self.version_id}: Dice {self.dice:.4f} on {where} ({self.source})"


def _finite(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def validation_case_names(card: ModelCard) -> list[str]:
    """Names of the cases the card's validation Dice was measured on (its ``val`` split)."""
    return sorted(str(entry.get("name")) for entry in card.dataset.get("manifest", [])
                  if entry.get("split") == "val" and entry.get("name"))


def card_figures(version_id: str, card: ModelCard) -> Figures:
    """The validation figures a card records: the best epoch's mean Dice and, from the epoch
    history, the per-case Dice of that epoch."""
    dice = _finite(card.metrics.get("val_dice"))
    per_case: dict[str, float] = {}
    if dice is not None:
        for record in card.metrics.get("history", []) or []:
            if _finite(record.get("val_dice")) == dice:
                per_case = {str(k): float(v) for k, v in (record.get("val_dice_per_case") or {}).items()
                            if _finite(v) is not None}
    cases = sorted(per_case) or validation_case_names(card)
    return Figures(version_id, dice, cases, per_case, CARD)


def expected_accuracy(card: ModelCard) -> dict[str, Any] | None:
    """The cross-validated Dice a card records as its expected accuracy (``metrics.
    cross_validation``, a shipped default's): mean, SD and how many fully labelled held-out
    cases it is over; ``None`` when the card records none."""
    summary = card.metrics.get("cross_validation")
    if not isinstance(summary, dict) or _finite(summary.get("mean_dice")) is None:
        return None
    cases = summary.get("cases") if isinstance(summary.get("cases"), dict) else {}
    held_out = sum(1 for c in cases.values() if isinstance(c, dict) and not c.get("partial"))
    return {"dice": _finite(summary["mean_dice"]), "sd": _finite(summary.get("sd_dice")), "cases": held_out}


@dataclass
class PromotionReview:
    """What the confirmation step shows. ``comparable``: both figures are on the same cases.
    ``warnings``: sentences for the person promoting (lower Dice, missing figures, ...)."""

    candidate: Figures
    production: Figures | None
    comparable: bool
    candidate_lower: bool
    missing: bool
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _compare_on(registry: Registry, production_id: str, candidate_id: str, cases: list[CaseSpec],
                device: str) -> tuple[Figures, Figures]:
    result = compare_versions(registry, [production_id, candidate_id], cases, device=device)
    names = [row["case"] for row in result["cases"]]

    def figures(version_id: str) -> Figures:
        per_case = {row["case"]: row["dice"][version_id] for row in result["cases"]}
        return Figures(version_id, result["versions"][version_id]["mean_dice"], sorted(names), per_case, COMPUTED)

    return figures(candidate_id), figures(production_id)


def _unusable(registry: Registry, version_id: str) -> str | None:
    """Why ``version_id``'s weights cannot be used (missing, unreadable, altered), or ``None``."""
    try:
        registry.get(version_id)
    except (IntegrityError, OSError) as exc:
        return strip_server_paths(str(exc))
    return None


def review_promotion(registry: Registry, candidate_id: str, *,
                     locate_cases: Callable[[list[str]], list[CaseSpec]] | None = None,
                     cache_dir: Path | None = None, device: str = "auto") -> PromotionReview:
    """Compare ``candidate_id`` with the current production (see the module docstring).

    locate_cases: given the candidate's validation case names, the cases (with their files)
        that can still be read, e.g. from the dataset its training run used; ``None`` or an
        empty answer leaves the stored figures side by side, marked as not comparable.
    cache_dir: where computed figures are kept (versions are immutable, so a pair measured
        on the same case names once need not be measured again).
    ``ModelNotFoundError`` for an unknown candidate.
    """
    candidate_model = registry.get(candidate_id)
    candidate = card_figures(candidate_id, candidate_model.card)
    production_id = registry.production_id()
    if production_id == candidate_id:  # promoting it changes nothing: nothing to refuse
        return PromotionReview(candidate, None, True, False, False,
                               [f"{candidate_id} is already the production version"])
    if production_id is None:
        review = PromotionReview(candidate, None, True, False, candidate.dice is None)
        if review.missing:
            review.warnings.append(f"{candidate_id} has no validation Dice")
        return review
    production = card_figures(production_id, registry.unverified(production_id).card)
    broken = _unusable(registry, production_id)
    if broken:  # nothing to measure it with: its recorded figures, and why it should be replaced
        review = PromotionReview(candidate, production, False, False, candidate.dice is None)
        review.warnings.append(f"the production version {production_id} cannot be used ({broken}): promoting "
                               f"{candidate_id} replaces it; its recorded figures cannot be checked")
        return review
    comparable = candidate.dice is not None and production.dice is not None and bool(candidate.cases) \
        and candidate.cases == production.cases
    if candidate.dice is not None and not comparable and locate_cases is not None:
        cached = _read_cache(cache_dir, candidate_id, production_id, candidate.cases)
        if cached is not None:
            candidate, production, comparable = cached[0], cached[1], True
        else:
            specs = locate_cases(candidate.cases)
            if specs:
                candidate, production = _compare_on(registry, production_id, candidate_id, specs, device)
                comparable = True
                _write_cache(cache_dir, candidate, production)
    lower = comparable and candidate.dice is not None and production.dice is not None \
        and candidate.dice < production.dice
    review = PromotionReview(candidate, production, comparable, lower, candidate.dice is None)
    if review.missing:
        review.warnings.append(f"{candidate_id} has no validation Dice: it was never validated "
                               "(its dataset had no validation patient)")
    elif lower:
        review.warnings.append(f"{candidate_id} scores lower than production {production_id} on the same "
                               f"validation cases: Dice {candidate.dice:.4f} < {production.dice:.4f}")
    elif not comparable:
        review.warnings.append(f"the figures of {candidate_id} and {production_id} are on different validation "
                               "cases and the candidate's cases could not be read: they cannot be compared")
    return review


def check_promotion(review: PromotionReview, *, confirm: bool, force: bool, is_admin: bool) -> None:
    """``PromotionRefused`` unless the promotion may go ahead: a candidate without validation
    figures needs ``force`` by an administrator; a lower (or not comparable) one needs ``confirm``."""
    version_id = review.candidate.version_id
    if review.missing:
        if not (force and is_admin):
            who = "" if is_admin else " (an administrator must do it)"
            raise PromotionRefused(
                f"{version_id} has no validation figures; promoting it needs an administrator's explicit "
                f"'promote without validation figures' (force){who}", "force")
        return
    if review.production is not None and (review.candidate_lower or not review.comparable) and not confirm:
        raise PromotionRefused(f"{review.warnings[0]}; confirm to promote it anyway", "confirm")


def audit_detail(review: PromotionReview | None, *, forced: bool = False, confirmed: bool = False) -> str:
    """The figures as the audit chain records them with a promote or rollback."""
    if review is None:
        return ""
    parts = [review.candidate.text()]
    if review.production is not None:
        parts.append("production was " + review.production.text())
        if not review.comparable:
            parts.append("not comparable (different cases)")
    if review.candidate_lower:
        parts.append("lower, confirmed" if confirmed else "lower")
    if review.missing and forced:
        parts.append("promoted without validation figures by an administrator")
    return "; ".join(parts)[:2000]


def training_cases(session: Session, version_id: str, names: list[str]) -> list[CaseSpec]:
    """The cases called ``names`` in the dataset whose training run registered ``version_id``,
    with every file still on disk (none for a version trained elsewhere)."""
    run = runs_by_version(session).get(version_id)
    if run is None or run.dataset is None:
        return []
    wanted = set(names)
    return [spec for spec in case_specs(run.dataset)
            if spec.name in wanted and Path(spec.ct).exists() and Path(spec.labels).exists()]


def _cache_path(cache_dir: Path, candidate_id: str, production_id: str) -> Path:
    return cache_dir / f"{candidate_id}--{production_id}.json"


def _read_cache(cache_dir: Path | None, candidate_id: str, production_id: str,
                cases: list[str]) -> tuple[Figures, Figures] | None:
    if cache_dir is None:
        return None
    try:
        data = json.loads(_cache_path(cache_dir, candidate_id, production_id).read_text())
        candidate, production = Figures(**data["candidate"]), Figures(**data["production"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if set(cases) - set(candidate.cases):
        return None  # measured on fewer cases than the card names: measure again
    return candidate, production


def _write_cache(cache_dir: Path | None, candidate: Figures, production: Figures) -> None:
    if cache_dir is None:
        return
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        path = _cache_path(cache_dir, candidate.version_id, production.version_id)
        path.write_text(json.dumps({"candidate": asdict(candidate), "production": asdict(production)}))
    except OSError as exc:
        log.warning("could not keep the promotion figures: %s", exc)


def review_for(registry: Registry, session: Session, candidate_id: str, *, cache_dir: Path | None = None,
               device: str = "auto") -> PromotionReview:
    """``review_promotion`` with the candidate's validation cases taken from its training run's
    dataset (the service's usual case)."""
    return review_promotion(registry, candidate_id, cache_dir=cache_dir, device=device,
                            locate_cases=lambda names: training_cases(session, candidate_id, names))


def promote_checked(registry: Registry, session: Session, candidate_id: str, *, actor: str, is_admin: bool,
                    confirm: bool = False, force: bool = False, cache_dir: Path | None = None,
                    device: str = "auto") -> tuple[RegisteredModel, PromotionReview]:
    """Review, check (``PromotionRefused``), promote and audit (``model.promote`` with the
    figures; committed with ``session`` by the caller)."""
    review = review_for(registry, session, candidate_id, cache_dir=cache_dir, device=device)
    check_promotion(review, confirm=confirm, force=force, is_admin=is_admin)
    previous = registry.production_id()
    model = registry.promote(candidate_id, actor=actor)
    if previous != model.id:
        accounts.record(session, username=actor, action="model.promote", target=model.id,
                        detail=audit_detail(review, forced=force and review.missing, confirmed=confirm))
    return model, review


def rollback_audited(registry: Registry, session: Session, *, actor: str) -> RegisteredModel:
    """Roll production back and audit it (``model.rollback``) with both versions' recorded figures."""
    previous_id = registry.production_id()
    model = registry.rollback(actor=actor)
    parts = [f"back to {card_figures(model.id, model.card).text()}"]
    if previous_id:
        parts.append(f"from {card_figures(previous_id, registry.unverified(previous_id).card).text()}")
    accounts.record(session, username=actor, action="model.rollback", target=model.id, detail="; ".join(parts))
    return model
