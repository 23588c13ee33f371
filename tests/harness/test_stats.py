import math

import pytest
from migbench.contracts import DocResult, FieldScore, Response
from migbench.stats import (
    aggregate,
    latency_stats,
    mean_ci,
    non_inferiority,
    paired_bootstrap,
    percentile,
    t_quantile,
    wilson_ci,
)


@pytest.mark.parametrize("df, q", [(1, 12.7062), (2, 4.3027), (5, 2.5706), (10, 2.2281), (30, 2.0423), (1000, 1.9623)])
def test_t_quantile_matches_tables(df, q):
    assert t_quantile(0.975, df) == pytest.approx(q, abs=1e-4)
    assert t_quantile(0.025, df) == pytest.approx(-q, abs=1e-4)


def test_mean_ci_worked_example():
    # mean 0.7, sd 0.2, n 3: half width = 4.3027 * 0.2 / sqrt(3)
    mean, lo, hi = mean_ci([0.5, 0.7, 0.9])
    half = 4.302653 * 0.2 / math.sqrt(3)
    assert mean == pytest.approx(0.7)
    assert (lo, hi) == (pytest.approx(0.7 - half, abs=1e-5), pytest.approx(0.7 + half, abs=1e-5))


def test_mean_ci_clips_and_handles_tiny_samples():
    assert mean_ci([]) == (None, None, None)
    assert mean_ci([0.4]) == (0.4, None, None)
    assert mean_ci([1.0, 1.0, 1.0]) == (1.0, 1.0, 1.0)
    _, lo, hi = mean_ci([0.0, 1.0], clip=(0.0, 1.0))
    assert (lo, hi) == (0.0, 1.0)
    with pytest.raises(ValueError):
        mean_ci([1.0, 2.0], level=1.5)


def test_wilson_worked_example_and_bounds():
    p, lo, hi = wilson_ci(5, 10)
    assert p == 0.5
    assert (lo, hi) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    assert wilson_ci(0, 10)[1] == 0.0 and wilson_ci(10, 10)[2] == 1.0
    assert wilson_ci(0, 0) == (None, None, None)
    with pytest.raises(ValueError):
        wilson_ci(11, 10)


def test_paired_bootstrap_is_reproducible_and_brackets_the_difference():
    a = [0.9, 0.8, 0.85, 0.95, 0.7, 0.88, 0.92, 0.81]
    b = [0.7, 0.75, 0.6, 0.9, 0.65, 0.8, 0.85, 0.7]
    diff, lo, hi = paired_bootstrap(a, b, n_boot=2000, seed=1)
    assert diff == pytest.approx(sum(a) / 8 - sum(b) / 8)
    assert 0 < lo < diff < hi
    assert paired_bootstrap(a, b, n_boot=2000, seed=1) == (diff, lo, hi)
    assert paired_bootstrap(a, a) == (0.0, 0.0, 0.0)


def test_paired_bootstrap_rejects_unpaired_input():
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 2.0])
    assert paired_bootstrap([], []) == (None, None, None)


@pytest.mark.parametrize("lo, hi, verdict", [
    (0.01, 0.05, "superior"),
    (-0.01, 0.02, "non-inferior"),
    (-0.05, 0.01, "inconclusive"),
    (-0.10, -0.04, "inferior"),
    (None, None, "inconclusive"),
])
def test_non_inferiority_verdicts(lo, hi, verdict):
    assert non_inferiority(lo, 0.02, hi) == verdict


def test_non_inferiority_rejects_negative_margin():
    with pytest.raises(ValueError):
        non_inferiority(0.0, -0.1)


def _row(doc_id, f1, status="ok", doc_type="receipt", tier="clean", scores=(), latency=None):
    return DocResult(doc_id, doc_type, tier, status, Response(latency_s=latency), scores=list(scores), doc_f1=f1)


