"""A corpus of hostile uploads, generated in memory (nothing of it is ever written to the repo).

Every case is tiny: the big ones are big only in their headers. Four families:

- ``ct_files()``: what a client may send as the CT (``files``) of a study or a dataset case;
- ``truth_files()``: what it may send as the ground truth (``truth``) beside a good CT;
- ``model_archives()``: what it may send to ``/api/models/import``;
- ``raw_requests()``: multipart bodies that attack the form parser itself.

Each ``Upload`` says which name the refusal must quote (``names``: one of these strings must
appear in the answer's ``detail`` or ``field``). ``python -m tests.web.hostile_corpus`` prints
the size of each family.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

Part = tuple[str, tuple[str, bytes, str]]
GOOD_SHAPE = (32, 32, 8)
AFFINE = np.diag([1.5, 1.5, 2.5, 1.0])


@dataclass(frozen=True)
class Upload:
    """One hostile upload: the multipart ``parts`` (and text ``data``), or a ``raw`` body with
    its content type; ``names``: strings of which the refusal must quote one."""

    name: str
    parts: list[Part] = field(default_factory=list)
    names: tuple[str, ...] = ()
    data: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    content_type: str | None = None


# --- good inputs the hostile ones are paired with --------------------------------------------


def good_ct_array() -> np.ndarray:
    x, y, _z = np.ogrid[:GOOD_SHAPE[0], :GOOD_SHAPE[1], :GOOD_SHAPE[2]]
    hu = np.full(GOOD_SHAPE, -1000, np.int16)
    hu[((x - 16) ** 2 + (y - 16) ** 2 <= 144).repeat(GOOD_SHAPE[2], axis=2)] = 40
    hu[((x - 16) ** 2 + (y - 20) ** 2 <= 9).repeat(GOOD_SHAPE[2], axis=2)] = 700
    return hu


def good_labels_array() -> np.ndarray:
    return (good_ct_array() == 700).astype(np.uint8) * 30  # TotalSegmentator 30 = L2


def nifti_bytes(array: np.ndarray, affine: np.ndarray = AFFINE, *, gz: bool = True, **patch: object) -> bytes:
    """A single-file NIfTI-1 of ``array``; ``patch`` rewrites raw header fields afterwards
    (``dim``, ``datatype``, ``pixdim``, ``vox_offset``, ``scl_slope``, ``scl_inter``,
    ``qform_code``, ``sform_code``, ``srow``, ``magic``, ``sizeof_hdr``, ``ext``)."""
    image = nib.Nifti1Image(array, affine)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    data = bytearray(image.to_bytes())
    formats = {"sizeof_hdr": (0, "<i"), "dim": (40, "<8h"), "datatype": (70, "<h"), "pixdim": (76, "<8f"),
               "vox_offset": (108, "<f"), "scl_slope": (112, "<f"), "scl_inter": (116, "<f"),
               "qform_code": (252, "<h"), "sform_code": (254, "<h"), "srow": (280, "<12f"), "magic": (344, "4s"),
               "ext": (348, "<4B")}
    for key, value in patch.items():
        offset, fmt = formats[key]
        values = value if isinstance(value, tuple | list) else (value,)
        struct.pack_into(fmt, data, offset, *values)
    raw = bytes(data)
    return gzip.compress(raw, compresslevel=1) if gz else raw


def nifti2_bytes(shape: tuple[int, ...], *, datatype: int = 4, data: bytes = b"\0" * 64, gz: bool = True) -> bytes:
    header = nib.Nifti2Header()
    header.set_data_dtype(np.int16)
    header.set_data_shape((2, 2, 2))
    block = bytearray(header.binaryblock)
    struct.pack_into("<8q", block, 16, len(shape), *shape, *([1] * (7 - len(shape))))
    struct.pack_into("<h", block, 12, datatype)
    struct.pack_into("<q", block, 168, 544)
    raw = bytes(block) + b"\0" * 4 + data
    return gzip.compress(raw, compresslevel=1) if gz else raw


def dicom_bytes(pixels: np.ndarray | None = None, *, position: tuple[float, float, float] = (0.0, 0.0, 0.0),
                series_uid: str = "1.2.826.0.1.3680043.10.9.1", **attributes: object) -> bytes:
    """One CT slice (32x32 by default); ``attributes`` override or (value ``None``) delete
    elements; ``TransferSyntaxUID`` sets the file meta's syntax."""
    pixels = np.full((32, 32), 1000, np.uint16) if pixels is None else pixels
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = attributes.pop("TransferSyntaxUID", ExplicitVRLittleEndian)
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.9"
    ds.SeriesInstanceUID = series_uid
    ds.ImagePositionPatient = list(position)
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [0.8, 0.8]
    ds.SliceThickness = 2.0
    ds.RescaleSlope = 1.0
    ds.RescaleIntercept = -1024.0
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype("<u2").tobytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid values are the point
        for keyword, value in attributes.items():
            if value is None:
                delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def series(count: int, step: float = 2.0, **attributes: object) -> list[tuple[str, bytes]]:
    return [(f"series/IM{i:04d}.dcm", dicom_bytes(position=(0.0, 0.0, i * step), **attributes))
            for i in range(count)]


