"""Client-side rate limiting on tokens per minute and requests per minute.

Bedrock quotas are counted over a rolling minute (input + output tokens), so the limiter keeps
the same ledger: a request is admitted when the last 60 s plus its estimate fit under the
quota x utilisation. Estimates are settled with the actual usage once the response is back.
Admissions are also paced (GCRA, a token bucket whose burst is a small share of the window), so
a run does not spend a whole minute's quota in its first seconds and then stall: throughput is
steady at the quota from the start, and the service sees no bursts.
On throttling the admitted rate drops multiplicatively and recovers additively after successes,
so a quota that is smaller than configured (or shared with someone else) is found, not fought.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Reservation:
    t: float
    tokens: float


class RateLimiter:
    def __init__(self, tokens_per_min: float | None = None, requests_per_min: float | None = None,
                 utilisation: float = 0.95, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, min_factor: float = 0.2, burst: float = 0.1):
        self.tpm, self.rpm = tokens_per_min, requests_per_min
        self.utilisation, self.window = utilisation, window_s
        self.burst = burst  # share of a window's budget that may go out at once
        self._tat = {"tokens": None, "requests": None}  # GCRA theoretical arrival times
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

    def _pace(self, kind: str, amount: float, budget: float, now: float) -> tuple[float, float]:
        """GCRA: (wait, new theoretical arrival time) for `amount` out of `budget` per window."""
        rate = budget / self.window
        tat = self._tat[kind] if self._tat[kind] is not None else now
        tau = self.burst * self.window
        start = max(tat, now)
        wait = (tat - tau) - now
        return max(0.0, wait), start + amount / rate

    def _wait_needed(self, now: float, tokens: float) -> float:
        self._trim(now)
        waits = [0.0]
        if self.tpm:
            waits.append(self._pace("tokens", tokens, self.tpm * self.utilisation * self.factor, now)[0])
        if self.rpm:
            waits.append(self._pace("requests", 1, max(1.0, self.rpm * self.utilisation * self.factor), now)[0])
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
                    if self.tpm:
                        self._tat["tokens"] = self._pace("tokens", tokens, self.tpm * self.utilisation * self.factor,
                                                         now)[1]
                    if self.rpm:
                        self._tat["requests"] = self._pace(
                            "requests", 1, max(1.0, self.rpm * self.utilisation * self.factor), now)[1]
                    return res
                if stop is not None and stop.is_set():
                    return None
                self.waited_s += wait
                self._cond.wait(timeout=min(wait, 0.5))

    def settle(self, res: Reservation | None, actual_tokens: float | None) -> None:
        if res is None or actual_tokens is None:
            return
        with self._cond:
            # Give back (or charge) the difference between the estimate and the actual usage.
            if self.tpm and self._tat["tokens"] is not None:
                rate = self.tpm * self.utilisation * self.factor / self.window
                self._tat["tokens"] += (actual_tokens - res.tokens) / rate
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
