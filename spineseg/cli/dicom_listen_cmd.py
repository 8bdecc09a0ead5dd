"""``spineseg dicom-listen``: a DICOM network node (C-ECHO, C-STORE of CT) that turns each
received series into a study and a job, runs the jobs (``SPINESEG_WORKERS`` worker threads)
and sends each SEG back by C-STORE. Runs until SIGTERM / Ctrl-C."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import threading

from spineseg.errors import InputError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("dicom-listen", help="receive CT by DICOM C-STORE, segment it, send the SEG back")
    parser.add_argument("--ae-title", default="SPINESEG", help="this node's AE title (default SPINESEG)")
    parser.add_argument("--port", type=int, default=11112, help="DICOM port (default 11112)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: every interface)")
    parser.add_argument("--allow", action="append", metavar="AE",
                        help="a calling AE title that may send (repeat; default SPINESEG_DICOM_ALLOWED_AES)")
    parser.add_argument("--idle-s", type=float, help="a series idle this long after its association was released "
                                                     "becomes a study, when whole by its headers "
                                                     "(default SPINESEG_DICOM_SERIES_IDLE_S, 10)")
    parser.add_argument("--destination", help="AE@host:port the SEG is sent to (default SPINESEG_DICOM_DESTINATION)")
    parser.add_argument("--owner", help="user owning received studies (default SPINESEG_DICOM_OWNER)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from spineseg.config import Settings
    from spineseg.integrations import PacsError
    from spineseg.integrations.dimse import DicomNode
    from spineseg.jobs.queue import JobQueue
    from spineseg.registry import open_registry
    from spineseg.services.startup import check_startup
    from spineseg.store import accounts, audit
    from spineseg.store.database import open_database
    from spineseg.store.files import restrict_data_dir

    settings = Settings.from_env()
    settings = dataclasses.replace(
        settings, dicom_allowed_aes=tuple(args.allow) if args.allow else settings.dicom_allowed_aes,
        dicom_series_idle_s=args.idle_s if args.idle_s is not None else settings.dicom_series_idle_s,
        dicom_destination=args.destination if args.destination is not None else settings.dicom_destination,
        dicom_owner=args.owner or settings.dicom_owner)
    if not 0 < args.port < 65536:
        raise InputError("--port", f"must be 1-65535, got {args.port}")
    if not 1 <= len(args.ae_title) <= 16:
        raise InputError("--ae-title", f"must be 1-16 characters, got {args.ae_title!r}")
    if not settings.dicom_owner:
        raise InputError("--owner", "name the user that owns received studies (or set SPINESEG_DICOM_OWNER)")
    restrict_data_dir(settings.data_dir)
    check_startup(settings)
    database = open_database(settings.sqlalchemy_url)
    audit.use_key(database, settings.session_secret(), head_log=settings.data_dir / audit.HEAD_LOG_NAME)
    with database.session() as session:
        owner = accounts.get_user(session, username=settings.dicom_owner)
        if owner is None or not owner.active:
            raise InputError("--owner", f"no active user named {settings.dicom_owner!r} (create one with: "
                                        "spineseg users create)")
        owner_id = owner.id
    registry = open_registry(settings)
    queue = JobQueue(settings, database, registry)

    @dataclasses.dataclass
    class Services:
        settings: Settings
        database: object
        registry: object
        queue: JobQueue

    services = Services(settings, database, registry, queue)
    try:
        node = DicomNode(services, ae_title=args.ae_title, host=args.host, port=args.port,
                         allowed_aes=settings.dicom_allowed_aes, idle_s=settings.dicom_series_idle_s,
                         destination=settings.dicom_destination, owner=(settings.dicom_owner, owner_id))
    except PacsError as exc:
        raise InputError("dicom-listen", str(exc)) from exc
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    queue.start()
    try:
        node.start()
    except OSError as exc:
        queue.stop()
        raise InputError("--port", f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from exc
    log.info("ready: DICOM node %s on %s:%d", args.ae_title, args.host, args.port)
    stop.wait()
    log.info("stopping the DICOM node")
    node.stop()
    queue.stop()
    database.dispose()
    return 0