def zip_bytes(members: list[tuple[str, bytes]], *, compression: int = zipfile.ZIP_DEFLATED,
              edit: Callable[[zipfile.ZipInfo], None] | None = None) -> bytes:
    out = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(out, "w", compression) as archive:
        warnings.simplefilter("ignore")  # duplicate names are the point
        for name, content in members:
            info = zipfile.ZipInfo(name)
            info.compress_type = compression
            if edit is not None:
                edit(info)
            archive.writestr(info, content)
    return out.getvalue()


def set_declared_size(data: bytes, size: int) -> bytes:
    """Rewrite the uncompressed size in every local and central header (a lying archive)."""
    buffer = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = 0
        while (found := buffer.find(signature, start)) >= 0:
            struct.pack_into("<I", buffer, found + offset, size)
            start = found + 4
    return bytes(buffer)


def _patch_headers(data: bytes, local_offset: int, central_offset: int, value: int) -> bytes:
    buffer = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", local_offset), (b"PK\x01\x02", central_offset)):
        start = 0
        while (found := buffer.find(signature, start)) >= 0:
            struct.pack_into("<H", buffer, found + offset, value)
            start = found + 4
    return bytes(buffer)


def set_flag_bits(data: bytes, bits: int) -> bytes:
    """Mark every member (e.g. 0x1: encrypted) in the local and central headers."""
    return _patch_headers(data, 6, 8, bits)


def set_method(data: bytes, method: int) -> bytes:
    """Claim compression ``method`` for every member."""
    return _patch_headers(data, 8, 10, method)


