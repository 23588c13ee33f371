"""The run as columns: what a DocTable keeps per document, what it keeps whole, and what it costs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from migbench.contracts import NOT_FOUND, DocResult, FieldScore, Response
from migbench.doctable import GT_NOT_FOUND, HALLUCINATED, IN_GT, MISSED, PRED_VALUE, DocTable, TableBuilder
from migbench.schema import load_schema
from migbench.scoring import document_f1, score_document
from migbench.stats import aggregate, field_f1_values, hallucination_counts


def score(name: str, expected: str, predicted: str, f1: float) -> FieldScore:
    return FieldScore(name, expected, predicted, f1, f1, f1, hallucinated=expected == NOT_FOUND != predicted,
                      missed=predicted == NOT_FOUND != expected)


def row(doc_id: str, scores: list[FieldScore], *, status: str = "ok", gt: dict[str, str] | None = None,
        fields: dict[str, str] | None = None, error_class: str | None = None, **resp: object) -> DocResult:
    f1 = (sum(s.f1 for s in scores) / len(scores) if scores else None) if status == "ok" else None
    gt = gt if gt is not None else {s.field: s.expected for s in scores}
    fields = fields if fields is not None else {s.field: s.predicted for s in scores}
    return DocResult(doc_id, "invoice", "clean", status, Response(**resp), fields, scores, f1,
                     error_class=error_class, error="boom" if status != "ok" else None, ground_truth=gt)


def test_a_field_first_seen_late_is_absent_from_every_earlier_document() -> None:
    rows = [row("a", [score("TOTAL_AMOUNT", "$10.00", "$10.00", 1.0)]),
            row("b", [score("TOTAL_AMOUNT", "$5.00", "$5.00", 1.0), score("GST_AMOUNT", "$0.45", "$0.50", 0.0)])]
    t = DocTable.of(rows)
    j = t.fields.index("GST_AMOUNT")
    assert math.isnan(t.f1[0, j]) and t.field_flags[0, j] == 0  # not scored, not in "a"'s truth, not extracted
    assert t.f1[1, j] == 0.0 and t.field_flags[1, j] == IN_GT | PRED_VALUE
    assert field_f1_values(t, "invoice", "GST_AMOUNT") == [0.0]  # only "b" has it in its ground truth


def test_flags_record_what_the_hallucination_and_miss_counts_read() -> None:
    rows = [row("a", [score("PAYER_NAME", NOT_FOUND, "Bob", 0.0), score("TOTAL_AMOUNT", "$1.00", NOT_FOUND, 0.0)]),
            row("b", [score("PAYER_NAME", NOT_FOUND, NOT_FOUND, 1.0)])]
    t = DocTable.of(rows)
    payer, total = t.fields.index("PAYER_NAME"), t.fields.index("TOTAL_AMOUNT")
    assert t.field_flags[0, payer] == IN_GT | GT_NOT_FOUND | HALLUCINATED | PRED_VALUE
    assert t.field_flags[0, total] == IN_GT | MISSED
    assert hallucination_counts(t) == hallucination_counts(rows) == (1, 2)
    fs = aggregate(t).fields
    assert (fs["PAYER_NAME"].hallucinated, fs["TOTAL_AMOUNT"].missed, fs["TOTAL_AMOUNT"].wrong_value) == (1, 1, 0)


def test_recorded_and_missing_numbers_are_told_apart() -> None:
    t = DocTable.of([row("a", [], latency_s=1.5, input_tokens=100, attempts=2),
                     row("b", [], status="failed", error_class="timeout", attempts=3)])
    assert t.numbers["latency_s"].tolist()[0] == 1.5 and math.isnan(t.numbers["latency_s"][1])
    assert t.numbers["attempts"].tolist() == [2.0, 3.0]
    assert t.flags["status_ok"].tolist() == [True, False] and t.flags["ok"].tolist() == [False, False]
    assert t.mask("error_class", "timeout").tolist() == [False, True]


def test_only_the_worst_documents_are_kept_whole_and_never_more_than_a_bounded_few() -> None:
    rng = np.random.default_rng(7)
    f1s = rng.random(2000)
    builder = TableBuilder(keep_worst=5)
    held = 0
    for i, f in enumerate(f1s):
        builder.add(row(f"d{i:04d}", [score("TOTAL_AMOUNT", "$1.00", "$2.00", float(f))]))
        held = max(held, len(builder.worst))
    t = builder.build()
    expected = sorted((float(f), f"d{i:04d}") for i, f in enumerate(f1s))[:5]
    assert [(d.doc_f1, d.doc_id) for d in t.worst] == expected
    assert held <= 2 * 5 + 64  # rows held at any moment while 2,000 streamed past


def test_failure_examples_are_the_first_few_per_cause() -> None:
    rows = [row(f"f{i}", [], status="failed", error_class="timeout" if i % 3 else None, attempts=i) for i in range(10)]
    t = DocTable.of(rows, failure_examples=2)
    assert [e["doc_id"] for e in t.failure_examples["timeout"]] == ["f1", "f2"]
    assert [e["doc_id"] for e in t.failure_examples["unknown"]] == ["f0", "f3"]
    assert t.failure_examples["timeout"][0] == {"doc_id": "f1", "error": "boom", "attempts": 1}


def test_other_scoring_profiles_are_scored_while_the_rows_stream_past() -> None:
    schema = load_schema()
    gt = {"SUPPLIER_NAME": "Acme Pty Ltd", "TOTAL_AMOUNT": "$10.00"}
    fields = {"SUPPLIER_NAME": "ACME PTY LTD", "TOTAL_AMOUNT": "10.00"}
    r = row("a", [score("SUPPLIER_NAME", gt["SUPPLIER_NAME"], fields["SUPPLIER_NAME"], 1.0)], gt=gt, fields=fields)
    t = DocTable.of([r], profiles=("exact", "incumbent"), schema=schema)
    for p in ("exact", "incumbent"):
        assert t.profile_f1[p][0] == document_f1(score_document(gt, fields, schema, p))
    with pytest.raises(ValueError, match="schema"):
        TableBuilder(profiles=("exact",))


def test_a_document_costs_numbers_not_strings() -> None:
    # The report holds the table of every run it shows: per document a few hundred bytes of numbers
    # (and its id), whatever the length of the answers, values and errors the rows carried.
    long, names = "x" * 5000, list(load_schema().fields)
    rows = [row(f"{i:07d}_synthetic_invoice.png", [score(f, long + f, long, 0.5) for f in names],
                fields=dict.fromkeys(names, long), latency_s=1.0) for i in range(300)]
    t = DocTable.of(rows)
    arrays = [*t.numbers.values(), *t.flags.values(), *t.counts.values(), *t.codes.values(), *t.checks.values(),
              t.f1, t.field_flags]
    per_doc = sum(a.nbytes for a in arrays) / len(t)
    assert per_doc < 400, per_doc
    assert len(t.fields) == len(names)


def test_errors_view_counts_kinds_most_frequent_first_and_fields_by_how_often_wrong() -> None:
    from migbench.report_data import ReportOptions, errors_view

    rows = [row("a", [score("PAYER_NAME", NOT_FOUND, "Bob", 0.0), score("TOTAL_AMOUNT", "$1.00", "$2.00", 0.0)]),
            row("b", [score("TOTAL_AMOUNT", "$1.00", NOT_FOUND, 0.0), score("GST_AMOUNT", "$0.10", "$0.20", 0.0)]),
            row("c", [score("TOTAL_AMOUNT", "$3.00", "$2.00", 0.0)]),
            row("d", [], status="failed", error_class="timeout")]
    v = errors_view(rows, ReportOptions(top_n=2, failed_examples=1))
    assert v["kinds"] == {"wrong": 3, "hallucinated": 1, "missed": 1}
    assert v["by_field"] == [("TOTAL_AMOUNT", 3), ("PAYER_NAME", 1), ("GST_AMOUNT", 1)]
    assert (v["failed"], v["imperfect_docs"], v["wrong_fields"], v["shown"]) == (1, 3, 5, 2)
    assert v["failures"] == [{"error_class": "timeout", "count": 1,
                              "examples": [{"doc_id": "d", "error": "boom", "attempts": 1}]}]
