from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from migbench.normalize import (
    format_amount,
    format_date,
    is_not_found,
    normalize_amount,
    normalize_date,
    normalize_id,
    normalize_text,
    parse_amount,
    parse_bool,
    parse_date,
    parse_date_set,
)


@pytest.mark.parametrize("text, expected", [
    ("$1,234.50", "1234.50"),
    ("RM 9.00", "9.00"),
    ("RM9.00", "9.00"),
    ("AUD 12", "12"),
    ("A$3.20", "3.20"),
    ("1.234,56", "1234.56"),
    ("1 234,56", "1234.56"),
    ("12,50", "12.50"),
    ("1,234", "1234"),
    ("1.234.567", "1234567"),
    ("-12.00", "-12.00"),
    ("-$12.00", "-12.00"),
    ("(12.00)", "-12.00"),
    ("12.00-", "-12.00"),
    ("Amount: -5", "-5"),
    ("12.00 CR", "12.00"),
    ("12.00 DR", "12.00"),
    ("Total - $5.00", "5.00"),
    ("Total: $5.00 incl GST", "5.00"),
    (" $ 0.00 ", "0.00"),
])
def test_parse_amount_reads_printed_amounts(text, expected):
    assert parse_amount(text) == Decimal(expected)


@pytest.mark.parametrize("text", ["", "NOT_FOUND", "abc", "1,23,4", "1.2.3", None, "n/a"])
def test_parse_amount_returns_none_for_non_amounts(text):
    assert parse_amount(text) is None


def test_format_and_normalize_amount():
    assert format_amount(Decimal("1234.5")) == "$1234.50"
    assert format_amount(-12) == "-$12.00"
    assert normalize_amount("RM 1.234,5") == "$1234.50"
    assert normalize_amount("nothing") is None


@pytest.mark.parametrize("text, expected", [
    ("25/12/2018", (25, 12, 2018)),
    ("25-12-18", (25, 12, 2018)),
    ("25.12.2018", (25, 12, 2018)),
    ("2018-12-25", (25, 12, 2018)),
    ("2018-12-25T14:32:00Z", (25, 12, 2018)),
    ("10 MAR 2018", (10, 3, 2018)),
    ("March 10, 2018", (10, 3, 2018)),
    ("10-Mar-18", (10, 3, 2018)),
    ("Tuesday 10th of March 2018", (10, 3, 2018)),
    ("25/12/2018 14:32", (25, 12, 2018)),
    ("25/12/201814:32", (25, 12, 2018)),  # time glued to a 4-digit year
    ("25/12/1814:32", (25, 12, 2018)),  # time glued to a 2-digit year
    ("1/3/24", (1, 3, 2024)),
    ("01/02/70", (1, 2, 1970)),  # pivot: 69-99 are 1900s
    ("01/02/68", (1, 2, 2068)),
    ("12/25/2018", (25, 12, 2018)),  # month-first only where day-first is impossible
    ("20181225", (25, 12, 2018)),
    ("Date: 09/01/2019 Time: 10:15", (9, 1, 2019)),
])
def test_parse_date_reads_day_first(text, expected):
    assert parse_date(text) == expected


def test_parse_date_is_day_first_when_ambiguous():
    assert parse_date("03/04/2020") == (3, 4, 2020)


@pytest.mark.parametrize("text", ["31/02/2018", "Mar 2018", "market 10 2018", "NOT_FOUND", "", "12:30", None])
def test_parse_date_rejects_impossible_or_partial_dates(text):
    assert parse_date(text) is None


def test_parse_date_set_reads_ranges_in_order_without_repeats():
    assert parse_date_set("01/03/2024 - 31/03/2024") == [(1, 3, 2024), (31, 3, 2024)]
    assert parse_date_set("1/3/2024-31/3/2024") == [(1, 3, 2024), (31, 3, 2024)]
    assert parse_date_set("01/03/2024 | 01/03/2024 | 2 Mar 2024") == [(1, 3, 2024), (2, 3, 2024)]
    assert parse_date_set("N/A") == []


def test_normalize_date_formats_and_is_idempotent():
    assert normalize_date("10-Mar-18") == "10/03/2018"
    assert normalize_date(normalize_date("10-Mar-18")) == "10/03/2018"
    assert normalize_date("garbage") is None
    assert format_date((1, 2, 2003)) == "01/02/2003"


