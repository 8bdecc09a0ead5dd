"""Every request body is bounded before it is parsed (``web.body_limit``), and no error echoes a
long input value (``spineseg.errors.bounded``, ``web.errors``): the class of a 300 MB dataset
"name" that took 71 s, 3 GB and came back whole in the 422."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator

import pytest
from fastapi.routing import APIRoute

from spineseg.services.resumable_uploads import MAX_FILES
from spineseg.web.app import all_routers
from spineseg.web.body_limit import ANNOUNCE_MAX_BYTES, MAX_BODY_BYTES, STREAMED_BODY, BodyLimit
from tests.web.conftest import WebEnv
from tests.web.web_helpers import bearer

JSON = {"content-type": "application/json"}
LONG = 200_000  # characters of one value: under the body limit, far over what an error may quote


def _bodied_routes() -> Iterator[tuple[str, str, int]]:
    """(method, concrete path, limit) of every route that takes a body."""
    for router in all_routers():
        for route in router.routes:
            if not isinstance(route, APIRoute):
                continue
            path = re.sub(r"\{upload_id\}", "0" * 32, route.path)
            path = re.sub(r"\{index\}", "0", path)
            path = re.sub(r"\{[^}]+\}", "x", path)
            for method in sorted(route.methods - {"GET", "HEAD", "OPTIONS"}):
                yield method, path, route.max_body_size or MAX_BODY_BYTES


def _too_big_for(limit: int) -> bytes:
    return b'{"name": "' + b"a" * limit + b'"}'


def test_every_route_refuses_a_body_over_its_limit_before_reading_it(web_env: WebEnv) -> None:
    routes = [r for r in _bodied_routes() if r[2] < STREAMED_BODY]
    assert len(routes) > 30 and any(path == "/api/datasets" for _m, path, _l in routes)
    big = {MAX_BODY_BYTES: _too_big_for(MAX_BODY_BYTES), ANNOUNCE_MAX_BYTES: _too_big_for(ANNOUNCE_MAX_BYTES)}
    for headers in ({}, bearer(web_env.tokens["admin"])):  # refused before the caller is even looked up
        for method, path, limit in routes:
            started = time.perf_counter()
            response = web_env.client.request(method, path, content=big[limit], headers=JSON | headers)
            assert response.status_code == 413, (method, path, response.text)
            assert time.perf_counter() - started < 2.0, (method, path)
            body = response.json()
            assert f"limit of {limit:,} bytes" in body["detail"] and body["field"] is None, body
            assert response.headers["connection"] == "close"
            assert response.headers["x-content-type-options"] == "nosniff"  # inside the usual headers


def test_a_form_and_an_unknown_path_are_bounded_too(web_env: WebEnv) -> None:
    form = {"content-type": "application/x-www-form-urlencoded"}
    assert web_env.client.post("/login", content=b"username=" + b"a" * MAX_BODY_BYTES, headers=form).status_code == 413
    assert web_env.client.post("/no/such/route", content=b"a" * (MAX_BODY_BYTES + 1)).status_code == 413


def test_a_chunked_body_is_refused_once_it_passes_the_limit(web_env: WebEnv) -> None:
    def endless() -> Iterator[bytes]:
        for _ in range(100):
            yield b"a" * 65536

    headers = bearer(web_env.tokens["researcher"]) | JSON
    response = web_env.client.post("/api/datasets", content=endless(), headers=headers)
    assert response.status_code == 413, response.text
    assert "limit of 262,144 bytes" in response.json()["detail"]

    def small() -> Iterator[bytes]:
        yield b'{"name": "chunked'
        yield b' dataset"}'

    created = web_env.client.post("/api/datasets", content=small(), headers=headers)
    assert created.status_code == 201, created.text  # a small chunked body still gets through


def test_an_announce_of_the_most_files_fits_its_larger_limit(web_env: WebEnv) -> None:
    files = [{"name": f"series/sub-folder/{i:06d}/IM{i:06d}.dcm", "size": 1} for i in range(MAX_FILES)]
    headers = bearer(web_env.tokens["clinician"])
    response = web_env.client.post("/api/uploads", json={"files": files}, headers=headers)
    assert response.status_code == 201, response.text[:500]
    assert web_env.client.delete(f"/api/uploads/{response.json()['upload_id']}", headers=headers).status_code == 200


@pytest.mark.parametrize(("method", "path", "role", "body"), [
    ("POST", "/api/datasets", "researcher", {"name": "a" * LONG}),
    ("POST", "/api/datasets", "researcher", {"name": "ok", "seed": "9" * LONG}),
    ("POST", "/api/users", "admin", {"username": "u" * LONG, "password": "correct horse battery", "role": "viewer"}),
    ("POST", "/api/users", "admin", {"username": "valid", "password": "x", "role": "r" * LONG}),
    ("POST", "/api/uploads", "clinician", {"files": [{"name": "a.nii.gz", "size": 1}], "name": "n" * LONG}),
    ("POST", "/api/uploads", "clinician", {"files": [{"name": "a.nii.gz", "size": 1}], "purpose": "p" * LONG}),
    ("PUT", "/api/datasets/" + "d" * 5000 + "/split", "researcher", {"patients": {"k" * LONG: "train"}}),
    ("POST", "/api/models/compare", "researcher", {"versions": ["v" * LONG, "w"], "dataset_id": "x"}),
])
def test_an_error_never_echoes_a_long_value(web_env: WebEnv, method: str, path: str, role: str, body: dict) -> None:
    response = web_env.client.request(method, path, json=body, headers=bearer(web_env.tokens[role]))
    assert 400 <= response.status_code < 500, response.text[:300]
    assert len(response.content) < 2000, (response.status_code, response.text[:300])
    assert not re.search(r"(.)\1{500}", response.text), response.text  # a few hundred characters at most


def test_the_middleware_stops_reading_a_chunked_body_at_the_limit() -> None:
    """On its own, with a body of 10,000 pieces of 64 kB (640 MB): it reads 5 and answers 413;
    the route never runs."""
    read, sent, ran = [], [], []

    async def receive() -> dict:
        read.append(1)
        return {"type": "http.request", "body": b"a" * 65536, "more_body": len(read) < 10_000}

    async def send(message: dict) -> None:
        sent.append(message)

    async def route(scope: dict, receive: object, send: object) -> None:
        ran.append(scope)

    scope = {"type": "http", "method": "POST", "path": "/api/datasets", "headers": [(b"transfer-encoding", b"chunked")]}
    asyncio.run(BodyLimit(route)(scope, receive, send))
    assert not ran and len(read) == MAX_BODY_BYTES // 65536 + 1
    assert sent[0]["status"] == 413
