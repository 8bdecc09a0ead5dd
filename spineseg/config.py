"""Settings read from the environment (prefix ``SPINESEG_``), read once and passed in.

Variables (all optional; a ``.env`` file in the working directory is read too, real
environment variables win):

=============================  ==========================================================
SPINESEG_DATA_DIR              where all state lives: models/, spineseg.db, queue.db,
                               studies/ (default ``$XDG_DATA_HOME/spineseg`` or
                               ``~/.local/share/spineseg``)
SPINESEG_MAX_VOXELS            largest volume we agree to allocate (default 512x512x3072
                               = 768 Mi voxels, a whole-body scan; see imaging/limits.py)
SPINESEG_DEVICE                ``auto`` (GPU when present), ``cpu``, ``cuda:1`` ...
SPINESEG_ENV                   ``development`` (default) or ``production``; production
                               refuses to start without SPINESEG_SECRET_KEY
SPINESEG_SECRET_KEY            signs session cookies and keys the de-identification
                               pseudonyms; >= 32 characters, >= 8 distinct ones and an
                               estimated >= 96 bits of entropy. In development an unset key
                               is generated once and kept in DATA_DIR/secret_key
SPINESEG_DATABASE_URL          SQLAlchemy URL (default ``sqlite:///DATA_DIR/spineseg.db``);
                               ``postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB`` for
                               several processes on several machines
SPINESEG_QUEUE_URL             ``redis://HOST:PORT/DB``: the job queue in Redis, shared by
                               the web server and ``spineseg worker`` processes (default:
                               Huey's SQLite storage at DATA_DIR/queue.db, one machine)
SPINESEG_HEARTBEAT_S           how often a worker marks its running jobs alive (5 s)
SPINESEG_JOB_STALE_S           a running job whose heartbeat is older than this is queued
                               again by any live process: its worker died (30 s)
SPINESEG_HOST / SPINESEG_PORT  where ``spineseg serve`` listens (127.0.0.1:8000)
SPINESEG_MAX_UPLOAD_MB         largest upload (all files of one study together), MB (2048)
SPINESEG_SECURE_COOKIES        ``1`` behind TLS: session cookie gets the Secure flag
SPINESEG_TLS_CERT / _TLS_KEY   PEM certificate (chain) and key: ``spineseg serve`` speaks
                               HTTPS itself (Secure cookies, HSTS); both or neither
SPINESEG_SESSION_HOURS         how long a login lasts (12)
SPINESEG_WORKERS               segmentation jobs run at the same time (1); 0 = accept jobs
                               and keep them queued (a web-only process)
SPINESEG_UPLOAD_STALE_HOURS    a resumable upload untouched this long is removed (24)
SPINESEG_DISK_RESERVE_MB       free disk (MB) the data directory keeps: below it new work
                               is refused with 507 and the service is read-mostly (2048;
                               at least 64)
SPINESEG_PACS_ENDPOINTS        JSON file listing the DICOMweb PACS endpoints (name, url,
                               auth): see docs/pacs.md; unset: no PACS
SPINESEG_DICOM_ALLOWED_AES     calling AE titles ``spineseg dicom-listen`` accepts
                               (comma-separated); unset: every association is refused
SPINESEG_DICOM_SERIES_IDLE_S   a received series with no new instance for this long
                               becomes a study and a job (10)
SPINESEG_DICOM_DESTINATION     where the listener sends each SEG by C-STORE:
                               ``AE_TITLE@host:port``; unset: not sent
SPINESEG_DICOM_OWNER           the user that owns studies received by the listener
SPINESEG_PROMOTION_APPROVAL    ``two-person`` (default): making a version production is
                               proposed by one person and approved by another, an admin
                               (``services.promotions``); ``single``: whoever may promote
                               does it alone (a single-user install)
SPINESEG_RUNTIME               ``auto`` (default: ONNX Runtime where a probe at load finds it
                               faster than torch and agreeing), ``torch`` or ``onnxruntime``;
                               read by ``spineseg.model.runtime`` when a model loads
SPINESEG_CACHE_DIR             derived files: the network's ONNX graph and the runtime chosen
                               on this machine (default ``$XDG_CACHE_HOME/spineseg`` or
                               ``~/.cache/spineseg``)
=============================  ==========================================================
"""

