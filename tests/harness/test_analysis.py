"""The analysis step's streaming figures: TTFT percentiles through the latency percentile helper,
output tokens/s after the first token, and 'not measured' (never zero) for a run that was not streamed."""

import pytest
from migbench.analysis import output_tokens_per_s, stream_figures
from migbench.contracts import DocResult, Response
from migbench.stats import percentile


def row(doc_id, ttft=None, latency=1.0, out=100, status="ok"):
    return DocResult(doc_id, "invoice", "clean", status, Response(latency_s=latency, ttft_s=ttft, output_tokens=out))


def test_ttft_percentiles_and_tokens_per_second_of_completed_streamed_documents():
    rows = [row("a", 0.2, 1.2, 100), row("b", 0.4, 2.4, 50), row("c", 0.3, 0.3, 10), row("d", 9.0, status="failed")]
    s = stream_figures(rows)
    assert s.measured and s.n == 3
    assert (s.ttft_p50, s.ttft_p95) == (percentile([0.2, 0.4, 0.3], 50), percentile([0.2, 0.4, 0.3], 95))
    # c: no time after its first token -> no speed; a: 100 / 1.0, b: 50 / 2.0
    assert s.tokens_per_s_n == 2 and s.tokens_per_s_p50 == pytest.approx((100.0 + 25.0) / 2)
    assert s.ttft_after_latency == ()


def test_a_first_token_after_the_answers_end_is_named():
    assert stream_figures([row("a", 0.2, 1.0), row("late", 1.5, 1.0)]).ttft_after_latency == ("late",)


def test_a_run_that_was_not_streamed_is_not_measured_not_zero():
    s = stream_figures([row("a"), row("b")])
    assert not s.measured and s.n == 0 and s.ttft_p50 is None and s.tokens_per_s_p50 is None
    assert s.to_dict()["measured"] is False


@pytest.mark.parametrize("out,latency,ttft,expected", [
    (120, 2.0, 0.5, 80.0), (None, 2.0, 0.5, None), (0, 2.0, 0.5, None), (10, None, 0.5, None),
    (10, 2.0, None, None), (10, 0.5, 0.5, None)])
def test_output_tokens_per_second_only_where_computable(out, latency, ttft, expected):
    assert output_tokens_per_s(out, latency, ttft) == expected
