import csv
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from migbench.normalize import is_not_found
from migbench.parsing import (
    clean_value,
    find_json_object,
    parse_output,
    render_json,
    render_kv,
    render_markdown_table,
    repair_json,
)
from migbench.schema import load_schema
from migbench.scoring import document_f1, score_document

SCHEMA = load_schema()
RECEIPT = SCHEMA.fields_for("receipt")
BANK = SCHEMA.fields_for("bank_statement")
LISTS = [f for f in SCHEMA.fields if SCHEMA.field_type(f) == "list"]


def parse(text, doc_type="receipt"):
    return parse_output(text, doc_type, SCHEMA)


def test_every_field_present_and_missing_ones_not_found():
    out = parse("TOTAL_AMOUNT: $5.00")
    assert list(out) == RECEIPT
    assert out["TOTAL_AMOUNT"] == "$5.00"
    assert all(v == "NOT_FOUND" for k, v in out.items() if k != "TOTAL_AMOUNT")


def test_kv_lines_with_markdown_bullets_numbering_and_key_spelling():
    text = """Here are the fields:
**DOCUMENT_TYPE:** receipt
- **Supplier name**: Foo Bar
* business abn: 51 824 753 556
1. TOTAL_AMOUNT: $12.00
2) invoice-date: 25/12/2018 14:32
GST_AMOUNT: N/A
"""
    out = parse(text)
    assert out["DOCUMENT_TYPE"] == "RECEIPT"
    assert out["SUPPLIER_NAME"] == "Foo Bar"
    assert out["BUSINESS_ABN"] == "51 824 753 556"
    assert out["TOTAL_AMOUNT"] == "$12.00"
    assert out["INVOICE_DATE"] == "25/12/2018 14:32"  # split at the first colon only
    assert out["GST_AMOUNT"] == "NOT_FOUND"


def test_multiline_values_and_bullet_lists():
    text = """LINE_ITEM_DESCRIPTIONS:
- Coffee, large
- Muffin
LINE_ITEM_PRICES: $4.50
- $3.00
BUSINESS_ADDRESS:
12 Foo St
Sydney NSW 2000

Note: the address was hard to read
"""
    out = parse(text)
    assert out["LINE_ITEM_DESCRIPTIONS"] == "Coffee, large | Muffin"  # commas in text items kept
    assert out["LINE_ITEM_PRICES"] == "$4.50 | $3.00"
    assert out["BUSINESS_ADDRESS"] == "12 Foo St Sydney NSW 2000"


def test_prose_after_a_value_is_not_appended():
    out = parse("SUPPLIER_NAME: Foo\nI hope this helps!")
    assert out["SUPPLIER_NAME"] == "Foo"


def test_list_commas_split_amounts_but_not_thousands():
    out = parse("LINE_ITEM_PRICES: $1,234.00, $5.00\nLINE_ITEM_TOTAL_PRICES: $1,234.00")
    assert out["LINE_ITEM_PRICES"] == "$1,234.00 | $5.00"
    assert out["LINE_ITEM_TOTAL_PRICES"] == "$1,234.00"


def test_list_given_as_json_array_in_kv_line():
    out = parse('LINE_ITEM_QUANTITIES: ["1", "2", 3]')
    assert out["LINE_ITEM_QUANTITIES"] == "1 | 2 | 3"


def test_json_with_fence_preamble_any_case_arrays_nulls_numbers_booleans():
    text = """Sure! Here is the JSON:
```json
{"document_type": "Tax Invoice", "Supplier Name": "Acme", "LINE_ITEM_PRICES": ["$1.00", "$2.50"],
 "GST_AMOUNT": null, "TOTAL_AMOUNT": 12.5, "IS_GST_INCLUDED": true, "PAYER_NAME": "n/a"}
```"""
    out = parse(text, "invoice")
    assert out["DOCUMENT_TYPE"] == "INVOICE"
    assert out["SUPPLIER_NAME"] == "Acme"
    assert out["LINE_ITEM_PRICES"] == "$1.00 | $2.50"
    assert out["GST_AMOUNT"] == "NOT_FOUND"
    assert out["TOTAL_AMOUNT"] == "12.5"
    assert out["IS_GST_INCLUDED"] == "true"
    assert out["PAYER_NAME"] == "NOT_FOUND"


