"""Comparing two stored runs: paired differences with intervals, documents whose verdict changed,
review, cost and latency deltas. Run B is run A with two documents changed on purpose."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from migbench.analysis import analyse
from migbench.compare import compare, main, verdict
from migbench.contracts import DocResult, Response
from migbench.options import resolve_thresholds
from migbench.schema import load_schema
from migbench.stats import paired_bootstrap
from migbench.store import RunMeta, RunStore

from tests.harness.test_review import INVOICE, _doc, tiny_run

SCHEMA = load_schema()


def run_b() -> list[DocResult]:
    """Run A (tiny_run) with d2's ABN read right and d5 completed right; slower, dearer per token."""
    out = []
    for d in tiny_run():
        if d.doc_id == "d2":
            d = _doc("d2", "invoice", INVOICE, dict(INVOICE), cost=0.02)
        elif d.doc_id == "d5":
            d = _doc("d5", "receipt", INVOICE, dict(INVOICE), cost=0.02)
        else:
            d = replace(d, response=replace(d.response, cost_usd=0.02))
        d.response.latency_s = 3.0
        out.append(d)
    return out


def store_two_runs(tmp_path: Path) -> tuple[Path, str, str]:
    results = tmp_path / "results"
    ids = []
    with RunStore(results) as store:
        for name, rows in (("nova-lite", tiny_run()), ("nova-pro", run_b())):
            meta = RunMeta(backend=name, family="bedrock", model=f"amazon.{name}-v1:0", config={}, dataset_path="d",
                           dataset_hash="h1", n_documents=6, prompt_hash="p", prompt_style="kv")
            run_id, _ = store.open_run(meta)
            for r in rows:
                store.save_result(run_id, r)
            store.update_run(run_id, status="complete", add_wall_s=6.0)
            ids.append(run_id)
    return results, ids[0], ids[1]


def _analyses(tmp_path: Path):
    results, a, b = store_two_runs(tmp_path)
    ts = resolve_thresholds(None, SCHEMA)
    with RunStore(results) as store:
        return [analyse(store.run(i), store.documents(i), ts, SCHEMA) for i in (a, b)]


def test_changed_documents_name_the_field_expected_and_both_values(tmp_path):
    a, b = _analyses(tmp_path)
    c = compare(a, b)
    assert (c.paired_documents, c.only_a, c.only_b, c.same_dataset) == (6, 0, 0, True)
    changed = {d.doc_id: d for d in c.changed}
    assert set(changed) == {"d2", "d5"}
    d2 = changed["d2"]
    (abn,) = d2.fields
    assert (abn.field, abn.expected, abn.a, abn.b) == ("BUSINESS_ABN", "51 824 753 556", "51 824 753 557",
                                                       "51 824 753 556")
    assert (abn.a_verdict, abn.b_verdict) == ("wrong", "correct")
    assert (d2.a_flagged, d2.b_flagged) == (True, False)  # the ABN checksum no longer sends it to review
    d5 = changed["d5"]
    assert (d5.a_status, d5.b_status, d5.a_f1, d5.b_f1) == ("failed", "ok", None, 1.0)
    assert {f.a_verdict for f in d5.fields} == {"failed"} and {f.b_verdict for f in d5.fields} == {"correct"}
    assert c.changed[0].doc_id == "d5"  # largest F1 change first (0 -> 1)
    assert (c.improved, c.worsened) == (2, 0)


def test_paired_differences_reuse_the_stats_bootstrap(tmp_path):
    a, b = _analyses(tmp_path)
    c = compare(a, b)
    fa = [r.doc_f1 or 0.0 for r in sorted(a.rows, key=lambda r: r.doc_id)]
    fb = [r.doc_f1 or 0.0 for r in sorted(b.rows, key=lambda r: r.doc_id)]
    th = a.thresholds.thresholds
    expected = paired_bootstrap(fb, fa, n_boot=th.non_inferiority.n_boot, seed=th.non_inferiority.seed,
                                level=th.confidence)
    assert (c.overall.diff, c.overall.lo, c.overall.hi) == pytest.approx(expected)
    assert c.overall.diff == pytest.approx((1.0 + (1.0 - fa[1])) / 6)  # d5 0 -> 1, d2 partial -> 1
    abn = next(f for f in c.fields if f.key == "BUSINESS_ABN")
    # ABN is in 5 ground truths (d1..d5): d2 0 -> 1 and d5 0 -> 1
    assert (abn.n, abn.a_mean, abn.b_mean, abn.diff) == (5, pytest.approx(0.6), pytest.approx(1.0), pytest.approx(0.4))
    assert [d.key for d in c.doc_types] == ["bank_statement", "invoice", "receipt"]
    bank = c.doc_types[0]
    assert bank.diff == 0 and not bank.significant


def test_cost_latency_and_review_deltas(tmp_path):
    a, b = _analyses(tmp_path)
    c = compare(a, b)
    assert c.cost["a_per_doc"] == pytest.approx(0.01) and c.cost["b_per_doc"] == pytest.approx(0.02)
    assert c.cost["per_doc_delta"] == pytest.approx(0.01)
    assert c.cost["total_per_doc_delta"] == pytest.approx(b.review.total_per_doc - a.review.total_per_doc)
    assert c.latency["a_p50"] == 1.0 and c.latency["b_p50"] == 3.0 and c.latency["p50_delta"] == 2.0
    assert c.latency["paired_mean"]["diff"] == pytest.approx(2.0) and c.latency["paired_mean"]["n"] == 5
    # A: d2, d4, d5 flagged (3/6); B: only d4 (1/6)
    assert c.review["a_flagged_rate"] == pytest.approx(0.5) and c.review["b_flagged_rate"] == pytest.approx(1 / 6)


def test_verdict_kinds():
    from migbench.contracts import FieldScore

    ok = DocResult("x", "invoice", "clean", "ok", Response(), doc_f1=1.0)
    assert verdict(None, None) == "failed"
    assert verdict(ok, FieldScore("F", "a", "a", 1.0, 1.0, 1.0)) == "correct"
    assert verdict(ok, FieldScore("F", "abc", "abd", 0.7, 0.7, 0.7)) == "partial"
    assert verdict(ok, FieldScore("F", "a", "NOT_FOUND", 0.0, 0.0, 0.0, missed=True)) == "missed"
    assert verdict(ok, FieldScore("F", "NOT_FOUND", "a", 0.0, 0.0, 0.0, hallucinated=True)) == "hallucinated"


def test_compare_command_json_and_table(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps tables to the terminal's width
    results, a, b = store_two_runs(tmp_path)
    assert main([a, b, "--results", str(results), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["run_a"] == a and out["run_b"] == b and out["improved"] == 2
    assert {d["doc_id"] for d in out["changed"]} == {"d2", "d5"}
    assert main([a, b, "--results", str(results)]) == 0
    text = capsys.readouterr().out
    assert "BUSINESS_ABN" in text and "51 824 753 557" in text and "wrong -> correct" in text
    assert main([a, "no-such-run", "--results", str(results)]) == 2
    assert "no run 'no-such-run'" in capsys.readouterr().err
