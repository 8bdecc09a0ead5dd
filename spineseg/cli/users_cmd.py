"""``spineseg users create|list`` and ``spineseg tokens create``: accounts of the web service,
in the database under SPINESEG_DATA_DIR (migrated first)."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TYPE_CHECKING

from spineseg.errors import InputError
from spineseg.store.models import PASSWORD_RULE, ROLES

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

    tokens = sub.add_parser("tokens", help="personal API tokens (Authorization: Bearer)")
    tokens_sub = tokens.add_subparsers(dest="tokens_command", required=True, metavar="ACTION")
    token_create = tokens_sub.add_parser("create", help="create a token; it is printed once")
    token_create.add_argument("--username", required=True)
    token_create.add_argument("--name", default="", help="a label to recognise the token by")
    token_create.set_defaults(func=create_token)


def _database() -> Database:
    from spineseg.config import Settings
    from spineseg.store.database import open_database

    return open_database(Settings.from_env().sqlalchemy_url)


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
        accounts.record(session, username=None, action="user.create", target=args.username, detail=args.role)
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
        _row, secret = accounts.create_token(session, username=args.username, name=args.name)
        accounts.record(session, username=args.username, action="token.create", target=args.name)
    database.dispose()
    sys.stdout.write(secret + "\n")
    sys.stderr.write("store this token now: only its hash is kept\n")
    return 0
