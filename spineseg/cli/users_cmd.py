"""``spineseg users create|list|disable|enable|reset-password|delete`` and ``spineseg tokens
create|list|revoke``: accounts of the web service, in the database under SPINESEG_DATA_DIR
(migrated first). Every change is a row of the audit trail (user: ``cli``)."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TYPE_CHECKING

from spineseg.errors import InputError
from spineseg.store.models import PASSWORD_RULE, ROLES

DEFAULT_TOKEN_DAYS = 90  # as spineseg.store.accounts.DEFAULT_TOKEN_DAYS (not imported: argon2 loads slowly)
CLI_ACTOR = "cli"

if TYPE_CHECKING:
    from spineseg.store.database import Database


def register(sub: argparse._SubParsersAction) -> None:
    users = sub.add_parser("users", help="web service accounts")
    users_sub = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    create = users_sub.add_parser(
        "create", help="create a user",
        description="Create a web service account. The password must have " + PASSWORD_RULE + "; the "
                    "username 1-64 letters, digits or . _ - @. (On a first run the service also prints a "
                    "one-time link to create the first admin account in the browser.)")
    create.add_argument("--username", required=True, help="1-64 letters, digits or . _ - @")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--password-stdin", action="store_true",
                        help="read the password (" + PASSWORD_RULE + ") from the first line of standard "
                             "input (else prompt twice)")
    create.set_defaults(func=create_user)
    listing = users_sub.add_parser("list", help="list users and roles")
    listing.set_defaults(func=list_users)
    for action, helptext in (("disable", "disable a user: their sessions end, their tokens stop working"),
                             ("enable", "enable a disabled user again"),
                             ("delete", "delete a user; their studies stay (owner shown as deleted user)")):
        parser = users_sub.add_parser(action, help=helptext)
        parser.add_argument("username")
        parser.set_defaults(func=change_user, action=action)
    reset = users_sub.add_parser("reset-password", help="set a new password; the user's sessions end")
    reset.add_argument("username")
    reset.add_argument("--password-stdin", action="store_true",
                       help="read the password (" + PASSWORD_RULE + ") from the first line of standard input")
    reset.set_defaults(func=change_user, action="reset-password")

    tokens = sub.add_parser("tokens", help="personal API tokens (Authorization: Bearer)")
    tokens_sub = tokens.add_subparsers(dest="tokens_command", required=True, metavar="ACTION")
    token_create = tokens_sub.add_parser("create", help="create a token; it is printed once")
    token_create.add_argument("--username", required=True)
    token_create.add_argument("--name", default="", help="a label to recognise the token by")
    token_create.add_argument("--days", type=int, default=DEFAULT_TOKEN_DAYS,
                              help=f"valid for this many days (default {DEFAULT_TOKEN_DAYS})")
    token_create.set_defaults(func=create_token)
    token_list = tokens_sub.add_parser("list", help="list tokens: id, user, name, prefix, last use, expiry, state")
    token_list.add_argument("--username", default=None, help="only this user's tokens")
    token_list.set_defaults(func=list_tokens)
    token_revoke = tokens_sub.add_parser("revoke", help="revoke a token by its id (see `tokens list`)")
    token_revoke.add_argument("token_id", type=int)
    token_revoke.set_defaults(func=revoke_token)


def _database() -> Database:
    from spineseg.config import Settings
    from spineseg.store import audit
    from spineseg.store.database import open_database

    settings = Settings.from_env()
    database = open_database(settings.sqlalchemy_url)
    audit.use_key(database, settings.session_secret(),  # audit rows chain with the service's key
                  head_log=settings.data_dir / audit.HEAD_LOG_NAME)
    return database


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        password = line.rstrip("\r\n")
    else:
        password = getpass.getpass(f"password ({PASSWORD_RULE}): ")
        if password != getpass.getpass("again: "):
            raise InputError("password", "the two passwords differ")
    if not password:
        raise InputError("--password-stdin" if from_stdin else "password", "no password given")
    return password


def create_user(args: argparse.Namespace) -> int:
    from spineseg.store import accounts

    password = _read_password(args.password_stdin)
    database = _database()
    with database.session() as session:
        user = accounts.create_user(session, username=args.username, password=password, role=args.role)
        accounts.record(session, username=CLI_ACTOR, action="user.create", target=args.username, detail=args.role)
        sys.stdout.write(f"created user {user.username} ({user.role})\n")
    database.dispose()
    return 0


def list_users(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from spineseg.store.models import User

    database = _database()
    with database.session() as session:
        for user in session.scalars(select(User).order_by(User.username)):
            state = "" if user.active else " (disabled)"
            sys.stdout.write(f"{user.username}\t{user.role}{state}\n")
    database.dispose()
    return 0


def create_token(args: argparse.Namespace) -> int:
    from spineseg.store import accounts

    database = _database()
    with database.session() as session:
        row, secret = accounts.create_token(session, username=args.username, name=args.name, days=args.days)
        accounts.record(session, username=CLI_ACTOR, action="token.create", target=str(row.id),
                        detail=f"{args.username} {args.name}".strip())
    database.dispose()
    sys.stdout.write(secret + "\n")
    sys.stderr.write("store this token now: only its hash is kept\n")
    return 0


def change_user(args: argparse.Namespace) -> int:
    from spineseg.store import accounts

    password = _read_password(args.password_stdin) if args.action == "reset-password" else None
    database = _database()
    with database.session() as session:
        if args.action == "delete":
            accounts.delete_user(session, username=args.username)
            accounts.record(session, username=CLI_ACTOR, action="user.delete", target=args.username)
        elif args.action == "reset-password":
            accounts.update_user(session, username=args.username, password=password)
            accounts.record(session, username=CLI_ACTOR, action="user.password_reset", target=args.username)
        else:
            user = accounts.update_user(session, username=args.username, active=args.action == "enable")
            accounts.record(session, username=CLI_ACTOR, action="user.change", target=args.username,
                            detail=f"role={user.role} active={user.active}")
    database.dispose()
    done = {"delete": "deleted", "reset-password": "new password set for", "disable": "disabled",
            "enable": "enabled"}[args.action]
    sys.stdout.write(f"{done} {args.username}\n")
    return 0


def list_tokens(args: argparse.Namespace) -> int:
    from spineseg.store import accounts

    database = _database()
    with database.session() as session:
        sys.stdout.write("id\tuser\tname\tprefix\tcreated\tlast used\texpires\tstate\n")
        for row in accounts.list_tokens(session, username=args.username):
            state = "revoked" if row.revoked else "expired" if accounts.token_is_expired(row) else "active"
            used = row.last_used_at.strftime("%Y-%m-%d %H:%M") if row.last_used_at else "never"
            expires = row.expires_at.strftime("%Y-%m-%d") if row.expires_at else "never"
            sys.stdout.write(f"{row.id}\t{row.user.username}\t{row.name}\t{row.prefix}\t"
                             f"{row.created_at:%Y-%m-%d}\t{used}\t{expires}\t{state}\n")
    database.dispose()
    return 0


def revoke_token(args: argparse.Namespace) -> int:
    from spineseg.store import accounts

    database = _database()
    with database.session() as session:
        row = accounts.revoke_token(session, token_id=args.token_id)
        accounts.record(session, username=CLI_ACTOR, action="token.revoke", target=str(row.id),
                        detail=f"{row.user.username} {row.name}".strip())
        sys.stdout.write(f"revoked token {row.id} ({row.user.username}, {row.prefix}...)\n")
    database.dispose()
    return 0
