from migbench.ratelimit import RateLimiter


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_tokens_per_minute_admits_until_the_rolling_window_is_full():
    clock = FakeClock()
    lim = RateLimiter(tokens_per_min=1000, utilisation=1.0, clock=clock, burst=1.0)
    assert lim._wait_needed(clock(), 400) == 0
    lim.acquire(400)
    lim.acquire(400)
    # 800 used in the window: another 400 must wait until the first reservation leaves it.
    assert lim._wait_needed(clock(), 400) == 60.0
    clock.t = 60.5
    assert lim._wait_needed(clock(), 400) == 0


def test_settle_replaces_the_estimate_with_actual_usage():
    clock = FakeClock()
    lim = RateLimiter(tokens_per_min=1000, utilisation=1.0, clock=clock, burst=1.0)
    res = lim.acquire(900)
    lim.settle(res, 100)
    assert lim._wait_needed(clock(), 800) == 0


def test_requests_per_minute():
    clock = FakeClock()
    lim = RateLimiter(requests_per_min=2, utilisation=1.0, clock=clock, burst=1.0)
    lim.acquire(1)
    clock.t = 10
    lim.acquire(1)
    assert lim._wait_needed(clock(), 1) == 50.0


def test_throttling_shrinks_then_successes_recover():
    lim = RateLimiter(tokens_per_min=1000)
    lim.on_throttle()
    lim.on_throttle()
    low = lim.factor
    assert low < 0.5
    for _ in range(100):
        lim.on_success()
    assert lim.factor == 1.0


def test_a_request_bigger_than_the_quota_still_runs_alone():
    lim = RateLimiter(tokens_per_min=100, utilisation=1.0, clock=FakeClock())
    assert lim._wait_needed(0, 5000) == 0


def test_admissions_are_paced_not_spent_in_one_burst():
    clock = FakeClock()
    lim = RateLimiter(tokens_per_min=6000, utilisation=1.0, clock=clock, burst=0.1)  # 100 tokens/s, 6 s burst
    lim.acquire(600)
    lim.acquire(600)  # both within the burst allowance
    # The window still has 4,800 tokens free, but the schedule is 6 s ahead: pace, don't burst.
    assert lim._wait_needed(clock(), 600) == 6.0
    clock.t = 6.0
    assert lim._wait_needed(clock(), 600) == 0


def test_paced_admissions_over_many_windows_stay_at_the_quota():
    clock = FakeClock()
    lim = RateLimiter(tokens_per_min=60_000, utilisation=1.0, clock=clock)
    admitted = 0.0
    while clock.t < 600:  # ten windows, 500-token requests, as fast as the limiter allows
        wait = lim._wait_needed(clock(), 500)
        if wait > 0:
            clock.t += wait
            continue
        lim.acquire(500)
        admitted += 500
    rate = admitted / clock.t * 60
    assert 0.97 * 60_000 <= rate <= 1.12 * 60_000


def test_settle_gives_back_unused_reservation():
    clock = FakeClock()
    lim = RateLimiter(tokens_per_min=6000, utilisation=1.0, clock=clock, burst=0.1)
    res = lim.acquire(2000)  # estimate: 20 s of budget
    assert lim._wait_needed(clock(), 100) > 0
    lim.settle(res, 100)  # it used only 100
    assert lim._wait_needed(clock(), 100) == 0


def _simulate_unknown_quota(ceiling: int, window: float = 60.0, duration_windows: int = 12, concurrency_rate=2000):
    """A service refusing past `ceiling` requests in any rolling window; a client offering
    `concurrency_rate` requests per window; the limiter knows no quota. Returns (limiter, ok times)."""
    clock = FakeClock()
    lim = RateLimiter(clock=clock, window_s=window)
    served: list[float] = []
    ok: list[float] = []
    throttled: list[float] = []
    step = window / concurrency_rate
    while clock.t < duration_windows * window:
        wait = lim._wait_needed(clock(), 1) if lim.enabled else 0.0
        if wait > 0:
            clock.t += wait
            continue
        lim.acquire(1)
        while served and served[0] <= clock.t - window:
            served.pop(0)
        if len(served) >= ceiling:
            lim.on_throttle()
            throttled.append(clock.t)
        else:
            served.append(clock.t)
            lim.on_success()
            ok.append(clock.t)
        clock.t += step
    return lim, ok, throttled


def test_with_no_quota_given_throttling_teaches_the_limiter_the_ceiling():
    lim, ok, throttled = _simulate_unknown_quota(ceiling=300)
    assert lim.learned_rpm is not None and lim.throttle_events > 0
    # After the first windows the served rate stays close to the ceiling, well under the offered rate.
    late = [t for t in ok if t >= 6 * 60.0]
    rate = len(late) / (6 * 60.0) * 60
    assert 0.8 * 300 <= rate <= 300, rate
    # Past the first windows (a burst into a quota nobody named) throttles are rare: the limiter paces
    # instead of letting the service refuse.
    assert len([t for t in throttled if t >= 2 * 60.0]) < 0.1 * len([t for t in ok if t >= 2 * 60.0])


def test_an_unknown_quota_admits_freely_until_the_first_throttle():
    clock = FakeClock()
    lim = RateLimiter(clock=clock)
    for _ in range(1000):
        lim.acquire(10_000)
    assert not lim.enabled and lim._wait_needed(clock(), 10_000) == 0


def test_a_cut_deeper_than_needed_recovers_within_minutes():
    clock = FakeClock()
    lim = RateLimiter(clock=clock)
    lim.acquire(1)
    clock.t = 1.0
    lim.on_throttle()
    low = lim.learned_rpm
    successes = 0
    while clock.t < 5 * 60:  # five quiet windows at whatever rate is admitted
        wait = lim._wait_needed(clock(), 1)
        clock.t += max(wait, 0.001)
        if wait <= 0:
            lim.acquire(1)
            lim.on_success()
            successes += 1
    assert lim.learned_rpm > 20 * low


def test_seed_starts_from_a_known_quota_without_overriding_the_users():
    lim = RateLimiter()
    lim.seed(tokens_per_min=50_000)
    assert lim.tpm == 50_000 and lim.enabled
    given = RateLimiter(tokens_per_min=1000)
    given.seed(tokens_per_min=50_000, requests_per_min=20)
    assert given.tpm == 1000 and given.rpm == 20