from __future__ import annotations

import math
import os
import secrets
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from spineseg.errors import InputError

ENV_PREFIX = "SPINESEG_"
DEVELOPMENT = "development"
MIN_SECRET_LENGTH = 32
WEAK_SECRETS = frozenset({"", "changethis", "secret", "change-me", "changeme"})
MIN_SECRET_DISTINCT = 8
MIN_SECRET_BITS = 96.0  # a 32-character hex key (128 random bits) estimates ~120
SECRET_ADVICE = "e.g. python -c 'import secrets; print(secrets.token_urlsafe(48))'"


def estimated_entropy_bits(key: str) -> float:
    """Length x the Shannon entropy of the key's own character frequencies: an upper bound
    on the key's randomness (``"a" * 39`` -> 0, a ``token_urlsafe(48)`` -> ~340)."""
    counts = Counter(key)
    return -sum(n * math.log2(n / len(key)) for n in counts.values()) if key else 0.0


def check_secret_strength(key: str) -> None:
    """``InputError`` naming SPINESEG_SECRET_KEY when ``key`` is short, repetitive or guessable."""
    if len(key) < MIN_SECRET_LENGTH:
        raise InputError("SPINESEG_SECRET_KEY", f"is {len(key)} characters long; it must be at least "
                                                f"{MIN_SECRET_LENGTH} ({SECRET_ADVICE})")
    distinct = len(set(key))
    if distinct < MIN_SECRET_DISTINCT:
        raise InputError("SPINESEG_SECRET_KEY", f"has only {distinct} distinct character(s); a random key has "
                                                f"at least {MIN_SECRET_DISTINCT} ({SECRET_ADVICE})")
    bits = estimated_entropy_bits(key)
    if bits < MIN_SECRET_BITS:
        raise InputError("SPINESEG_SECRET_KEY", f"has an estimated {bits:.0f} bits of entropy; at least "
                                                f"{MIN_SECRET_BITS:.0f} are needed ({SECRET_ADVICE})")


def read_dotenv(path: Path = Path(".env")) -> dict[str, str]:
    """``KEY=value`` lines of ``path`` whose key starts with ``SPINESEG_`` (comments and
    blank lines skipped, surrounding quotes removed); empty when the file is absent."""
    if not path.is_file():
        return {}
    found: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        if key.startswith(ENV_PREFIX):
            found[key] = value.strip("'\"")
    return found


def _env(name: str, dotenv: dict[str, str], default: str | None = None) -> str | None:
    return os.environ.get(name, dotenv.get(name, default))


def default_data_dir(dotenv: dict[str, str] | None = None) -> Path:
    """``$SPINESEG_DATA_DIR``, else ``$XDG_DATA_HOME/spineseg``, else ``~/.local/share/spineseg``."""
    explicit = _env("SPINESEG_DATA_DIR", dotenv or {})
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "spineseg"


def _int(name: str, dotenv: dict[str, str], default: int) -> int:
    text = _env(name, dotenv)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError as exc:
        raise InputError(name, f"expected a whole number, got {text!r}") from exc


PROMOTION_APPROVALS = ("two-person", "single")


def _choice(name: str, dotenv: dict[str, str], choices: tuple[str, ...], default: str) -> str:
    text = (_env(name, dotenv) or "").strip()
    if not text:
        return default
    if text not in choices:
        raise InputError(name, f"expected one of {', '.join(choices)}, got {text!r}")
    return text


def _path(text: str | None) -> Path | None:
    return Path(text).expanduser() if text else None


