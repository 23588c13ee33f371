"""Client-side rate limiting on tokens per minute and requests per minute.

Bedrock quotas are counted over a rolling minute (input + output tokens), so the limiter keeps
the same ledger: a request is admitted when the last 60 s plus its estimate fit under the
quota x utilisation. Estimates are settled with the actual usage once the response is back.
Admissions are also paced (GCRA, a token bucket whose burst is a small share of the window), so
a run does not spend a whole minute's quota in its first seconds and then stall: throughput is
steady at the quota from the start, and the service sees no bursts.
On throttling the admitted rate drops multiplicatively and recovers additively after successes,
so a quota that is smaller than configured (or shared with someone else) is found, not fought.

With no quota at all (none given, none read at preflight) the limiter still runs: it admits freely
until the service first throttles, then paces requests at 85% of the rate the service had been
serving (successes over the last window: what the quota lets through) and probes upwards again (AIMD). The run settles just under the service's ceiling and throttling slows
admissions instead of failing documents. `seed()` gives it a starting quota (e.g. read from the
provider's quota service at preflight) without overriding one the user gave.
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
        # Unknown quota: requests per window learned from throttling (None: nothing learned yet).
        self.learned_rpm: float | None = None
        self.increase = 0.1  # requests per window added per success: about +10% of the rate per window
        self.min_learned = 1.0
        self._last_cut = float("-inf")
        self._first_admit: float | None = None
        self._served: deque[float] = deque()  # success times over the last window (unknown quota)
        self.cut = 0.85

    def seed(self, tokens_per_min: float | None = None, requests_per_min: float | None = None) -> None:
        """Start from a known quota (e.g. the account's, read at preflight); a quota already given wins."""
        with self._cond:
            if tokens_per_min and not self.tpm:
                self.tpm = float(tokens_per_min)
            if requests_per_min and not self.rpm:
                self.rpm = float(requests_per_min)
            self._cond.notify_all()

    def _rpm_budget(self) -> float | None:
        """Requests admitted per window: the configured quota (adapted), else what throttling taught."""
        if self.rpm:
            return max(1.0, self.rpm * self.utilisation * self.factor)
        return self.learned_rpm

    @property
    def enabled(self) -> bool:
        """Whether admissions are limited now (a quota given or seeded, or a rate learned)."""
        return bool(self.tpm or self.rpm or self.learned_rpm)

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
        rpm = self._rpm_budget()
        if rpm:
            waits.append(self._pace("requests", 1, rpm, now)[0])
        if self.rpm:
            # A configured quota is also a hard count per rolling window. A learned rate is only paced:
            # counting the window's earlier admissions against a freshly cut rate would stall the run
            # for a whole window after every cut.
            cap = rpm
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
        with self._cond:
            while True:
                now = self.clock()
                wait = self._wait_needed(now, tokens) if self.enabled else 0.0
                if wait <= 0:
                    # Every admission is kept in the window's ledger, limited or not: the admitted rate
                    # is what a first throttle is measured against.
                    res = Reservation(now, tokens)
                    self._trim(now)  # bounded to one window even while nothing is limited
                    self._ledger.append(res)
                    if self._first_admit is None:
                        self._first_admit = now
                    if self.tpm:
                        self._tat["tokens"] = self._pace("tokens", tokens, self.tpm * self.utilisation * self.factor,
                                                         now)[1]
                    rpm = self._rpm_budget()
                    if rpm:
                        self._tat["requests"] = self._pace("requests", 1, rpm, now)[1]
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

    def admitted_per_window(self, now: float | None = None) -> float:
        """The rate admissions went out at over the last window (requests per window)."""
        now = self.clock() if now is None else now
        self._trim(now)
        if not self._ledger or self._first_admit is None:
            return 0.0
        span = min(self.window, max(now - self._first_admit, 0.005 * self.window))
        return len(self._ledger) / span * self.window

    def served_per_window(self, now: float) -> float:
        """The rate the service answered at over the last window (requests per window)."""
        while self._served and self._served[0] <= now - self.window:
            self._served.popleft()
        if not self._served or self._first_admit is None:
            return 0.0
        span = min(self.window, max(now - self._first_admit, 0.005 * self.window))
        return len(self._served) / span * self.window

    def on_throttle(self) -> None:
        with self._cond:
            self.throttle_events += 1
            if self.tpm or self.rpm:
                self.factor = max(self.min_factor, self.factor * 0.7)
                return
            # Unknown quota: what the service served over the last window is what its quota lets
            # through; pace a little under it. Not compounded: repeated throttles while the service's
            # window drains cut to the same figure. One cut per twentieth of a window: requests already
            # in flight when the service started refusing come back throttled together, one signal.
            now = self.clock()
            if now - self._last_cut < 0.05 * self.window:
                return
            self._last_cut = now
            served = self.served_per_window(now)
            target = self.cut * (served or self.admitted_per_window(now) * 0.5)
            if self.learned_rpm is not None and served == 0:
                target = self.learned_rpm * self.cut
            self.learned_rpm = max(self.min_learned, target if self.learned_rpm is None
                                   else min(self.learned_rpm, target) if served else target)
            # The schedule restarts at the new rate (a schedule booked at the old one would stall).
            self._tat["requests"] = None

    def on_success(self) -> None:
        if self.factor < 1.0:
            with self._cond:
                self.factor = min(1.0, self.factor + 0.02)
        with self._cond:
            if not (self.tpm or self.rpm):
                now = self.clock()
                self._served.append(now)
                while self._served and self._served[0] <= now - self.window:
                    self._served.popleft()
        if self.learned_rpm is not None:
            with self._cond:
                # About +10% of the rate per window, doubling for every window without a throttle: a
                # rate cut too deep (a burst of throttles, a quota raised mid-run) recovers in minutes.
                quiet = (self.clock() - self._last_cut) / self.window
                self.learned_rpm += self.increase * 2 ** min(max(quiet, 0.0), 6.0)