@given(st.dates(min_value=__import__("datetime").date(1969, 1, 1),
                max_value=__import__("datetime").date(2068, 12, 31)),
       st.sampled_from(["%d/%m/%Y", "%d-%m-%y", "%d.%m.%Y", "%Y-%m-%d", "%d %b %Y", "%B %d, %Y",
                        "%d-%b-%y", "%d/%m/%Y %H:%M", "%d/%m/%Y%H:%M", "%A %d %B %Y"]))
@settings(max_examples=150, deadline=None)
def test_parse_date_round_trips_printed_dates(date, fmt):
    printed = date.strftime(fmt)
    assert parse_date(printed) == (date.day, date.month, date.year)
    assert normalize_date(normalize_date(printed)) == normalize_date(printed)


@pytest.mark.parametrize("text, expected", [
    ("ABN: 51 824 753 556", "51824753556"),
    ("ABN 51-824-753-556", "51824753556"),
    ("ABN No. 51 824 753 556", "51824753556"),
    ("51 824 753 556", "51824753556"),
    ("GST Reg No: 001234567890", "001234567890"),
    ("abc-123", "ABC123"),
    ("ABN", "ABN"),  # a bare label is not stripped to nothing
])
def test_normalize_id_strips_labels_spaces_dashes(text, expected):
    assert normalize_id(text) == expected
    assert normalize_id(normalize_id(text)) == normalize_id(text)


@pytest.mark.parametrize("text, expected", [
    ("yes", True), ("True", True), ("1", True), ("Y", True), ("included", True), ("GST included", True),
    ("no", False), ("FALSE", False), ("0", False), ("n", False), ("excluded", False), ("not included", False),
    ("maybe", None), ("", None), (None, None), ("NOT_FOUND", None),
])
def test_parse_bool(text, expected):
    assert parse_bool(text) is expected


def test_normalize_text_folds_case_and_whitespace_idempotently():
    assert normalize_text("  Foo   BAR\tbaz\n") == "foo bar baz"
    assert normalize_text(normalize_text("  Foo   BAR ")) == "foo bar"
    assert normalize_text(None) == ""


@pytest.mark.parametrize("text", [
    None, "", "  ", "NOT_FOUND", "not_found", "None", "null", "N/A", "n/a", "NA", "Not Found",
    "not available", "Not present", "not applicable", "Unknown", "-", "—", "not visible", "**N/A**",
    "\"NOT_FOUND\"", "(not visible)", "Not provided.",
])
def test_is_not_found_accepts_synonyms(text):
    assert is_not_found(text)


@pytest.mark.parametrize("text", ["0", "$0.00", "No", "false", "Nando's", "Unknown Pty Ltd", "N/A Cafe", "-5"])
def test_is_not_found_keeps_real_values(text):
    assert not is_not_found(text)


@given(st.text(max_size=300))
@settings(max_examples=200, deadline=None)
def test_normalisers_never_raise(text):
    parse_amount(text)
    parse_date(text)
    parse_date_set(text)
    normalize_id(text)
    parse_bool(text)
    is_not_found(text)
    assert normalize_text(normalize_text(text)) == normalize_text(text)


@pytest.mark.parametrize("word, month", [("Mar", 3), ("MARCH", 3), ("sept", 9), ("Sep", 9), ("may", 5),
                                         ("Dec", 12), ("Marc", None), ("", None), ("13", None)])
def test_month_number_reads_month_names_of_any_case(word, month):
    from migbench.normalize import month_number

    assert month_number(word) == month


def test_not_found_has_one_definition_every_layer_uses():
    from migbench import normalize, parsing, scoring
    from migbench.adapters import ocr_rules
    from migbench.contracts import NOT_FOUND
    from migbench.schema import Schema, load_schema

    assert not hasattr(normalize, "NOT_FOUND") and not hasattr(ocr_rules, "NF")
    assert scoring.NOT_FOUND is NOT_FOUND and parsing.NOT_FOUND is NOT_FOUND
    schema = load_schema()
    assert schema.not_found == NOT_FOUND
    with pytest.raises(ValueError, match="NOT_FOUND"):  # a schema states the marker; it cannot change it
        Schema.model_validate({**schema.model_dump(), "not_found": "N/A"})
