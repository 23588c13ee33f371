"""Cost from recorded usage and the dated pricing catalog: per document, per 1,000 documents,
monthly at the configured volumes against the budget, and the break-even volume between paying
per token and paying for always-on instances (SageMaker, own GPUs)."""

from __future__ import annotations

import math

import pytest
from migbench.cost import (
    HOURS_PER_MONTH,
    break_even_docs_per_day,
    load_pricing,
    page_price,
    run_cost,
    token_cost,
    token_price,
)

pytestmark = pytest.mark.migbench


@pytest.fixture(scope="module")
def pricing():
    return load_pricing()


@pytest.fixture(scope="module")
def cost(migbench_analysis, migbench_state):
    c = migbench_analysis.cost  # computed once, with the gates, by migbench.analysis
    migbench_state.extras["cost"] = {"basis": c.basis, "price_key": c.price_key, "per_doc_usd": c.per_doc,
                                     "per_1000_usd": c.per_1000, "docs_per_hour": c.docs_per_hour, "note": c.note,
                                     "price_verified": (c.price or {}).get("verified"),
                                     "price_as_of": (c.price or {}).get("as_of")}
    return c


def test_usage_recorded_for_every_document(migbench_run, cost, pricing):
    """The numbers come from recorded usage: token backends recorded tokens (and their cost) for
    every completed document; hour-priced backends recorded the run time the rate derives from."""
    _, run, rows = migbench_run
    ok = [r for r in rows if r.status == "ok"]
    if cost.basis == "token":
        price = token_price(pricing, cost.price_key)
        assert price is not None, f"{run.backend}: {cost.note}"
        missing = [r.doc_id for r in ok if not r.response.input_tokens or r.response.output_tokens is None]
        assert not missing, f"{run.backend}: no token usage recorded for {len(missing)} documents: {missing[:5]}"
        drift = [r.doc_id for r in ok if r.response.cost_usd is None or not math.isclose(
            r.response.cost_usd, token_cost(price, r.response.input_tokens, r.response.output_tokens),
            rel_tol=1e-9, abs_tol=1e-12)]
        assert not drift, (f"{run.backend}: stored cost differs from recorded tokens x {cost.price_key} price "
                           f"(as of {price.as_of}) for {drift[:5]}: pricing.yaml changed since the run?")
        assert cost.per_doc is not None and cost.per_doc > 0
    elif cost.basis == "page":
        price = page_price(pricing, cost.price_key)
        missing = [r.doc_id for r in ok if not r.response.extra.get("billed_pages")]
        assert not missing, f"{run.backend}: no billed pages recorded for {len(missing)} documents: {missing[:5]}"
        drift = [r.doc_id for r in ok if r.response.cost_usd is None or not math.isclose(
            r.response.cost_usd, r.response.extra["billed_pages"] * price.per_page, rel_tol=1e-9)]
        assert not drift, f"{run.backend}: stored cost differs from billed pages x {cost.price_key} price: {drift[:5]}"
    elif cost.basis == "hourly":
        assert (run.wall_s or 0) > 0, f"{run.backend}: run time not recorded: hourly cost cannot be derived"
        if cost.docs_per_hour is not None:
            assert math.isclose(cost.docs_per_hour, len(ok) / (run.wall_s / 3600), rel_tol=1e-9)
    else:
        assert run.family == "ocr", f"{run.backend}: no price in pricing.yaml for a {run.family} backend"
        assert cost.per_doc == 0.0


def test_cost_per_document(migbench_backend, cost, migbench_check):
    migbench_check("cost_per_doc", migbench_backend)


def test_monthly_cost(migbench_volume, migbench_state, cost, migbench_check):
    migbench_check("cost_per_month", f"{migbench_state.backend}/{migbench_volume}-per-day")


def test_break_even_against_hosting(migbench_baseline, migbench_state, cost, pricing):
    """Volume per day above which one always-on instance beats paying per token, from two measured
    runs (this one and --baseline) priced on different bases. At that volume both cost the same."""
    if migbench_baseline is None:
        pytest.skip("break-even needs a second run priced per hour or per token: pass --baseline")
    base_run, base_rows = migbench_baseline
    other = run_cost(base_run, base_rows, pricing)
    pair = {c.basis: c for c in (cost, other)}
    if set(pair) != {"token", "hourly"}:
        pytest.skip(f"break-even needs one token-priced and one hour-priced run, got {cost.basis} and {other.basis}")
    token, hourly = pair["token"], pair["hourly"]
    if hourly.per_doc is None or token.per_doc is None:
        pytest.skip(f"not priced: {hourly.note if hourly.per_doc is None else token.note}")
    volume = break_even_docs_per_day(token.per_doc, hourly)
    migbench_state.extras["break_even_docs_per_day"] = volume
    capacity = hourly.docs_per_hour * 24
    if volume is None:
        # one instance cannot serve the volume at which it would pay off: per token stays cheaper
        assert token.monthly(capacity) < hourly.monthly(capacity)
        return
    assert 0 < volume <= capacity
    assert math.isclose(token.monthly(volume), hourly.price["per_hour"] * HOURS_PER_MONTH, rel_tol=1e-9)
