from collections import Counter

import pytest
from migbench.emulator.faults import FaultInjector, FaultPlan, fault_error


def test_script_is_consumed_once_in_order_before_the_rates():
    inj = FaultInjector(FaultPlan(script=["throttle", "ok", "reset"]))
    assert [inj.next_fault() for _ in range(5)] == ["throttle", "ok", "reset", "ok", "ok"]


def test_rates_are_drawn_reproducibly_from_the_seed():
    plan = FaultPlan(rates={"throttle": 0.3, "unavailable": 0.1}, seed=7)
    seq = [[inj.next_fault() for _ in range(2000)] for inj in (FaultInjector(plan), FaultInjector(plan))]
    assert seq[0] == seq[1]
    counts = Counter(seq[0])
    assert 0.25 < counts["throttle"] / 2000 < 0.35
    assert 0.07 < counts["unavailable"] / 2000 < 0.13


@pytest.mark.parametrize("plan", [{"rates": {"boom": 0.1}}, {"script": ["nope"]},
                                  {"rates": {"throttle": 0.7, "internal": 0.5}}, {"rates": {"throttle": -0.1}}])
def test_bad_plans_are_refused(plan):
    with pytest.raises(ValueError):
        FaultPlan(**plan)


def test_fault_errors_carry_the_service_status():
    assert (fault_error("model_timeout").code, fault_error("model_timeout").status) == ("ModelTimeoutException", 408)
    assert fault_error("model_not_ready").status == 429
    assert fault_error("unavailable").status == 503


def test_body_and_echo_faults_are_known_kinds_and_trickle_must_be_non_negative():
    from migbench.emulator.faults import FAULT_KINDS

    for kind in ("empty_body", "html_body", "truncated_body", "no_output", "trickle", "echo_token"):
        assert kind in FAULT_KINDS
        FaultPlan(script=[kind])
    with pytest.raises(ValueError):
        FaultPlan(trickle_s=-1)
