import csv
import json

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


from tests.conftest import SROIE as SROIE_DIR

SROIE = SROIE_DIR / "ground_truth.csv"


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


# --- aliases come from the schema passed in ----------------------------------------------------

def _schema_with_aliases(**aliases):
    data = SCHEMA.model_dump()
    for spec in data["fields"].values():
        spec["aliases"] = []
    for field, names in aliases.items():
        data["fields"][field]["aliases"] = names
    return type(SCHEMA).model_validate(data)


def test_a_custom_schemas_aliases_are_used_and_the_defaults_are_not():
    custom = _schema_with_aliases(TOTAL_AMOUNT=["montant total", "BETRAG"])
    text = "Montant-Total: $9.00\nMERCHANT: Coles\n"
    out = parse_output(text, "receipt", custom)
    assert out["TOTAL_AMOUNT"] == "$9.00"
    assert out["SUPPLIER_NAME"] == "NOT_FOUND"  # MERCHANT is only a default-schema alias
    assert parse_output('{"betrag": "$3.00"}', "receipt", custom)["TOTAL_AMOUNT"] == "$3.00"
    assert parse_output(text, "receipt", SCHEMA)["SUPPLIER_NAME"] == "Coles"
    assert custom.aliases() is custom.aliases()  # computed once per schema object


def test_parsing_holds_no_alias_state_from_import():
    from migbench import parsing

    assert not hasattr(parsing, "ALIASES")


# --- linear work whatever the shape (timings live in bench/parser_worst_case.py) -------------------

class _Counting:
    """Wraps a compiled regex and counts match calls."""

    def __init__(self, pattern):
        self.pattern, self.calls = pattern, 0

    def match(self, *args):
        self.calls += 1
        return self.pattern.match(*args)


def _clean_value_calls(monkeypatch, value):
    from migbench import parsing

    counters = {}
    for name in ("_EDGE", "_COMMAS", "_SPACES"):
        counters[name] = _Counting(getattr(parsing, name))
        monkeypatch.setattr(parsing, name, counters[name])
    runs = {q: _Counting(p) for q, p in parsing._QUOTE_RUN.items()}
    monkeypatch.setattr(parsing, "_QUOTE_RUN", runs)
    out = clean_value(value)
    return out, sum(c.calls for c in [*counters.values(), *runs.values()])


@pytest.mark.parametrize("n", [10, 1_000, 100_000])
def test_a_run_of_quotes_is_peeled_in_a_logarithmic_number_of_steps(monkeypatch, n):
    out, calls = _clean_value_calls(monkeypatch, '"' * n + "x" + '"' * n)
    assert out == "x"
    assert calls <= 40  # galloping over the run; one pass per pair was n passes


def test_a_long_run_facing_a_short_one_costs_the_short_one(monkeypatch):
    # '"""...""x",",",": the left run is huge, each right layer has one quote: one round per layer,
    # and no round may re-read the left run.
    out, calls = _clean_value_calls(monkeypatch, '"' * 100_000 + "x" + '",' * 50)
    assert out == '"' * 99_950 + "x"
    assert calls <= 50 * 6


@pytest.mark.parametrize("layers", [100, 400])
def test_alternating_layers_cost_a_constant_per_layer(monkeypatch, layers):
    out, calls = _clean_value_calls(monkeypatch, '"*' * layers + "x" + '*"' * layers)
    assert out == "x"
    assert calls <= 6 * layers


def test_fence_blocks_are_capped_and_found_in_one_forward_scan():
    from migbench.parsing import _MAX_FENCES, _fence_blocks

    assert _fence_blocks("```json\n{}\n```\ntext\n```\nB\n```") == ["{}\n", "B\n"]
    assert _fence_blocks("```a```b\nc```") == ["c"]  # the body starts after the opening fence's line
    assert _fence_blocks("`" * 100_000) == [""] * _MAX_FENCES
    assert len(_fence_blocks("```\n" * 100_000)) == _MAX_FENCES


