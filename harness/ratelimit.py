"""Client-side rate limiting on tokens per minute and requests per minute.

Bedrock quotas are counted over a rolling minute (input + output tokens), so the limiter keeps
the same ledger: a request is admitted when the last 60 s plus its estimate fit under the
quota x utilisation. Estimates are settled with the actual usage once the response is back.
On throttling the admitted rate drops multiplicatively and recovers additively after successes,
so a quota that is smaller than configured (or shared with someone else) is found, not fought.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable


@dataclass
class Reservation:
    t: float
    tokens: float


class RateLimiter:
    def __init__(self, tokens_per_min: float | None = None, requests_per_min: float | None = None,
                 utilisation: float = 0.95, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, min_factor: float = 0.2):
        self.tpm, self.rpm = tokens_per_min, requests_per_min
        self.utilisation, self.window = utilisation, window_s
        self.clock = clock
        self.factor = 1.0  # adaptive share of the configured quota
        self.min_factor = min_factor
        self._ledger: deque[Reservation] = deque()
        self._cond = threading.Condition()
        self.throttle_events = 0
        self.waited_s = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.tpm or self.rpm)

    def _trim(self, now: float) -> None:
        while self._ledger and self._ledger[0].t <= now - self.window:
            self._ledger.popleft()

    def _wait_needed(self, now: float, tokens: float) -> float:
        self._trim(now)
        waits = [0.0]
        if self.rpm:
            cap = max(1.0, self.rpm * self.utilisation * self.factor)
            if len(self._ledger) + 1 > cap:
                excess = int(len(self._ledger) + 1 - cap)
                waits.append(self._ledger[min(excess, len(self._ledger)) - 1].t + self.window - now)
        if self.tpm:
            cap = self.tpm * self.utilisation * self.factor
            used = sum(r.tokens for r in self._ledger)
            # A request bigger than the whole budget is admitted alone rather than never.
            if used + tokens > cap and self._ledger:
                need = used + tokens - cap
                freed = 0.0
                for r in self._ledger:
                    freed += r.tokens
                    if freed >= need:
                        waits.append(r.t + self.window - now)
                        break
        return max(waits)

    def acquire(self, tokens: float, stop: threading.Event | None = None) -> Reservation | None:
        """Block until the request fits; None if stopped while waiting."""
        if not self.enabled:
            return Reservation(self.clock(), tokens)
        with self._cond:
            while True:
                now = self.clock()
                wait = self._wait_needed(now, tokens)
                if wait <= 0:
                    res = Reservation(now, tokens)
                    self._ledger.append(res)
                    return res
                if stop is not None and stop.is_set():
                    return None
                self.waited_s += wait
                self._cond.wait(timeout=min(wait, 0.5))

    def settle(self, res: Reservation | None, actual_tokens: float | None) -> None:
        if res is None or actual_tokens is None:
            return
        with self._cond:
            res.tokens = actual_tokens
            self._cond.notify_all()

    def on_throttle(self) -> None:
        with self._cond:
            self.throttle_events += 1
            self.factor = max(self.min_factor, self.factor * 0.7)

    def on_success(self) -> None:
        if self.factor < 1.0:
            with self._cond:
                self.factor = min(1.0, self.factor + 0.02)
