"""Free disk in the data directory (issue 30.4): new work is refused with 507 and the reason
*before* the disk is full, and what frees space keeps working when it is.

- **The reserve** (``SPINESEG_DISK_RESERVE_MB``, default 2048): every route that stores data
  (uploads, dataset cases, model imports, resumable announces and chunks, re-runs, training
  runs, PACS imports) calls ``DiskRoom.require`` first; below the reserve it raises
  ``StorageFullError`` (507) naming the free MB and the reserve. The free space is measured at
  most once per ``CACHE_S`` (one ``statvfs``), so the check costs nothing per request.
- **Read-mostly**: while the free space is below the reserve the service still serves pages,
  downloads and deletions; ``/api/health`` says ``read-mostly`` and why (``describe``).
- **Room for deletions**: a deletion and its audit row are database writes, and SQLite cannot
  write on a disk with no byte left (that is why DELETE answered 503). The service keeps a small
  file, ``ROOM_FILE`` (``SPINESEG_DISK_ROOM_MB``, default ``ROOM_BYTES``; 0: none), whenever
  the free space is at least twice that, and removes it as soon as the free space falls under
  that size (something else filled the
  disk): the database then has room to record deletions, retention, logins and audited reads.
  The reserve is at least 64 MB (``Settings.disk_reserve_bytes``), so the space given back
  never takes the service out of read-mostly.

The probe is ``resumable_uploads.free_disk_bytes`` (the one the resumable announce check of
issue 30.7d uses), looked up at each measurement so tests can replace it.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from spineseg.errors import StorageFullError

log = logging.getLogger(__name__)

MB = 2**20
CACHE_S = 1.0
ROOM_FILE = ".room-for-deletions"
ROOM_BYTES = 16 * MB
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def free_bytes(folder: Path) -> int:
    """Free bytes where ``folder`` lives; 0 when it cannot be measured (no new work then)."""
    from spineseg.services import resumable_uploads  # one probe for the announce check and this

    try:
        return int(resumable_uploads.free_disk_bytes(folder))
    except OSError as exc:
        log.warning("the free disk of %s cannot be measured: %s", folder, exc)
        return 0


def is_disk_full(exc: BaseException) -> bool:
    """``exc`` says the disk (or quota) is full: an ``OSError`` ENOSPC/EDQUOT, or SQLite's
    'database or disk is full' (SQLITE_FULL), also when wrapped by SQLAlchemy."""
    for error in (exc, getattr(exc, "orig", None), exc.__cause__):
        if isinstance(error, OSError) and error.errno in FULL_ERRNOS:
            return True
        if error is not None and type(error).__name__ in ("OperationalError", "DatabaseError") \
                and "disk is full" in str(error):
            return True
    return False


def disk_full_message(free: int | None = None, reserve: int | None = None) -> str:
    figures = f" ({free / MB:.0f} MB free, {reserve / MB:.0f} MB kept in reserve)" if free is not None \
        and reserve is not None else ""
    return (f"the disk of the data directory is full{figures}: nothing was kept of this request; free disk "
            "space (delete studies, dataset cases or unfinished uploads) and try again")


@dataclass(frozen=True)
class Room:
    free: int
    reserve: int

    @property
    def read_mostly(self) -> bool:
        return self.free < self.reserve

    def describe(self) -> str:
        if self.read_mostly:
            return (f"read-mostly: {self.free / MB:.0f} MB free, below the reserve of {self.reserve / MB:.0f} MB "
                    "(SPINESEG_DISK_RESERVE_MB): pages, downloads and deletions work, new work is refused (507) "
                    "until space is freed")
        return f"{self.free / MB:.0f} MB free, {self.reserve / MB:.0f} MB kept in reserve"


class DiskRoom:
    """The free space of ``data_dir`` against ``reserve_bytes``, measured at most every
    ``cache_s``; keeps (or gives up) the room file for deletions on each measurement."""

    def __init__(self, data_dir: Path, reserve_bytes: int, *, cache_s: float = CACHE_S,
                 room_bytes: int = ROOM_BYTES) -> None:
        self.data_dir, self.reserve, self.cache_s = Path(data_dir), int(reserve_bytes), cache_s
        self.room_bytes = int(room_bytes)  # 0: no room file (SPINESEG_DISK_ROOM_MB)
        self._lock = threading.Lock()
        self._measured: tuple[float, Room] | None = None
        self._was_read_mostly: bool | None = None

    @property
    def room_file(self) -> Path:
        return self.data_dir / ROOM_FILE

    def forget(self) -> None:
        """Measure again at the next question (after a deletion freed space)."""
        with self._lock:
            self._measured = None

    def room(self) -> Room:
        with self._lock:
            now = time.monotonic()
            if self._measured is not None and now - self._measured[0] < self.cache_s:
                return self._measured[1]
            room = Room(free_bytes(self.data_dir), self.reserve)
            room = self._tend_room_file(room)
            self._measured = (now, room)
            if self._was_read_mostly is not None and room.read_mostly != self._was_read_mostly:
                log.log(logging.WARNING if room.read_mostly else logging.INFO, "disk: %s",
                        room.describe() if room.read_mostly else "space is back, new work is accepted again: "
                        + room.describe())
            self._was_read_mostly = room.read_mostly
            return room

    def _tend_room_file(self, room: Room) -> Room:
        """Give the room file up when the disk is (nearly) full, make it again when there is
        twice its size free; returns the room after that."""
        path = self.room_file
        try:
            if room.free < self.room_bytes and path.exists():
                size = path.stat().st_size
                path.unlink()
                log.warning("disk: %.0f MB free: gave up the %.0f MB kept for deletions so they can be recorded",
                            room.free / MB, size / MB)
                return Room(room.free + size, room.reserve)
            if self.room_bytes and room.free >= 2 * self.room_bytes and not path.exists() and self.data_dir.is_dir():
                _allocate(path, self.room_bytes)
                return Room(room.free - self.room_bytes, room.reserve)
        except OSError as exc:  # best effort: the reserve still refuses new work
            log.debug("room file for deletions not tended: %s", exc)
        return room

    def require(self, needed: int = 0) -> Room:
        """``StorageFullError`` (507) when the free space minus ``needed`` is below the reserve."""
        room = self.room()
        if room.free - needed < room.reserve:
            wanted = f" and this needs {needed / MB:.0f} MB" if needed else ""
            raise StorageFullError(
                f"not enough disk for new work: the data directory has {room.free / MB:.0f} MB free{wanted}, and "
                f"{room.reserve / MB:.0f} MB are kept in reserve (SPINESEG_DISK_RESERVE_MB) for the results, the "
                "database and deletions; the service is read-mostly until space is freed (delete studies, "
                "dataset cases or unfinished uploads)")
        return room


def _allocate(path: Path, size: int) -> None:
    """A file of ``size`` bytes whose blocks are really taken (not a sparse file)."""
    partial = path.with_name(path.name + ".part")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as exc:
                if exc.errno in FULL_ERRNOS:
                    raise
                block = b"\0" * MB  # a filesystem without fallocate: write the zeros
                for _ in range(size // MB):
                    os.write(fd, block)
        finally:
            os.close(fd)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


class DiskWatch:
    """ASGI middleware: each HTTP request asks the service's ``DiskRoom`` (measured at most once
    per ``CACHE_S``), so the room for deletions is given up as the disk fills, before the
    database meets a full disk, whichever route comes next."""

    def __init__(self, app: object) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: object, send: object) -> None:
        if scope.get("type") == "http":
            services = getattr(getattr(scope.get("app"), "state", None), "services", None)
            if services is not None:
                services.disk_room().room()
        await self.app(scope, receive, send)  # type: ignore[operator]
