"""Login throttling with growing delays, per user name and per client address.

Each key (a user name, a client address) counts its failed logins. The first ``free``
failures cost nothing; after that each further attempt must wait ``base_s * 2**(n - free)``
seconds after the last failure (n = failures so far), at most ``cap_s``. A key's count is
forgotten ``window_s`` after its last failure; a successful login clears the user name's count
(not the address's, so one valid account cannot launder a spray from the same address).

- per user name: 5 free, then 1, 2, 4 ... s, capped at 60 s. The real user who mistyped
  five times waits a second, not a quarter of an hour, and a guesser gets ~60 tries an hour.
- per address: 20 free, then 1, 2, 4 ... s, capped at 300 s. A spray of one password over
  many user names from one address is slowed to ~12 tries an hour once past 20.

Kept in memory (per server process; at most ``max_keys`` keys, the stalest dropped first);
a restart forgets it, which argon2's cost per attempt makes tolerable.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    free: int
    base_s: float
    cap_s: float

    def delay_s(self, failures: int) -> float:
        """Seconds to wait after the last of ``failures`` failures (0 while within ``free``)."""
        if failures < self.free:
            return 0.0
        return min(self.cap_s, self.base_s * 2.0 ** min(failures - self.free, 30))


USER_BACKOFF = Backoff(free=5, base_s=1.0, cap_s=60.0)
ADDRESS_BACKOFF = Backoff(free=20, base_s=1.0, cap_s=300.0)


class LoginThrottle:
    def __init__(self, *, user: Backoff = USER_BACKOFF, address: Backoff = ADDRESS_BACKOFF,
                 window_s: float = 900.0, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.backoff = {"user": user, "address": address}
        self.window_s = window_s
        self.max_keys = max_keys
        self._clock = clock
        self._failures: dict[tuple[str, str], tuple[int, float]] = {}  # key -> (count, last failure)
        self._lock = threading.Lock()

    @staticmethod
    def _keys(username: str, address: str | None) -> list[tuple[str, str]]:
        keys = [("user", username.strip().lower())]
        if address:
            keys.append(("address", address))
        return keys

    def _count(self, key: tuple[str, str], now: float) -> tuple[int, float]:
        count, last = self._failures.get(key, (0, 0.0))
        if count and now - last > self.window_s:
            self._failures.pop(key, None)
            return 0, 0.0
        return count, last

    def retry_after(self, username: str, address: str | None = None) -> float:
        """Seconds until a login for ``username`` from ``address`` may be tried (0: now)."""
        now = self._clock()
        wait = 0.0
        with self._lock:
            for key in self._keys(username, address):
                count, last = self._count(key, now)
                if count:
                    wait = max(wait, last + self.backoff[key[0]].delay_s(count) - now)
        return max(0.0, wait)

    def failed(self, username: str, address: str | None = None) -> None:
        now = self._clock()
        with self._lock:
            for key in self._keys(username, address):
                count, _last = self._count(key, now)
                self._failures.pop(key, None)  # re-inserted last: the dict stays in staleness order
                self._failures[key] = (count + 1, now)
            while len(self._failures) > self.max_keys:
                self._failures.pop(next(iter(self._failures)))

    def succeeded(self, username: str, address: str | None = None) -> None:
        with self._lock:
            self._failures.pop(("user", username.strip().lower()), None)
