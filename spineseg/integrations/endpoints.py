"""The configured DICOMweb endpoints: a JSON file named by ``SPINESEG_PACS_ENDPOINTS``
(``Settings.pacs_endpoints_file``), a list of objects::

    [{"name": "orthanc", "url": "http://pacs.example:8042/dicom-web",
      "username": "spineseg", "password": "...",      # HTTP Basic, or
      "token": "...",                                  # a Bearer token, or neither
      "timeout_s": 30}]

``name`` (letters, digits, ``._-``, at most 64) is what pages, routes and the audit trail
call the endpoint; passwords and tokens never leave this module's objects. Keep the file
readable by the service's user only (it holds credentials).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from spineseg.config import Settings
from spineseg.errors import InputError

NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
SETTING = "SPINESEG_PACS_ENDPOINTS"


@dataclass(frozen=True)
class PacsEndpoint:
    name: str
    url: str
    username: str = ""
    password: str = field(default="", repr=False)
    token: str = field(default="", repr=False)
    timeout_s: float = 30.0

    def public(self) -> dict[str, object]:
        """What the API shows: no credential."""
        auth = "basic" if self.username else "bearer" if self.token else "none"
        return {"name": self.name, "url": self.url, "auth": auth}


def _endpoint(entry: object, where: str) -> PacsEndpoint:
    if not isinstance(entry, dict):
        raise InputError(where, "each endpoint must be a JSON object with name and url")
    unknown = set(entry) - {"name", "url", "username", "password", "token", "timeout_s"}
    if unknown:
        raise InputError(where, f"unknown key(s) {sorted(unknown)}: expected name, url, username, password, "
                                "token, timeout_s")
    name, url = str(entry.get("name", "")), str(entry.get("url", ""))
    if not NAME.fullmatch(name):
        raise InputError(where, f"name {name!r} must be 1-64 letters, digits, '.', '_' or '-'")
    if not url.startswith(("http://", "https://")):
        raise InputError(where, f"url {url!r} must start with http:// or https://")
    if entry.get("token") and entry.get("username"):
        raise InputError(where, "give username/password or token, not both")
    try:
        timeout = float(entry.get("timeout_s", 30.0))
    except (TypeError, ValueError) as exc:
        raise InputError(where, f"timeout_s must be a number of seconds, got {entry.get('timeout_s')!r}") from exc
    return PacsEndpoint(name, url.rstrip("/"), str(entry.get("username", "")), str(entry.get("password", "")),
                        str(entry.get("token", "")), timeout)


def load_endpoints(path: Path | None) -> list[PacsEndpoint]:
    """The endpoints in ``path`` (none when ``None``); ``InputError`` naming the file and entry."""
    if path is None:
        return []
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(SETTING, f"cannot read {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise InputError(SETTING, f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(entries, list):
        raise InputError(SETTING, f"{path} must hold a JSON list of endpoints")
    endpoints = [_endpoint(e, f"{SETTING} entry {i + 1}") for i, e in enumerate(entries)]
    names = [e.name for e in endpoints]
    if len(set(names)) != len(names):
        raise InputError(SETTING, f"endpoint names must be unique, got {names}")
    return endpoints


def endpoint_named(settings: Settings, name: str) -> PacsEndpoint:
    """The configured endpoint ``name``; ``InputError`` (field ``endpoint``) listing the known ones."""
    endpoints = load_endpoints(settings.pacs_endpoints_file)
    for endpoint in endpoints:
        if endpoint.name == name:
            return endpoint
    known = ", ".join(e.name for e in endpoints) or f"none (set {SETTING})"
    raise InputError("endpoint", f"no PACS endpoint named {name!r}; configured: {known}")
