"""The one retry loop. Backends classify errors; this acts on the class.

Throttling and transient errors are retried with full-jitter exponential backoff (honouring a
server's retry-after hint, capped), timeouts a bounded number of times, and permanent or
residency errors never. Every attempt is counted so latency and cost figures include the
retries, and every request an attempt sent or was refused is recorded in the audit sink here,
stamped with its document and attempt number (backends only report what they sent).

Throttling is not a verdict on the document: a throttled attempt does not count against
max_attempts (the limiter slows admissions meanwhile), so a throttled document waits its turn.

Every document has an overall deadline: no retry starts once the next wait would cross it, so a
server's hints or an endless run of throttling end as a classified failure, never as a stalled run.
The deadline is the only thing that ends a throttled document.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from migbench.contracts import RETRYABLE, AuditSink, Backend, BackendError, ErrorClass, Request, Response
from migbench.ratelimit import RateLimiter
from migbench.redact import scrub
from migbench.tokens import estimate_request_tokens


class Interrupted(Exception):
    """The run was asked to stop while this document was waiting; it was not completed."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6  # calls that were not throttled, the first included (throttled ones are free)
    max_timeouts: int = 2  # a model that times out twice will usually time out again
    base_s: float = 1.0
    cap_s: float = 30.0
    # A server's Retry-After is a hint, not a command: `Retry-After: 100000` or `inf` must not park
    # a document for a day (or overflow the sleep).
    max_retry_after_s: float = 60.0
    # Wall time one document may spend across its attempts and waits; a retry whose wait would end
    # past it is not started. The attempt itself is bounded by the backend (e.g. attempt_timeout).
    document_deadline_s: float = 1800.0

    def __post_init__(self) -> None:
        for name in ("base_s", "cap_s", "max_retry_after_s", "document_deadline_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"retry policy {name} must be a finite number >= 0, got {value!r}")
        if self.max_attempts < 1 or self.max_timeouts < 1:
            raise ValueError("retry policy max_attempts and max_timeouts must be at least 1")

    def backoff(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0, min(self.cap_s, self.base_s * 2 ** min(attempt - 1, 62)))

    def wait_for(self, attempt: int, hint: float | None, rng: random.Random) -> float:
        """Seconds before the next attempt: the backoff, or the server's hint when longer, capped."""
        wait = self.backoff(attempt, rng)
        if hint is not None and not math.isnan(hint):
            wait = max(wait, min(max(hint, 0.0), self.max_retry_after_s))
        return wait


def estimate_tokens(backend: Backend, request: Request) -> float:
    """What the quota will be charged at admission: input estimate plus max output tokens.

    Bedrock reserves input + max_tokens when a request starts and settles to the actual
    usage when it ends; the client-side ledger mirrors that.
    """
    if request.estimated_input_tokens is None:
        try:
            estimate = backend.estimate_input_tokens(request)
            request.estimated_input_tokens = (estimate if estimate is not None else
                                              estimate_request_tokens(request.prompt, request.system, request.page_sizes()))
        except Exception:  # noqa: BLE001 - an estimate must never fail a document; the call will say why
            request.estimated_input_tokens = 1000 * max(1, len(request.page_sizes()))
    return request.estimated_input_tokens + request.params.max_tokens


def record_sent(audit: AuditSink | None, resp: Response | None, request: Request, attempt: int) -> None:
    """Move an attempt's audit facts to the sink, stamped with the document and attempt number."""
    if resp is None or not resp.sent:
        return
    entries, resp.sent = resp.sent, []
    if audit is None:
        return
    for entry in entries:
        entry.doc_id = entry.doc_id or request.doc_id
        entry.attempt = attempt
        audit.record_audit(entry)


def call_with_retry(backend: Backend, request: Request, policy: RetryPolicy = RetryPolicy(), *,
                    limiter: RateLimiter | None = None, stop: threading.Event | None = None,
                    rng: random.Random | None = None, audit: AuditSink | None = None,
                    clock: Callable[[], float] = time.perf_counter) -> Response:
    rng = rng or random.Random()
    attempts = throttled = timeouts = 0
    waited = 0.0
    started = clock()
    while True:
        if stop is not None and stop.is_set():
            raise Interrupted(request.doc_id)
        attempts += 1
        reservation = None
        if limiter is not None:
            reservation = limiter.acquire(estimate_tokens(backend, request), stop)
            if reservation is None:
                raise Interrupted(request.doc_id)
        t0 = clock()
        try:
            resp = backend.generate(request)
        except Exception as exc:  # noqa: BLE001 - every failure must be classified, none may escape
            elapsed = clock() - t0
            cls = backend.classify(exc)
            partial = exc.response if isinstance(exc, BackendError) and exc.response else None
            record_sent(audit, partial, request, attempts)
            if limiter is not None:
                limiter.settle(reservation, (partial.input_tokens or 0) if partial else 0)
                if cls is ErrorClass.THROTTLING:
                    limiter.on_throttle()
            is_throttle = cls is ErrorClass.THROTTLING
            throttled += is_throttle
            timeouts += cls is ErrorClass.TIMEOUT
            retry = cls in RETRYABLE and (is_throttle or attempts - throttled < policy.max_attempts) and not (
                cls is ErrorClass.TIMEOUT and timeouts >= policy.max_timeouts)
            note = ""
            if retry:
                hint = exc.retry_after_s if isinstance(exc, BackendError) else None
                # Backoff grows with this kind of failure only: throttles with throttles, others apart.
                wait = policy.wait_for(throttled if is_throttle else attempts - throttled, hint, rng)
                if clock() - started + wait > policy.document_deadline_s:
                    retry = False
                    note = f" (not retried: past the document deadline of {policy.document_deadline_s:g}s)"
            if retry:
                waited += wait
                if stop is not None:
                    if stop.wait(wait):
                        raise Interrupted(request.doc_id) from None
                else:
                    time.sleep(wait)
                continue
            failed = partial or Response()
            failed.error_class = cls
            failed.error = scrub(f"{type(exc).__name__}: {exc}{note}")[:2000]
            failed.attempts, failed.throttled, failed.retry_wait_s = attempts, throttled, waited
            if failed.latency_s is None:
                failed.latency_s = elapsed
            return failed
        record_sent(audit, resp, request, attempts)
        if resp.latency_s is None:
            resp.latency_s = clock() - t0
        if limiter is not None:
            actual = (resp.input_tokens or 0) + (resp.output_tokens or 0)
            limiter.settle(reservation, actual if actual else None)
            limiter.on_success()
        resp.attempts, resp.throttled, resp.retry_wait_s = attempts, throttled, waited
        return resp
