"""Latency: p50/p95/p99 per document type from the stored per-document latency, against the
budgets; time to first token of a streamed run (`--backend-option stream=true`); and the harness's own hot paths (parse_output, score_document) timed with
pytest-benchmark in pedantic mode, so each runs exactly rounds x iterations times."""

from __future__ import annotations

import pytest
from migbench.parsing import parse_output
from migbench.scoring import score_document

pytestmark = pytest.mark.migbench
ROUNDS = 5


def test_latency_percentile(migbench_latency, migbench_state, migbench_check):
    doc_type, pct = migbench_latency
    migbench_check("latency", f"{migbench_state.backend}/{doc_type}/{pct}")


def test_time_to_first_token(migbench_analysis, migbench_state):
    """A streamed run: TTFT p50/p95 and output tokens/s are reported, and no document's first token
    came after its answer ended. A run that was not streamed has nothing to check."""
    s = migbench_analysis.stream
    if not s.measured:
        pytest.skip("time to first token: not measured (not streamed; --backend-option stream=true)")
    migbench_state.extras["ttft"] = s.to_dict()
    assert not s.ttft_after_latency, (f"{migbench_state.backend}: first token recorded after the answer's end "
                                      f"for {len(s.ttft_after_latency)} documents: {list(s.ttft_after_latency)[:5]}")
    assert s.ttft_p50 is not None and s.ttft_p95 is not None and 0 <= s.ttft_p50 <= s.ttft_p95


def _benchmark(request):
    pytest.importorskip("pytest_benchmark", reason="pytest-benchmark is not installed (extra: dev)")
    return request.getfixturevalue("benchmark")


def _ok_rows(rows):
    ok = [r for r in rows if r.status == "ok"]
    if not ok:
        pytest.skip("no completed documents to time")
    return ok


def _counted(fn, counter):
    def wrapped(*args):
        counter.append(1)
        return fn(*args)
    return wrapped


def _expected_calls(benchmark):
    return 1 if getattr(benchmark, "disabled", False) else ROUNDS


def test_parse_output_hot_path(request, migbench_run, migbench_state, migbench_schema):
    """Parsing every stored raw output reproduces the stored fields; timed per round."""
    benchmark = _benchmark(request)
    rows = _ok_rows(migbench_run[2])
    calls: list[int] = []

    def parse_all():
        return [parse_output(r.response.text, r.doc_type, migbench_schema) for r in rows]

    out = benchmark.pedantic(_counted(parse_all, calls), rounds=ROUNDS, iterations=1, warmup_rounds=0)
    assert len(calls) == _expected_calls(benchmark)
    assert out == [r.fields for r in rows], "re-parsing stored raw outputs changed the fields: run migbench rescore"
    _record(migbench_state, "parse_output", benchmark, len(rows))


def test_score_document_hot_path(request, migbench_run, migbench_state, migbench_schema):
    """Scoring every stored parse reproduces the stored per-field scores; timed per round."""
    benchmark = _benchmark(request)
    rows = _ok_rows(migbench_run[2])
    calls: list[int] = []

    def score_all():
        # in the profile the session scored the run with (--scoring)
        return [score_document(r.ground_truth, r.fields, migbench_schema, migbench_state.extras.get("scoring"))
                for r in rows]

    out = benchmark.pedantic(_counted(score_all, calls), rounds=ROUNDS, iterations=1, warmup_rounds=0)
    assert len(calls) == _expected_calls(benchmark)
    assert out == [r.scores for r in rows], "re-scoring stored fields changed the scores: run migbench rescore"
    _record(migbench_state, "score_document", benchmark, len(rows))


def _record(state, name, benchmark, n_docs):
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    if stats is not None:
        state.extras.setdefault("benchmarks", {})[name] = {
            "documents_per_round": n_docs, "rounds": stats.rounds, "median_s": stats.median, "min_s": stats.min,
            "per_document_median_s": stats.median / n_docs}
