"""Login throttling: after ``max_failures`` wrong passwords for one username within ``window_s``,
further attempts for that username are refused until the oldest failure leaves the window.
Kept in memory (per server process); a restart forgets it, which argon2's cost makes tolerable."""

from __future__ import annotations

import threading
import time
from collections import deque


class LoginThrottle:
    def __init__(self, max_failures: int = 5, window_s: float = 900.0) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and now - times[0] > self.window_s:
            times.popleft()
        return times

    def retry_after(self, username: str) -> float:
        """Seconds until ``username`` may try again (0 when allowed now)."""
        now = time.monotonic()
        with self._lock:
            times = self._recent(username.lower(), now)
            if len(times) < self.max_failures:
                return 0.0
            return max(0.0, self.window_s - (now - times[0]))

    def failed(self, username: str) -> None:
        with self._lock:
            self._recent(username.lower(), time.monotonic()).append(time.monotonic())

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._failures.pop(username.lower(), None)
