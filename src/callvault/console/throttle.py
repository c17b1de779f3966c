"""Console sign-in throttling per source address: after `max_failures` refused API keys within
`window_secs`, the address gets 429 until the oldest failure leaves the window.

In memory, per process: behind N processes an address gets up to N x `max_failures` tries per
window, still nowhere near what guessing a 256-bit key would need; its point is to stop a
flood of tries, not to count exactly. At most `max_addresses` are remembered (oldest out), so
memory stays bounded whatever addresses are tried. The address is the client's as uvicorn
sees it: behind a proxy, set `--forwarded-allow-ips` so that it is the visitor's, not the
proxy's (docs/security.md).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

MAX_FAILURES = 10
WINDOW_SECS = 300.0
MAX_ADDRESSES = 10_000


class LoginThrottle:
    def __init__(
        self,
        max_failures: int = MAX_FAILURES,
        window_secs: float = WINDOW_SECS,
        max_addresses: int = MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_secs = window_secs
        self.max_addresses = max_addresses
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, address: str) -> deque[float]:
        failures = self._failures.get(address)
        if failures is None:
            return deque()
        horizon = self._clock() - self.window_secs
        while failures and failures[0] <= horizon:
            failures.popleft()
        if not failures:
            del self._failures[address]
        return failures

    def retry_after(self, address: str) -> int | None:
        """Seconds until `address` may try again, or None when it may try now."""
        failures = self._recent(address)
        if len(failures) < self.max_failures:
            return None
        return max(1, math.ceil(failures[0] + self.window_secs - self._clock()))

    def failed(self, address: str) -> None:
        failures = self._failures.setdefault(address, deque())
        failures.append(self._clock())
        self._failures.move_to_end(address)
        while len(failures) > self.max_failures:
            failures.popleft()
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)
