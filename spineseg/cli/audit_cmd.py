"""``spineseg audit verify``: check the audit trail's hash chain in the database under
SPINESEG_DATA_DIR, with the service's secret. Exit 0 when intact, 1 naming the first bad row."""

from __future__ import annotations

import argparse
import sys

from spineseg.errors import InputError

EXIT_BROKEN = 1
SHOWN_PROBLEMS = 20


def register(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser("audit", help="the audit trail")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = audit_sub.add_parser(
        "verify", help="check the hash chain: exit 0 when intact, 1 naming the first bad row",
        description="Walk the audit trail's HMAC chain and report every row deleted, inserted or edited "
                    "outside the service. Rows cut off the end are detected against the highest head noted "
                    "in the data folder's audit-heads.log (appended at every audited commit); a head "
                    "printed here and noted off the machine can be checked with --expect-head.")
    verify.add_argument("--expect-head", metavar="SEQ:HMAC", default=None,
                        help="a head printed by an earlier verify, which must still be in the chain")
    verify.set_defaults(func=verify_chain)


def _parse_head(text: str | None) -> tuple[int, str] | None:
    if text is None:
        return None
    seq, _, mac = text.partition(":")
    if not seq.isdigit() or len(mac) != 64:
        raise InputError("--expect-head", f"{text!r} is not SEQ:HMAC (a number, a colon, 64 hex digits)")
    return int(seq), mac.lower()


def verify_chain(args: argparse.Namespace) -> int:
    from spineseg.config import Settings
    from spineseg.store import audit
    from spineseg.store.database import open_database

    expected = _parse_head(args.expect_head)
    settings = Settings.from_env()
    database = open_database(settings.sqlalchemy_url)
    audit.use_key(database, settings.session_secret(), head_log=settings.data_dir / audit.HEAD_LOG_NAME)
    with database.session() as session:
        noted = audit.noted_head(audit.head_log_of(session)) if expected is None else None
        report = audit.verify(session, expected_head=expected)
    database.dispose()
    older = f", {report.before_chain} older rows from before the chain" if report.before_chain else ""
    if report.intact:
        sys.stdout.write(f"audit chain intact: {report.rows} rows{older}\nhead: {report.head_seq}:{report.head_hmac}\n")
        if noted is not None:
            sys.stdout.write(f"the head noted in {audit.HEAD_LOG_NAME} (seq {noted[0]}) is in the chain\n")
        elif expected is None:
            sys.stdout.write(f"no head noted in {audit.HEAD_LOG_NAME} yet: rows cut off the end cannot be detected\n")
        return 0
    sys.stdout.write(f"audit chain broken: {report.first_problem()}\n")
    for row_id, seq, what in report.problems[1:SHOWN_PROBLEMS]:
        sys.stdout.write(f"  also row id {row_id}" + (f" (seq {seq})" if seq is not None else "") + f": {what}\n")
    if len(report.problems) > SHOWN_PROBLEMS:
        sys.stdout.write(f"  ... {len(report.problems) - SHOWN_PROBLEMS} more\n")
    return EXIT_BROKEN
