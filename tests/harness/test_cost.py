import datetime as dt

import pytest
import yaml
from migbench.catalog import CatalogError, data_path
from migbench.contracts import DocResult, Response, RunRecord
from migbench.cost import (
    HOURS_PER_MONTH,
    break_even_docs_per_day,
    load_pricing,
    run_cost,
    token_cost,
    token_price,
)

PRO, LITE = "amazon.nova-pro-v1:0", "amazon.nova-lite-v1:0"


@pytest.fixture(scope="module")
def pricing():
    return load_pricing()


def _run(backend, family, model=None, config=None, wall_s=0.0):
    return RunRecord(run_id=f"{backend}-1", backend=backend, family=family, model=model, config=config or {},
                     wall_s=wall_s)


def _docs(n, input_tokens=2000, output_tokens=200, status="ok", price=None):
    """Stored rows as the runner leaves them: the cost priced when the document completed."""
    cost = token_cost(price, input_tokens, output_tokens) if price is not None else None
    return [DocResult(f"{status}{i}", "receipt", "clean", status,
                      Response(input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=cost))
            for i in range(n)]


def test_every_price_carries_its_date_source_and_verification(pricing):
    for p in [*pricing.token.values(), *pricing.profiles.values(), *pricing.hourly.values()]:
        assert isinstance(p.as_of, dt.date) and p.source and isinstance(p.verified, bool)


@pytest.mark.parametrize("edit, error", [
    (lambda d: d["token"][PRO].pop("as_of"), "as_of"),
    (lambda d: d["token"][PRO].update(as_of="last week"), "as_of"),
    (lambda d: d["token"][PRO].pop("verified"), "verified"),
    (lambda d: d["token"][PRO].update(verified=True, source="someone said"), "public page"),
    (lambda d: d["profiles"]["au.amazon.nova-lite-v1:0"].update(model="amazon.nova-nano-v9:0"), "no entry"),
])
def test_a_price_without_date_source_or_checkable_verification_fails_at_load(tmp_path, edit, error):
    raw = yaml.safe_load(data_path("pricing.yaml").read_text(encoding="utf-8"))
    edit(raw)
    path = tmp_path / "pricing.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(CatalogError, match=error):
        load_pricing(str(path))


def test_token_cost_uses_input_and_output_prices(pricing):
    p = pricing.token[PRO]
    assert token_cost(p, 1000, 1000) == pytest.approx(p.input_per_1k + p.output_per_1k)
    assert token_cost(p, None, None) is None


def test_a_profile_bills_as_its_model_times_its_uplift(pricing):
    lite = token_price(pricing, "au.amazon.nova-lite-v1:0")
    assert (lite.input_per_1k, lite.output_per_1k) == (pricing.token[LITE].input_per_1k,
                                                       pricing.token[LITE].output_per_1k)
    sonnet = token_price(pricing, "au.anthropic.claude-sonnet-4-5-20250929-v1:0")
    base = pricing.token["anthropic.claude-sonnet-4-5-20250929-v1:0"]
    assert sonnet.input_per_1k == pytest.approx(base.input_per_1k * 1.1) == pytest.approx(0.0033)
    assert sonnet.verified is False and "not verified" in sonnet.source
    arn = "arn:aws:bedrock:ap-southeast-2:123456789012:inference-profile/au.amazon.nova-lite-v1:0"
    assert token_price(pricing, arn) == lite


def test_an_unknown_model_is_not_priced_never_guessed(pricing):
    # apac. and global. are not au.; a close name is not the same model.
    for model in ("apac.amazon.nova-lite-v1:0", "amazon.nova-premier-v1:0", "nova-pro", None):
        assert token_price(pricing, model) is None
    run = _run("nova-pro", "bedrock", "amazon.nova-premier-v1:0")
    c = run_cost(run, _docs(3, price=pricing.token[PRO]), pricing)
    assert c.basis == "token" and c.per_doc is None and c.note.startswith("not priced")


def test_the_model_called_sets_the_price_not_the_backend_name(pricing, tmp_path):
    """--backend nova-pro --model <nova-lite id>: every document is stored at Lite prices, and the
    run's cost is the sum of what was stored."""
    from migbench.contracts import BackendConfig
    from migbench.datasets import load_dataset
    from migbench.retry import RetryPolicy
    from migbench.runner import Runner, RunOptions
    from migbench.store import RunStore

    from tests.conftest import SYNTH, ScriptedBackend

    class ProNamedLite(ScriptedBackend):
        family = "bedrock"

        def __init__(self, answers):
            super().__init__(answers)
            self.config = BackendConfig(name="nova-pro", model=LITE, options={"concurrency": 1})

    ds = load_dataset(SYNTH)
    backend = ProNamedLite({d.doc_id: d.ground_truth for d in ds.documents})
    assert (backend.name, backend.model_id) == ("nova-pro", LITE)
    with RunStore(tmp_path) as store:
        summary = Runner(backend, ds, store, RunOptions(limit=4, retry=RetryPolicy(max_attempts=1))).run()
        run, docs = store.run(summary.run_id), store.documents(summary.run_id)
    lite, pro = pricing.token[LITE], pricing.token[PRO]
    assert len(docs) == 4
    for d in docs:  # the scripted backend reports 100 input and 20 output tokens
        assert d.response.cost_usd == pytest.approx(token_cost(lite, 100, 20))
        assert d.response.cost_usd < token_cost(pro, 100, 20)
    c = run_cost(run, docs, pricing)
    assert c.price_key == LITE and c.per_doc == pytest.approx(sum(d.response.cost_usd for d in docs) / 4)


