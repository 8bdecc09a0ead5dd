"""Safe extraction of user-supplied zip archives (e.g. a zipped DICOM study).

A zip from outside is hostile until proven otherwise. ``extract_zip_safely`` refuses:
- entries whose name is absolute (``/etc/x``, ``C:\\x``, ``\\\\server\\x``) or has a ``..`` part;
- symbolic links (Unix mode bits in the entry's external attributes);
- more than ``max_files`` entries;
- more than ``max_total_bytes`` of uncompressed data, checked twice: on the sizes the headers
  declare, and on the bytes actually produced while inflating (headers can lie);
- archives that declare more than ``MAX_EXPANSION_RATIO`` times their compressed size: deflate
  shrinks a CT series 2-5 times (air compresses well, noise does not); 100 times is a bomb,
  refused before a byte is written;
- corrupt, encrypted or otherwise unreadable archives.
Every refusal is an ``InputError`` naming the archive; whatever was written before the refusal
is removed again, and nothing is ever written outside ``dest``.
"""

from __future__ import annotations

import logging
import re
import shutil
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from spineseg.errors import InputError

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024
MAX_EXPANSION_RATIO = 100.0
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


def _safe_relative_parts(name: str) -> tuple[str, ...] | None:
    """The path parts of an entry name if it stays inside the destination, else ``None``."""
    unified = name.replace("\\", "/")
    if unified.startswith("/") or _WINDOWS_DRIVE.match(unified):
        return None
    parts = tuple(p for p in PurePosixPath(unified).parts if p not in ("", "."))
    if any(p == ".." for p in parts):
        return None
    return parts


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    mode = info.external_attr >> 16
    return stat.S_ISLNK(mode)


def _check_entries(zip_path: Path, infos: list[zipfile.ZipInfo], *, max_total_bytes: int, max_files: int,
                   max_ratio: float) -> None:
    """Refuse the archive from its central directory alone, before writing anything."""
    if len(infos) > max_files:
        raise InputError(zip_path, f"archive holds {len(infos)} entries, more than the limit of {max_files}")
    declared = compressed = 0
    for info in infos:
        if _safe_relative_parts(info.filename) is None:
            raise InputError(zip_path, f"entry {info.filename!r} points outside the extraction folder")
        if _is_symlink(info):
            raise InputError(zip_path, f"entry {info.filename!r} is a symbolic link")
        if info.flag_bits & 0x1:
            raise InputError(zip_path, f"entry {info.filename!r} is encrypted")
        declared += info.file_size
        compressed += info.compress_size
    if declared > max_total_bytes:
        raise InputError(
            zip_path,
            f"archive would expand to {declared:,} bytes, more than the limit of {max_total_bytes:,}",
        )
    if declared > 1024 * 1024 and declared > max_ratio * max(compressed, 1):
        raise InputError(
            zip_path,
            f"archive would expand {declared / max(compressed, 1):.0f} times (to {declared:,} bytes), more than "
            f"the {max_ratio:g} times any scan compresses: a zip bomb?",
        )


def _copy_limited(zip_path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: int) -> int:
    """Inflate one entry into ``target``, stopping as soon as more than ``budget`` bytes or more
    than the entry's declared size come out. Returns the number of bytes written."""
    written = 0
    with archive.open(info) as source, open(target, "xb") as sink:
        while True:
            chunk = source.read(CHUNK_BYTES)
            if not chunk:
                break
            written += len(chunk)
            if written > budget:
                raise InputError(zip_path, "archive expands beyond the size limit (zip bomb?)")
            if written > info.file_size:
                raise InputError(zip_path, f"entry {info.filename!r} is larger than its header declares")
            sink.write(chunk)
    return written


def _numbered_name(index: int, entry_name: str) -> str:
    return f"{index:05d}" + (".dcm" if entry_name.lower().endswith(".dcm") else "")


def extract_zip_safely(zip_path: Path, dest: Path, *, max_total_bytes: int, max_files: int,
                       max_ratio: float = MAX_EXPANSION_RATIO, numbered: bool = False,
                       entry_names: dict[Path, str] | None = None) -> list[Path]:
    """Extract the regular files of ``zip_path`` under ``dest`` and return their paths.

    ``dest`` is created if needed. Directory entries are recreated; the returned list holds
    only files, in archive order. ``numbered``: every file is written straight into ``dest``
    as ``00001``, ``00002.dcm`` ... (its number in archive order, ``.dcm`` kept), no folder is
    made, and no entry's own name reaches the disk (a DICOM series only: entry names often
    carry the patient's name); ``entry_names``, when given, gets each written path's entry name,
    for messages about them (kept in memory only). Raises ``InputError`` for any refusal listed in the module
    docstring; in that case every file and folder this call created is removed again.
    """
    zip_path = Path(zip_path)
    dest = Path(dest)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
        raise InputError(zip_path, f"not a readable zip archive ({exc})") from exc

    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    created: list[Path] = []
    extracted: list[Path] = []
    try:
        with archive:
            infos = archive.infolist()
            _check_entries(zip_path, infos, max_total_bytes=max_total_bytes, max_files=max_files,
                           max_ratio=max_ratio)
            remaining = max_total_bytes
            for info in infos:
                parts = _safe_relative_parts(info.filename)
                if not parts:
                    continue
                target = root.joinpath(*parts)
                if not target.resolve().is_relative_to(root):
                    raise InputError(zip_path, f"entry {info.filename!r} points outside the extraction folder")
                if info.is_dir():
                    if not numbered:
                        _make_dirs(target, created)
                    continue
                if numbered:
                    target = root / _numbered_name(len(extracted) + 1, info.filename)
                _make_dirs(target.parent, created)
                if target.exists():
                    raise InputError(zip_path, f"entry {info.filename!r} appears more than once")
                created.append(target)
                remaining -= _copy_limited(zip_path, archive, info, target, remaining)
                extracted.append(target)
                if entry_names is not None:
                    entry_names[target] = info.filename
    except InputError:
        _remove_created(created)
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, OSError, ValueError,
            UnicodeDecodeError) as exc:
        _remove_created(created)
        raise InputError(zip_path, f"corrupt or unsupported zip archive ({exc})") from exc
    logger.debug("extracted %d files", len(extracted))
    return extracted


def _make_dirs(folder: Path, created: list[Path]) -> None:
    """``mkdir -p`` that records each folder it creates (for clean-up on failure)."""
    missing: list[Path] = []
    probe = folder
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for path in reversed(missing):
        path.mkdir()
        created.append(path)


def _remove_created(created: list[Path]) -> None:
    for path in reversed(created):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
