"""``spineseg models ...``: list, show, promote, roll back, export and import model versions
of the registry under ``$SPINESEG_DATA_DIR/models``."""

from __future__ import annotations

import argparse
import functools
import getpass
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from spineseg.errors import InputError
from spineseg.model.card import ModelCard
from spineseg.registry import Registry, add_shipped_defaults, open_registry

_DICE_KEYS = ("val_dice", "validation_dice", "dice_val")
_DICE_GROUPS = ("val", "validation")


def validation_dice(card: ModelCard) -> float | None:
    """The validation Dice recorded in ``card.metrics``: ``val_dice`` (or ``validation_dice``,
    ``dice_val``), else ``{"val": {"dice": ...}}`` / ``{"validation": {"dice": ...}}``."""
    candidates: list[object] = [card.metrics.get(key) for key in _DICE_KEYS]
    for group in _DICE_GROUPS:
        nested = card.metrics.get(group)
        if isinstance(nested, dict):
            candidates.append(nested.get("dice"))
    for value in candidates:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces, one line per row, header first."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)) for row in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _short_time(iso: str | None) -> str:
    """``2026-11-24T05:30:00.123456+00:00`` -> ``2026-11-24 05:30:00``."""
    return iso[:19].replace("T", " ") if iso else "-"


def cli_actor() -> str:
    """Who is running the command, for the promotion history: ``cli:<login name>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def _os_errors_as_input_errors(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn a file-system failure (permissions, full disk) into an ``InputError`` naming the
    file, so the user sees one line instead of a traceback."""

    @functools.wraps(func)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except OSError as exc:
            raise InputError(exc.filename or "file system", exc.strerror or str(exc)) from exc

    return wrapper


def _registry() -> Registry:
    return open_registry()


@_os_errors_as_input_errors
def list_models(args: argparse.Namespace) -> int:
    registry = _registry()
    models = registry.list_versions()
    if not models:
        sys.stdout.write(
            f"no model versions in {registry.root}: train one with `spineseg train` "
            "or import one with `spineseg models import FILE`\n"
        )
        return 0
    rows = []
    for model in models:
        dice = validation_dice(model.card)
        rows.append(
            [
                model.id,
                model.card.parent_id or "-",
                _short_time(model.card.created),
                f"{dice:.3f}" if dice is not None else "-",
                "*" if model.is_production else "",
            ]
        )
    sys.stdout.write(format_table(["ID", "PARENT", "CREATED (UTC)", "VAL DICE", "PRODUCTION"], rows))
    return 0


@_os_errors_as_input_errors
def show_model(args: argparse.Namespace) -> int:
    model = _registry().get(args.version_id)
    sys.stdout.write(model.card.to_json())
    return 0


@contextmanager
def _audit_session() -> Iterator[Session | None]:
    """A session on the service's database for the audit chain (committed at the end), or
    ``None`` with a warning when the database cannot be opened: the registry's own history
    still records the change."""
    from spineseg.cli.users_cmd import _database

    try:
        database = _database()
    except (SQLAlchemyError, OSError) as exc:
        sys.stderr.write(f"warning: the audit trail was not written (cannot open the database: {exc})\n")
        yield None
        return
    try:
        with database.session() as session:
            yield session
    finally:
        database.dispose()


def _second_person_required() -> bool:
    """Whether production changes need a second person (``SPINESEG_PROMOTION_APPROVAL``, the
    service's own rule, issue 28 item 5): then the CLI proposes, as the page does."""
    from spineseg.config import Settings
    from spineseg.services.promotions import needs_second_person

    return needs_second_person(Settings.from_env().promotion_approval)


def _propose(registry: Registry, version_id: str, *, confirm: bool, force: bool) -> int:
    """Record a pending proposal for ``version_id`` (checked as a promotion is); production
    stays as it is until an admin other than the proposer approves it."""
    from spineseg.services.model_governance import PromotionRefused
    from spineseg.services.promotions import propose

    with _audit_session() as session:
        if session is None:
            raise InputError(version_id, "production changes need a second person (SPINESEG_PROMOTION_APPROVAL="
                                         "two-person) and the proposal cannot be recorded without the database")
        try:
            proposal, review = propose(registry, session, version_id, actor=cli_actor(), confirm=confirm, force=force)
        except PromotionRefused as exc:
            raise InputError(version_id, f"{exc.message} (--{exc.needs})") from exc
        proposal_id = proposal.id
    for warning in review.warnings:
        sys.stdout.write(f"note: {warning}\n")
    sys.stdout.write(f"proposed {version_id} (proposal {proposal_id}); production stays "
                     f"{registry.production_id() or 'none'} until an admin other than {cli_actor()} approves it on "
                     f"the models page (or POST /api/promotions/{proposal_id}/approve). "
                     "SPINESEG_PROMOTION_APPROVAL=single lets one person promote (a single-user install)\n")
    return 0