def test_nested_json_and_line_item_objects():
    text = json.dumps({"fields": {"TOTAL_AMOUNT": "$5"},
                       "line_items": [{"description": "x", "qty": 1, "price": "2.00"},
                                      {"description": "y", "qty": 2, "price": "3.00"}]})
    out = parse(text, "invoice")
    assert out["TOTAL_AMOUNT"] == "$5"
    assert out["LINE_ITEM_DESCRIPTIONS"] == "x | y"
    assert out["LINE_ITEM_QUANTITIES"] == "1 | 2"
    assert out["LINE_ITEM_PRICES"] == "2.00 | 3.00"


def test_truncated_json_keeps_complete_pairs():
    text = '```json\n{"SUPPLIER_NAME": "Acme \\"Pty\\" Ltd", "TOTAL_AMOUNT": "$9.00", "LINE_ITEM_PRICES": ["$1.00", "$2.'
    out = parse(text)
    assert out["SUPPLIER_NAME"] == 'Acme "Pty" Ltd'
    assert out["TOTAL_AMOUNT"] == "$9.00"
    assert out["LINE_ITEM_PRICES"] == "$1.00"  # the cut element is dropped, complete ones kept
    assert out["BUSINESS_ADDRESS"] == "NOT_FOUND"


def test_repair_json_handles_escapes_and_cut_keys():
    assert repair_json('{"A": "x\\\\", "B": "y", "C') == {"A": "x\\", "B": "y"}
    assert repair_json('{"A": "a\\nb", "B": [1, 2') == {"A": "a\nb", "B": [1, 2]}
    assert repair_json('{"A": "x",') == {"A": "x"}
    assert repair_json("no json here") is None


def test_find_json_object_skips_non_objects_and_braces_in_prose():
    assert find_json_object('Use {curly} braces. {"TOTAL_AMOUNT": "1"}') == {"TOTAL_AMOUNT": "1"}


def test_markdown_table():
    text = "| Field | Value |\n|---|---|\n| SUPPLIER_NAME | Acme |\n| LINE_ITEM_PRICES | $1.00 | $2.00 |\n| GST_AMOUNT | Not visible |"
    out = parse(text)
    assert out["SUPPLIER_NAME"] == "Acme"
    assert out["LINE_ITEM_PRICES"] == "$1.00 | $2.00"
    assert out["GST_AMOUNT"] == "NOT_FOUND"


def test_reasoning_block_is_ignored():
    out = parse("<think>SUPPLIER_NAME: Wrong guess</think>\nSUPPLIER_NAME: Right")
    assert out["SUPPLIER_NAME"] == "Right"


def test_json_and_lines_fill_each_others_gaps():
    out = parse('{"TOTAL_AMOUNT": "$3.00", "GST_AMOUNT": "$0.27"}\nSUPPLIER_NAME: Acme')
    assert (out["TOTAL_AMOUNT"], out["GST_AMOUNT"], out["SUPPLIER_NAME"]) == ("$3.00", "$0.27", "Acme")


def test_document_type_normalised():
    assert parse("DOCUMENT_TYPE: Bank Statement", "bank_statement")["DOCUMENT_TYPE"] == "BANK_STATEMENT"
    assert parse("DOCUMENT_TYPE: tax invoice", "invoice")["DOCUMENT_TYPE"] == "INVOICE"


def test_unknown_doc_type_gets_every_schema_field():
    assert set(parse_output("TOTAL_AMOUNT: 1", "passport", SCHEMA)) == set(SCHEMA.fields)


@pytest.mark.parametrize("junk", [None, b"\xff\xfe TOTAL_AMOUNT: 1", "", "{", "[[[[", "```", "|", ":::", "{" * 5000,
                                  '{"a":' * 2000, "\x00" * 100])
def test_hostile_inputs_do_not_raise(junk):
    out = parse_output(junk, "invoice", SCHEMA)
    assert list(out) == SCHEMA.fields_for("invoice")


def test_megabyte_inputs_are_parsed():
    big = ("x" * 999 + "\n") * 1000 + "TOTAL_AMOUNT: $1.00\n" + '{"a": "' + "b" * 1_000_000
    assert parse(big)["TOTAL_AMOUNT"] == "$1.00"
    nested = "[" * 200_000 + '{"TOTAL_AMOUNT": "2"'
    assert parse(nested)["TOTAL_AMOUNT"] == "2"


