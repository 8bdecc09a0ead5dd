"""Vertebra identities as data: names, VerSe ids, TotalSegmentator ids, SNOMED CT codes, colours.

VerSe ids (the label values of ``levels.nii.gz`` by default): 1..7 C1..C7, 8..19 T1..T12,
20..24 L1..L5, 25 L6, 26 sacrum, 28 T13. TotalSegmentator v2 "total" ids: 25 sacrum,
27 L5 .. 31 L1, 32 T12 .. 43 T1, 44 C7 .. 50 C1 (``51 - verse_id`` for C1..L5); L6 and T13
have no TotalSegmentator id.

A vertebra that was separated but could not be named is written as ``UNNAMED_BASE + k``
(k = 1 for the top-most one in the field of view) in either convention.

SNOMED CT codes are those of DICOM PS3.16 CID 7603 "Vertebra" (C1..L5) and the sacrum's
(54735007, used in DICOM's anatomic region groups); L6, T13 and unnamed vertebrae get the
generic code 51282000 "Vertebra" (pydicom's ``codes.SCT.Vertebra``).
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

UNNAMED_BASE = 100
CONVENTIONS = ("verse", "totalsegmentator")

_NAMES = [f"C{i}" for i in range(1, 8)] + [f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)]
VERSE_BY_NAME: dict[str, int] = {name: i + 1 for i, name in enumerate(_NAMES)} | {"L6": 25, "sacrum": 26, "T13": 28}
NAME_BY_VERSE: dict[int, str] = {v: k for k, v in VERSE_BY_NAME.items()}

# Top to bottom, the order a spine is counted in (T13 sits after T12, L6 after L5).
CRANIOCAUDAL: tuple[int, ...] = (*tuple(range(1, 20)), 28, *tuple(range(20, 25)), 25, 26)

_SNOMED_CID_7603 = {
    "C1": "14806007", "C2": "39976000", "C3": "113205007", "C4": "5329002", "C5": "36978003",
    "C6": "36054005", "C7": "87391001", "T1": "64864005", "T2": "53733008", "T3": "1626008",
    "T4": "73071006", "T5": "56401006", "T6": "45296009", "T7": "62487009", "T8": "11068009",
    "T9": "82687006", "T10": "7610001", "T11": "12989004", "T12": "23215003", "L1": "66794005",
    "L2": "14293000", "L3": "36470004", "L4": "11994002", "L5": "49668003",
}
SACRUM_CODE = ("54735007", "Sacrum")
GENERIC_VERTEBRA = ("51282000", "Vertebra")


def totalsegmentator_id(verse_id: int) -> int:
    """The TotalSegmentator v2 id of a VerSe id; 0 for L6 / T13 (no such TotalSegmentator label);
    unnamed ids (``UNNAMED_BASE + k``) are kept."""
    if verse_id > UNNAMED_BASE:
        return verse_id
    if verse_id == 26:
        return 25
    if 1 <= verse_id <= 24:
        return 51 - verse_id
    return 0


def label_name(label: int) -> str:
    """``"L1"``, ``"sacrum"``, or ``"unnamed 3"`` for ``UNNAMED_BASE + 3``."""
    if label > UNNAMED_BASE:
        return f"unnamed {label - UNNAMED_BASE}"
    return NAME_BY_VERSE[label]


def snomed_code(label: int) -> tuple[str, str]:
    """(code value, meaning) in SNOMED CT for a VerSe id or an unnamed label."""
    name = NAME_BY_VERSE.get(label)
    if name in _SNOMED_CID_7603:
        return _SNOMED_CID_7603[name], f"{name} vertebra"
    if name == "sacrum":
        return SACRUM_CODE
    return GENERIC_VERTEBRA


def colour(label: int) -> tuple[int, int, int]:
    """A stable RGB colour per label: neighbouring levels differ strongly in hue, regions keep a
    band of brightness (cervical light, thoracic mid, lumbar/sacrum deep); unnamed are grey-blue."""
    if label > UNNAMED_BASE:
        k = label - UNNAMED_BASE
        return (90 + 25 * (k % 4), 110 + 25 * (k % 3), 170)
    if label == 26:
        return (235, 205, 120)  # the sacrum in sand: golden-angle hues would make it T12's magenta
    position = CRANIOCAUDAL.index(label)
    hue = (position * 0.381966) % 1.0  # golden-angle steps: no two neighbours look alike
    value = 1.0 if label <= 7 else 0.9 if label <= 19 or label == 28 else 0.8
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, value)
    return (round(r * 255), round(g * 255), round(b * 255))


@dataclass(frozen=True)
class LevelEntry:
    label: int
    name: str
    totalsegmentator_id: int
    rgb: tuple[int, int, int]


def colour_table(labels: list[int]) -> list[dict[str, object]]:
    """The viewer's colour table: one entry per label present, with its name and RGB colour."""
    return [
        {"label": int(label), "name": label_name(label), "totalsegmentator_id": totalsegmentator_id(label),
         "rgb": list(colour(label))}
        for label in labels
    ]