@dataclass(frozen=True)
class Settings:
    """Every tunable of the service in one place (see the module docstring for the variables).

    data_dir: where all state lives (registry, database, files, queue).
    max_voxels: the largest volume we agree to allocate (guards against hostile headers).
    device: ``"auto"`` picks CUDA when present, else CPU; or an explicit torch device string.
    environment: ``"development"`` or anything else (treated as production).
    secret_key: signs the session cookie; ``None`` = generate/keep one (development only).
    database_url: SQLAlchemy URL; ``None`` = SQLite at ``data_dir/spineseg.db``.
    max_upload_bytes: limit on the bytes of one upload's files (one request, or one resumable upload).
    upload_stale_hours: a resumable upload that received nothing for this long is removed.
    """

    data_dir: Path
    # 512 x 512 x 3072: whole-body CT (1.8 m at 0.6 mm slices = 3000 slices of 512^2) is the
    # largest real scan; segmenting it takes ~9.8 GB at the 12 bytes/voxel + 400 MB measured by
    # bench/segment_speed.py (1349 MB peak for 512x512x300). The memory check in
    # imaging/limits.py refuses smaller grids too on a machine that cannot hold them.
    max_voxels: int = 512 * 512 * 3072
    device: str = "auto"
    environment: str = DEVELOPMENT
    secret_key: str | None = None
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_bytes: int = 2048 * 1024 * 1024
    secure_cookies: bool = False
    session_hours: int = 12
    workers: int = 1
    queue_url: str | None = None  # redis://HOST:PORT/DB; None: SQLite queue in data_dir
    heartbeat_s: int = 5
    job_stale_s: int = 30
    upload_stale_hours: int = 24
    disk_reserve_mb: int = 2048  # below this free space new work is refused (services.disk_room)
    disk_room_mb: int = 16  # kept in a file for deletions, given back when the disk fills (services.disk_room)
    retention_days: int = 0  # studies older than this are deleted daily; 0: kept for good
    tls_cert: Path | None = None
    tls_key: Path | None = None
    pacs_endpoints_file: Path | None = None  # DICOMweb endpoints (integrations.endpoints reads it)
    dicom_allowed_aes: tuple[str, ...] = ()
    dicom_series_idle_s: float = 10.0
    dicom_destination: str = ""
    dicom_owner: str = ""
    dicom_return_days: int = 7  # a received series' sealed identity, kept for sending its result back, expires
    dicom_held_hours: int = 24  # a held (incomplete) received series' raw files are removed after this
    promotion_approval: str = "two-person"  # or "single": PROMOTION_APPROVALS

    def tls_files(self) -> tuple[Path, Path] | None:
        """(certificate, key) when HTTPS is configured, ``None`` when not; ``InputError`` naming
        the setting when only one is given or a file is missing."""
        if self.tls_cert is None and self.tls_key is None:
            return None
        if self.tls_cert is None or self.tls_key is None:
            missing = "SPINESEG_TLS_CERT (--tls-cert)" if self.tls_cert is None else "SPINESEG_TLS_KEY (--tls-key)"
            raise InputError(missing, "must be set too: HTTPS needs both the certificate and its key")
        for name, path in (("SPINESEG_TLS_CERT", self.tls_cert), ("SPINESEG_TLS_KEY", self.tls_key)):
            if not path.is_file():
                raise InputError(name, f"no such file: {path}")
        return self.tls_cert, self.tls_key

    @property
    def registry_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def studies_dir(self) -> Path:
        return self.data_dir / "studies"

    @property
    def uploads_dir(self) -> Path:
        """Resumable uploads in progress, one folder per upload."""
        return self.data_dir / "uploads"

    @property
    def disk_reserve_bytes(self) -> int:
        # never below 64 MB nor four times the room kept for deletions: that room, given back when
        # the disk is full, must leave the service read-mostly (services.disk_room)
        return max(64, self.disk_reserve_mb, 4 * self.disk_room_mb) * 2**20

    @property
    def disk_room_bytes(self) -> int:
        return max(0, self.disk_room_mb) * 2**20

    @property
    def queue_path(self) -> Path:
        return self.data_dir / "queue.db"

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'spineseg.db'}"

    @property
    def is_development(self) -> bool:
        return self.environment == DEVELOPMENT

    def session_secret(self) -> str:
        """The key that signs session cookies.

        Raises ``InputError`` outside development when no key was configured, and in any
        environment for a configured key that fails ``check_secret_strength`` (too short, too
        few distinct characters, too little estimated entropy); in development a missing key
        is generated once and kept in ``data_dir/secret_key``.
        """
        key = self.secret_key
        if key is not None and key not in WEAK_SECRETS:
            check_secret_strength(key)
            return key
        if not self.is_development:
            raise InputError(
                "SPINESEG_SECRET_KEY",
                f"must be set to a random value of >= {MIN_SECRET_LENGTH} characters when SPINESEG_ENV is "
                f"{self.environment!r} (e.g. python -c 'import secrets; print(secrets.token_urlsafe(48))')",
            )
        path = self.data_dir / "secret_key"
        if path.is_file():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        generated = secrets.token_urlsafe(48)
        path.write_text(generated + "\n")
        path.chmod(0o600)
        return generated

    @classmethod
    def from_env(cls) -> Settings:
        dotenv = read_dotenv()
        secure = (_env("SPINESEG_SECURE_COOKIES", dotenv, "0") or "0").lower() in ("1", "true", "yes")
        return cls(
            data_dir=default_data_dir(dotenv),
            max_voxels=_int("SPINESEG_MAX_VOXELS", dotenv, cls.max_voxels),
            device=_env("SPINESEG_DEVICE", dotenv, "auto") or "auto",
            environment=_env("SPINESEG_ENV", dotenv, DEVELOPMENT) or DEVELOPMENT,
            secret_key=_env("SPINESEG_SECRET_KEY", dotenv),
            database_url=_env("SPINESEG_DATABASE_URL", dotenv) or None,
            host=_env("SPINESEG_HOST", dotenv, cls.host) or cls.host,
            port=_int("SPINESEG_PORT", dotenv, cls.port),
            max_upload_bytes=_int("SPINESEG_MAX_UPLOAD_MB", dotenv, cls.max_upload_bytes // 2**20) * 2**20,
            secure_cookies=secure,
            session_hours=_int("SPINESEG_SESSION_HOURS", dotenv, cls.session_hours),
            workers=_int("SPINESEG_WORKERS", dotenv, cls.workers),
            queue_url=_env("SPINESEG_QUEUE_URL", dotenv) or None,
            heartbeat_s=_int("SPINESEG_HEARTBEAT_S", dotenv, cls.heartbeat_s),
            job_stale_s=_int("SPINESEG_JOB_STALE_S", dotenv, cls.job_stale_s),
            upload_stale_hours=_int("SPINESEG_UPLOAD_STALE_HOURS", dotenv, cls.upload_stale_hours),
            disk_reserve_mb=_int("SPINESEG_DISK_RESERVE_MB", dotenv, cls.disk_reserve_mb),
            disk_room_mb=_int("SPINESEG_DISK_ROOM_MB", dotenv, cls.disk_room_mb),
            retention_days=_int("SPINESEG_RETENTION_DAYS", dotenv, cls.retention_days),
            tls_cert=_path(_env("SPINESEG_TLS_CERT", dotenv)),
            tls_key=_path(_env("SPINESEG_TLS_KEY", dotenv)),
            pacs_endpoints_file=_path(_env("SPINESEG_PACS_ENDPOINTS", dotenv)),
            dicom_allowed_aes=tuple(a.strip() for a in (_env("SPINESEG_DICOM_ALLOWED_AES", dotenv) or "").split(",")
                                    if a.strip()),
            dicom_series_idle_s=_int("SPINESEG_DICOM_SERIES_IDLE_S", dotenv, int(cls.dicom_series_idle_s)),
            dicom_destination=_env("SPINESEG_DICOM_DESTINATION", dotenv, "") or "",
            dicom_owner=_env("SPINESEG_DICOM_OWNER", dotenv, "") or "",
            dicom_return_days=_int("SPINESEG_DICOM_RETURN_DAYS", dotenv, cls.dicom_return_days),
            dicom_held_hours=_int("SPINESEG_DICOM_HELD_HOURS", dotenv, cls.dicom_held_hours),
            promotion_approval=_choice("SPINESEG_PROMOTION_APPROVAL", dotenv, PROMOTION_APPROVALS,
                                       cls.promotion_approval),
        )
