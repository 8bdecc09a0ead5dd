"""The ``spineseg`` command: a thin layer over the library's functions.

Every sub-command lives in its own module exposing ``register(subparsers)``; each registered
parser sets ``func`` to a callable taking the parsed ``argparse.Namespace`` and returning an
exit code. Domain errors become exit code 2 with one line naming the file and the problem.
"""

from __future__ import annotations

import argparse
import logging
import sys

from spineseg.cli import evaluate_cmd, models_cmd, segment_cmd, serve_cmd, train_cmd, users_cmd
from spineseg.errors import SpineSegError

log = logging.getLogger("spineseg")

COMMAND_MODULES = (segment_cmd, evaluate_cmd, models_cmd, train_cmd, serve_cmd, users_cmd)

EXIT_OK = 0
EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spineseg", description="Spine segmentation in CT.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or EXIT_OK)
    except SpineSegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
