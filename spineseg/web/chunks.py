"""One chunk of a resumable upload, appended to its part file.

A chunk must start where the part ends (its ``offset`` is the part's length): anything else is
an ``OffsetConflict`` carrying the server's offset, so the client re-syncs instead of leaving a
hole or a doubled range. The part is held under an exclusive ``flock`` while the chunk is
written, so two requests for the same file (a retry racing the original, two tabs, two server
processes) can never interleave: the second gets the conflict at once. Bytes that arrived
before a broken connection or an idle timeout are kept (they are a correct prefix), and the
client learns the new offset from the next request or ``GET /api/uploads/{id}``.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.requests import ClientDisconnect

from spineseg.web.uploads import UploadRefused

log = logging.getLogger(__name__)

MAX_CHUNK_BYTES = 8 * 2**20
CHUNK_IDLE_S = 60.0


class OffsetConflict(Exception):
    """The chunk does not start at the part's end, or another chunk of it is being written."""

    def __init__(self, received: int, message: str) -> None:
        super().__init__(message)
        self.received = received
        self.message = message


class ChunkStalled(Exception):
    """No byte arrived for ``CHUNK_IDLE_S`` (or the client went away); ``received`` were kept."""

    def __init__(self, received: int, message: str) -> None:
        super().__init__(message)
        self.received = received
        self.message = message


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


async def append_chunk(part: Path, pieces: AsyncIterator[bytes], *, offset: int, size: int,
                       declared_bytes: int | None, max_bytes: int = MAX_CHUNK_BYTES,
                       idle_s: float = CHUNK_IDLE_S) -> int:
    """Append the bytes of ``pieces`` to ``part`` (a file of ``size`` bytes in all) if it is
    ``offset`` bytes long now; returns its new length.

    Raises ``UploadRefused`` (413: chunk over ``max_bytes``; 400: past the file's end; nothing
    past either limit is written), ``OffsetConflict`` or ``ChunkStalled``."""
    if declared_bytes is not None and declared_bytes > max_bytes:
        raise UploadRefused(413, f"a chunk may hold at most {max_bytes} bytes; this one declares {declared_bytes}",
                            "chunk")
    if declared_bytes is not None and offset + declared_bytes > size:
        raise UploadRefused(400, f"the chunk ends at byte {offset + declared_bytes}, past the file's size of "
                                 f"{size} bytes", "chunk")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OffsetConflict(os.fstat(fd).st_size, "another chunk of this file is being written; "
                                                       "wait for it, then send from the offset it reaches") from None
        received = os.fstat(fd).st_size
        if received != offset:
            raise OffsetConflict(received, f"the server has {received} bytes of this file: send the chunk at "
                                           f"offset={received}")
        written = 0
        stream = pieces.__aiter__()
        try:
            while True:
                try:
                    piece = await asyncio.wait_for(stream.__anext__(), idle_s)
                except StopAsyncIteration:
                    break
                if written + len(piece) > max_bytes:
                    raise UploadRefused(413, f"a chunk may hold at most {max_bytes} bytes", "chunk")
                if received + written + len(piece) > size:
                    raise UploadRefused(400, f"the chunk runs past the file's size of {size} bytes", "chunk")
                _write_all(fd, piece)
                written += len(piece)
        except TimeoutError:
            raise ChunkStalled(received + written, f"no data for {idle_s:.0f} s; the server kept "
                                                   f"{received + written} bytes of this file") from None
        except ClientDisconnect:
            raise ChunkStalled(received + written, "the connection closed during the chunk; the server kept "
                                                   f"{received + written} bytes of this file") from None
        finally:
            await asyncio.to_thread(os.fsync, fd)  # what we report as received is on disk
        return received + written
    finally:
        os.close(fd)  # also releases the lock
