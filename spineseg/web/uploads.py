"""Multipart uploads streamed straight to a study's folder, with a limit on the total bytes.

FastAPI's ``UploadFile`` would first spool the whole body to a temporary file; here each part
is written to its final place as it arrives, and the request is refused the moment it passes
a limit -- nothing past a limit is ever written or held in memory:

- 413 when the parts (files and text fields alike) pass ``limit_bytes``;
- 400 for more than ``MAX_FILE_PARTS`` files (a DICOM series has a few thousand), more than
  ``MAX_TEXT_FIELDS`` text fields, a text field over ``TEXT_FIELD_LIMIT`` bytes, part headers
  over ``MAX_PART_HEADER_BYTES``, a file name over ``MAX_FILENAME_CHARS``, a boundary over 70
  characters (RFC 2046) or any other malformed body;
- 408 when the client sends nothing for ``BODY_IDLE_TIMEOUT_S`` seconds (a Content-Length
  larger than the body would otherwise hold the connection for ever).
Each message names the field (and file) and the limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from spineseg.store.files import safe_file_name

FILE_FIELDS = ("files", "truth")
TEXT_FIELD_LIMIT = 4096
MAX_FILE_PARTS = 10_000
MAX_TEXT_FIELDS = 50
MAX_PART_HEADER_BYTES = 16 * 1024
MAX_FILENAME_CHARS = 1024  # a browser sends a folder's files as relative paths: "series/sub/IM0001"
MAX_BOUNDARY_CHARS = 70
BODY_IDLE_TIMEOUT_S = 30.0  # module constant so tests can lower it


class UploadRefused(Exception):
    """The request cannot be used: ``status`` (400/413/415), ``field`` and a message."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


@dataclass
class ReceivedUpload:
    """What arrived: CT files (disk path -> name the client gave), an optional truth file and
    the text fields."""

    files: dict[Path, str] = field(default_factory=dict)
    truth: tuple[Path, str] | None = None
    fields: dict[str, str] = field(default_factory=dict)
    total_bytes: int = 0


