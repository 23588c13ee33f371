"""Worked examples of every incumbent rule and quirk (ground_truth/scoring_profiles.yaml), the
`exact` reading beside them, the honest headlines, and the incumbent-artifact import/export."""

import json
from pathlib import Path

import pytest
from migbench.cli import main as cli_main
from migbench.contracts import UsageError
from migbench.headline import AS_ZERO_LABEL, EXCLUDED_LABEL, headline_f1
from migbench.lmm_poc import NOT_IN_FILE, import_run, write_lmm_poc
from migbench.schema import load_schema
from migbench.scoring import compare_field, score_document
from migbench.scoring_profiles import Rules, get_profile, load_profiles
from migbench.store import RunStore

SCHEMA = load_schema()
FIXTURE = "fixtures/lmm_poc_small"
DATASET = "fixtures/synthetic_small"


def inc(name, expected, predicted):
    return compare_field(name, expected, predicted, SCHEMA, profile="incumbent").f1


def exact(name, expected, predicted):
    return compare_field(name, expected, predicted, SCHEMA, profile="exact").f1


# --- the profiles are data, validated at load ----------------------------------------------------

def test_every_incumbent_quirk_has_a_note_and_names_a_rule():
    prof = get_profile("incumbent")
    assert prof.quirks and all(note.strip() for note in prof.quirks.values())
    assert set(prof.quirks) <= set(Rules.model_fields)
    assert load_profiles().default == "incumbent"


def test_unknown_profile_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown scoring profile 'lenient'"):
        get_profile("lenient")


def test_a_quirk_naming_no_rule_is_rejected(tmp_path):
    from migbench.catalog import CatalogError, load_model
    from migbench.scoring_profiles import ProfileSet

    bad = tmp_path / "p.yaml"
    bad.write_text("version: 1\ndefault: a\nprofiles:\n  a:\n    description: x\n    rules:\n"
                   "      amount_reading: migbench\n      money_tolerance: cent\n      scalar_dates: parsed\n"
                   "      list_dates: parsed\n    quirks: {no_such_rule: note}\n")
    with pytest.raises(CatalogError, match="no_such_rule"):
        load_model(ProfileSet, bad)


# --- money -------------------------------------------------------------------------------------------

def test_money_within_one_percent_incumbent_to_the_cent_exact():
    assert inc("TOTAL_AMOUNT", "$100.00", "$101.00") == 1.0
    assert inc("TOTAL_AMOUNT", "$100.00", "$101.01") == 0.0
    assert exact("TOTAL_AMOUNT", "$100.00", "$101.00") == 0.0
    assert exact("TOTAL_AMOUNT", "$100.00", "100") == 1.0


def test_incumbent_reads_amounts_by_deleting_all_but_digits_dot_and_minus():
    assert inc("TOTAL_AMOUNT", "$1,234.50", "1.234,50") == 0.0  # reads 1.2345
    assert exact("TOTAL_AMOUNT", "$1,234.50", "1.234,50") == 1.0
    assert inc("TOTAL_AMOUNT", "$12.00", "twelve") == 0.0


# --- dates ---------------------------------------------------------------------------------------------

def test_incumbent_scalar_dates_are_read_day_first_whatever_the_format():
    assert inc("INVOICE_DATE", "15/03/2024", "2024-03-15") == 1.0  # ISO parsed
    assert inc("INVOICE_DATE", "05 MAR 2018", "05/03/2018") == 1.0  # month names parsed
    assert inc("INVOICE_DATE", "12/03/18", "12/03/2018") == 1.0  # two-digit years parsed
    assert inc("INVOICE_DATE", "03/04/2024", "04/03/2024") == 0.0  # day first: a swap is another date
    assert inc("STATEMENT_DATE_RANGE", "01/03/2024 to 31/03/2024", "01/03/2024 to 30/03/2024") == 0.5


def test_incumbent_gives_point_eight_for_a_wrong_year():
    assert inc("INVOICE_DATE", "15/03/2024", "15/03/2023") == 0.8
    assert inc("INVOICE_DATE", "15/03/2024", "15/03/23") == 0.8  # two-digit year, wrong
    assert exact("INVOICE_DATE", "15/03/2024", "15/03/2023") == 0.0
    assert inc("INVOICE_DATE", "15/03/2024", "16/04/2023") == 0.0


def test_incumbent_misreads_iso_dates_inside_lists():
    gt = "15/03/2024 | 16/03/2024"
    assert inc("TRANSACTION_DATES", gt, "2024-03-15 | 16/03/2024") == pytest.approx(2 / 3)
    assert exact("TRANSACTION_DATES", gt, "2024-03-15 | 16/03/2024") == 1.0
    assert inc("TRANSACTION_DATES", gt, "15-Mar-24 | 16/3/2024") == 1.0  # month names and padding


# --- lists ---------------------------------------------------------------------------------------------

