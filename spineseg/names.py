"""What people type as names (studies, datasets, model versions, users, tokens) and short notes
is shown on pages, in lists, in download names and in the audit trail. None of it may hold

- a control character (C0 U+0000-U+001F, DEL, C1 U+0080-U+009F): NUL cuts strings short in C
  libraries and databases, escape sequences drive the terminal that reads a log;
- a bidirectional embedding, override or isolate (U+202A-U+202E, U+2066-U+2069): they reorder
  what follows, so "scan<U+202E>gpj.exe" shows as "scanexe.jpg", and a study name could show
  another patient's record number backwards.

Refused with an ``InputError`` on the field, naming the character and where it is, never
stripped silently (the person should see what was sent). Notes may hold line breaks and tabs.
"""

from __future__ import annotations

import re
import unicodedata

from spineseg.errors import InputError

UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
UNSAFE_IN_NOTES = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _refuse(value: str, field: str, found: re.Match[str]) -> InputError:
    char = found.group()
    name = unicodedata.name(char, "control character")
    error = InputError(field, f"holds {name.lower()} (U+{ord(char):04X}) at character {found.start() + 1}: control "
                              "and bidirectional-override characters are not allowed")
    error.field = field  # type: ignore[attr-defined]
    return error


def check_typed_name(value: str, field: str) -> str:
    """``value`` unchanged, or ``InputError`` on ``field`` when it holds a control or bidi
    override/isolate character (one line: line breaks and tabs are controls too)."""
    found = UNSAFE.search(value)
    if found:
        raise _refuse(value, field, found)
    return value


def check_typed_text(value: str, field: str) -> str:
    """Like ``check_typed_name`` for free text: line breaks and tabs are allowed."""
    found = UNSAFE_IN_NOTES.search(value)
    if found:
        raise _refuse(value, field, found)
    return value
