"""Gates over stored rows: thresholds resolution, verdicts and messages, percentiles, cost, pairing."""

from __future__ import annotations

import pytest
from migbench import gates
from migbench.catalog import CatalogError
from migbench.contracts import DocResult, FieldScore, Response, RunRecord
from migbench.cost import RunCost, load_pricing, run_cost, token_cost, token_price
from migbench.schema import load_schema

SCHEMA = load_schema()


def th(**over):
    base = gates.load_thresholds(None, SCHEMA).model_dump()
    for key, value in over.items():
        section, _, name = key.partition("__")
        if name:
            base[section][name] = value
        else:
            base[section] = value
    return gates.Thresholds.model_validate(base)


def row(doc_id, doc_type="invoice", f1=1.0, status="ok", scores=None, latency=1.0, gt=None, **kw):
    scores = scores if scores is not None else [FieldScore("GST_AMOUNT", "$1.00", "$1.00", f1, f1, f1)]
    gt = gt if gt is not None else {s.field: s.expected for s in scores}
    resp = Response(latency_s=latency if status == "ok" else None, input_tokens=kw.get("input_tokens"),
                    output_tokens=kw.get("output_tokens"))
    return DocResult(doc_id, doc_type, "clean", status, resp, scores=scores if status == "ok" else [],
                     doc_f1=f1 if status == "ok" else None, error_class=kw.get("error_class"), ground_truth=gt)


def gst(doc_id, f1, doc_type="invoice"):
    return row(doc_id, doc_type, f1, scores=[FieldScore("GST_AMOUNT", "$1.00", "x", f1, f1, f1)])


# thresholds ------------------------------------------------------------------------------------
def test_packaged_defaults_are_the_incumbents():
    t = gates.load_thresholds(None, SCHEMA)
    assert (t.accuracy.overall, t.accuracy.critical, t.dry_run) == (0.85, 0.95, False)
    assert gates.critical_fields(t, SCHEMA) == SCHEMA.critical_fields
    assert gates.load_thresholds("dry-run", SCHEMA).dry_run is True


def test_field_threshold_most_specific_wins():
    t = th(accuracy__fields={"invoice/GST_AMOUNT": 0.99, "TOTAL_AMOUNT": 0.9}, accuracy__field_default=0.5)
    crit = gates.critical_fields(t, SCHEMA)
    assert gates.field_threshold(t, "invoice", "GST_AMOUNT", crit) == 0.99
    assert gates.field_threshold(t, "receipt", "GST_AMOUNT", crit) == 0.95  # critical
    assert gates.field_threshold(t, "receipt", "TOTAL_AMOUNT", crit) == 0.9
    assert gates.field_threshold(t, "receipt", "PAYER_NAME", crit) == 0.5