def test_list_text_matches_on_word_overlap_or_edit_similarity():
    # word overlap 3/4 = 0.75
    assert inc("LINE_ITEM_DESCRIPTIONS", "Uber Eats Sydney CBD | Tea", "Eats Sydney CBD | Tea") == 1.0
    # one typo: words differ, edit similarity 1 - 1/17 >= 0.90
    assert inc("LINE_ITEM_DESCRIPTIONS", "Hot Water Valves | Tea", "Hot Watr Valves | Tea") == 1.0
    assert exact("LINE_ITEM_DESCRIPTIONS", "Hot Water Valves | Tea", "Hot Watr Valves | Tea") == pytest.approx(2 / 3)


def test_incumbent_words_are_whitespace_tokens():
    # 'Sydney,' is not 'Sydney': overlap 2/4, edit similarity 1 - 1/19 still accepts
    assert inc("LINE_ITEM_DESCRIPTIONS", "Pies Sydney | Tea", "Pies Sydney, | Tea") == 1.0
    assert inc("LINE_ITEM_DESCRIPTIONS", "A B | Tea", "A, B, | Tea") == pytest.approx(2 / 3)


def test_incumbent_compares_quantities_as_text():
    assert inc("LINE_ITEM_QUANTITIES", "2 | 3", "2.0 | 3") == pytest.approx(2 / 3)
    assert exact("LINE_ITEM_QUANTITIES", "2 | 3", "2.0 | 3") == 1.0


def test_position_aware_counts_wrong_as_fn_and_extra_as_fp():
    # TP 1, FN 1 (wrong), FP 1 (extra): P 1/2, R 1/2
    s = compare_field("LINE_ITEM_PRICES", "$1.00 | $2.00", "$1.00 | $9.00 | $3.00", SCHEMA, profile="incumbent")
    assert (s.precision, s.recall, s.f1) == (0.5, 0.5, 0.5)


def test_incumbent_scores_one_item_lists_as_scalars():
    # no '|' on either side: ANLS partial credit (1 - 1/6) instead of a list miss
    assert inc("LINE_ITEM_PRICES", "$12.50", "12.50") == pytest.approx(5 / 6)
    assert exact("LINE_ITEM_PRICES", "$12.50", "12.50") == 1.0
    assert inc("LINE_ITEM_DESCRIPTIONS", "Hot Water Valve", "Hot Water Valve Kit") == pytest.approx(1 - 4 / 19)


def test_incumbent_sends_any_piped_value_down_the_list_path():
    # an address split over lines: 2 ground-truth items against 1 predicted
    assert inc("BUSINESS_ADDRESS", "1 Main St | Sydney NSW", "1 Main St Sydney NSW") == 0.0
    assert exact("BUSINESS_ADDRESS", "1 Main St | Sydney NSW", "1 Main St Sydney NSW") == pytest.approx(
        1 - 2 / 22)


# --- bank statements --------------------------------------------------------------------------------

STATEMENT = {
    "DOCUMENT_TYPE": "BANK_STATEMENT",
    "STATEMENT_DATE_RANGE": "01/03/2024 - 31/03/2024",
    "LINE_ITEM_DESCRIPTIONS": "Woolworths | Salary | Rent | Interest | Coles",
    "TRANSACTION_DATES": "02/03/2024 | 05/03/2024 | 07/03/2024 | 15/03/2024 | 20/03/2024",
    "TRANSACTION_AMOUNTS_PAID": "$50.00 | NOT_FOUND | $400.00 | NOT_FOUND | $20.00",
}
DEBITS_ONLY_REVERSED = {
    "DOCUMENT_TYPE": "BANK_STATEMENT",
    "STATEMENT_DATE_RANGE": "01/03/2024 - 31/03/2024",
    "LINE_ITEM_DESCRIPTIONS": "Coles | Rent | Woolworths",
    "TRANSACTION_DATES": "20/03/2024 | 07/03/2024 | 02/03/2024",
    "TRANSACTION_AMOUNTS_PAID": "$20.00 | $400.00 | $50.00",
}


def _mean(scores):
    return sum(s.f1 for s in scores) / len(scores)


def test_incumbent_drops_credit_rows_and_sorts_by_date_before_scoring():
    assert _mean(score_document(STATEMENT, DEBITS_ONLY_REVERSED, SCHEMA, "incumbent")) == 1.0
    assert _mean(score_document(STATEMENT, DEBITS_ONLY_REVERSED, SCHEMA, "exact")) < 0.5


def test_incumbent_drops_credits_the_model_listed_too():
    pred = dict(STATEMENT, TRANSACTION_AMOUNTS_PAID="$50.00 | NOT_FOUND | $400.00 | NOT_FOUND | $20.00")
    assert _mean(score_document(STATEMENT, pred, SCHEMA, "incumbent")) == 1.0


# --- DOCUMENT_TYPE and failed documents ----------------------------------------------------------

def test_document_type_counts_only_when_it_was_predicted():
    gt = {"DOCUMENT_TYPE": "RECEIPT", "TOTAL_AMOUNT": "$5.00"}
    pred = {"DOCUMENT_TYPE": "INVOICE", "TOTAL_AMOUNT": "$5.00"}
    assert [s.field for s in score_document(gt, pred, SCHEMA, "incumbent")] == ["TOTAL_AMOUNT"]
    scores = score_document(gt, pred, SCHEMA, "incumbent", classified=True)
    assert {s.field: s.f1 for s in scores}["DOCUMENT_TYPE"] == 0.0
    assert [s.field for s in score_document(gt, pred, SCHEMA, "exact", classified=True)] == ["TOTAL_AMOUNT"]


