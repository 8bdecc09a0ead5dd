"""API fuzzing: schemathesis against the OpenAPI document of a real ``spineseg serve``, as an
admin, a bounded number of examples per operation: no 5xx, every status and body as
documented, every content type as documented.

Left out: ``DELETE /api/tokens/{token_id}``, which would revoke the fuzzer's own token on a
lucky id and turn the rest of the run into 401s (revoking is tested in test_session_records).
Jobs are accepted but not run (``SPINESEG_WORKERS=0``) so the CPU stays free.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.web.live_server import LiveServer
from tests.web.web_helpers import add_user, make_settings, register_test_model

pytest.importorskip("schemathesis")

MAX_EXAMPLES = 8
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance"
RUN_LIMIT_S = 100


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_or_undocumented_answer(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    register_test_model(settings)
    for n in range(3):  # the fuzzer's token is not id 1
        add_user(settings, f"filler{n}", "viewer")
    token = add_user(settings, "fuzz-admin", "admin")
    server = LiveServer(tmp_path)
    server.start(SPINESEG_WORKERS="0")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json",
             "-H", f"Authorization: Bearer {token}", "--max-examples", str(MAX_EXAMPLES), "--checks", CHECKS,
             "--exclude-path", "/api/tokens/{token_id}", "--seed", "20261201", "--workers", "1",
             "--phases", "examples,coverage,fuzzing", "--request-timeout", "30", "--no-color"],
            capture_output=True, text=True, timeout=RUN_LIMIT_S, cwd=tmp_path)
    finally:
        server.stop()
    summary = result.stdout[-6000:]
    assert result.returncode == 0, summary
    assert "Tested: " in summary
