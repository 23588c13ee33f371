"""Review routing and total cost per document, on a tiny run whose numbers are worked out by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from migbench.analysis import analyse
from migbench.catalog import CatalogError
from migbench.contracts import NOT_FOUND, DocResult, Response, RunRecord, UsageError
from migbench.cost import DAYS_PER_MONTH, load_pricing
from migbench.options import resolve_thresholds
from migbench.review import CHECKS, load_review_rules, review_document, review_run
from migbench.schema import load_schema
from migbench.scoring import document_f1, score_document

SCHEMA = load_schema()
CRITICAL = SCHEMA.critical_fields  # BUSINESS_ABN, GST_AMOUNT, TOTAL_AMOUNT, SUPPLIER_NAME
VALID_ABN = "51 824 753 556"  # passes the ATO mod-89 checksum
BAD_ABN = "51 824 753 557"  # one digit off: fails it

INVOICE = {"BUSINESS_ABN": VALID_ABN, "SUPPLIER_NAME": "Acme Pty Ltd", "IS_GST_INCLUDED": "true",
           "GST_AMOUNT": "$10.00", "TOTAL_AMOUNT": "$110.00", "LINE_ITEM_DESCRIPTIONS": "Widget",
           "LINE_ITEM_QUANTITIES": "2", "LINE_ITEM_PRICES": "$55.00", "LINE_ITEM_TOTAL_PRICES": "$110.00"}
STATEMENT = {"STATEMENT_DATE_RANGE": "01/03/2024 to 31/03/2024", "TRANSACTION_DATES": "02/03/2024 | 05/03/2024",
             "TRANSACTION_AMOUNTS_PAID": "$20.00 | $5.50"}


def _doc(doc_id: str, doc_type: str, gt: dict[str, str], pred: dict[str, str] | None,
         cost: float | None = 0.01) -> DocResult:
    if pred is None:  # failed after retries: no fields, no scores
        return DocResult(doc_id, doc_type, "clean", "failed", Response(error="boom"), error_class="permanent",
                         ground_truth=gt)
    scores = score_document(gt, pred, SCHEMA)
    return DocResult(doc_id, doc_type, "clean", "ok", Response(text="x", cost_usd=cost, latency_s=1.0), fields=pred,
                     scores=scores, doc_f1=document_f1(scores), ground_truth=gt)


def tiny_run() -> list[DocResult]:
    """Six documents; by hand:
    d1 invoice, all right                      -> straight through, no error
    d2 invoice, ABN fails its checksum         -> flagged (abn_checksum), wrong ABN caught
    d3 invoice, total 120 and GST 120/11       -> rules pass (GST is 1/11 of what was read), TOTAL and GST
                                                  wrong: ESCAPED
    d4 invoice, supplier not extracted          -> flagged (critical_field_missing), caught
    d5 receipt, failed                          -> flagged (extraction_failed + critical_field_missing), caught
    d6 bank statement, all right                -> straight through (no critical field in its type)
    flagged 3/6, straight through 3/6, escaped 1/6, caught 3, wrong 4."""
    d3 = {**INVOICE, "TOTAL_AMOUNT": "$120.00", "GST_AMOUNT": "$10.91", "LINE_ITEM_TOTAL_PRICES": "$110.00"}
    return [
        _doc("d1", "invoice", INVOICE, dict(INVOICE)),
        _doc("d2", "invoice", INVOICE, {**INVOICE, "BUSINESS_ABN": BAD_ABN}),
        _doc("d3", "invoice", INVOICE, d3),
        _doc("d4", "invoice", INVOICE, {**INVOICE, "SUPPLIER_NAME": NOT_FOUND}),
        _doc("d5", "receipt", INVOICE, None),
        _doc("d6", "bank_statement", STATEMENT, dict(STATEMENT)),
    ]


def _rules(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "rules.yaml"
    p.write_text(body, encoding="utf-8")
    return p


RULES_YAML = """version: 1
currency: USD
review_cost: 2.00
escaped_error_cost: 30.00
rules:
  - {check: extraction_failed}
  - {check: critical_field_missing}
  - {check: abn_checksum}
  - {check: gst_one_eleventh}
  - {check: line_arithmetic}
  - {check: lists_aligned}
