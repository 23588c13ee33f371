"""Injected failures: random rates and one-shot scripts, drawn per request.

A scripted fault is consumed first (one per request, in order, "ok" meaning answer normally);
once the script is used up faults are drawn at the configured rates from a seeded generator.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from dataclasses import dataclass, field

from migbench.emulator.protocol import ApiError

# fault kind -> (error code, message) for faults that answer with an error.
ERROR_FAULTS: dict[str, tuple[str, str]] = {
    "throttle": ("ThrottlingException", "Too many requests, please wait before trying again."),
    "unavailable": ("ServiceUnavailableException", "Bedrock is unable to process your request."),
    "internal": ("InternalServerException", ("The server encountered an internal error while processing the "
                                            "request.")),
    "model_error": ("ModelErrorException", "The model encountered an error processing your request."),
    "model_not_ready": ("ModelNotReadyException", ("The model is not ready to serve inference requests. "
                                                  "Try again later.")),
    "model_timeout": ("ModelTimeoutException", ("Model has timed out in processing the request. Try your "
                                               "request again.")),
}
# Faults that act on the connection rather than answer: close without a reply / stall.
CONNECTION_FAULTS = ("reset", "slow")
# A 200 that is not a complete answer (what proxies, gateways and broken connections produce):
# no body, an HTML page, a body cut off before its Content-Length, JSON without the API's answer
# key, and a correct body trickled one byte every `trickle_s` seconds.
BODY_FAULTS = ("empty_body", "html_body", "truncated_body", "no_output", "trickle")
# Faults inside a streamed answer (ConverseStream, InvokeModelWithResponseStream): the 200 and the
# first half of the text deltas arrive, then an exception event (its lower-case code is what
# botocore's EventStreamError carries), or, for `stream_cut`, the stream just ends without its stop
# and metadata events. A request that is not streamed answers normally under these faults.
STREAM_FAULTS: dict[str, tuple[str, str] | None] = {
    "stream_throttle": ("throttlingException", "Too many tokens, please wait before trying again."),
    "stream_model_error": ("modelStreamErrorException", "The model stream encountered an error."),
    "stream_unavailable": ("serviceUnavailableException", "Bedrock is unable to process your request."),
    "stream_cut": None,
}
# An error whose message echoes the request's session token (a hostile or careless server).
ECHO_FAULTS = ("echo_token",)
FAULT_KINDS = ("ok", *ERROR_FAULTS, *CONNECTION_FAULTS, *BODY_FAULTS, *ECHO_FAULTS, *STREAM_FAULTS)


@dataclass
class FaultPlan:
    rates: dict[str, float] = field(default_factory=dict)  # kind -> probability per request
    script: list[str] = field(default_factory=list)  # one-shot sequence consumed before the rates
    seed: int | None = 0
    slow_s: float = 5.0  # how long a "slow" request stalls before answering
    trickle_s: float = 1.0  # seconds between the bytes of a "trickle" answer
    retry_after: str | None = None  # Retry-After header value sent with error faults (any text)

    def __post_init__(self) -> None:
        unknown = sorted((set(self.rates) | set(self.script)) - set(FAULT_KINDS))
        if unknown:
            raise ValueError(f"unknown fault kind(s) {unknown}; known: {', '.join(FAULT_KINDS)}")
        bad = {k: v for k, v in self.rates.items() if not 0 <= v <= 1}
        if bad or sum(self.rates.values()) > 1:
            raise ValueError(f"fault rates must each be in [0, 1] and sum to at most 1, got {self.rates}")
        if self.slow_s < 0 or self.trickle_s < 0:
            raise ValueError("slow_s and trickle_s must be >= 0")


class FaultInjector:
    """Thread-safe draw of the fault for the next request."""

    def __init__(self, plan: FaultPlan | None = None):
        self.set_plan(plan or FaultPlan())

    def set_plan(self, plan: FaultPlan) -> None:
        self._lock = threading.Lock()
        self.plan = plan
        self._script = deque(plan.script)
        self._rng = random.Random(plan.seed)

    def next_fault(self) -> str:
        with self._lock:
            if self._script:
                return self._script.popleft()
            r = self._rng.random()
            acc = 0.0
            for kind, rate in self.plan.rates.items():
                acc += rate
                if r < acc:
                    return kind
            return "ok"

    @property
    def pending_script(self) -> int:
        with self._lock:
            return len(self._script)


def fault_error(kind: str) -> ApiError:
    code, message = ERROR_FAULTS[kind]
    return ApiError(code, message)
