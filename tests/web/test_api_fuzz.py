"""API fuzzing: schemathesis against the OpenAPI document of a real ``spineseg serve``, as an
admin, a bounded number of examples per operation: no 5xx, every status and body as
documented, every content type as documented.

Two passes: every operation with generated values (mostly unknown ids: the 404 side), then
the operations on one study with that real, finished study's and job's ids (downloads,
overlay slices, re-runs, renames with real data). Left out: ``DELETE /api/tokens/{token_id}``,
which would revoke the fuzzer's own token on a lucky id (revoking is tested in
test_session_records), and, in the second pass, deleting that study.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.web.live_server import LiveServer
from tests.web.web_helpers import add_user, bearer, make_settings, register_test_model

pytest.importorskip("schemathesis")

MAX_EXAMPLES = 8
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance"
# a bound, not a speed check: a quiet CI machine takes about a minute per pass, a loaded one several
PASS_LIMIT_S = 300


def _finished_study(server: LiveServer, token: str, tmp_path: Path) -> tuple[str, str]:
    from tests.web.test_api_studies import phantom_nifti

    ct, truth = phantom_nifti(tmp_path)
    answer = httpx.post(f"{server.url}/api/studies", headers=bearer(token), timeout=30,
                        files=[("files", ("ct.nii.gz", ct, "x")), ("truth", ("truth.nii.gz", truth, "x"))])
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["job_id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = httpx.get(f"{server.url}/api/jobs/{job_id}", headers=bearer(token), timeout=10).json()
        if job["status"] == "done":
            return job["study_id"], job_id
        assert job["status"] in ("queued", "running"), job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish")


def _schemathesis(url: str, token: str, cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", *extra[:2], "run", f"{url}/openapi.json",
         "-H", f"Authorization: Bearer {token}", "--max-examples", str(MAX_EXAMPLES), "--checks", CHECKS,
         "--exclude-path", "/api/tokens/{token_id}", "--seed", "20261201",
         "--workers", "1",  # hypothesis' lambda parsing races in threads on Python 3.11 (SystemError)
         "--phases", "examples,coverage,fuzzing", "--request-timeout", "30", "--no-color", *extra[2:]],
        capture_output=True, text=True, timeout=PASS_LIMIT_S, cwd=cwd)


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_or_undocumented_answer(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    register_test_model(settings)
    for n in range(3):  # the fuzzer's token is not id 1
        add_user(settings, f"filler{n}", "viewer")
    token = add_user(settings, "fuzz-admin", "admin")
    server = LiveServer(tmp_path)
    server.start()
    try:
        study_id, job_id = _finished_study(server, token, tmp_path)
        generated = _schemathesis(server.url, token, tmp_path)
        config = tmp_path / "seeded.toml"
        config.write_text(f'[parameters]\n"path.study_id" = "{study_id}"\n"path.job_id" = "{job_id}"\n'
                          f'"path.run_id" = "{job_id}"\n')
        seeded = _schemathesis(server.url, token, tmp_path, "--config-file", str(config),
                               "--include-path-regex", r"\{(study_id|job_id|run_id)\}",
                               "--exclude-name", "DELETE /api/studies/{study_id}")
    finally:
        server.stop()
    for result in (generated, seeded):
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
        assert "Tested: " in result.stdout
