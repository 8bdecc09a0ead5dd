"""Checks before the service starts: the database opens and migrates, the registry's state
and production model can be read. A failure is one ``StartupError`` line naming the file and
what to do, not a traceback from deep inside a library."""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from spineseg.config import Settings
from spineseg.errors import IntegrityError, SpineSegError

log = logging.getLogger(__name__)


class StartupError(SpineSegError):
    """The service cannot start with this data directory; the message says why."""


def _database_file(settings: Settings) -> str:
    url = settings.sqlalchemy_url
    return url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else "the database at SPINESEG_DATABASE_URL"


def check_database(settings: Settings) -> None:
    from alembic.util import CommandError

    from spineseg.store.database import open_database

    where = _database_file(settings)
    try:
        open_database(settings.sqlalchemy_url).dispose()
    except SQLAlchemyError as exc:
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:200]
        if "disk is full" in reason:
            raise StartupError(f"{where}: the disk is full and the database cannot be opened ({reason}); free "
                               f"some space on the data directory's disk and start again") from exc
        raise StartupError(f"{where}: cannot be opened as the SpineSeg database ({reason}); restore it from a "
                           "backup or move it away to start with an empty one") from exc
    except CommandError as exc:
        raise StartupError(f"{where}: its schema is not one this version knows ({exc}); was it written by a "
                           "newer SpineSeg?") from exc


def check_registry(settings: Settings) -> None:
    from spineseg.registry import open_registry

    try:
        registry = open_registry(settings)
        registry.production_id()
    except IntegrityError as exc:
        raise StartupError(f"model registry: {exc}; restore the file from a backup") from exc
    except OSError as exc:
        raise StartupError(f"model registry in {settings.registry_dir}: cannot be read ({exc})") from exc
    try:  # the service can still show stored results: start, and let /api/health say what is wrong
        registry.production()
    except SpineSegError as exc:
        log.error("the production model is unusable, segmentation is refused until another version is "
                  "promoted: %s", exc)


def check_startup(settings: Settings) -> None:
    """Raise ``StartupError`` when the data directory cannot be served."""
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    from spineseg.services.disk_room import DiskRoom

    # on a full disk this gives up the room kept for deletions first, so the database can open
    # (and record deletions); the app says at start that it is read-mostly (issue 30.4)
    DiskRoom(settings.data_dir, settings.disk_reserve_bytes, room_bytes=settings.disk_room_bytes).room()
    check_database(settings)
    check_registry(settings)


def display_url(host: str, port: int) -> str:
    """The address a browser on this machine opens for a server bound to ``host:port``."""
    shown = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


def ready_message(settings: Settings, *, url: str, model_id: str | None, first_run_token: str | None,
                  first_run_minutes: float) -> str:
    """The start-up log's last line: what to open, then where everything is."""
    from sqlalchemy.engine import make_url

    from spineseg.services.first_run import SETUP_PATH

    if first_run_token:
        action = (f"open {url}{SETUP_PATH}?token={first_run_token} to create the first admin account "
                  f"(no account exists yet; the link works once, for {first_run_minutes:.0f} minutes)")
    else:
        action = f"open {url}/ and log in"
    from spineseg.jobs.queue import describe_queue  # the queue's libraries load only when serving

    database = make_url(settings.sqlalchemy_url).render_as_string(hide_password=True)
    model = model_id or "none (segmentation refused until a version is promoted)"
    workers = f"{settings.workers} worker(s)" if settings.workers else "no worker in this process"
    return (f"SpineSeg is ready: {action} | data: {settings.data_dir} | model: {model} | "
            f"queue: {describe_queue(settings)}, {workers} | database: {database}")
