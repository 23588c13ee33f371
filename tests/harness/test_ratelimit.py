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
