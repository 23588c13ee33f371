import pytest
from migbench.contracts import FieldScore
from migbench.schema import load_schema
from migbench.scoring import (
    anls,
    compare_field,
    document_f1,
    levenshtein,
    list_counts,
    prf,
    score_document,
    word_overlap_match,
)

SCHEMA = load_schema()


def f1(name, expected, predicted):
    return compare_field(name, expected, predicted, SCHEMA).f1


# --- NOT_FOUND rules ---------------------------------------------------------------------------

def test_both_not_found_scores_one():
    s = compare_field("TOTAL_AMOUNT", "NOT_FOUND", "n/a", SCHEMA)
    assert (s.f1, s.precision, s.recall, s.hallucinated, s.missed) == (1.0, 1.0, 1.0, False, False)


def test_value_where_ground_truth_is_not_found_is_a_hallucination():
    s = compare_field("GST_AMOUNT", "NOT_FOUND", "$1.00", SCHEMA)
    assert s.f1 == 0.0 and s.hallucinated and not s.missed


def test_not_found_where_ground_truth_has_a_value_is_missed():
    s = compare_field("SUPPLIER_NAME", "Acme Pty Ltd", "NOT_FOUND", SCHEMA)
    assert s.f1 == 0.0 and s.missed and not s.hallucinated


def test_empty_list_counts_as_not_found():
    assert compare_field("LINE_ITEM_PRICES", "NOT_FOUND", " | ", SCHEMA).f1 == 1.0


# --- monetary ---------------------------------------------------------------------------------

@pytest.mark.parametrize("expected, predicted, score", [
    ("$100.00", "100", 1.0),
    ("$100.00", "$101.00", 1.0),  # exactly 1%
    ("$100.00", "$101.01", 0.0),
    ("$100.00", "$99.00", 1.0),
    ("9.00", "RM 9.00", 1.0),
    ("$1,234.50", "1.234,50", 1.0),
    ("$0.00", "0.01", 1.0),  # zero ground truth: one cent absolute
    ("$0.00", "0.02", 0.0),
    ("$12.00", "twelve", 0.0),
    ("$12.00", "-$12.00", 0.0),
])
def test_monetary_within_one_percent(expected, predicted, score):
    assert f1("TOTAL_AMOUNT", expected, predicted) == score


# --- dates --------------------------------------------------------------------------------------

@pytest.mark.parametrize("expected, predicted, score", [
    ("25/12/2018", "25-12-18", 1.0),
    ("25/12/2018", "2018-12-25", 1.0),
    ("25/12/2018", "25 Dec 2018", 1.0),
    ("25/12/2018", "12/25/2018", 1.0),
    ("03/04/2020", "04/03/2020", 0.0),  # day-first: 3 April is not 4 March
    ("25/12/2018", "not a date", 0.0),
])
def test_date_fields_compare_day_first(expected, predicted, score):
    assert f1("INVOICE_DATE", expected, predicted) == score


def test_date_range_partial_overlap_is_intersection_over_larger_set():
    # one of two dates right: 1 / max(2, 2)
    assert f1("STATEMENT_DATE_RANGE", "01/03/2024 - 31/03/2024", "01/03/2024 - 30/03/2024") == 0.5
    # one date predicted of two: 1 / max(1, 2)
    assert f1("STATEMENT_DATE_RANGE", "01/03/2024 - 31/03/2024", "01/03/2024") == 0.5
    assert f1("STATEMENT_DATE_RANGE", "01/03/2024 - 31/03/2024", "1 Mar 2024 to 31 March 2024") == 1.0


# --- ids, booleans, text -----------------------------------------------------------------------

def test_id_is_normalised_exact():
    assert f1("BUSINESS_ABN", "51 824 753 556", "ABN: 51-824-753-556") == 1.0
    assert f1("BUSINESS_ABN", "51 824 753 556", "51 824 753 557") == 0.0


@pytest.mark.parametrize("expected, predicted, score", [
    ("true", "Yes", 1.0), ("True", "1", 1.0), ("false", "no", 1.0), ("false", "true", 0.0),
    ("true", "perhaps", 0.0),
])
def test_boolean(expected, predicted, score):
    assert f1("IS_GST_INCLUDED", expected, predicted) == score


def test_levenshtein_worked_examples():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3
    assert levenshtein("abc", "abc") == 0
    assert levenshtein("flaw", "lawn") == 2
    assert levenshtein("prefix-X-suffix", "prefix-YZ-suffix") == 2


