"""SQLAlchemy 2 tables: users, API tokens, studies, jobs, resumable uploads and the audit trail.

Times are timezone-aware UTC. Ids of studies and jobs are random hex strings (safe in URLs and
file names); users and tokens use integer keys.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

ROLES = ("viewer", "clinician", "researcher", "admin")
MIN_PASSWORD_LENGTH = 8
PASSWORD_RULE = f"at least {MIN_PASSWORD_LENGTH} characters"  # said on every form and --help that sets one
JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled")


def utc_now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class ApiToken(Base):
    """A personal token: only its SHA-256 is stored; ``prefix`` lets a user tell tokens apart."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    prefix: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)  # None: never

    user: Mapped[User] = relationship()


class Study(Base):
    """One uploaded CT (and optional ground truth) and its runs (segment jobs, ``jobs``).

    input_kind: ``dicom`` (a folder of files or a zip), ``nifti``, ``image`` or ``numpy``.
    model_id / spine_volume_ml / dice / summary / metrics: a copy of the *current run*'s
    results (``services.runs.current_run``), kept by ``services.runs`` so lists and filters
    need no join; the runs hold the originals.
    pinned_job_id: the study's current run, the result it shows (``None``: none yet); it changes
    only by the rules of ``services.runs.finish_run`` and ``pin_run``.
    current_choice: why that run is current: ``{"reason", "by", "at"}`` (``services.runs.REASONS``).
    """

    __tablename__ = "studies"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    name: Mapped[str] = mapped_column(String(255))
    input_kind: Mapped[str] = mapped_column(String(16))
    input_path: Mapped[str] = mapped_column(Text)
    truth_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now, index=True)
    model_id: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    site: Mapped[str] = mapped_column(String(100), default="", server_default="")  # multi-centre tag
    # keyed hash of the patient's identity (services.deidentification): groups a patient's
    # studies on this server without storing who they are; None when the upload named no patient
    patient_pseudonym: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    spine_volume_ml: Mapped[float | None] = mapped_column(Float, nullable=True)
    dice: Mapped[float | None] = mapped_column(Float, nullable=True)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    pinned_job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    current_choice: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    owner: Mapped[User | None] = relationship()
    jobs: Mapped[list[Job]] = relationship(back_populates="study", cascade="all, delete-orphan",
                                           order_by="Job.created_at")
    corrections: Mapped[list[Correction]] = relationship(cascade="all, delete-orphan",
                                                         order_by="Correction.version")

    @property
    def has_truth(self) -> bool:
        return self.truth_path is not None

    @property
    def latest_job(self) -> Job | None:
        return self.jobs[-1] if self.jobs else None


class Job(Base):
    """A segmentation run of a study. ``progress`` is 0..1; ``stage`` a word for humans.

    A run is never overwritten: a re-run is a new row with its own ``output_dir`` (relative to
    the study's folder: ``runs/<id>``; ``outputs`` for a run made before runs were kept).
    model_version: the concrete registry version it runs with, resolved when it is queued.
    settings: what it was asked for (``requested``: a version id or ``production``) and how it
    ran (device, number format). summary / metrics / spine_volume_ml / dice: its results.
    """

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="segment")
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    stage: Mapped[str] = mapped_column(String(64), default="queued")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    model_version: Mapped[str | None] = mapped_column(String(128), nullable=True)  # None: a job from before 0006
    settings: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    output_dir: Mapped[str | None] = mapped_column(String(64), nullable=True)
    spine_volume_ml: Mapped[float | None] = mapped_column(Float, nullable=True)
    dice: Mapped[float | None] = mapped_column(Float, nullable=True)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now, index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The worker that claimed it (``host:pid:nonce``) and when that worker last said it was
    # alive: a running job whose heartbeat is stale is queued again (``store.heartbeats``).
    worker_id: Mapped[str | None] = mapped_column(String(96), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    study: Mapped[Study] = relationship(back_populates="jobs")


class Correction(Base):
    """One saved version of a study's corrected truth (issue 32): never changed once written.

    version: 1, 2... per study (unique with ``study_id``); path: the label file (VerSe ids on the
    grid of the run's mask), relative to the study's folder. run_id / model_version: the run the
    edit was made on; base_version: the correction it started from (``None``: the run's levels).
    effort: what changed against that start (``services.corrections.correction_effort``);
    summary: levels and measurements recomputed from the corrected labels; run_scores: each run
    of the study scored against this version when it was saved (``{run id: {metrics, level_scores}}``).
    """

    __tablename__ = "corrections"
    __table_args__ = (UniqueConstraint("study_id", "version", name="uq_corrections_study_version"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    run_id: Mapped[str] = mapped_column(String(32))
    model_version: Mapped[str | None] = mapped_column(String(128), nullable=True)
    base_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    edit_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    effort: Mapped[dict[str, Any]] = mapped_column(JSON)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)
    run_scores: Mapped[dict[str, Any]] = mapped_column(JSON)
    note: Mapped[str] = mapped_column(Text, default="", server_default="")


class AuditEvent(Base):
    """Who did what to which object, and when (logins, uploads, downloads, deletes...).

    ``seq``, ``prev_hmac`` and ``hmac`` chain the rows (written only by ``spineseg.store.audit``):
    ``hmac`` is keyed with the server's secret over this row's content and ``prev_hmac``."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now, index=True)
    username: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    action: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(255), default="")
    detail: Mapped[str] = mapped_column(Text, default="")
    seq: Mapped[int | None] = mapped_column(Integer, nullable=True, unique=True, index=True)
    prev_hmac: Mapped[str] = mapped_column(String(64), default="")
    hmac: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Upload(Base):
    """A resumable upload: the files the client announced and where it stands.

    files: ``[{"name", "size", "role"}]`` in index order, role ``ct`` or ``truth``. The bytes
    received so far are not stored here: each file's part on disk
    (``DATA_DIR/uploads/<id>/<index>.part``) is as long as what arrived, so the offsets survive
    a crash without a database write per chunk being their truth.
    status: ``uploading``, ``completing`` (ingest running) or ``done`` (study and job made).
    updated_at: the last chunk or change; an upload idle past ``upload_stale_hours`` is removed.
    """

    __tablename__ = "uploads"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(16), default="study")
    status: Mapped[str] = mapped_column(String(16), default="uploading")
    files: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    total_bytes: Mapped[int] = mapped_column(BigInteger)
    study_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    study_name: Mapped[str] = mapped_column(String(100), default="", server_default="")  # the uploader's choice
    study_site: Mapped[str] = mapped_column(String(100), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now, index=True)
