"""Tokens-per-minute and requests-per-minute quotas over a sliding window, per model.

Like Bedrock, a request reserves its input tokens plus its max output tokens when admitted (so
concurrent requests cannot all slip under the limit) and the reservation is corrected to the
tokens actually used when it completes.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from migbench.emulator.protocol import MSG_TOO_MANY_REQUESTS, MSG_TOO_MANY_TOKENS


@dataclass
class _Entry:
    at: float
    tokens: int


class SlidingWindowQuota:
    """One model's quota. `None` limits mean unlimited."""

    def __init__(self, tokens_per_minute: int | None, requests_per_minute: int | None, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        self.tokens_per_minute = tokens_per_minute
        self.requests_per_minute = requests_per_minute
        self.window_s = window_s
        self._clock = clock
        self._entries: deque[_Entry] = deque()
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        while self._entries and self._entries[0].at <= now - self.window_s:
            self._entries.popleft()

    def used(self) -> tuple[int, int]:
        """(tokens, requests) in the current window."""
        with self._lock:
            self._expire(self._clock())
            return sum(e.tokens for e in self._entries), len(self._entries)

    def admit(self, reserve_tokens: int) -> _Entry | str:
        """Reserve tokens for one request. Returns a ticket, or the throttling message."""
        with self._lock:
            now = self._clock()
            self._expire(now)
            if self.requests_per_minute is not None and len(self._entries) >= self.requests_per_minute:
                return MSG_TOO_MANY_REQUESTS
            if self.tokens_per_minute is not None:
                used = sum(e.tokens for e in self._entries)
                # A request larger than the whole quota is never admitted (configure quotas to fit).
                if used + reserve_tokens > self.tokens_per_minute:
                    return MSG_TOO_MANY_TOKENS
            entry = _Entry(now, reserve_tokens)
            self._entries.append(entry)
            return entry

    def settle(self, ticket: _Entry, actual_tokens: int) -> None:
        with self._lock:
            ticket.tokens = actual_tokens


class QuotaBook:
    """Quotas by model id, created on first use from a limits lookup."""

    def __init__(self, limits: Callable[[str], tuple[int | None, int | None]], window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self._limits = limits
        self._window_s = window_s
        self._clock = clock
        self._quotas: dict[str, SlidingWindowQuota] = {}
        self._lock = threading.Lock()

    def for_model(self, model_id: str) -> SlidingWindowQuota:
        with self._lock:
            q = self._quotas.get(model_id)
            if q is None:
                tpm, rpm = self._limits(model_id)
                q = self._quotas[model_id] = SlidingWindowQuota(tpm, rpm, self._window_s, self._clock)
            return q

    def reset(self) -> None:
        with self._lock:
            self._quotas.clear()
