import pytest
from migbench.emulator.protocol import MSG_TOO_MANY_REQUESTS, MSG_TOO_MANY_TOKENS
from migbench.emulator.quota import QuotaBook, SlidingWindowQuota


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_tokens_over_the_window_quota_are_throttled_until_the_window_slides():
    clock = Clock()
    q = SlidingWindowQuota(tokens_per_minute=100, requests_per_minute=None, clock=clock)
    assert not isinstance(q.admit(60), str)
    assert q.admit(50) == MSG_TOO_MANY_TOKENS
    clock.t += 30
    assert q.admit(50) == MSG_TOO_MANY_TOKENS
    clock.t += 30.001
    assert not isinstance(q.admit(50), str)


def test_settling_replaces_the_reservation_with_the_tokens_used():
    q = SlidingWindowQuota(tokens_per_minute=100, requests_per_minute=None, clock=Clock())
    ticket = q.admit(90)
    assert q.admit(20) == MSG_TOO_MANY_TOKENS
    q.settle(ticket, 30)
    assert q.used() == (30, 1)
    assert not isinstance(q.admit(20), str)


def test_requests_per_minute_limit_throttles_with_its_own_message():
    clock = Clock()
    q = SlidingWindowQuota(tokens_per_minute=None, requests_per_minute=2, clock=clock)
    q.admit(1)
    q.admit(1)
    assert q.admit(1) == MSG_TOO_MANY_REQUESTS
    clock.t += 61
    assert not isinstance(q.admit(1), str)


def test_quota_book_keeps_one_quota_per_model():
    book = QuotaBook(lambda m: (10, None) if m == "small" else (None, None), clock=Clock())
    assert book.for_model("small") is book.for_model("small")
    assert book.for_model("small").tokens_per_minute == 10
    assert book.for_model("big").tokens_per_minute is None


def test_window_must_be_positive():
    with pytest.raises(ValueError):
        SlidingWindowQuota(1, 1, window_s=0)