def test_repair_parses_a_bounded_number_of_candidates(monkeypatch):
    from migbench import parsing

    calls = []
    real = parsing.json.loads

    def counting(s, *a, **kw):
        calls.append(len(s))
        return real(s, *a, **kw)

    monkeypatch.setattr(parsing.json, "loads", counting)
    # broken early, then 10,000 commas: every cut candidate shares the broken prefix
    assert repair_json('{"A": x, ' + '"B": 1, ' * 10_000) is None
    assert len(calls) <= 2
    calls.clear()
    # a truncated 10,000-item list: the first candidate parses
    obj = repair_json('{"LINE_ITEM_DESCRIPTIONS": [' + '"item", ' * 10_000 + '"ite')
    assert len(obj["LINE_ITEM_DESCRIPTIONS"]) == 10_000 and len(calls) == 1


def test_big_hostile_shapes_parse_to_the_right_fields():
    out = parse_output("TOTAL_AMOUNT: " + '"' * 200_000 + "$5.00" + '"' * 200_000, "receipt", SCHEMA)
    assert out["TOTAL_AMOUNT"] == "$5.00"
    doc = '{"TOTAL_AMOUNT": "$7.00", "LINE_ITEM_DESCRIPTIONS": [' + '"item", ' * 50_000
    out = parse_output("```json\n" + doc, "invoice", SCHEMA)
    assert out["TOTAL_AMOUNT"] == "$7.00"
    from migbench.parsing import MAX_LIST_ITEMS

    assert out["LINE_ITEM_DESCRIPTIONS"].count(" | ") == MAX_LIST_ITEMS - 1
    deep = '{"a":' * 100_000 + '"x"' + "}" * 100_000
    assert parse_output(deep + "\nTOTAL_AMOUNT: $1", "receipt", SCHEMA)["TOTAL_AMOUNT"] == "$1"


def test_a_runaway_list_keeps_its_first_items():
    from migbench.parsing import MAX_LIST_ITEMS

    out = parse_output("LINE_ITEM_PRICES: " + "$1.00, " * 10_000 + "$2.00", "invoice", SCHEMA)
    items = out["LINE_ITEM_PRICES"].split(" | ")
    assert len(items) == MAX_LIST_ITEMS and set(items) == {"$1.00"}


# --- text that cannot be encoded; the stored raw-text cap ----------------------------------------

def test_lone_surrogates_never_leave_the_parser():
    out = parse_output('{"SUPPLIER_NAME": "Caf\\ud800e", "TOTAL_AMOUNT": "$1"}', "receipt", SCHEMA)
    assert out["SUPPLIER_NAME"] == "Caf\ufffde"
    assert all(v.encode("utf-8") for v in out.values())
    out = parse_output("SUPPLIER_NAME: a\udc80b", "receipt", SCHEMA)
    assert out["SUPPLIER_NAME"] == "a\ufffdb"


def test_raw_text_cap_cuts_records_and_is_configurable(monkeypatch):
    from migbench.contracts import Response
    from migbench.parsing import DEFAULT_MAX_RAW_CHARS, MAX_RAW_CHARS_ENV, cap_raw_text, max_raw_chars

    resp = Response(text="TOTAL_AMOUNT: $1\n" + "x" * 100)
    assert cap_raw_text(resp, 20) is True
    assert resp.text == ("TOTAL_AMOUNT: $1\n" + "x" * 100)[:20]
    assert resp.extra == {"raw_text_truncated": True, "raw_text_chars": 117}
    short = Response(text="ok\ud800")
    assert cap_raw_text(short, 20) is False and short.extra == {} and short.text == "ok\ufffd"
    monkeypatch.delenv(MAX_RAW_CHARS_ENV, raising=False)
    assert max_raw_chars() == DEFAULT_MAX_RAW_CHARS
    monkeypatch.setenv(MAX_RAW_CHARS_ENV, "5000")
    assert max_raw_chars() == 5000 and max_raw_chars(7) == 7
    monkeypatch.setenv(MAX_RAW_CHARS_ENV, "0")
    assert max_raw_chars() is None
    monkeypatch.setenv(MAX_RAW_CHARS_ENV, "-3")
    with pytest.raises(ValueError, match="0 \\(no cap\\) or more"):
        max_raw_chars()
