import pytest
from migbench.cost import HOURS_PER_MONTH, break_even_docs_per_day, load_pricing, run_cost, token_cost


@pytest.fixture(scope="module")
def pricing():
    return load_pricing()


def _docs(n, input_tokens=2000, output_tokens=200, status="ok"):
    return [{"status": status, "input_tokens": input_tokens, "output_tokens": output_tokens} for _ in range(n)]


def test_every_price_carries_its_date_source_and_verification(pricing):
    for p in [*pricing.token.values(), *pricing.hourly.values()]:
        assert p.as_of and p.source and isinstance(p.verified, bool)


def test_token_cost_uses_input_and_output_prices(pricing):
    p = pricing.token["nova-pro"]
    assert token_cost(p, 1000, 1000) == pytest.approx(p.input_per_1k + p.output_per_1k)
    assert token_cost(p, None, None) is None


def test_token_backend_cost_per_document_and_month(pricing):
    run = {"backend": "nova-lite", "family": "bedrock", "config": {}}
    c = run_cost(run, _docs(10), pricing)
    p = pricing.token["nova-lite"]
    per_doc = 2 * p.input_per_1k + 0.2 * p.output_per_1k
    assert c.basis == "token" and c.per_doc == pytest.approx(per_doc)
    assert c.per_1000 == pytest.approx(per_doc * 1000)
    assert c.monthly(1000) == pytest.approx(per_doc * 1000 * 30.4)


def test_failed_attempts_that_used_tokens_are_paid_by_the_completed_documents(pricing):
    run = {"backend": "nova-pro", "family": "bedrock", "config": {}}
    c = run_cost(run, _docs(4) + _docs(4, status="failed"), pricing)
    p = pricing.token["nova-pro"]
    assert c.per_doc == pytest.approx(2 * (2 * p.input_per_1k + 0.2 * p.output_per_1k))


def test_hourly_backend_costs_instance_time_at_the_measured_throughput(pricing):
    run = {"backend": "sagemaker", "family": "sagemaker", "config": {"instance_type": "ml.g5.2xlarge"},
           "wall_s": 3600.0}
    c = run_cost(run, _docs(720), pricing)  # 720 docs/h
    assert c.basis == "hourly" and c.docs_per_hour == pytest.approx(720)
    assert c.per_doc == pytest.approx(1.52 / 720)
    # Paid while idle: 10 docs/day still costs one always-on instance; 40,000/day needs three.
    assert c.monthly(10) == pytest.approx(1.52 * HOURS_PER_MONTH)
    assert c.monthly(40_000) == pytest.approx(3 * 1.52 * HOURS_PER_MONTH)


def test_own_gpu_is_not_priced_until_given_an_hourly_cost(pricing):
    run = {"backend": "qwen2.5-vl", "family": "local", "config": {}, "wall_s": 100.0}
    assert run_cost(run, _docs(10), pricing).per_doc is None
    c = run_cost(run, _docs(10), pricing, gpu_hourly=3.6)
    assert c.per_doc == pytest.approx(3.6 / 360)


def test_break_even_between_per_token_and_an_always_on_instance(pricing):
    run = {"backend": "sagemaker", "family": "sagemaker", "config": {}, "wall_s": 3600.0}
    hourly = run_cost(run, _docs(720), pricing)
    volume = break_even_docs_per_day(0.01, hourly)
    assert volume == pytest.approx(1.52 * HOURS_PER_MONTH / (0.01 * 30.4))
    # Beyond one instance's capacity there is no single break-even point.
    assert break_even_docs_per_day(0.0001, hourly) is None


def test_gates_price_a_local_run_with_the_given_gpu_hourly(pricing):
    from migbench.gates import evaluate_run, load_thresholds
    from migbench.schema import load_schema

    run = {"backend": "qwen2.5-vl", "family": "local", "config": {}, "wall_s": 100.0}
    rows = [{**d, "doc_id": str(i), "doc_type": "receipt", "scores": [], "doc_f1": 1.0, "latency_s": 1.0}
            for i, d in enumerate(_docs(10))]
    th, schema = load_thresholds(), load_schema()
    unpriced = [g for g in evaluate_run(run, rows, th, schema, pricing) if g.kind == "cost_per_doc"]
    priced = [g for g in evaluate_run(run, rows, th, schema, pricing, gpu_hourly=3.6) if g.kind == "cost_per_doc"]
    assert unpriced[0].status == "skip" and priced[0].status == "pass"