def test_aggregate_overall_fields_groups_and_rates():
    rows = [
        _row("a", 1.0, scores=[FieldScore("TOTAL_AMOUNT", "$1", "$1", 1, 1, 1),
                               FieldScore("GST_AMOUNT", "NOT_FOUND", "NOT_FOUND", 1, 1, 1)]),
        _row("b", 0.5, tier="heavy", scores=[FieldScore("TOTAL_AMOUNT", "$1", "$2", 0, 0, 0),
                                             FieldScore("GST_AMOUNT", "NOT_FOUND", "$0.10", 0, 0, 0,
                                                        hallucinated=True)]),
        _row("c", 0.0, doc_type="invoice", scores=[FieldScore("TOTAL_AMOUNT", "$1", "NOT_FOUND", 0, 0, 0,
                                                              missed=True)]),
        _row("d", None, status="failed", doc_type="invoice", tier="heavy"),
    ]
    s = aggregate(rows)
    assert (s.documents, s.scored, s.failed, s.failure_rate) == (4, 3, 1, 0.25)
    assert s.overall.mean == pytest.approx(0.5)
    assert s.overall_failed_as_zero.mean == pytest.approx(1.5 / 4)
    total = s.fields["TOTAL_AMOUNT"]
    assert (total.n, total.gt_value, total.missed, total.wrong_value) == (3, 3, 1, 1)
    assert total.mean_f1 == pytest.approx(1 / 3)
    assert total.wrong_value_rate == pytest.approx(1 / 3)
    gst = s.fields["GST_AMOUNT"]
    assert (gst.gt_not_found, gst.hallucinated, gst.hallucination_rate) == (2, 1, 0.5)
    assert s.hallucination_rate == 0.5
    assert s.doc_types["invoice"].n == 1 and s.doc_types["invoice"].failed == 1
    assert s.doc_types["receipt"].mean == pytest.approx(0.75)
    assert s.tiers["heavy"].failed == 1 and s.tiers["clean"].n == 2
    assert s.to_dict()["fields"]["GST_AMOUNT"]["hallucinated"] == 1


def test_aggregate_of_one_field_and_of_an_empty_run():
    s = aggregate([_row("a", 1.0, scores=[FieldScore("X", "v", "v", 1.0, 1.0, 1.0)])])
    assert s.fields["X"].mean_f1 == 1.0
    empty = aggregate([])
    assert (empty.documents, empty.overall.mean, empty.failure_rate) == (0, None, None)


def test_aggregate_five_backends_of_a_thousand_documents():
    # sizing check for the report: 5 x 1000 documents x 14 fields aggregate without trouble
    for backend in range(5):
        rows = [_row(str(i), (i * 7 + backend) % 10 / 10,
                     scores=[FieldScore(f"F{k}", "v" if k % 3 else "NOT_FOUND", "v", 1.0, 1.0, 1.0)
                             for k in range(14)])
                for i in range(1000)]
        s = aggregate(rows)
        assert s.scored == 1000 and len(s.fields) == 14


def test_percentile_interpolates_like_numpy():
    np = pytest.importorskip("numpy")
    vals = [3.0, 1.0, 7.5, 2.0, 10.0, 4.0]
    for q in (0, 50, 95, 99, 100):
        assert percentile(vals, q) == pytest.approx(float(np.percentile(vals, q)))
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile(vals, 101)


def test_summary_carries_hallucination_interval_and_latency_per_doc_type():
    s = aggregate([
        _row("a", 1.0, latency=1.0, scores=[FieldScore("GST_AMOUNT", "NOT_FOUND", "$1", 0, 0, 0, hallucinated=True)]),
        _row("b", 1.0, latency=3.0, doc_type="invoice",
             scores=[FieldScore("GST_AMOUNT", "NOT_FOUND", "NOT_FOUND", 1, 1, 1)]),
        _row("c", None, status="failed")])
    assert (s.hallucination.k, s.hallucination.n, s.hallucination.rate) == (1, 2, 0.5)
    assert s.hallucination.lo < 0.5 < s.hallucination.hi
    assert s.latency["all"].p50 == pytest.approx(2.0) and s.latency["all"].n == 2
    assert s.latency["invoice"].max == 3.0 and s.latency["receipt"].n == 1
    assert latency_stats([_row("d", 1.0)]).missing == 1  # completed without a latency: missing evidence
