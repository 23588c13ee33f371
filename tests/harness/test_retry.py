import random
import time

from migbench.contracts import ErrorClass, Request
from migbench.ratelimit import RateLimiter
from migbench.retry import RetryPolicy, call_with_retry

from tests.conftest import ScriptedBackend

FAST = RetryPolicy(max_attempts=4, max_timeouts=2, base_s=0.001, cap_s=0.002)


def _req(doc="d1"):
    return Request(doc_id=doc, doc_type="receipt", prompt="p")


def test_throttling_and_transient_errors_are_retried_and_counted():
    b = ScriptedBackend({"d1": {"TOTAL_AMOUNT": "$1.00"}},
                        faults={"d1": [ErrorClass.THROTTLING, ErrorClass.TRANSIENT]})
    resp = call_with_retry(b, _req(), FAST, rng=random.Random(0))
    assert resp.ok and resp.attempts == 3 and resp.throttled == 1
    assert "TOTAL_AMOUNT: $1.00" in resp.text


def test_permanent_errors_fail_at_once_with_the_cause():
    b = ScriptedBackend(faults={"d1": [ErrorClass.PERMANENT]})
    resp = call_with_retry(b, _req(), FAST)
    assert resp.error_class is ErrorClass.PERMANENT and resp.attempts == 1
    assert "scripted permanent" in resp.error


def test_residency_refusals_are_never_retried():
    b = ScriptedBackend(faults={"d1": [ErrorClass.RESIDENCY] * 3})
    resp = call_with_retry(b, _req(), FAST)
    assert resp.error_class is ErrorClass.RESIDENCY and b.calls == ["d1"]


def test_timeouts_are_retried_a_bounded_number_of_times():
    b = ScriptedBackend(faults={"d1": [ErrorClass.TIMEOUT] * 5})
    resp = call_with_retry(b, _req(), FAST)
    assert resp.error_class is ErrorClass.TIMEOUT and resp.attempts == FAST.max_timeouts


def test_retries_stop_at_max_attempts():
    b = ScriptedBackend(faults={"d1": [ErrorClass.TRANSIENT] * 10})
    resp = call_with_retry(b, _req(), FAST)
    assert resp.error_class is ErrorClass.TRANSIENT and resp.attempts == FAST.max_attempts == len(b.calls)


def test_throttling_never_uses_up_the_attempts_a_throttled_document_waits_its_turn():
    b = ScriptedBackend({"d1": {"TOTAL_AMOUNT": "$1"}}, faults={"d1": [ErrorClass.THROTTLING] * 10})
    resp = call_with_retry(b, _req(), FAST)
    assert resp.ok and resp.attempts == 11 and resp.throttled == 10


def test_throttles_and_other_failures_are_budgeted_apart():
    faults = [ErrorClass.THROTTLING, ErrorClass.TRANSIENT] * 3 + [ErrorClass.TRANSIENT]
    b = ScriptedBackend({"d1": {"TOTAL_AMOUNT": "$1"}}, faults={"d1": faults})
    resp = call_with_retry(b, _req(), FAST)
    # FAST allows 4 non-throttled calls: the 4th transient failure ends it, the 3 throttles were free.
    assert resp.error_class is ErrorClass.TRANSIENT and resp.attempts == 7 and resp.throttled == 3


def test_only_the_document_deadline_ends_throttling():
    policy = RetryPolicy(max_attempts=2, base_s=0.001, cap_s=0.002, document_deadline_s=0.3)
    b = ScriptedBackend(faults={"d1": [ErrorClass.THROTTLING] * 100_000})
    t0 = time.perf_counter()
    resp = call_with_retry(b, _req(), policy)
    assert resp.error_class is ErrorClass.THROTTLING and "document deadline" in resp.error
    assert resp.attempts > policy.max_attempts and time.perf_counter() - t0 < 5


def test_backoff_is_jittered_and_capped():
    p = RetryPolicy(base_s=1, cap_s=8)
    rng = random.Random(1)
    waits = [p.backoff(a, rng) for a in range(1, 10)]
    assert all(0 <= w <= 8 for w in waits) and len(set(waits)) == len(waits)


def test_throttling_lowers_the_rate_limiter_share():
    lim = RateLimiter(tokens_per_min=1e9)
    b = ScriptedBackend({"d1": {}}, faults={"d1": [ErrorClass.THROTTLING]})
    call_with_retry(b, _req(), FAST, limiter=lim)
    assert lim.throttle_events == 1 and lim.factor < 1.0


def test_the_seed_guides_throttling_import_is_not_how_we_classify():
    # The migration guide does `from botocore.exceptions import ThrottlingException`: it does not exist.
    import botocore.exceptions
    assert not hasattr(botocore.exceptions, "ThrottlingException")


def test_a_failing_token_estimate_never_fails_the_document():
    class BadEstimate(ScriptedBackend):
        def estimate_input_tokens(self, request):
            raise ValueError("cannot estimate")

    lim = RateLimiter(tokens_per_min=1e9)
    resp = call_with_retry(BadEstimate({"d1": {"TOTAL_AMOUNT": "$1"}}), _req(), FAST, limiter=lim)
    assert resp.ok


def test_the_loop_records_what_each_attempt_sent_stamped_with_document_and_attempt():
    from migbench.contracts import AuditEntry, BackendError, MemoryAudit, Response

    class Reporting(ScriptedBackend):
        def generate(self, request):
            fact = AuditEntry("scripted", "svc", "Op", "ap-southeast-2", "h", "m", status=200)
            if len(self.calls) == 0:
                self.calls.append(request.doc_id)
                raise BackendError("busy", ErrorClass.THROTTLING,
                                   response=Response(sent=[AuditEntry("scripted", "svc", "Op", "ap-southeast-2",
                                                                      "h", "m", status=429)]))
            self.calls.append(request.doc_id)
            return Response(text="ok", sent=[fact])

    audit = MemoryAudit()
    resp = call_with_retry(Reporting(), _req("doc-7"), FAST, audit=audit)
    assert resp.ok and resp.sent == []  # moved to the sink, never stored with the result
    assert [(e.doc_id, e.attempt, e.status) for e in audit.entries] == [("doc-7", 1, 429), ("doc-7", 2, 200)]


def test_a_retry_policy_refuses_unbounded_values():
    import math

    import pytest

    for bad in ({"document_deadline_s": math.inf}, {"max_retry_after_s": -1}, {"max_attempts": 0}):
        with pytest.raises(ValueError):
            RetryPolicy(**bad)
