"""integrations.endpoints and the query checks of integrations.dicomweb: bad settings and
filters are refused naming what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spineseg.errors import InputError
from spineseg.integrations.dicomweb import SeriesQuery, check_uid
from spineseg.integrations.dimse import parse_destination
from spineseg.integrations.endpoints import load_endpoints


def _file(tmp_path: Path, entries: object) -> Path:
    path = tmp_path / "pacs.json"
    path.write_text(json.dumps(entries))
    return path


def test_endpoints_load_without_showing_credentials(tmp_path: Path) -> None:
    [e] = load_endpoints(_file(tmp_path, [{"name": "main", "url": "https://pacs/dicom-web/", "username": "u",
                                           "password": "secret"}]))
    assert (e.url, e.public()) == ("https://pacs/dicom-web", {"name": "main", "url": "https://pacs/dicom-web",
                                                               "auth": "basic"})
    assert "secret" not in repr(e)
    assert load_endpoints(None) == []


@pytest.mark.parametrize(("entries", "message"), [
    ({"name": "x"}, "must hold a JSON list"),
    ([{"name": "bad name", "url": "http://p"}], "name 'bad name' must be 1-64"),
    ([{"name": "p", "url": "ftp://p"}], "must start with http:// or https://"),
    ([{"name": "p", "url": "http://p", "pasword": "x"}], "unknown key(s) ['pasword']"),
    ([{"name": "p", "url": "http://p", "username": "u", "token": "t"}], "not both"),
    ([{"name": "p", "url": "http://p"}, {"name": "p", "url": "http://q"}], "must be unique"),
])
def test_bad_endpoint_files_are_refused(tmp_path: Path, entries: object, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        load_endpoints(_file(tmp_path, entries))


def test_queries_uids_and_destinations() -> None:
    assert SeriesQuery(patient_id=" P1 ", date="2026-11-24", modality="ct").filters() == {
        "PatientID": "P1", "StudyDate": "20261124", "Modality": "CT"}
    assert SeriesQuery(date="2026-11-01..").filters() == {"StudyDate": "20261101-"}
    with pytest.raises(InputError, match="expected a date like 2026-11-24"):
        SeriesQuery(date="yesterday").filters()
    with pytest.raises(InputError, match="is not a DICOM UID"):
        check_uid("1.2.abc", "series_uid")
    assert parse_destination("PACS@10.0.0.5:104") == ("PACS", "10.0.0.5", 104)
    with pytest.raises(Exception, match="must be AE_TITLE@host:port"):
        parse_destination("PACS:104")