@_os_errors_as_input_errors
def promote_model(args: argparse.Namespace) -> int:
    from spineseg.services.model_governance import PromotionRefused, promote_checked

    registry = _registry()
    if _second_person_required():
        return _propose(registry, args.version_id, confirm=args.confirm, force=args.force)
    previous = registry.production_id()
    with _audit_session() as session:
        if session is None:  # no database: the checks still run, on the cards' figures
            from spineseg.services.model_governance import check_promotion, review_promotion

            review = review_promotion(registry, args.version_id)
            try:
                check_promotion(review, confirm=args.confirm, force=args.force, is_admin=True)
            except PromotionRefused as exc:
                raise InputError(args.version_id, f"{exc.message} (--{exc.needs})") from exc
            model = registry.promote(args.version_id, actor=cli_actor())
        else:
            try:
                model, review = promote_checked(registry, session, args.version_id, actor=cli_actor(),
                                                is_admin=True, confirm=args.confirm, force=args.force)
            except PromotionRefused as exc:
                raise InputError(args.version_id, f"{exc.message} (--{exc.needs})") from exc
    for warning in review.warnings:
        sys.stdout.write(f"note: {warning}\n")
    if previous == model.id:
        sys.stdout.write(f"{model.id} is already the production version\n")
    else:
        sys.stdout.write(f"production: {previous or 'none'} -> {model.id}\n")
    return 0


@_os_errors_as_input_errors
def rollback_model(args: argparse.Namespace) -> int:
    from spineseg.services.model_governance import rollback_audited

    registry = _registry()
    previous = registry.production_id()
    with _audit_session() as session:
        model = (registry.rollback(actor=cli_actor()) if session is None
                 else rollback_audited(registry, session, actor=cli_actor()))
    sys.stdout.write(f"rolled back production: {previous} -> {model.id}\n")
    return 0


@_os_errors_as_input_errors
def export_model(args: argparse.Namespace) -> int:
    written = _registry().export(args.version_id, Path(args.output), overwrite=args.force)
    sys.stdout.write(f"exported {args.version_id} to {written}\n")
    return 0


@_os_errors_as_input_errors
def import_model(args: argparse.Namespace) -> int:
    registry = _registry()
    proposing = args.promote and _second_person_required()  # imported, then proposed like any promotion
    model = registry.import_file(Path(args.file), make_production=args.promote and not proposing, actor=cli_actor())
    suffix = " (now production)" if args.promote and not proposing else ""
    sys.stdout.write(f"imported {model.id}{suffix}\n")
    return _propose(registry, model.id, confirm=False, force=False) if proposing else 0


@_os_errors_as_input_errors
def add_shipped(args: argparse.Namespace) -> int:
    added = add_shipped_defaults(_registry())
    if not added:
        sys.stdout.write("the registry already holds the shipped default model and its predecessors\n")
    for model in added:
        sys.stdout.write(f"added {model.id} (not production: `spineseg models promote {model.id}` to use it)\n")
    return 0


@_os_errors_as_input_errors
def show_history(args: argparse.Namespace) -> int:
    events = _registry().history()
    if not events:
        sys.stdout.write("no promotions or rollbacks yet\n")
        return 0
    rows = [[_short_time(e.at), e.action, e.version_id, e.previous_id or "-", e.actor] for e in events]
    sys.stdout.write(format_table(["WHEN (UTC)", "ACTION", "VERSION", "PREVIOUS", "BY"], rows))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``models`` and its actions to the ``spineseg`` command."""
    parser = subparsers.add_parser(
        "models",
        help="list, show, promote, roll back, export or import model versions",
        description="Manage the model registry in $SPINESEG_DATA_DIR/models.",
    )
    actions = parser.add_subparsers(dest="models_action", required=True, metavar="ACTION")

    actions.add_parser("list", help="table of versions; * marks production").set_defaults(func=list_models)

    show = actions.add_parser("show", help="print a version's model card (JSON)")
    show.add_argument("version_id", metavar="ID")
    show.set_defaults(func=show_model)

    promote = actions.add_parser(
        "promote", help="make a version the production model; with SPINESEG_PROMOTION_APPROVAL=two-person (the "
                        "default) propose it: an admin other than you approves it on the models page",
        description="Shows the version's validation Dice beside production's on the same cases; refuses a "
                    "lower (or not comparable) version without --confirm and one never validated without --force.")
    promote.add_argument("version_id", metavar="ID")
    promote.add_argument("--confirm", action="store_true",
                         help="promote although its Dice is lower than production's or cannot be compared")
    promote.add_argument("--force", action="store_true", help="promote a version without validation figures")
    promote.set_defaults(func=promote_model)

    rollback = actions.add_parser("rollback", help="return production to the previous production version")
    rollback.set_defaults(func=rollback_model)

    export = actions.add_parser("export", help="write a version to one .zip file")
    export.add_argument("version_id", metavar="ID")
    export.add_argument("-o", "--output", required=True, metavar="FILE", help="archive to write (.zip)")
    export.add_argument("--force", action="store_true", help="replace FILE if it exists")
    export.set_defaults(func=export_model)

    imported = actions.add_parser("import", help="add a version from a file made by `models export`")
    imported.add_argument("file", metavar="FILE")
    imported.add_argument("--promote", action="store_true", help="also make it the production model")
    imported.set_defaults(func=import_model)

    actions.add_parser("add-shipped", help="add this release's default model (and its predecessors) to a "
                       "registry made by an older release").set_defaults(func=add_shipped)

    actions.add_parser("history", help="promotions and rollbacks with who and when").set_defaults(func=show_history)