def test_text_is_anls_lowercased_with_half_threshold():
    # 'acme pty ltd' vs 'acme pty lid': 1 edit over 12 chars -> 11/12
    assert f1("SUPPLIER_NAME", "ACME PTY LTD", "Acme Pty Lid") == pytest.approx(11 / 12)
    assert f1("SUPPLIER_NAME", "ACME PTY LTD", "acme pty ltd") == 1.0
    # 'abcd' vs 'abxy': 2 edits over 4 -> exactly 0.5 is kept
    assert anls("abcd", "abxy") == 0.5
    # 'abcd' vs 'axyz': 3 edits over 4 -> 0.25, below threshold -> 0
    assert anls("abcd", "axyz") == 0.0
    assert f1("SUPPLIER_NAME", "Short", "A completely different and much longer name") == 0.0


# --- lists --------------------------------------------------------------------------------------

def test_list_all_match_is_one():
    s = compare_field("LINE_ITEM_PRICES", "$1.00 | $2.00 | $3.00", "1.00 | 2.00 | 3.00", SCHEMA)
    assert (s.precision, s.recall, s.f1) == (1.0, 1.0, 1.0)


def test_list_wrong_item_counts_as_false_negative_only():
    # TP=2, FN=1 (wrong at position 3), FP=0 -> P=1, R=2/3, F1=0.8
    s = compare_field("LINE_ITEM_PRICES", "$1.00 | $2.00 | $3.00", "$1.00 | $2.00 | $9.00", SCHEMA)
    assert s.precision == 1.0
    assert s.recall == pytest.approx(2 / 3)
    assert s.f1 == pytest.approx(0.8)


def test_list_extra_item_is_false_positive():
    # TP=2, FP=1 -> P=2/3, R=1, F1=0.8
    s = compare_field("LINE_ITEM_TOTAL_PRICES", "$1.00 | $2.00", "$1.00 | $2.00 | $5.00", SCHEMA)
    assert (s.precision, s.recall) == (pytest.approx(2 / 3), 1.0)
    assert s.f1 == pytest.approx(0.8)


def test_list_missing_item_is_false_negative():
    assert list_counts("a | b | c", "a", "text") == (1, 0, 2)


def test_list_is_position_aware():
    # same items, shifted by one: nothing matches at its position
    assert f1("LINE_ITEM_PRICES", "$1.00 | $2.00", "$2.00 | $1.00") == 0.0


def test_list_text_items_use_word_overlap():
    assert word_overlap_match("Large Flat White", "large flat white coffee")  # 3/4 = 0.75
    assert not word_overlap_match("Large Flat White", "flat white")  # 2/3
    s = compare_field("LINE_ITEM_DESCRIPTIONS", "Large Flat White | Muffin", "large flat white coffee | Scone", SCHEMA)
    assert (s.precision, s.recall) == (1.0, 0.5)


def test_list_date_items_are_fuzzy():
    assert f1("TRANSACTION_DATES", "01/03/2024 | 02/03/2024", "1 Mar 2024 | 2024-03-02") == 1.0


def test_prf_edge_cases():
    assert prf(0, 0, 0) == (0.0, 0.0, 0.0)
    assert prf(1, 1, 1) == (0.5, 0.5, 0.5)


# --- documents -----------------------------------------------------------------------------------

def test_score_document_scores_only_ground_truth_fields_and_missing_predictions_are_not_found():
    gt = {"TOTAL_AMOUNT": "$10.00", "SUPPLIER_NAME": "Acme", "GST_AMOUNT": "NOT_FOUND"}
    pred = {"TOTAL_AMOUNT": "10.00", "PAYER_NAME": "Bob", "GST_AMOUNT": "NOT_FOUND"}
    scores = score_document(gt, pred, SCHEMA)
    assert [s.field for s in scores] == ["TOTAL_AMOUNT", "SUPPLIER_NAME", "GST_AMOUNT"]
    assert [s.f1 for s in scores] == [1.0, 0.0, 1.0]
    assert scores[1].missed and scores[1].predicted == "NOT_FOUND"
    assert document_f1(scores) == pytest.approx(2 / 3)


def test_document_f1_of_nothing_is_none():
    assert document_f1([]) is None
    assert document_f1([FieldScore("A", "x", "x", 0.5, 0.5, 0.5)]) == 0.5


def test_unreadable_ground_truth_falls_back_to_text():
    assert f1("TOTAL_AMOUNT", "see attached", "see attached") == 1.0
    assert f1("INVOICE_DATE", "sometime", "sometime") == 1.0


def test_unknown_field_scored_as_text():
    assert f1("NOT_IN_SCHEMA", "hello", "hello") == 1.0


def test_document_type_is_given_to_every_backend_so_it_is_not_scored():
    scores = score_document({"DOCUMENT_TYPE": "RECEIPT", "TOTAL_AMOUNT": "$5.00"},
                            {"DOCUMENT_TYPE": "INVOICE", "TOTAL_AMOUNT": "$5.00"})
    assert [s.field for s in scores] == ["TOTAL_AMOUNT"]
