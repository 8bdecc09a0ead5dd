"""A model version as one portable file: a .zip holding exactly ``card.json`` and
``weights.safetensors`` at its top level. Nothing in it is ever unpickled or executed.

Reading an archive trusts nothing in it: member names must be exactly those two (so no path
tricks such as ``../x`` or absolute names can occur), sizes are capped while streaming (zip
bombs: declared sizes and their ratio to the compressed ones are checked first), the card
must parse and carry a valid id and a sha256 that the weights match.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

from spineseg.errors import InputError, IntegrityError
from spineseg.model.card import CARD_FILE, WEIGHTS_FILE, ModelCard
from spineseg.registry.atomic import TEMP_PREFIX, fsync_dir
from spineseg.registry.version import RegisteredModel, check_safetensors, validate_version_id

ARCHIVE_MEMBERS = (CARD_FILE, WEIGHTS_FILE)
MAX_CARD_BYTES = 1 << 20
MAX_WEIGHTS_BYTES = 4 << 30
MAX_EXPANSION_RATIO = 20  # float16 weights deflate by ~1.1x; JSON cards are small anyway
_CHUNK = 1 << 20


def write_model_archive(model: RegisteredModel, out_file: Path, *, overwrite: bool = False) -> Path:
    """Write ``model`` to ``out_file`` (.zip) atomically and return the path.

    The weights are hashed while they are copied in; a mismatch with the card raises
    ``IntegrityError`` and leaves no file behind.
    """
    if out_file.is_dir():
        raise InputError(out_file, "is a folder; give the archive file to write")
    if out_file.exists() and not overwrite:
        raise InputError(out_file, "already exists; refusing to overwrite it")
    if not out_file.parent.is_dir():
        raise InputError(out_file.parent, "folder does not exist")
    fd, tmp_name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{out_file.name}-", dir=out_file.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(CARD_FILE, model.card_path.read_bytes())
            with (
                model.weights_path.open("rb") as src,
                archive.open(WEIGHTS_FILE, "w", force_zip64=True) as dst,
            ):
                for chunk in iter(lambda: src.read(_CHUNK), b""):
                    digest.update(chunk)
                    dst.write(chunk)
        if digest.hexdigest() != model.card.weights_sha256:
            raise IntegrityError(
                f"weights of version {model.id} do not match their recorded sha256 "
                f"(tampered or corrupt): {model.weights_path}"
            )
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out_file)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(out_file.parent)
    return out_file


def _copy_member(src: BinaryIO, dst: BinaryIO, limit: int, source: str) -> str:
    """Stream a member into ``dst`` refusing more than ``limit`` bytes; return its sha256."""
    digest = hashlib.sha256()
    total = 0
    for chunk in iter(lambda: src.read(_CHUNK), b""):
        total += len(chunk)
        if total > limit:
            raise InputError(source, f"member is larger than the {limit} bytes allowed")
        digest.update(chunk)
        dst.write(chunk)
    return digest.hexdigest()


def _check_members(in_file: Path, archive: zipfile.ZipFile) -> None:
    names = [info.filename for info in archive.infolist()]
    unexpected = [name for name in names if name not in ARCHIVE_MEMBERS]
    if unexpected:
        raise InputError(
            in_file,
            f"unexpected member(s) {unexpected}: a model archive holds only {list(ARCHIVE_MEMBERS)}",
        )
    if len(names) != len(set(names)):
        raise InputError(in_file, "archive holds the same member twice")
    missing = [name for name in ARCHIVE_MEMBERS if name not in names]
    if missing:
        raise InputError(in_file, f"archive lacks {missing}")
    if any(info.flag_bits & 0x1 for info in archive.infolist()):
        raise InputError(in_file, "archive members are encrypted")
    for info in archive.infolist():  # declared sizes, before anything is inflated
        limit = MAX_CARD_BYTES if info.filename == CARD_FILE else MAX_WEIGHTS_BYTES
        if info.file_size > limit:
            raise InputError(in_file, f"member {info.filename} declares {info.file_size:,} bytes, more than the "
                                      f"{limit:,} allowed")
        if info.file_size > 1 << 20 and info.file_size > MAX_EXPANSION_RATIO * max(info.compress_size, 1):
            ratio = info.file_size // max(info.compress_size, 1)
            raise InputError(in_file, f"member {info.filename} would expand {ratio} times: weights barely "
                                      "compress, so this is a zip bomb")


def _parse_card(in_file: Path, raw: bytes) -> ModelCard:
    source = f"{in_file}:{CARD_FILE}"
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InputError(source, f"model card is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise InputError(source, "model card must be a JSON object")
    try:
        card = ModelCard.from_dict(data, source=source)
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
        raise InputError(source, f"model card has malformed fields ({exc})") from exc
    validate_version_id(card.id, f"{source} id")
    if not card.weights_sha256:
        raise InputError(source, "model card records no weights_sha256, so the weights cannot be verified")
    return card


def extract_model_archive(in_file: Path, staging: Path) -> ModelCard:
    """Validate ``in_file`` and write its two files into the empty folder ``staging``.

    Returns the parsed card. Raises ``InputError`` for anything that is not a well-formed
    model archive and ``IntegrityError`` when the weights do not match the card's sha256.
    """
    if not in_file.is_file():
        raise InputError(in_file, "no such file")
    try:
        with zipfile.ZipFile(in_file) as archive:
            _check_members(in_file, archive)
            with archive.open(CARD_FILE) as member:
                card_bytes = member.read(MAX_CARD_BYTES + 1)
            if len(card_bytes) > MAX_CARD_BYTES:
                raise InputError(f"{in_file}:{CARD_FILE}", f"card is larger than {MAX_CARD_BYTES} bytes")
            card = _parse_card(in_file, card_bytes)
            weights_out = staging / WEIGHTS_FILE
            declared = archive.getinfo(WEIGHTS_FILE).file_size  # a member larger than it declares is refused
            with archive.open(WEIGHTS_FILE) as member, weights_out.open("wb") as dst:
                digest = _copy_member(member, dst, min(MAX_WEIGHTS_BYTES, declared), f"{in_file}:{WEIGHTS_FILE}")
                dst.flush()
                os.fsync(dst.fileno())
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, ValueError, OSError) as exc:
        raise InputError(
            in_file, f"not a readable model archive ({exc}); expected a .zip from `spineseg models export`"
        ) from exc
    except NotImplementedError as exc:  # unsupported compression method
        raise InputError(in_file, f"archive uses an unsupported feature ({exc})") from exc
    if digest != card.weights_sha256:
        raise IntegrityError(
            f"weights in {in_file} do not match the sha256 recorded in its card for version {card.id} "
            "(tampered or corrupt)"
        )
    check_safetensors(weights_out, source=f"{in_file}:{WEIGHTS_FILE}")
    with (staging / CARD_FILE).open("w") as fh:
        fh.write(card.to_json())
        fh.flush()
        os.fsync(fh.fileno())
    return card
