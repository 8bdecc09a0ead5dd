"""``spineseg retention run``: delete studies older than SPINESEG_RETENTION_DAYS (or --days)
with their files, each deletion audited; datasets and model versions are never touched."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    retention = sub.add_parser("retention", help="delete studies past the retention limit")
    retention_sub = retention.add_subparsers(dest="retention_command", required=True, metavar="ACTION")
    run = retention_sub.add_parser(
        "run", help="delete studies older than SPINESEG_RETENTION_DAYS now (the service also does it daily)")
    run.add_argument("--days", type=int, default=None, help="this limit instead of SPINESEG_RETENTION_DAYS")
    run.add_argument("--dry-run", action="store_true", help="list the studies that would be deleted")
    run.set_defaults(func=run_retention)


def run_retention(args: argparse.Namespace) -> int:
    from spineseg.config import Settings
    from spineseg.services import retention
    from spineseg.store import audit
    from spineseg.store.database import open_database

    settings = Settings.from_env()
    database = open_database(settings.sqlalchemy_url)
    audit.use_key(database, settings.session_secret(), head_log=settings.data_dir / audit.HEAD_LOG_NAME)
    try:
        result = retention.run_retention(database, settings, days=args.days, dry_run=args.dry_run)
    finally:
        database.dispose()
    if result.identities_erased:
        sys.stdout.write(f"erased the expired PACS return headers of {len(result.identities_erased)} studies\n")
    if result.cutoff is None:
        sys.stdout.write("retention is off (SPINESEG_RETENTION_DAYS is 0): nothing deleted\n")
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    sys.stdout.write(f"{verb} {len(result.deleted)} studies created before {result.cutoff:%Y-%m-%d %H:%M} UTC\n")
    for study_id in result.deleted:
        sys.stdout.write(f"{study_id}\n")
    return 0