def test_headline_mean_and_median_with_failed_excluded_and_as_zero():
    docs = [{"status": "ok", "doc_f1": v} for v in (1.0, 1.0, 0.7)] + [{"status": "failed", "doc_f1": None}]
    h = headline_f1(docs, "incumbent")
    assert (h.n_scored, h.n_failed, h.n_documents) == (3, 1, 4)
    assert h.mean_excluded == pytest.approx(0.9) and h.median_excluded == 1.0
    assert h.mean_as_zero == pytest.approx(0.675) and h.median_as_zero == pytest.approx(0.85)
    text = "\n".join(h.lines())
    assert EXCLUDED_LABEL in text and AS_ZERO_LABEL in text and "incumbent" in text


def test_base_comparators_unchanged_without_a_profile():
    assert compare_field("INVOICE_DATE", "25/12/2018", "2018-12-25", SCHEMA).f1 == 1.0
    assert compare_field("INVOICE_DATE", "03/04/2020", "04/03/2020", SCHEMA).f1 == 0.0


# --- import / export -------------------------------------------------------------------------------

def test_incumbent_artifacts_import_with_failures_recorded(tmp_path):
    with RunStore(tmp_path) as store:
        run_id, counts = import_run(FIXTURE, "lmm-poc", "internvl-prod", DATASET, store, model="InternVL3.5-8B")
        run, docs = store.run(run_id), {d.doc_id: d for d in store.documents(run_id)}
        assert run.backend == "imported" and run.config["imported"] and run.model == "InternVL3.5-8B"
        assert run.config["source"].endswith("lmm_poc_small")
        assert counts == {"ok": 22, "failed": 2}
        assert docs["synth_0005_bank_statement_light.jpg"].error == NOT_IN_FILE
        assert docs["synth_0006_invoice_moderate.jpg"].error == "CUDA out of memory"
        assert docs["synth_0001_receipt_clean.png"].response.latency_s == 3.75  # processing_time
        by_field = {s.field: s.f1 for s in docs["synth_0004_receipt_light.jpg"].scores}
        assert by_field["INVOICE_DATE"] == 0.8  # the deliberate wrong year, incumbent scoring
        assert docs["synth_0000_invoice_clean.png"].doc_f1 == 1.0


def test_export_then_import_reproduces_the_scores(tmp_path):
    with RunStore(tmp_path / "a") as store:
        run_id, _ = import_run(FIXTURE, "lmm-poc", "x", DATASET, store)
        before = {d.doc_id: (d.status, d.doc_f1, [(s.field, s.f1) for s in d.scores]) for d in store.documents(run_id)}
        _raw, cleaned = write_lmm_poc(store.run(run_id), store.documents(run_id), tmp_path / "out")
    rec = json.loads(cleaned.read_text().splitlines()[0])
    assert set(rec) == {"image_name", "image_path", "document_type", "raw_response", "processing_time",
                        "prompt_used", "error", "extracted_data"}
    with RunStore(tmp_path / "b") as store2:
        run2, _ = import_run(tmp_path / "out", "lmm-poc", "x", DATASET, store2)
        after = {d.doc_id: (d.status, d.doc_f1, [(s.field, s.f1) for s in d.scores]) for d in store2.documents(run2)}
    assert after == before


def test_ground_truth_format_predictions_import(tmp_path):
    pred = tmp_path / "vendor.jsonl"
    lines = Path("ground_truth/synthetic_small.jsonl").read_text().splitlines()[:3]
    pred.write_text("\n".join(lines) + "\n")
    with RunStore(tmp_path / "r") as store:
        run_id, counts = import_run(pred, "jsonl", "vendor", DATASET, store)
        ok = [d for d in store.documents(run_id) if d.status == "ok"]
    assert counts == {"ok": 3, "failed": 21} and all(d.doc_f1 == 1.0 for d in ok)


def test_cli_import_rescore_and_report_with_imported_baseline(tmp_path, capsys):
    res = str(tmp_path / "res")
    assert cli_main(["import", FIXTURE, "--format", "lmm-poc", "--name", "prod", "--dataset", DATASET,
                     "--results", res]) == 0
    base = capsys.readouterr().out.strip().splitlines()[-1]
    assert cli_main(["rescore", base, "--scoring", "exact", "--results", res]) == 0
    with RunStore(res) as store:
        assert store.scoring(base) == "exact"
    # a second system, from a predictions file in the ground truth's format
    assert cli_main(["import", "ground_truth/synthetic_small.csv", "--format", "csv", "--name", "vendor",
                     "--dataset", DATASET, "--results", res]) == 0
    other = capsys.readouterr().out.strip().splitlines()[-1]
    out = tmp_path / "report.html"
    assert cli_main(["report", "--results", res, "--runs", base, other, "--baseline", base, "--out", str(out)]) == 0
    assert "imported" in out.read_text()
