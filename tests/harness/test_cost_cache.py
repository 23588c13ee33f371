"""Prompt caching in the cost model: cache reads and writes at their own prices, and what they saved."""

import math

import pytest
from migbench.contracts import DocResult, Response, RunRecord
from migbench.cost import cache_saving, document_cost, load_pricing, run_cost, token_cost, token_price

NOVA = "amazon.nova-pro-v1:0"
SONNET = "au.anthropic.claude-sonnet-4-5-20250929-v1:0"


@pytest.fixture(scope="module")
def pricing():
    return load_pricing()


def test_cache_tokens_are_billed_at_their_own_prices_and_the_rest_at_the_input_price(pricing):
    p = token_price(pricing, NOVA)
    cost = token_cost(p, 100, 50, cache_read=1000, cache_write=2000)
    assert cost == pytest.approx(0.1 * p.input_per_1k + 0.05 * p.output_per_1k
                                 + 1.0 * p.cache_read_per_1k + 2.0 * p.cache_write_per_1k)
    assert p.cache_read_per_1k < p.input_per_1k  # reads are discounted


def test_a_profile_scales_its_models_cache_prices_by_its_uplift(pricing):
    prof, base = token_price(pricing, SONNET), token_price(pricing, SONNET.removeprefix("au."))
    uplift = pricing.profiles[SONNET].uplift
    assert prof.cache_read_per_1k == pytest.approx(base.cache_read_per_1k * uplift)
    assert prof.cache_write_per_1k == pytest.approx(base.cache_write_per_1k * uplift)


def test_cache_tokens_without_a_catalogued_cache_price_leave_the_answer_unpriced(pricing):
    p = token_price(pricing, "amazon.nova-2-lite-v1:0")
    assert p.cache_read_per_1k is None
    assert token_cost(p, 100, 50) is not None
    assert token_cost(p, 100, 50, cache_read=10) is None  # never priced as plain input
    assert token_cost(p, 100, 50, cache_read=0, cache_write=0) == token_cost(p, 100, 50)


def test_the_saving_is_the_input_price_of_the_cached_tokens_minus_their_cache_price(pricing):
    p = token_price(pricing, SONNET)
    assert cache_saving(p, 1000, 0) == pytest.approx(p.input_per_1k - p.cache_read_per_1k)
    # a Claude cache write costs more than plain input: a write-only run saved a negative amount
    assert cache_saving(p, 0, 1000) == pytest.approx(p.input_per_1k - p.cache_write_per_1k) and \
        cache_saving(p, 0, 1000) < 0


def test_a_documents_stored_cost_includes_its_cache_tokens(pricing):
    resp = Response(input_tokens=100, output_tokens=50, cache_read_tokens=900, cache_write_tokens=0)
    p = token_price(pricing, NOVA)
    assert document_cost(pricing, NOVA, resp) == pytest.approx(token_cost(p, 100, 50) + 0.9 * p.cache_read_per_1k)


def test_run_cost_sums_cache_tokens_and_their_saving_over_every_billed_answer(pricing):
    p = token_price(pricing, NOVA)

    def doc(i, read, write, status="ok"):
        r = Response(input_tokens=100, output_tokens=50, cache_read_tokens=read, cache_write_tokens=write)
        r.cost_usd = document_cost(pricing, NOVA, r)
        return DocResult(f"d{i}", "invoice", "clean", status, r, doc_f1=1.0 if status == "ok" else None)

    docs = [doc(0, 0, 900), doc(1, 900, 0), doc(2, 900, 0), doc(3, 900, 0, status="failed"), doc(4, None, None)]
    rc = run_cost(RunRecord("r", "nova-pro", "bedrock", NOVA), docs, pricing)
    assert rc.cache is not None
    assert (rc.cache.documents, rc.cache.read_tokens, rc.cache.write_tokens) == (4, 2700, 900)
    assert rc.cache.hit_rate == pytest.approx(0.75)
    assert rc.cache.saving_usd == pytest.approx(2.7 * (p.input_per_1k - p.cache_read_per_1k))
    assert rc.cache.verified is False
    assert rc.per_doc == pytest.approx(math.fsum(d.response.cost_usd for d in docs) / 4)


def test_a_run_without_cache_tokens_has_no_cache_summary(pricing):
    r = Response(input_tokens=100, output_tokens=50)
    r.cost_usd = document_cost(pricing, NOVA, r)
    rc = run_cost(RunRecord("r", "nova-pro", "bedrock", NOVA), [DocResult("d", "invoice", "clean", "ok", r)], pricing)
    assert rc.cache is None and rc.per_doc is not None


def test_a_run_left_unpriced_by_cache_tokens_says_so(pricing):
    model = "amazon.nova-2-lite-v1:0"  # priced per token, no cache prices in the catalog
    r = Response(input_tokens=100, output_tokens=50, cache_read_tokens=900)
    r.cost_usd = document_cost(pricing, model, r)
    assert r.cost_usd is None
    rc = run_cost(RunRecord("r", "nova-2-lite", "bedrock", model), [DocResult("d", "invoice", "clean", "ok", r)],
                  pricing)
    assert rc.per_doc is None and "no cache price in pricing.yaml" in rc.note