@given(st.text(max_size=2000))
@settings(max_examples=150, deadline=None)
def test_never_raises_on_arbitrary_text(text):
    out = parse_output(text, "invoice", SCHEMA)
    assert list(out) == SCHEMA.fields_for("invoice")
    assert all(isinstance(v, str) and v for v in out.values())


_JSONISH = st.text(alphabet=st.sampled_from(list('{}[]",:\\ abTOTAL_AMOUNT0123\n')), max_size=300)


@given(_JSONISH)
@settings(max_examples=150, deadline=None)
def test_never_raises_on_jsonish_fragments(text):
    parse_output(text, "receipt", SCHEMA)


# --- round trips -----------------------------------------------------------------------------

_WORD = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FF,
                                        blacklist_characters="|{}[]`*_\"'#<>,;"),
                min_size=1, max_size=12)
_VALUE = st.lists(_WORD, min_size=1, max_size=4).map(" ".join).filter(
    lambda v: clean_value(v) == v and not is_not_found(v))


@st.composite
def field_dicts(draw, doc_type):
    out = {}
    for f in SCHEMA.fields_for(doc_type):
        if draw(st.booleans()):
            out[f] = "NOT_FOUND"
        elif SCHEMA.field_type(f) == "list":
            out[f] = " | ".join(draw(st.lists(_VALUE, min_size=1, max_size=4)))
        else:
            out[f] = draw(_VALUE)
    out["DOCUMENT_TYPE"] = SCHEMA.document_types[doc_type].label
    return out


RENDERERS = {
    "kv": render_kv,
    "json": lambda f: render_json(f),
    "json_arrays_nulls": lambda f: render_json(f, LISTS, not_found_as_null=True, indent=None),
    "fenced_json": lambda f: "Here you go:\n```json\n" + render_json(f, LISTS) + "\n```\nDone.",
    "table": render_markdown_table,
}


@pytest.mark.parametrize("fmt", sorted(RENDERERS))
@given(data=st.data())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_render_then_parse_round_trips(fmt, data):
    doc_type = data.draw(st.sampled_from(["invoice", "bank_statement"]))
    fields = data.draw(field_dicts(doc_type))
    assert parse_output(RENDERERS[fmt](fields), doc_type, SCHEMA) == fields


@given(st.text(max_size=500))
@settings(max_examples=150, deadline=None)
def test_parse_is_idempotent_through_kv(text):
    once = parse_output(text, "invoice", SCHEMA)
    assert parse_output(render_kv(once), "invoice", SCHEMA) == once


def test_deep_nesting_does_not_hide_line_values():
    out = parse("{" * 5000 + "\nTOTAL_AMOUNT: $7.00")
    assert out["TOTAL_AMOUNT"] == "$7.00"


SROIE = Path("/work/shared/datasets/sroie_dev/ground_truth.csv")


@pytest.mark.skipif(not SROIE.is_file(), reason="real SROIE sample not on this machine")
@pytest.mark.parametrize("fmt", ["kv", "fenced_json", "table"])
def test_real_sroie_ground_truth_round_trips_and_scores_perfectly(fmt):
    rows = list(csv.DictReader(SROIE.open(encoding="utf-8")))
    assert len(rows) > 100
    for row in rows:
        gt = {k: v for k, v in row.items() if k != "image_file"}
        parsed = parse_output(RENDERERS[fmt](gt), "receipt", SCHEMA)
        scores = score_document(gt, parsed, SCHEMA)
        assert document_f1(scores) == 1.0, (row["image_file"], [s for s in scores if s.f1 < 1])


def test_aliases_from_the_schema_map_common_model_key_names():
    from migbench.parsing import parse_output

    out = parse_output('{"merchant": "Coles", "grand_total": "$12.50", "tax": 1.14, "gst_included": "yes"}', "receipt")
    assert (out["SUPPLIER_NAME"], out["TOTAL_AMOUNT"], out["GST_AMOUNT"], out["IS_GST_INCLUDED"]) == \
        ("Coles", "$12.50", "1.14", "yes")
    # The schema's own name wins over an alias when both are present.
    out = parse_output("TOTAL: $1.00\nTOTAL_AMOUNT: $2.00", "receipt")
    assert out["TOTAL_AMOUNT"] == "$2.00"
