"""Fixtures for the PACS tests: the browser of the web tests."""

from __future__ import annotations

from tests.web.conftest import browser  # noqa: F401  (Debian's Chromium, one per module)