"""


def test_flagged_straight_through_and_escaped_rates_worked_by_hand(tmp_path):
    rules = load_review_rules(_rules(tmp_path, RULES_YAML), SCHEMA)
    r = review_run(tiny_run(), rules, CRITICAL, SCHEMA, model_cost_per_doc=0.01, currency="USD")
    by_id = {d.doc_id: d for d in r.docs}
    assert {k for k, d in by_id.items() if d.flagged} == {"d2", "d4", "d5"}
    assert by_id["d2"].reasons == ("abn_checksum",) and by_id["d2"].wrong_critical == ("BUSINESS_ABN",)
    assert by_id["d3"].escaped and set(by_id["d3"].wrong_critical) == {"GST_AMOUNT", "TOTAL_AMOUNT"}
    assert by_id["d4"].reasons == ("critical_field_missing",)
    assert by_id["d5"].reasons == ("extraction_failed", "critical_field_missing")
    assert not by_id["d6"].flagged and not by_id["d6"].wrong_critical
    assert (r.documents, r.flagged.k, r.escaped.k, r.caught, r.wrong) == (6, 3, 1, 3, 4)
    assert r.flagged.rate == 0.5 and r.straight_through_rate == 0.5 and r.escaped.rate == pytest.approx(1 / 6)
    assert r.catch_rate == 0.75
    assert r.by_rule == {"extraction_failed": 1, "critical_field_missing": 2, "abn_checksum": 1,
                         "gst_one_eleventh": 0, "line_arithmetic": 0, "lists_aligned": 0}
    assert (r.by_doc_type["invoice"].documents, r.by_doc_type["invoice"].flagged,
            r.by_doc_type["invoice"].escaped) == (4, 2, 1)
    # 0.01 model + 0.5 x 2.00 review + 1/6 x 30.00 escaped = 0.01 + 1.00 + 5.00
    assert r.review_cost_per_doc == pytest.approx(1.00)
    assert r.escaped_cost_per_doc == pytest.approx(5.00)
    assert r.total_per_doc == pytest.approx(6.01)
    # a month at 1,000 documents a day: model 0.01 x 1000 x 30.4 = 304, plus (1 + 5) x 1000 x 30.4
    assert r.monthly(304.0, 1000) == pytest.approx(304.0 + 6.0 * 1000 * DAYS_PER_MONTH)
    assert r.flagged.lo < 0.5 < r.flagged.hi  # Wilson interval around the rate


def test_escaped_errors_are_not_costed_unless_priced_and_model_cost_unknown_leaves_total_unknown(tmp_path):
    rules = load_review_rules(_rules(tmp_path, RULES_YAML.replace("escaped_error_cost: 30.00", "")), SCHEMA)
    r = review_run(tiny_run(), rules, CRITICAL, SCHEMA, model_cost_per_doc=0.01)
    assert r.escaped.k == 1 and r.escaped_cost_per_doc is None and r.total_per_doc == pytest.approx(1.01)
    r = review_run(tiny_run(), rules, CRITICAL, SCHEMA, model_cost_per_doc=None)
    assert r.total_per_doc is None and r.review_cost_per_doc == pytest.approx(1.0) and r.monthly(None, 10) is None


def test_rules_are_data_a_team_can_narrow(tmp_path):
    """Only the ABN checksum, only on invoices: d4 and d5 go straight through and become escapes."""
    body = RULES_YAML.split("rules:")[0] + "rules:\n  - {check: abn_checksum, doc_types: [invoice]}\n"
    rules = load_review_rules(_rules(tmp_path, body), SCHEMA)
    r = review_run(tiny_run(), rules, CRITICAL, SCHEMA, model_cost_per_doc=0.0)
    assert [d.doc_id for d in r.docs if d.flagged] == ["d2"]
    assert sorted(d.doc_id for d in r.docs if d.escaped) == ["d3", "d4", "d5"]
    assert r.by_rule == {"abn_checksum[invoice]": 1}
    # a critical field scoring below wrong_below is wrong; a lenient team tolerates partial credit
    assert rules.wrong_below == 1.0


def test_missing_rule_fields_narrow_what_counts_as_missing(tmp_path):
    body = RULES_YAML.split("rules:")[0] + "rules:\n  - {check: critical_field_missing, fields: [BUSINESS_ABN]}\n"
    rules = load_review_rules(_rules(tmp_path, body), SCHEMA)
    d4 = tiny_run()[3]
    assert not review_document(d4, rules, CRITICAL, SCHEMA).flagged  # only the ABN counts, and it is there


@pytest.mark.parametrize(("edit", "message"), [
    ("  - {check: running_total}\n", "unknown check 'running_total'"),
    ("  - {check: abn_checksum, doc_types: [payslip]}\n", "unknown document type 'payslip'"),
    ("  - {check: abn_checksum, fields: [BUSINESS_ABN]}\n", "applies to critical_field_missing only"),
    ("  - {check: critical_field_missing, fields: [ABN_TYPO]}\n", "unknown field 'ABN_TYPO'"),
])
def test_bad_rules_are_refused_at_load_in_one_line(tmp_path, edit, message):
    with pytest.raises(CatalogError, match="--review-rules") as exc:
        load_review_rules(_rules(tmp_path, RULES_YAML + edit), SCHEMA)
    assert message in str(exc.value)


def test_negative_price_and_other_currency_are_refused(tmp_path):
    with pytest.raises(CatalogError, match="review_cost"):
        load_review_rules(_rules(tmp_path, RULES_YAML.replace("2.00", "-1")), SCHEMA)
    rules = load_review_rules(_rules(tmp_path, RULES_YAML.replace("USD", "AUD")), SCHEMA)
    with pytest.raises(UsageError, match="one currency"):
        review_run(tiny_run(), rules, CRITICAL, SCHEMA, model_cost_per_doc=0.0, currency="USD")


def test_packaged_rules_load_and_name_only_known_checks():
    rules = load_review_rules(schema=SCHEMA)
    assert rules.file == "review_rules.yaml" and len(rules.sha256) == 64
    assert {r.check for r in rules.rules} <= set(CHECKS)
    assert rules.currency == load_pricing().currency


def test_the_analysis_computes_review_once_for_suites_json_and_report(tmp_path):
    run = RunRecord(run_id="r1", backend="nova-pro", family="bedrock", model="amazon.nova-pro-v1:0",
                    status="complete", wall_s=10.0)
    rules = load_review_rules(_rules(tmp_path, RULES_YAML), SCHEMA)
    a = analyse(run, tiny_run(), resolve_thresholds(None, SCHEMA), SCHEMA, review_rules=rules)
    assert a.review.flagged.k == 3 and a.review.escaped.k == 1
    # the model cost is the run's own (stored costs of 0.01 over the 5 completed documents)
    assert a.review.model_cost_per_doc == pytest.approx(a.cost.per_doc) == pytest.approx(0.01)
    assert math.isclose(a.review.total_per_doc, 6.01)
    out = a.to_dict()["review"]
    assert out["flagged"]["k"] == 3 and out["total_per_doc"] == pytest.approx(6.01) and "docs" not in out
    default = analyse(run, tiny_run(), resolve_thresholds(None, SCHEMA), SCHEMA)
    assert default.review.rules_file == "review_rules.yaml"
    # with a baseline the JSON summary also says whether each paired comparison is big enough
    base = RunRecord(run_id="r0", backend="ocr-baseline", family="ocr", status="complete")
    paired = analyse(run, tiny_run(), resolve_thresholds(None, SCHEMA), SCHEMA, baseline=(base, tiny_run()))
    power = json.loads(json.dumps(paired.to_dict()))["baseline"]["power"]
    assert [p["doc_type"] for p in power] == ["all", "bank_statement", "invoice", "receipt"]
    # identical runs: every paired difference is 0, so two documents would do; one bank statement cannot
    assert [p["status"] for p in power] == ["powered", "not measured", "powered", "not measured"]


def test_report_shows_total_cost_with_the_teams_rules_and_whether_each_comparison_is_powered(tmp_path):
    import re

    from migbench.report import fmt_money, generate

    from tests.harness.test_report import build_store

    ids = build_store(tmp_path / "results")
    rules = _rules(tmp_path, RULES_YAML.replace("2.00", "4.00"))
    model = generate(tmp_path / "results", tmp_path / "report.html", baseline=ids["ocr-baseline"],
                     review_rules=str(rules))
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    section = html[html.index('<section id="review">'):]
    section = section[:section.index("</section>")]
    assert "A review costs 4.00 USD" in section and "rules.yaml" in section
    rows = {x["v"]["backend"]: x for x in model["review"]["rows"]}
    pro = rows["nova-pro"]["r"]
    # total = model + flagged rate x 4.00 + escaped rate x 30.00, and the monthly total sits beside model-only
    assert pro.total_per_doc == pytest.approx(
        pro.model_cost_per_doc + pro.flagged.rate * 4.0 + pro.escaped.rate * 30.0)
    month = rows["nova-pro"]["monthly"][1000]
    assert month["total"] == pytest.approx(month["model"] + (pro.flagged.rate * 4 + pro.escaped.rate * 30)
                                           * 1000 * DAYS_PER_MONTH)
    assert f"<strong>{fmt_money(pro.total_per_doc)}</strong>" in section
    # 24 paired documents cannot size a 0.02 margin: every comparison is marked underpowered
    assert {p["plan"].status for p in model["review"]["power"]} == {"underpowered"}
    assert len(re.findall(r"class=\"st warn\">underpowered<", section)) == len(model["review"]["power"])
