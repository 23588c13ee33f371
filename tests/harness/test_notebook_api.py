"""Stored results as pandas DataFrames: shapes, columns, dtypes, and the analysis' own aggregates."""

from __future__ import annotations

import subprocess
import sys

import pytest

pd = pytest.importorskip("pandas")

from migbench import load_results
from migbench.contracts import AuditEntry, UsageError
from migbench.notebook import AUDIT_COLUMNS, DOCUMENT_COLUMNS, FIELD_COLUMNS, RUN_COLUMNS
from migbench.store import RunStore

from tests.harness.test_compare import store_two_runs


@pytest.fixture
def stored(tmp_path):
    results, a, b = store_two_runs(tmp_path)
    with RunStore(results) as store:
        store.add_audit(b, AuditEntry(backend="nova-pro", service="bedrock-runtime", operation="Converse",
                                      region="ap-southeast-2", host="bedrock-runtime.ap-southeast-2.amazonaws.com",
                                      model_id="amazon.nova-pro-v1:0", doc_id="d1", status=200, bytes_sent=1234))
    return results, a, b


def test_frames_have_one_row_per_run_document_field_and_audit_entry(stored):
    results, a, b = stored
    r = load_results(results)
    assert list(r.runs.columns) == list(RUN_COLUMNS) and list(r.runs["run_id"]) == [a, b]
    assert r.documents.shape == (12, len(DOCUMENT_COLUMNS)) and list(r.documents.columns) == list(DOCUMENT_COLUMNS)
    # field scores: run A scores d1-d4 (9 fields each) and d6 (3); d5 failed; run B scores all six
    assert r.field_scores.shape == (4 * 9 + 3 + 5 * 9 + 3, len(FIELD_COLUMNS))
    assert r.audit.shape == (1, len(AUDIT_COLUMNS)) and r.audit["bytes_sent"].iloc[0] == 1234


def test_dtypes_are_typed_for_analysis(stored):
    results, a, _ = stored
    r = load_results(results)
    docs = r.documents
    assert docs["doc_f1"].dtype == "float64" and str(docs["input_tokens"].dtype) == "Int64"
    assert isinstance(docs["doc_type"].dtype, pd.CategoricalDtype)
    assert pd.api.types.is_datetime64_any_dtype(docs["completed_at"]) and docs["completed_at"].dt.tz is not None
    failed = docs[(docs.run_id == a) & (docs.doc_id == "d5")]
    assert failed["status"].iloc[0] == "failed" and pd.isna(failed["doc_f1"].iloc[0])
    assert r.runs["emulated"].dtype == bool and r.runs["wall_s"].iloc[0] == 6.0
    fs = r.field_scores
    assert fs["f1"].dtype == "float64" and fs["missed"].dtype == bool and fs["hallucinated"].dtype == bool
    assert pd.api.types.is_datetime64_any_dtype(r.audit["ts"]) and r.audit["allowed"].dtype == bool


def test_frames_answer_notebook_questions(stored):
    results, _a, _b = stored
    r = load_results(results)
    means = r.field_scores.groupby(["backend", "field"], observed=True)["f1"].mean()
    assert means[("nova-pro", "BUSINESS_ABN")] == 1.0  # run B read every ABN right
    assert r.documents.groupby("backend")["cost_usd"].mean().to_dict() == pytest.approx(
        {"nova-lite": 0.01, "nova-pro": 0.02})


def test_aggregates_are_the_analysis_own(stored):
    results, a, _b = stored
    r = load_results(results)
    an = r.analyse(a)
    pf = r.per_field(a)
    assert pf.loc["BUSINESS_ABN", "mean_f1"] == an.summary.fields["BUSINESS_ABN"].mean_f1
    pt = r.per_type(a)
    assert list(pt.index) == ["bank_statement", "invoice", "receipt"] and pt.loc["receipt", "failed"] == 1
    assert list(r.per_tier(a).index) == ["clean"]
    rv = r.review(a)
    assert sorted(rv[rv.flagged].doc_id) == ["d2", "d4", "d5"] and list(rv[rv.escaped].doc_id) == ["d3"]
    c = r.compare("nova-lite", "nova-pro")  # a backend name picks its latest run
    assert {d.doc_id for d in c.changed} == {"d2", "d5"}
    assert r.analyse(a) is an  # computed once


def test_selection_and_clear_errors(stored, tmp_path):
    results, _a, b = stored
    assert list(load_results(results, runs=[b]).runs["run_id"]) == [b]
    with pytest.raises(UsageError, match="no migbench.*store"):
        load_results(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()  # a mistyped path is not created
    with pytest.raises(UsageError, match="no run 'gpt'"):
        load_results(results).analyse("gpt")


def test_import_migbench_does_not_import_pandas():
    code = "import sys, migbench; assert 'pandas' not in sys.modules; migbench.load_results; print('ok')"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "ok\n"