class _PartWriter:
    """Receives the parser's callbacks and writes each file part to disk."""

    def __init__(self, input_dir: Path, truth_dir: Path, limit_bytes: int) -> None:
        self.input_dir, self.truth_dir, self.limit = input_dir, truth_dir, limit_bytes
        self.result = ReceivedUpload()
        self._taken: set[str] = set()
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._handle: BinaryIO | None = None
        self._text: bytearray | None = None
        self._field = ""
        self._file_name = ""
        self._header_bytes = 0
        self._file_parts = 0
        self._text_fields = 0

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._add_header_bytes("_header_name", d[s:e]),
            "on_header_value": lambda d, s, e: self._add_header_bytes("_header_value", d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _add_header_bytes(self, attribute: str, data: bytes) -> None:
        self._header_bytes += len(data)
        if self._header_bytes > MAX_PART_HEADER_BYTES:
            raise UploadRefused(400, f"the headers of a form part are longer than {MAX_PART_HEADER_BYTES} bytes")
        setattr(self, attribute, getattr(self, attribute) + data)

    def _part_begin(self) -> None:
        self._headers = {}
        self._header_bytes = 0
        self._file_name = ""

    def _header_end(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        _kind, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        self._field = name[:100]
        if b"filename" not in options:
            self._text_fields += 1
            if self._text_fields > MAX_TEXT_FIELDS:
                raise UploadRefused(400, f"more than {MAX_TEXT_FIELDS} text fields in one upload (at field "
                                         f"{self._field!r})", self._field)
            self._text = bytearray()
            return
        client_name = options[b"filename"].decode("utf-8", "replace")
        if len(client_name) > MAX_FILENAME_CHARS:
            raise UploadRefused(400, f"file name in field {self._field!r} is {len(client_name)} characters long, "
                                     f"more than {MAX_FILENAME_CHARS} (starts {client_name[:40]!r})", self._field)
        self._file_name = client_name
        if name not in FILE_FIELDS:
            raise UploadRefused(400, f"unexpected file field {self._field!r}; use 'files' (repeated) and 'truth'",
                                self._field)
        self._file_parts += 1
        if self._file_parts > MAX_FILE_PARTS:
            raise UploadRefused(400, f"more than {MAX_FILE_PARTS} files in one upload (at {client_name!r}); "
                                     "zip a larger series", self._field)
        if not client_name:  # a browser sends an empty file part when nothing was chosen
            self._handle = None
            self._text = None
            return
        if name == "truth":
            if self.result.truth is not None:
                raise UploadRefused(400, "give one ground-truth file in 'truth'", "truth")
            folder = self.truth_dir
        else:
            folder = self.input_dir
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / safe_file_name(client_name, self._taken if name == "files" else set())
        self._handle = path.open("wb")
        if name == "truth":
            self.result.truth = (path, client_name)
        else:
            self.result.files[path] = client_name

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        self.result.total_bytes += len(chunk)  # every part counts: files, text, ignored empty parts
        if self.result.total_bytes > self.limit:
            where = f"field {self._field!r}"
            if self._file_name:
                where = f"file {self._file_name!r} in {where}"
            raise UploadRefused(413, f"{too_large_message(self.limit)}; passed while receiving {where}", self._field)
        if self._text is not None:
            if len(self._text) + len(chunk) > TEXT_FIELD_LIMIT:
                raise UploadRefused(400, f"form field {self._field!r} is longer than {TEXT_FIELD_LIMIT} bytes",
                                    self._field)
            self._text.extend(chunk)
            return
        if self._handle is None:
            return
        self._handle.write(chunk)

    def _part_end(self) -> None:
        if self._text is not None:
            self.result.fields[self._field] = self._text.decode("utf-8", "replace")
            self._text = None
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def too_large_message(limit_bytes: int) -> str:
    return (f"upload is larger than the limit of {limit_bytes / 2**20:.0f} MB "
            "(the server's SPINESEG_MAX_UPLOAD_MB setting)")


async def _chunks(request: Request) -> AsyncIterator[bytes]:
    """The body's chunks; ``UploadRefused`` (408) when none arrives for ``BODY_IDLE_TIMEOUT_S``."""
    stream = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), BODY_IDLE_TIMEOUT_S)
        except StopAsyncIteration:
            return
        except TimeoutError as exc:
            message = (f"the client sent no data for {BODY_IDLE_TIMEOUT_S:g} s; the body is shorter than its "
                       "Content-Length or the connection stalled: send the upload again")
            raise UploadRefused(408, message) from exc
        yield chunk


async def receive_upload(request: Request, input_dir: Path, truth_dir: Path, limit_bytes: int) -> ReceivedUpload:
    """Stream the multipart body of ``request`` to disk. Raises ``UploadRefused`` (the caller
    removes ``input_dir``/``truth_dir``)."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in options:
        raise UploadRefused(415, "send the files as multipart/form-data (field 'files', optional 'truth')")
    boundary = options[b"boundary"]
    if not 1 <= len(boundary) <= MAX_BOUNDARY_CHARS:
        raise UploadRefused(400, f"the multipart boundary is {len(boundary)} characters long; it must have 1 to "
                                 f"{MAX_BOUNDARY_CHARS} (RFC 2046)")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit_bytes + 64 * 1024:
        raise UploadRefused(413, f"the request body (Content-Length {int(declared):,} bytes) is larger than the "
                                 f"limit of {limit_bytes / 2**20:.0f} MB (the server's SPINESEG_MAX_UPLOAD_MB setting)")
    writer = _PartWriter(input_dir, truth_dir, limit_bytes)
    try:
        parser = MultipartParser(boundary, writer.callbacks())
        async for chunk in _chunks(request):
            parser.write(chunk)
        parser.finalize()
    except UploadRefused:
        raise
    except ValueError as exc:  # python-multipart reports malformed bodies as ValueError subclasses
        raise UploadRefused(400, f"malformed multipart body ({exc})") from exc
    finally:
        writer.close()
    return writer.result