def test_thresholds_naming_unknown_fields_are_refused(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("name: x\naccuracy: {fields: {invoice/GST_AMOUNTT: 0.9}}\n")
    with pytest.raises(CatalogError, match="unknown field 'GST_AMOUNTT'"):
        gates.load_thresholds(p, SCHEMA)
    p.write_text("name: x\naccuracy: {overall: 1.5}\n")
    with pytest.raises(CatalogError, match="overall"):
        gates.load_thresholds(p, SCHEMA)


# accuracy --------------------------------------------------------------------------------------
def test_field_gate_message_names_backend_doctype_field_value_ci_threshold():
    rows = [gst(f"d{i}", f) for i, f in enumerate([1, 1, 1, 0, 1, 1, 1, 1, 1, 0])]
    g = gates.field_gate("nova-lite", rows, "invoice", "GST_AMOUNT", th(), SCHEMA.critical_fields)
    assert g.status == "fail" and g.gate_id == "nova-lite/invoice/GST_AMOUNT"
    assert g.message.startswith("nova-lite/invoice/GST_AMOUNT: F1 0.80 (95% CI 0.50-1.00) < 0.95")
    assert g.detail["critical"] is True


def test_failed_documents_count_as_zero_unless_configured_otherwise():
    rows = [gst("a", 1.0), gst("b", 1.0), row("c", status="failed", gt={"GST_AMOUNT": "$2.00"})]
    assert gates.field_f1_values(rows, "invoice", "GST_AMOUNT") == [1.0, 1.0, 0.0]
    assert gates.doc_type_gate("b", rows, "invoice", th()).status == "fail"
    assert gates.doc_type_gate("b", rows, "invoice", th(failed_as_zero=False)).status == "pass"


def test_statistic_ci_low_demands_the_whole_interval():
    rows = [gst(f"d{i}", f) for i, f in enumerate([1.0, 0.9, 1.0, 0.95, 1.0])]
    assert gates.doc_type_gate("b", rows, "invoice", th(accuracy__overall=0.9)).status == "pass"
    strict = gates.doc_type_gate("b", rows, "invoice", th(accuracy__overall=0.95, statistic="ci_low"))
    assert strict.status == "fail" and "[ci low" in strict.message


def test_gate_without_threshold_or_data_skips_and_missing_evidence_fails():
    assert gates.field_gate("b", [gst("a", 1)], "invoice", "PAYER_NAME", th(), []).status == "skip"
    assert gates.doc_type_gate("b", [], "invoice", th()).status == "skip"
    g = gates.latency_gate("b", [row("a", latency=None)], "invoice", "p50", th())
    assert g.status == "fail" and "not recorded" in g.message


def test_hallucination_rate_counts_values_where_ground_truth_is_not_found():
    s = [FieldScore("PAYER_NAME", "NOT_FOUND", "Bob", 0, 0, 0, hallucinated=True),
         FieldScore("PAYER_ADDRESS", "NOT_FOUND", "NOT_FOUND", 1, 1, 1)]
    rows = [row("a", "receipt", 0.5, scores=s), row("b", "receipt", 1.0, scores=s[1:])]
    assert gates.hallucination_counts(rows) == (1, 3)
    g = gates.hallucination_gate("b/receipt", rows, th(hallucination={"max_rate": 0.1}), "receipt")
    assert g.status == "fail" and g.message.startswith("b/receipt: hallucination rate 0.33 (95% CI")
    assert gates.hallucination_gate("b", [gst("a", 1)], th()).status == "skip"


def test_failure_rate_lists_causes():
    rows = [gst("a", 1), row("b", status="failed", error_class="throttling")]
    g = gates.failure_gate("b", rows, th())
    assert g.status == "fail" and g.detail["causes"] == {"throttling": 1}


# latency ---------------------------------------------------------------------------------------
def test_latency_gate_against_doc_type_budget():
    rows = [row(f"d{i}", "bank_statement", latency=float(i)) for i in range(1, 11)]
    t = th(latency={"default": {"p95_s": 1.0}, "doc_types": {"bank_statement": {"p95_s": 9.0}}})
    g = gates.latency_gate("b", rows, "bank_statement", "p95", t)
    assert g.value == pytest.approx(9.55) and g.status == "fail"
    assert g.message == "b/bank_statement/p95: p95 latency 9.55 s > 9.00 s (n=10)"


# cost ------------------------------------------------------------------------------------------
def test_cost_gates_from_recorded_tokens():
    pricing = load_pricing()
    price = token_price(pricing, "amazon.nova-pro-v1:0")
    rows = [DocResult(f"d{i}", "invoice", "clean", "ok",
                      Response(input_tokens=2000, output_tokens=500, cost_usd=token_cost(price, 2000, 500)))
            for i in range(4)]
    cost = run_cost(RunRecord("r", "nova-pro", "bedrock", "amazon.nova-pro-v1:0"), rows, pricing)
    expect = 2 * 0.00084 + 0.5 * 0.00336
    assert cost.per_doc == pytest.approx(expect)
    t = th(cost={"per_doc_usd": 0.001, "per_month_usd": 200.0, "volumes_per_day": [1000]})
    g = gates.cost_per_doc_gate("nova-pro", cost, t)
    assert g.status == "fail" and "cost per document $0.0034 > $0.0010" in g.message
    m = gates.monthly_cost_gate("nova-pro", cost, 1000, t)
    assert m.value == pytest.approx(expect * 1000 * 30.4) and m.status == "pass"


def test_cost_without_usage_fails_and_unpriced_gpu_skips():
    none = run_cost(RunRecord("r", "nova-pro", "bedrock", "amazon.nova-pro-v1:0"),
                    [DocResult("a", "invoice", "clean", "ok", Response())], load_pricing())
    assert gates.cost_per_doc_gate("nova-pro", none, th()).status == "fail"
    gpu = RunCost("hourly", "own-gpu", None, None, None, "not measured: no hourly price")
    assert gates.cost_per_doc_gate("llama", gpu, th()).status == "skip"
    assert gates.monthly_cost_gate("llama", gpu, 1000, th()).status == "skip"


# baseline --------------------------------------------------------------------------------------
def test_resolve_run_by_id_prefix_or_backend_on_same_dataset():
    runs = [RunRecord("llama-aaa", "llama", dataset_hash="h1", started_at="1"),
            RunRecord("llama-bbb", "llama", dataset_hash="h1", started_at="2"),
            RunRecord("llama-ccc", "llama", dataset_hash="h2", started_at="3"),
            RunRecord("nova-xyz", "nova", dataset_hash="h1", started_at="4")]
    assert gates.resolve_run(runs, "llama", "h1").run_id == "llama-bbb"
    assert gates.resolve_run(runs, "llama-a").run_id == "llama-aaa"
    with pytest.raises(LookupError, match="ambiguous"):
        gates.resolve_run(runs, "llama-")
    with pytest.raises(LookupError, match="no run id or backend"):
        gates.resolve_run(runs, "internvl3")
    with pytest.raises(LookupError, match="another dataset"):
        gates.resolve_run(runs, "nova", "h2")


def test_non_inferiority_pairs_documents_and_fails_only_when_inferior():
    base = [gst(f"d{i}", 0.9) for i in range(30)]
    worse = [gst(f"d{i}", 0.7) for i in range(30)]
    same = [gst(f"d{i}", 0.9 if i % 2 else 0.89) for i in range(30)] + [gst("extra", 0.0)]
    t = th()
    g = gates.non_inferiority_gate("nova", "llama", worse, base, "invoice", t)
    assert g.status == "fail" and g.detail["verdict"] == "inferior" and "vs llama -0.200" in g.message
    ok = gates.non_inferiority_gate("nova", "llama", same, base, "invoice", t)
    assert ok.status == "pass" and ok.detail["verdict"] == "non-inferior" and ok.n == 30
    none = gates.non_inferiority_gate("nova", "llama", worse, [gst("zz", 1)], "invoice", t)
    assert none.status == "fail" and "nothing to compare" in none.message


# residency -------------------------------------------------------------------------------------
def test_audit_violations_flag_other_regions_hosts_and_leaky_refusals():
    from migbench.residency import load_policy

    ok = {"id": 1, "allowed": True, "region": "ap-southeast-2", "service": "bedrock-runtime",
          "host": "bedrock-runtime.ap-southeast-2.amazonaws.com", "operation": "Converse", "doc_id": "a"}
    us = {**ok, "id": 2, "region": "us-east-1", "host": "bedrock-runtime.us-east-1.amazonaws.com"}
    loop = {**ok, "id": 3, "host": "127.0.0.1"}
    leaky = {**ok, "id": 4, "allowed": False, "bytes_sent": 10, "status": 200}
    policy = load_policy()
    assert gates.audit_violations([ok], policy, allow_loopback=False) == []
    bad = gates.audit_violations([us, loop, leaky], policy, allow_loopback=False)
    assert len(bad) == 4 and any("us-east-1" in b for b in bad) and any("loopback" in b for b in bad)
    assert gates.audit_violations([loop], policy, allow_loopback=True) == []
    assert gates.unaudited_documents([row("a"), row("b")], [ok]) == ["b"]


def test_analysis_covers_every_gate_kind_once_and_never_gates_unscored_fields():
    from migbench.analysis import analyse

    rows = [gst("a", 1.0), gst("b", 0.5, "receipt")]
    rows[0].ground_truth["DOCUMENT_TYPE"] = "INVOICE"  # in the ground truth, never scored (fields.yaml)
    run = RunRecord("r", "ocr-baseline", "ocr", wall_s=10.0)
    base = RunRecord("b", "llama", "local")
    out = analyse(run, rows, gates.load_threshold_set(None, SCHEMA), SCHEMA, baseline=(base, rows))
    kinds = {g.kind for g in out.gates}
    assert {"overall_f1", "doc_type_f1", "field_f1", "hallucination", "failure_rate", "latency",
            "cost_per_doc", "cost_per_month", "non_inferiority"} <= kinds
    assert out.verdict == gates.verdict(out.gates) == "fail"
    assert not [g for g in out.gates if "DOCUMENT_TYPE" in g.gate_id]
    ids = [(g.kind, g.gate_id) for g in out.gates]
    assert len(ids) == len(set(ids))  # each gate once: the suites look them up by (kind, id)
    assert out.gate("overall_f1", "ocr-baseline").value == pytest.approx(0.75)
    with pytest.raises(LookupError, match="no field_f1 gate 'ocr-baseline/invoice/NOPE'"):
        out.gate("field_f1", "ocr-baseline/invoice/NOPE")


def test_threshold_set_names_its_file_and_hash_and_round_trips_through_a_record(tmp_path):
    ts = gates.load_threshold_set("offline-floor", SCHEMA)
    assert ts.file == "thresholds-offline-floor.yaml" and ts.name == "offline-floor" and len(ts.sha256) == 64
    again = gates.ThresholdSet.from_record(ts.record(), SCHEMA)
    assert again.thresholds == ts.thresholds and again.sha256 == ts.sha256 and again.stored
    assert ts.label.startswith("offline-floor (thresholds-offline-floor.yaml, sha256 ")
