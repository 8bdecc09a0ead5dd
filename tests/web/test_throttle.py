"""Login throttling: growing, capped delays per user name and per address; the right password
works again after a short wait; a spray over many user names from one address is slowed."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from spineseg.web.throttle import ADDRESS_BACKOFF, USER_BACKOFF, Backoff, LoginThrottle
from tests.web.conftest import WebEnv
from tests.web.test_sessions_and_pages import csrf_from
from tests.web.web_helpers import PASSWORD, add_user


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_figures_in_the_docs() -> None:
    assert (USER_BACKOFF.free, USER_BACKOFF.base_s, USER_BACKOFF.cap_s) == (5, 1.0, 60.0)
    assert (ADDRESS_BACKOFF.free, ADDRESS_BACKOFF.base_s, ADDRESS_BACKOFF.cap_s) == (20, 1.0, 300.0)
    assert [USER_BACKOFF.delay_s(n) for n in (4, 5, 6, 7, 10, 11, 50)] == [0, 1, 2, 4, 32, 60, 60]


def test_delays_grow_per_user_name_and_end_after_the_delay() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    for _ in range(5):
        assert throttle.retry_after("ada", "10.0.0.1") == 0
        throttle.failed("ada", "10.0.0.1")
    assert throttle.retry_after("ada", "10.0.0.1") == 1.0
    assert throttle.retry_after("ADA ", "10.0.0.2") == 1.0  # same user name, any address
    assert throttle.retry_after("bo", "10.0.0.1") == 0  # the address is still far from its limit
    clock.now += 1.0
    assert throttle.retry_after("ada", "10.0.0.1") == 0  # not locked: one second later she may try
    throttle.failed("ada", "10.0.0.1")
    assert throttle.retry_after("ada", "10.0.0.1") == 2.0
    for _ in range(20):
        clock.now += 60
        throttle.failed("ada", "10.0.0.1")
    assert throttle.retry_after("ada") == 60.0  # capped
    throttle.succeeded("ada")
    assert throttle.retry_after("ada") == 0


def test_counts_are_forgotten_after_the_window() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock, window_s=900)
    for _ in range(8):
        throttle.failed("ada")
    clock.now += 901
    assert throttle.retry_after("ada") == 0


def test_a_spray_over_many_user_names_from_one_address_is_slowed() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    names = [f"user{i}" for i in range(40)]
    for name in names[:20]:
        assert throttle.retry_after(name, "203.0.113.9") == 0
        throttle.failed(name, "203.0.113.9")
    assert throttle.retry_after(names[20], "203.0.113.9") == 1.0
    for name in names[20:]:
        clock.now += throttle.retry_after(name, "203.0.113.9")
        throttle.failed(name, "203.0.113.9")
    assert throttle.retry_after("anyone", "203.0.113.9") == 300.0
    assert throttle.retry_after("anyone", "198.51.100.1") == 0  # other addresses are not slowed
    throttle.succeeded("user0", "203.0.113.9")  # a valid login does not launder the address
    assert throttle.retry_after("anyone", "203.0.113.9") == 300.0


def test_memory_is_bounded() -> None:
    throttle = LoginThrottle(max_keys=100)
    for i in range(1000):
        throttle.failed(f"user{i}", f"10.0.{i // 250}.{i % 250}")
    assert len(throttle._failures) <= 100


@pytest.fixture
def fast_clock(web_env: WebEnv):
    clock = Clock()
    previous = web_env.client.app.state.login_throttle
    web_env.client.app.state.login_throttle = LoginThrottle(clock=clock, address=Backoff(20, 1.0, 300.0))
    yield clock
    web_env.client.app.state.login_throttle = previous


def _login(client: TestClient, username: str, password: str):
    token = csrf_from(client.get("/login").text)
    return client.post("/login", data={"username": username, "password": password, "csrf_token": token},
                       follow_redirects=False)


def test_the_real_user_gets_in_after_a_short_wait_not_a_lockout(web_env: WebEnv, fast_clock: Clock) -> None:
    add_user(web_env.settings, "uma", "viewer")
    client = TestClient(web_env.client.app)
    for _ in range(5):
        assert _login(client, "uma", "wrong password").status_code == 401
    refused = _login(client, "uma", PASSWORD)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1" and "try again in 1 s" in refused.text
    fast_clock.now += 1.0
    assert _login(client, "uma", PASSWORD).status_code == 303


def test_a_spray_from_one_address_gets_429(web_env: WebEnv, fast_clock: Clock) -> None:
    client = TestClient(web_env.client.app)
    answers = [_login(client, f"sprayed{i}", "Winter2026!").status_code for i in range(21)]
    assert answers[:20] == [401] * 20 and answers[20] == 429