def png_bytes(width: int, height: int, *, body: bytes | None = None) -> bytes:
    """A PNG whose IHDR declares ``width`` x ``height`` (8-bit grey) with ``body`` as IDAT."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = body if body is not None else zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def picture(array: np.ndarray, fmt: str = "PNG", **save: object) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format=fmt, **save)
    return out.getvalue()


def npy_bytes(array: np.ndarray, *, allow_pickle: bool = False) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=allow_pickle)
    return out.getvalue()


def npy_header_only(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode("latin1")
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\0" * 32


def npz_bytes(members: dict[str, bytes]) -> bytes:
    return zip_bytes(list(members.items()))


# --- the CT family ---------------------------------------------------------------------------


def _nifti_ct_cases() -> list[tuple[str, str, bytes]]:
    ct = good_ct_array()
    f32 = ct.astype(np.float32)
    cases: list[tuple[str, str, bytes]] = []

    def add(label: str, data: bytes, suffix: str = ".nii.gz") -> None:
        cases.append((f"nifti-{label}", f"{label}{suffix}", data))

    for shape in ((1024, 1024, 1024), (32767, 32767, 32767), (512, 512, 4000), (900, 900, 900),
                  (4096, 4096, 64), (20000, 20000, 1)):
        add(f"dims-{'x'.join(map(str, shape))}", nifti_bytes(ct, dim=(3, *shape, 1, 1, 1, 1)))
    add("dims-1024cubed-raw", nifti_bytes(ct, gz=False, dim=(3, 1024, 1024, 1024, 1, 1, 1, 1)), ".nii")
    for code in (1, 32, 128, 255, 1536, 1792, 2048, 2304, 0, 16384):
        add(f"datatype-{code}", nifti_bytes(ct, datatype=code))
    add("complex64-data", nifti_bytes(ct.astype(np.complex64)))
    for offset in (-1.0, -1e9, float("nan"), float("inf"), 1e12, 100.0):
        add(f"vox-offset-{offset:g}", nifti_bytes(ct, vox_offset=offset))
    for esize in (2**31 - 16, 8, 0, -64, 1 << 20):
        plain = nifti_bytes(ct, gz=False, ext=(1, 0, 0, 0), vox_offset=368.0)
        extension = struct.pack("<2i", esize, 4) + b"\0" * 8  # one 16-byte slot, declaring esize bytes
        add(f"extension-{esize}", gzip.compress(plain[:352] + extension + plain[352:], compresslevel=1))
    for value in (0.0, -1.5, 1e30, float("nan"), float("inf"), 1e-6):
        add(f"pixdim-{value:g}", nifti_bytes(ct, pixdim=(1.0, value, 1.5, 2.5, 1, 1, 1, 1), sform_code=0))
    add("sform-1e30", nifti_bytes(ct, srow=(1e30, 0, 0, 0, 0, 1.5, 0, 0, 0, 0, 2.5, 0)))
    add("sform-zero", nifti_bytes(ct, srow=(0,) * 12, qform_code=0))
    add("sform-nan", nifti_bytes(ct, srow=(float("nan"),) * 12))
    add("scl-slope-inf", nifti_bytes(ct, scl_slope=float("inf")))
    add("scl-slope-1e38", nifti_bytes(ct, scl_slope=1e38))
    add("scl-inter-inf", nifti_bytes(ct, scl_inter=float("-inf")))
    nan = f32.copy()
    nan[0, 0, 0] = np.nan
    add("nan-voxel", nifti_bytes(nan))
    inf = f32.copy()
    inf[1, 1, 1] = np.inf
    add("inf-voxel", nifti_bytes(inf))
    add("absurd-values", nifti_bytes(f32 * np.float32(1e30)))
    for dims in ((0, 32, 32, 8), (8, 32, 32, 8), (-1, 32, 32, 8), (3, 0, 32, 8), (3, 32, -5, 8), (1, 32, 1, 1)):
        add(f"dim-{'_'.join(map(str, dims))}", nifti_bytes(ct, dim=(*dims, 1, 1, 1, 1)))
    add("4d", nifti_bytes(np.zeros((32, 32, 4, 3), np.int16)))
    add("5d", nifti_bytes(np.zeros((32, 32, 2, 1, 2), np.int16)))
    add("1x1x1", nifti_bytes(np.zeros((1, 1, 1), np.int16)))
    add("15x15x40", nifti_bytes(np.zeros((15, 15, 40), np.int16)))
    add("2x2x2-float", nifti_bytes(np.zeros((2, 2, 2), np.float32)))
    whole = nifti_bytes(ct)
    add("truncated-gzip", whole[: len(whole) // 2])
    raw = nifti_bytes(ct, gz=False)
    add("truncated-raw", raw[: len(raw) - 100], ".nii")
    add("header-only", raw[:300], ".nii")
    add("wrong-magic", nifti_bytes(ct, magic=b"xyz\0"))
    add("pair-magic", nifti_bytes(ct, magic=b"ni1\0"))
    add("bad-sizeof-hdr", nifti_bytes(ct, sizeof_hdr=349))
    add("nifti2-huge", nifti2_bytes((2**40, 2**40, 2**40)))
    add("nifti2-negative", nifti2_bytes((32, -32, 8)))
    add("nifti2-truncated", nifti2_bytes((64, 64, 64)))
    add("nifti2-complex", nifti2_bytes((32, 32, 8), datatype=32))
    big = bytearray(raw)
    struct.pack_into(">i", big, 0, 348)  # big-endian sizeof_hdr with little-endian fields: garbage dims
    add("mixed-endian", gzip.compress(bytes(big)))
    add("random-bytes", bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8)), ".nii")
    add("gzip-of-garbage", gzip.compress(b"hello, not an image " * 50))
    add("not-gzip", b"\x1f\x8b" + b"\xff" * 200)
    return cases


def _dicom_cases() -> list[tuple[str, list[tuple[str, bytes]]]]:
    cases: list[tuple[str, list[tuple[str, bytes]]]] = []

    def add(label: str, files: list[tuple[str, bytes]]) -> None:
        cases.append((f"dicom-{label}", files))

    add("no-pixel-data", [("nopix.dcm", dicom_bytes(PixelData=None))])
    add("huge-rows-columns", [("huge.dcm", dicom_bytes(Rows=65535, Columns=65535))])
    add("zero-rows", [("zero.dcm", dicom_bytes(Rows=0))])
    add("pixel-size-mismatch", [("short.dcm", dicom_bytes(Rows=64, Columns=64))])
    add("four-at-one-position", [(f"same/IM{i}.dcm", dicom_bytes()) for i in range(4)])
    add("mixed-stacks", [(f"mix/IM{i}.dcm", dicom_bytes(position=(0.0, 0.0, (i % 4) * 2.0))) for i in range(8)])
    for label, value in (("nan", "NaN"), ("inf", "inf"), ("1e308", "1e308"), ("1e6", "1e6")):
        add(f"slope-{label}", series(3, RescaleSlope=value))
    add("intercept-1e30", series(3, RescaleIntercept="1e30"))
    add("slope-multivalued", series(3, RescaleSlope=["1", "2"]))
    unknown = dicom_bytes().replace(ExplicitVRLittleEndian.encode(), b"1.2.3.4.5.6.7.8.9.1", 1)
    add("unknown-syntax", [("syntax.dcm", unknown)])
    add("jpeg-garbage", [("jpeg.dcm", dicom_bytes(TransferSyntaxUID=JPEGBaseline8Bit,
                                                  PixelData=encapsulate([b"\xff\xd8 not a jpeg"])))])
    for label, spacing in (("zero", [0.0, 0.0]), ("negative", [-1.0, 0.8]), ("huge", [1e6, 1e6]),
                           ("nan", ["NaN", "NaN"]), ("one-value", [0.8])):
        add(f"spacing-{label}", series(2, PixelSpacing=spacing))
    add("thickness-1e9", [("thick.dcm", dicom_bytes(SliceThickness=1e9))])
    add("slice-step-1e4", series(3, step=1e4))
    add("parallel-cosines", series(2, ImageOrientationPatient=[1.0, 0, 0, 1.0, 0, 0]))
    add("no-position", series(2, ImagePositionPatient=None))
    tie = series(2) + [(f"b/IM{i}.dcm", dicom_bytes(position=(0, 0, i * 2.0), series_uid="1.2.3.9"))
                       for i in range(2)]
    add("tied-series", tie)
    add("mr-modality", series(2, Modality="MR"))
    add("multi-frame", [("frames.dcm", dicom_bytes(NumberOfFrames=1000))])
    add("colour", [("rgb.dcm", dicom_bytes(SamplesPerPixel=3))])
    add("too-small-10x10", [("small.dcm", dicom_bytes(np.zeros((10, 10), np.uint16)))])
    odd = ("odd.dcm", dicom_bytes(np.zeros((20, 20), np.uint16), position=(0, 0, 9)))
    add("sizes-differ", [*series(2), odd])
    add("preamble-only", [("pre.dcm", b"\0" * 128 + b"DICM")])
    add("text-as-dcm", [("notes.dcm", b"patient looked fine\n" * 10)])
    add("no-dicom-at-all", [(f"junk/{i}.bin", b"junk" * (i + 1)) for i in range(3)])
    add("cut-in-header", [("cut.dcm", dicom_bytes()[:200])])
    add("mixed-with-nifti", [("a.dcm", dicom_bytes()), ("ct.nii.gz", nifti_bytes(good_ct_array()))])
    return cases


def _zip_cases() -> list[tuple[str, str, bytes]]:
    good = series(3)
    zeros = b"\0" * (48 << 20)
    cases = [
        ("zip-bomb", "bomb.zip", zip_bytes([("a.dcm", zeros)])),
        ("zip-bomb-many", "bombs.zip", zip_bytes([(f"{i}.dcm", zeros[: 8 << 20]) for i in range(6)])),
        ("zip-lying-size", "lying.zip", set_declared_size(zip_bytes([("a.dcm", zeros[: 4 << 20])]), 1000)),
        ("zip-traversal", "traversal.zip", zip_bytes([("../../evil.dcm", good[0][1])])),
        ("zip-absolute", "absolute.zip", zip_bytes([("/etc/evil.dcm", good[0][1])])),
        ("zip-windows-drive", "drive.zip", zip_bytes([("C:\\evil.dcm", good[0][1])])),
        ("zip-symlink", "link.zip", zip_bytes([("link.dcm", b"/etc/passwd")],
                                              edit=lambda i: setattr(i, "external_attr", 0o120777 << 16))),
        ("zip-encrypted-flag", "locked.zip", set_flag_bits(zip_bytes(good), 0x1)),
        ("zip-in-zip", "nested.zip", zip_bytes([("inner.zip", zip_bytes(good))])),
        ("zip-empty", "empty-archive.zip", zip_bytes([])),
        ("zip-truncated", "cut.zip", zip_bytes(good)[:300]),
        ("zip-not-a-zip", "fake.zip", b"PK\x03\x04" + b"\xff" * 100),
        ("zip-of-junk", "junk.zip", zip_bytes([("a.txt", b"hello"), ("b.bin", b"\1\2\3")])),
        ("zip-duplicate-names", "dupes.zip", zip_bytes([good[0], good[0]])),
        ("zip-too-many-entries", "many.zip", zip_bytes([(f"d/{i}", b"") for i in range(10_001)],
                                                       compression=zipfile.ZIP_STORED)),
        ("zip-unknown-method", "method.zip", set_method(zip_bytes(good), 99)),
    ]
    return cases


def _image_cases() -> list[tuple[str, str, bytes]]:
    grey = np.full((32, 32), 128, np.uint8)
    colour = np.zeros((32, 32, 3), np.uint8)
    colour[..., 0] = 255
    pages = io.BytesIO()
    frames = [Image.fromarray(grey) for _ in range(3)]
    frames[0].save(pages, format="TIFF", save_all=True, append_images=frames[1:])
    nan_tiff = np.full((32, 32), np.nan, np.float32)
    good_png = picture(grey)
    bad_crc = bytearray(good_png)
    bad_crc[29] ^= 0xFF
    return [
        ("png-bomb-20000", "bomb.png", png_bytes(20000, 20000)),
        ("png-bomb-100000x1", "line.png", png_bytes(100000, 100000)),
        ("png-bomb-real", "realbomb.png", png_bytes(5000, 5000, body=zlib.compress(b"\0" * (5001 * 5000), 9))),
        ("png-1x1", "dot.png", picture(np.zeros((1, 1), np.uint8))),
        ("png-8x200", "thin.png", picture(np.zeros((8, 200), np.uint8))),
        ("png-truncated", "cut.png", good_png[: len(good_png) // 2]),
        ("png-bad-crc", "crc.png", bytes(bad_crc)),
        ("png-zero-size", "zero.png", png_bytes(0, 0)),
        ("png-wrong-magic", "magic.png", b"\x89PNX" + good_png[4:]),
        ("png-is-gif", "gif.png", picture(grey, "GIF")),
        ("png-colour", "colour.png", picture(colour)),
        ("tiff-multipage", "pages.tif", pages.getvalue()),
        ("tiff-nan", "nan.tif", picture(nan_tiff, "TIFF")),
        ("tiff-garbage", "junk.tiff", b"II*\0" + b"\xff" * 100),
        ("jpeg-truncated", "cut.jpg", picture(grey, "JPEG")[:200]),
        ("jpeg-garbage", "junk.jpeg", b"\xff\xd8\xff" + b"\x00" * 100),
    ]


def _numpy_cases() -> list[tuple[str, str, bytes]]:
    ct = good_ct_array()
    rng = np.random.default_rng(0)
    many = {f"a{i}.npy": npy_bytes(np.zeros((2, 2), np.int16)) for i in range(100)}
    return [
        ("npy-pickle", "objects.npy", npy_bytes(np.array([{"a": 1}, None], dtype=object), allow_pickle=True)),
        ("npz-pickle", "objects.npz", npz_bytes({"image.npy": npy_bytes(np.array([None] * 4, dtype=object),
                                                                        allow_pickle=True)})),
        ("npz-many-members", "many.npz", npz_bytes(many)),
        ("npz-huge-header", "huge.npz", npz_bytes({"image.npy": npy_header_only((1024, 1024, 1024))})),
        ("npz-1024cubed-zeros", "zeros.npz", npz_bytes({"image.npy": npy_header_only((1024, 1024, 1024), "|u1")})),
        ("npy-huge-header", "huge.npy", npy_header_only((2**31, 2**31))),
        ("npy-overflow-shape", "overflow.npy", npy_header_only((2**62, 2**62, 2**62))),
        ("npy-negative-shape", "negative.npy", npy_header_only((-5, 32))),
        ("npy-4d", "four.npy", npy_bytes(np.zeros((32, 32, 2, 2), np.int16))),
        ("npy-1d", "line.npy", npy_bytes(np.zeros(64, np.int16))),
        ("npy-complex", "complex.npy", npy_bytes(ct.astype(np.complex64))),
        ("npy-bool", "bool.npy", npy_bytes(ct > 0)),
        ("npy-structured", "struct.npy", npy_bytes(np.zeros((32, 32), dtype=[("a", "<f4"), ("b", "<i2")]))),
        ("npy-datetime", "time.npy", npy_bytes(np.zeros((32, 32), dtype="datetime64[s]"))),
        ("npy-nan", "nan.npy", npy_bytes(np.where(ct > 0, np.nan, 0).astype(np.float32))),
        ("npy-inf", "inf.npy", npy_bytes(np.where(ct > 0, np.inf, -1000).astype(np.float32))),
        ("npy-absurd", "absurd.npy", npy_bytes(ct.astype(np.float64) * 1e30)),
        ("npy-1x1", "dot.npy", npy_bytes(np.zeros((1, 1), np.float32))),
        ("npy-truncated", "cut.npy", npy_bytes(rng.normal(size=(32, 32)).astype(np.float32))[:200]),
        ("npy-bad-header", "header.npy", b"\x93NUMPY\x01\x00\xff\xff" + b"{" * 200),
        ("npy-version-9", "version.npy", b"\x93NUMPY\x09\x00" + b"\0" * 100),
        ("npy-wrong-magic", "magic.npy", b"\x93NUMPX" + b"\0" * 100),
        ("npz-not-zip", "fake.npz", b"not a zip at all"),
        ("npz-no-arrays", "none.npz", npz_bytes({"readme.txt": b"hello"})),
        ("npz-ambiguous", "two.npz", npz_bytes({"a.npy": npy_bytes(ct), "b.npy": npy_bytes(ct)})),
        ("npz-bomb", "bomb.npz", npz_bytes({"image.npy": npy_header_only((4096, 4096, 16), "|u1")[:-32]
                                                          + b"\0" * (16 << 20)})),
    ]


def _name_cases() -> list[tuple[str, str, bytes]]:
    junk = b"\x00junk" * 20
    return [
        ("empty-nii-gz", "empty.nii.gz", b""), ("empty-nii", "empty.nii", b""), ("empty-png", "empty.png", b""),
        ("empty-npy", "empty.npy", b""), ("empty-npz", "empty.npz", b""), ("empty-zip", "empty.zip", b""),
        ("empty-dcm", "empty.dcm", b""),
        ("traversal-name", "../../../etc/passwd.nii.gz", junk),
        ("absolute-name", "/etc/shadow.dcm", junk),
        ("backslash-name", "..\\..\\windows\\win.ini.png", junk),
        ("control-chars-name", "line\nbreak\tand\x07bell.npy", junk),
        ("unicode-name", "скан-€-🦴.nii.gz", junk),
        ("dot-only-name", "....", junk),
        ("long-name-300", "a" * 300 + ".nii.gz", junk),
    ]


def ct_files() -> list[Upload]:
    """Hostile CT uploads (field ``files``)."""
    uploads: list[Upload] = []
    for label, name, data in (_nifti_ct_cases() + _zip_cases() + _image_cases() + _numpy_cases()
                              + _name_cases()):
        shown = name.replace("\\", "/").rsplit("/", 1)[-1]
        uploads.append(Upload(label, [("files", (name, data, "application/octet-stream"))],
                              (name, shown, "files")))
    for label, files in _dicom_cases():
        parts = [("files", (name, data, "application/dicom")) for name, data in files]
        names = tuple(n for n, _ in files) + tuple(n.rsplit("/", 1)[-1] for n, _ in files) + ("files", "series")
        uploads.append(Upload(label, parts, names))
    return uploads


def truth_files() -> list[Upload]:
    """Hostile ground truths (field ``truth``), each sent beside the good CT."""
    labels = good_labels_array()
    hostile = [(label, name, data) for label, name, data in _nifti_ct_cases()
               if not label.startswith(("nifti-nan", "nifti-inf", "nifti-absurd", "nifti-1x1x1", "nifti-15x15",
                                        "nifti-2x2x2"))]
    float_labels = labels.astype(np.float32)
    float_labels[0, 0, 0] = np.nan
    extra = [
        ("labels-nan", "nan-labels.nii.gz", nifti_bytes(float_labels)),
        ("labels-fractional", "fraction.nii.gz", nifti_bytes(labels.astype(np.float32) * 0.37)),
        ("labels-negative", "negative.nii.gz", nifti_bytes(-labels.astype(np.int16))),
        ("labels-far-away", "far.nii.gz", nifti_bytes(labels, np.diag([1.5, 1.5, 2.5, 1.0])
                                                       + np.array([[0, 0, 0, 9e3]] * 3 + [[0, 0, 0, 0]]))),
        ("labels-empty", "empty.nii.gz", b""),
        ("labels-zip-bomb", "structures.zip", zip_bytes([("vertebrae_L1.nii.gz", b"\0" * (48 << 20))])),
        ("labels-zip-traversal", "traversal.zip", zip_bytes([("../vertebrae_L1.nii.gz", b"x")])),
        ("labels-zip-unknown-level", "levels.zip", zip_bytes([("vertebrae_X9.nii.gz", nifti_bytes(labels))])),
        ("labels-huge-float", "huge.nii.gz", nifti_bytes(np.where(labels > 0, np.float32(np.inf), 0))),
    ]
    uploads = []
    for label, name, data in hostile + extra:
        uploads.append(Upload(f"truth-{label}", [("truth", (name, data, "application/octet-stream"))],
                              (name, "truth")))
    return uploads


# --- the model family ------------------------------------------------------------------------


def safetensors_bytes() -> bytes:
    payload = np.zeros(4, np.float16).tobytes()
    header = json.dumps({"w": {"dtype": "F16", "shape": [4], "data_offsets": [0, len(payload)]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + payload


def card_bytes(weights: bytes, **changes: object) -> bytes:
    card: dict[str, object] = {"id": "hostile-import", "architecture": {"name": "monai.UNet"},
                               "weights_sha256": hashlib.sha256(weights).hexdigest()}
    card.update(changes)
    return json.dumps({k: v for k, v in card.items() if v is not None}).encode()


def model_archives() -> list[Upload]:
    """Hostile model archives for ``/api/models/import`` (field ``files``)."""
    weights = safetensors_bytes()
    card = card_bytes(weights)
    junk_weights = b"\x80\x04\x95 this is a pickle, not safetensors"
    bad_header = struct.pack("<Q", 2**60) + b"{}"
    cases = [
        ("not-a-zip", b"hello"),
        ("empty-file", b""),
        ("empty-zip", zip_bytes([])),
        ("extra-member", zip_bytes([("card.json", card), ("weights.safetensors", weights), ("run.py", b"x")])),
        ("traversal-member", zip_bytes([("../card.json", card), ("weights.safetensors", weights)])),
        ("absolute-member", zip_bytes([("/card.json", card), ("weights.safetensors", weights)])),
        ("nested-folder", zip_bytes([("model/card.json", card), ("model/weights.safetensors", weights)])),
        ("missing-weights", zip_bytes([("card.json", card)])),
        ("missing-card", zip_bytes([("weights.safetensors", weights)])),
        ("duplicate-card", zip_bytes([("card.json", card), ("card.json", card), ("weights.safetensors", weights)])),
        ("card-not-json", zip_bytes([("card.json", b"{not json"), ("weights.safetensors", weights)])),
        ("card-not-utf8", zip_bytes([("card.json", b"\xff\xfe{}"), ("weights.safetensors", weights)])),
        ("card-is-list", zip_bytes([("card.json", b"[1, 2]"), ("weights.safetensors", weights)])),
        ("card-deep-nesting", zip_bytes([("card.json", b"[" * 200_000), ("weights.safetensors", weights)])),
        ("card-no-id", zip_bytes([("card.json", card_bytes(weights, id=None)), ("weights.safetensors", weights)])),
        ("card-bad-id", zip_bytes([("card.json", card_bytes(weights, id="../../etc")),
                                   ("weights.safetensors", weights)])),
        ("card-id-number", zip_bytes([("card.json", card_bytes(weights, id=42)), ("weights.safetensors", weights)])),
        ("card-no-hash", zip_bytes([("card.json", card_bytes(weights, weights_sha256=None)),
                                    ("weights.safetensors", weights)])),
        ("card-bad-spacing", zip_bytes([("card.json", card_bytes(weights, spacing_mm="abc")),
                                        ("weights.safetensors", weights)])),
        ("card-spacing-number", zip_bytes([("card.json", card_bytes(weights, window_hu=5)),
                                           ("weights.safetensors", weights)])),
        ("card-existing-id", zip_bytes([("card.json", card_bytes(weights, id="test-untrained")),
                                        ("weights.safetensors", weights)])),
        ("card-2mb", zip_bytes([("card.json", card_bytes(weights, notes="x" * (2 << 20))),
                                ("weights.safetensors", weights)])),
        ("hash-mismatch", zip_bytes([("card.json", card_bytes(b"other")), ("weights.safetensors", weights)])),
        ("weights-pickle", zip_bytes([("card.json", card_bytes(junk_weights)), ("weights.safetensors", junk_weights)])),
        ("weights-huge-header", zip_bytes([("card.json", card_bytes(bad_header)),
                                           ("weights.safetensors", bad_header)])),
        ("weights-empty", zip_bytes([("card.json", card_bytes(b"")), ("weights.safetensors", b"")])),
        ("weights-bomb", zip_bytes([("card.json", card), ("weights.safetensors", b"\0" * (48 << 20))])),
        ("weights-lying-size", set_declared_size(zip_bytes([("card.json", card),
                                                            ("weights.safetensors", b"\0" * (4 << 20))]), 200)),
        ("encrypted-flag", set_flag_bits(zip_bytes([("card.json", card), ("weights.safetensors", weights)]), 0x1)),
        ("truncated-zip", zip_bytes([("card.json", card), ("weights.safetensors", weights)])[:120]),
    ]
    uploads = [Upload(f"model-{label}", [("files", (f"{label}.zip", data, "application/zip"))],
                      (f"{label}.zip", "files")) for label, data in cases]
    two = [("files", ("a.zip", zip_bytes([("card.json", card)]), "x")),
           ("files", ("b.zip", zip_bytes([("card.json", card)]), "x"))]
    uploads.append(Upload("model-two-archives", two, ("files",)))
    uploads.append(Upload("model-no-file", [], ("files",), data={"note": "nothing"}))
    return uploads


# --- the form parser family ------------------------------------------------------------------


def multipart(parts: list[tuple[bytes, bytes]], boundary: bytes = b"hostileboundary") -> bytes:
    """A body from (Content-Disposition value, content) pairs."""
    body = b""
    for disposition, content in parts:
        body += b"--" + boundary + b"\r\nContent-Disposition: " + disposition + b"\r\n\r\n" + content + b"\r\n"
    return body + b"--" + boundary + b"--\r\n"


def raw_requests(limit_bytes: int, max_text_fields: int, max_file_parts: int) -> list[Upload]:
    """Attacks on the multipart parser, sized for an app whose upload limit is ``limit_bytes``."""
    ctype = "multipart/form-data; boundary=hostileboundary"
    long_boundary = b"b" * 300
    files = b'form-data; name="files"; filename="x.dcm"'
    text_fields = [(b'form-data; name="f%d"' % i, b"v") for i in range(max_text_fields + 1)]
    cases = [
        Upload("raw-boundary-300", raw=multipart([(files, b"x")], long_boundary),
               content_type="multipart/form-data; boundary=" + long_boundary.decode(), names=("boundary",)),
        Upload("raw-boundary-empty", raw=b"--\r\n", content_type="multipart/form-data; boundary=",
               names=("boundary", "multipart")),
        Upload("raw-no-boundary", raw=b"x", content_type="multipart/form-data", names=("multipart",)),
        Upload("raw-json", raw=b'{"files": []}', content_type="application/json", names=("multipart",)),
        Upload("raw-no-content-type", raw=b"x", content_type="", names=("multipart",)),
        Upload("raw-too-many-text-fields", raw=multipart(text_fields), content_type=ctype, names=("text fields",)),
        Upload("raw-long-text-field", raw=multipart([(b'form-data; name="patient"', b"p" * 5000)]),
               content_type=ctype, names=("patient",)),
        Upload("raw-text-counts-toward-limit",
               raw=multipart([(b'form-data; name="t%d"' % i, b"t" * 4000) for i in range(40)]
                             + [(files, b"\0" * (limit_bytes - 100_000))]),
               content_type=ctype, names=("files", "limit")),
        Upload("raw-file-over-limit", raw=multipart([(files, b"\0" * (limit_bytes + 10))]), content_type=ctype,
               names=("Content-Length", "x.dcm")),
        Upload("raw-too-many-files",
               raw=multipart([(b'form-data; name="files"; filename="f%d.dcm"' % i, b"")
                              for i in range(max_file_parts + 1)]),
               content_type=ctype, names=("files",)),
        Upload("raw-huge-part-header", raw=multipart([(files + b"; x=" + b"a" * 20_000, b"x")]), content_type=ctype,
               names=("header",)),
        Upload("raw-long-filename", raw=multipart([(b'form-data; name="files"; filename="' + b"n" * 2000 + b'"',
                                                    b"x")]), content_type=ctype, names=("files",)),
        Upload("raw-non-utf8-filename",
               raw=multipart([(b'form-data; name="files"; filename="\xff\xfe\x80.nii.gz"', b"junk")]),
               content_type=ctype, names=("truth", "\ufffd", "files")),
        Upload("raw-unexpected-file-field", raw=multipart([(b'form-data; name="evil"; filename="e.nii"', b"x")]),
               content_type=ctype, names=("evil",)),
        Upload("raw-two-truths", raw=multipart([(b'form-data; name="truth"; filename="a.nii"', b"x"),
                                                (b'form-data; name="truth"; filename="b.nii"', b"x")]),
               content_type=ctype, names=("truth",)),
        Upload("raw-garbage-body", raw=b"\x00\xff" * 500, content_type=ctype, names=("files", "multipart")),
        Upload("raw-unterminated", raw=multipart([(files, b"x")])[:-20], content_type=ctype,
               names=("truth", "files", "multipart", "x.dcm")),
        Upload("raw-no-parts", raw=b"--hostileboundary--\r\n", content_type=ctype, names=("truth", "files",)),
        Upload("raw-only-empty-file-part", raw=multipart([(b'form-data; name="files"; filename=""', b"")]),
               content_type=ctype, names=("truth", "files",)),
    ]
    return cases


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for family, items in (("ct", ct_files()), ("truth", truth_files()), ("model", model_archives()),
                          ("raw", raw_requests(1 << 20, 50, 10_000))):
        logging.info("%-6s %4d uploads", family, len(items))
