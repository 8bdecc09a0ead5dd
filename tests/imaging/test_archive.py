"""extract_zip_safely: archives built in tmp_path, good and hostile."""

from __future__ import annotations

import stat
import struct
import zipfile
from pathlib import Path

import pytest

from spineseg.errors import InputError
from spineseg.imaging.archive import extract_zip_safely

LIMIT = 10 * 1024 * 1024


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_extracts_nested_files_with_their_content(tmp_path: Path) -> None:
    zip_path = tmp_path / "study.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("series1/a.dcm", b"first")
        archive.writestr("series1/sub/b.dcm", b"second" * 100)
        archive.writestr("empty_dir/", b"")
    dest = tmp_path / "out"
    files = extract_zip_safely(zip_path, dest, max_total_bytes=LIMIT, max_files=10)
    assert [p.relative_to(dest).as_posix() for p in files] == ["series1/a.dcm", "series1/sub/b.dcm"]
    assert files[0].read_bytes() == b"first"
    assert files[1].read_bytes() == b"second" * 100
    assert (dest / "empty_dir").is_dir()


def test_numbered_extraction_writes_no_entry_name(tmp_path: Path) -> None:
    zip_path = tmp_path / "study.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("DOE_JANE_MRN-998877/", b"")
        archive.writestr("DOE_JANE_MRN-998877/IM_DOE_1.DCM", b"first")
        archive.writestr("DOE_JANE_MRN-998877/sub/IM_DOE_2", b"second")
    dest = tmp_path / "out"
    files = extract_zip_safely(zip_path, dest, max_total_bytes=LIMIT, max_files=10, numbered=True)
    assert [p.relative_to(dest).as_posix() for p in files] == ["00001.dcm", "00002"]
    assert [p.read_bytes() for p in files] == [b"first", b"second"]
    assert sorted(p.name for p in dest.rglob("*")) == ["00001.dcm", "00002"]  # no folder of the entries either


@pytest.mark.parametrize("name", ["../../x", "a/../../x", "..\\..\\x", "/abs/x", "C:/windows/x", "\\\\server\\x"])
def test_refuses_entries_leaving_the_destination(tmp_path: Path, name: str) -> None:
    zip_path = tmp_path / "evil.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("fine.txt", b"ok")
        archive.writestr(name, b"escaped")
    assert name in zipfile.ZipFile(zip_path).namelist()  # the hostile name really is in there
    dest = tmp_path / "deep" / "out"
    with pytest.raises(InputError, match="outside the extraction folder"):
        extract_zip_safely(zip_path, dest, max_total_bytes=LIMIT, max_files=10)
    assert not any(p.read_bytes() == b"escaped" for p in _files_under(tmp_path) if p != zip_path)
    assert _files_under(dest) == []


def test_refuses_symbolic_links(tmp_path: Path) -> None:
    zip_path = tmp_path / "link.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        info = zipfile.ZipInfo("passwd")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd")
    with pytest.raises(InputError, match="symbolic link"):
        extract_zip_safely(zip_path, tmp_path / "out", max_total_bytes=LIMIT, max_files=10)
    assert not (tmp_path / "out" / "passwd").exists()


def test_refuses_zip_bomb_by_declared_size(tmp_path: Path) -> None:
    zip_path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.bin", bytes(8 * 1024 * 1024))
    assert zip_path.stat().st_size < 100_000  # highly compressed: a bomb in miniature
    with pytest.raises(InputError, match="expand"):
        extract_zip_safely(zip_path, tmp_path / "out", max_total_bytes=1024 * 1024, max_files=10)
    assert _files_under(tmp_path / "out") == []


def _understate_sizes(zip_path: Path, declared: int) -> None:
    """Rewrite the uncompressed size in every local and central header to ``declared``."""
    data = bytearray(zip_path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = 0
        while (found := data.find(signature, start)) >= 0:
            struct.pack_into("<I", data, found + offset, declared)
            start = found + 4
    zip_path.write_bytes(bytes(data))


def test_refuses_entry_producing_more_than_its_header_declares(tmp_path: Path) -> None:
    zip_path = tmp_path / "liar.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.bin", bytes(4 * 1024 * 1024))
    _understate_sizes(zip_path, 1000)
    assert zipfile.ZipFile(zip_path).getinfo("zeros.bin").file_size == 1000
    dest = tmp_path / "out"
    with pytest.raises(InputError):
        extract_zip_safely(zip_path, dest, max_total_bytes=1024 * 1024, max_files=10)
    assert _files_under(dest) == []


def test_refuses_too_many_files(tmp_path: Path) -> None:
    zip_path = tmp_path / "many.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        for n in range(6):
            archive.writestr(f"f{n}.dcm", b"x")
    with pytest.raises(InputError, match="6 entries"):
        extract_zip_safely(zip_path, tmp_path / "out", max_total_bytes=LIMIT, max_files=5)
    assert len(extract_zip_safely(zip_path, tmp_path / "ok", max_total_bytes=LIMIT, max_files=6)) == 6


def test_not_a_zip_is_an_input_error(tmp_path: Path) -> None:
    fake = tmp_path / "fake.zip"
    fake.write_text("this is not a zip archive")
    with pytest.raises(InputError, match="not a readable zip") as caught:
        extract_zip_safely(fake, tmp_path / "out", max_total_bytes=LIMIT, max_files=10)
    assert caught.value.source == str(fake)


def test_corrupt_member_removes_what_was_written(tmp_path: Path) -> None:
    zip_path = tmp_path / "corrupt.zip"
    payload = b"DICOM-ish payload " * 50
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("a/first.dcm", b"intact")
        archive.writestr("a/second.dcm", payload)
    data = bytearray(zip_path.read_bytes())
    where = data.find(payload)
    data[where + 5] ^= 0xFF  # flip one stored byte: the CRC no longer matches
    zip_path.write_bytes(bytes(data))
    dest = tmp_path / "out"
    with pytest.raises(InputError, match="corrupt"):
        extract_zip_safely(zip_path, dest, max_total_bytes=LIMIT, max_files=10)
    assert _files_under(dest) == []
    assert not (dest / "a").exists()
