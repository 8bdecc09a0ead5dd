"""Crash-safe file primitives for the registry: atomic replacement and an inter-process lock.

Every write goes to a temporary name in the destination's own directory (same file system),
is flushed to disk, then renamed over the final name, so a reader sees the old content or the
new content and never a half-written file. Temporary names start with ``TEMP_PREFIX`` so
readers can skip them and the next writer can clean up what a crash left behind.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TEMP_PREFIX = ".tmp-"


def fsync_dir(folder: Path) -> None:
    """Flush a directory entry (a rename inside ``folder``) to disk."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one rename; the folder must exist."""
    fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX + path.name + "-", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_json(path: Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON (trailing newline) atomically."""
    atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def copy_file_synced(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` (a path inside a staging folder) and flush it to disk."""
    with src.open("rb") as fin, dst.open("wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
        fout.flush()
        os.fsync(fout.fileno())


def make_staging_dir(parent: Path, label: str) -> Path:
    """A fresh, uniquely named temporary folder inside ``parent`` (same file system)."""
    return Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{label}-", dir=parent))


def remove_leftover_temps(folder: Path) -> list[Path]:
    """Delete temporary files and folders a crashed writer left in ``folder``.

    Call only while holding the folder's ``InterProcessLock``: temporaries are created under
    that lock, so any that exist while we hold it belong to a writer that died.
    """
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        if not entry.name.startswith(TEMP_PREFIX):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


class InterProcessLock:
    """An exclusive ``fcntl.flock`` on ``lock_path``, re-entrant within one object.

    Separate processes (and separate ``InterProcessLock`` objects in one process, since each
    opens its own file description) exclude each other; nested ``with lock.held()`` blocks in
    the same thread do not deadlock.
    """

    def __init__(self, lock_path: Path) -> None:
        self.lock_path = lock_path
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fh: Any = None

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._thread_lock:
            if self._depth == 0:
                self.lock_path.parent.mkdir(parents=True, exist_ok=True)
                fh = self.lock_path.open("a+b")
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                except BaseException:
                    fh.close()
                    raise
                self._fh = fh
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
                    self._fh.close()
                    self._fh = None
