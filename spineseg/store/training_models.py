"""SQLAlchemy tables for training from the service: datasets, their labelled cases, and
training runs. They share ``spineseg.store.models.Base`` (and its migrations).

A dataset's split is kept per patient in ``Dataset.split`` (patient -> ``train``/``val``/
``test``); patients without an entry are dealt by the seeded patient split of
``spineseg.model.dataset.split_by_patient``. Once a version was trained on a dataset,
``locked_by`` names it and the split can no longer change.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from spineseg.store.models import Base, utc_now

RUN_STATUSES = ("queued", "running", "done", "failed", "cancelled")


class Dataset(Base):
    """A named collection of labelled cases to train and test on."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True, index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    seed: Mapped[int] = mapped_column(Integer, default=0)
    split: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    locked_by: Mapped[str | None] = mapped_column(String(128), nullable=True)

    cases: Mapped[list[DatasetCase]] = relationship(back_populates="dataset", cascade="all, delete-orphan",
                                                    order_by="DatasetCase.created_at")


class DatasetCase(Base):
    """One CT with its label map. ``ct_path``/``labels_path`` point into the dataset's folder
    (``DATA_DIR/datasets/<dataset id>/<case id>/``). ``coverage`` holds what was measured at
    upload: shape, spacing, slices with spine, vertebra levels, spine volume (mL)."""

    __tablename__ = "dataset_cases"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    patient: Mapped[str] = mapped_column(String(100))
    site: Mapped[str] = mapped_column(String(100), default="")
    convention: Mapped[str] = mapped_column(String(32), default="auto")
    partial: Mapped[bool] = mapped_column(Boolean, default=False)
    ct_path: Mapped[str] = mapped_column(Text)
    labels_path: Mapped[str] = mapped_column(Text)
    source_study_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    coverage: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    added_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)

    dataset: Mapped[Dataset] = relationship(back_populates="cases")


class TrainingRun(Base):
    """A training job: base version (or ``scratch``), dataset, settings, and its live state.

    progress: 0..1 over all steps; ``losses`` [[step, loss], ...] (thinned to a few hundred
    points); ``history`` the epoch records (epoch, loss, val_dice, seconds); ``eta_seconds``
    the estimated time left; ``version_id`` the registered version once done.
    """

    __tablename__ = "training_runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    base: Mapped[str] = mapped_column(String(128))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    notes: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    stage: Mapped[str] = mapped_column(String(64), default="queued")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int] = mapped_column(Integer, default=0)
    eta_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    losses: Mapped[list[Any]] = mapped_column(JSON, default=list)
    history: Mapped[list[Any]] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    version_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the trainer, on worker_id's machine
    worker_id: Mapped[str | None] = mapped_column(String(96), nullable=True)  # see store.heartbeats
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now, index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    dataset: Mapped[Dataset] = relationship()


PROPOSAL_STATUSES = ("pending", "approved", "rejected", "withdrawn")


class PromotionProposal(Base):
    """A request to make ``version_id`` production, waiting for a second person (an admin) when
    ``SPINESEG_PROMOTION_APPROVAL`` is ``two-person`` (``services.promotions``).

    confirm / force: what the proposer acknowledged on the review (a lower candidate, one
    without validation figures), carried to the approval. status: ``PROPOSAL_STATUSES``;
    decided_by / decided_at / note: who approved, rejected or withdrew it, when, and why.
    """

    __tablename__ = "promotion_proposals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[str] = mapped_column(String(128), index=True)
    production_id: Mapped[str | None] = mapped_column(String(128), nullable=True)  # production when proposed
    proposed_by: Mapped[str] = mapped_column(String(64))
    proposed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    confirm: Mapped[bool] = mapped_column(Boolean, default=False)
    force: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    decided_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    note: Mapped[str] = mapped_column(Text, default="")