def test_run_cost_is_the_sum_of_the_stored_document_costs(pricing):
    run = _run("nova-lite", "bedrock", LITE)
    docs = _docs(10, price=pricing.token[LITE])
    docs[3].response.cost_usd = 0.5  # what was stored wins: the run is never repriced
    c = run_cost(run, docs, pricing)
    assert c.basis == "token" and c.price_key == LITE
    assert c.per_doc == pytest.approx(sum(d.response.cost_usd for d in docs) / 10)
    assert c.per_1000 == pytest.approx(c.per_doc * 1000)
    assert c.monthly(1000) == pytest.approx(c.per_doc * 1000 * 30.4)


def test_a_completed_document_without_a_stored_cost_leaves_the_run_unmeasured(pricing):
    run = _run("nova-lite", "bedrock", LITE)
    docs = _docs(4, price=pricing.token[LITE])
    docs[1].response.cost_usd = None
    c = run_cost(run, docs, pricing)
    assert c.per_doc is None and "1 of 4 completed documents" in c.note


def test_failed_attempts_that_used_tokens_are_paid_by_the_completed_documents(pricing):
    run = _run("nova-pro", "bedrock", PRO)
    p = pricing.token[PRO]
    c = run_cost(run, _docs(4, price=p) + _docs(4, status="failed", price=p), pricing)
    assert c.per_doc == pytest.approx(2 * (2 * p.input_per_1k + 0.2 * p.output_per_1k))


def test_hourly_backend_costs_instance_time_at_the_measured_throughput(pricing):
    run = _run("sagemaker", "sagemaker", config={"instance_type": "ml.g5.2xlarge"}, wall_s=3600.0)
    c = run_cost(run, _docs(720), pricing)  # 720 docs/h
    assert c.basis == "hourly" and c.docs_per_hour == pytest.approx(720)
    assert c.per_doc == pytest.approx(1.52 / 720)
    # Paid while idle: 10 docs/day still costs one always-on instance; 40,000/day needs three.
    assert c.monthly(10) == pytest.approx(1.52 * HOURS_PER_MONTH)
    assert c.monthly(40_000) == pytest.approx(3 * 1.52 * HOURS_PER_MONTH)


def test_own_gpu_is_not_priced_until_given_an_hourly_cost(pricing):
    run = _run("qwen2.5-vl", "local", wall_s=100.0)
    assert run_cost(run, _docs(10), pricing).per_doc is None
    c = run_cost(run, _docs(10), pricing, gpu_hourly=3.6)
    assert c.per_doc == pytest.approx(3.6 / 360)


def test_break_even_between_per_token_and_an_always_on_instance(pricing):
    run = _run("sagemaker", "sagemaker", wall_s=3600.0)
    hourly = run_cost(run, _docs(720), pricing)
    volume = break_even_docs_per_day(0.01, hourly)
    assert volume == pytest.approx(1.52 * HOURS_PER_MONTH / (0.01 * 30.4))
    # Beyond one instance's capacity there is no single break-even point.
    assert break_even_docs_per_day(0.0001, hourly) is None


def test_the_cost_gate_skips_an_unpriced_gpu_and_judges_it_once_given_an_hourly_price(pricing):
    from migbench import gates

    th = gates.load_thresholds()
    run = _run("qwen2.5-vl", "local", wall_s=100.0)
    assert gates.cost_per_doc_gate("qwen2.5-vl", run_cost(run, _docs(10), pricing), th).status == "skip"
    priced = run_cost(run, _docs(10), pricing, gpu_hourly=3.6)
    assert gates.cost_per_doc_gate("qwen2.5-vl", priced, th).status == "pass"


def test_an_unpriced_cloud_model_fails_the_cost_gate_with_the_reason(pricing):
    from migbench import gates

    cost = run_cost(_run("nova-pro", "bedrock", "amazon.nova-premier-v1:0"), _docs(3), pricing)
    g = gates.cost_per_doc_gate("nova-pro", cost, gates.load_thresholds())
    assert g.status == "fail" and "not priced: model amazon.nova-premier-v1:0" in g.message


def test_batch_comparison_prices_the_same_batch_documents_both_ways_and_ignores_on_demand_ones():
    from migbench.contracts import DocResult, Response
    from migbench.cost import batch_comparison

    price = {"factor": 0.5, "as_of": "2026-11-01", "verified": False}

    def doc(i, cost, extra):
        return DocResult(f"d{i}", "receipt", "clean", "ok", Response(cost_usd=cost, extra=extra))

    docs = [doc(1, 0.002, {"batch_job": "arn:j", "on_demand_cost_usd": 0.004, "batch_price": price}),
            doc(2, 0.003, {"batch_job": "arn:j", "on_demand_cost_usd": 0.006, "batch_price": price}),
            doc(3, None, {"batch_job": "arn:j", "on_demand_cost_usd": 0.001}),  # batch price unknown: not priced
            doc(4, 0.01, {})]  # answered on demand: not part of the comparison
    b = batch_comparison(docs)
    assert (b.documents, b.priced, b.factor, b.verified) == (3, 2, 0.5, False)
    assert b.batch_usd == pytest.approx(0.005) and b.on_demand_usd == pytest.approx(0.010)
    assert b.saving_usd == pytest.approx(0.005)
    assert batch_comparison(docs[3:]) is None
