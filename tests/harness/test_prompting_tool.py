"""--prompt-style tool: the tool's JSON Schema generated from ground_truth/fields.yaml."""

import pytest
from migbench.prompting import STYLES, load_prompt, tool_input_schema, tool_name, tool_spec
from migbench.schema import FieldSpec, load_schema


@pytest.fixture(scope="module")
def schema():
    return load_schema()


@pytest.mark.parametrize("doc_type", ["invoice", "receipt", "bank_statement"])
def test_the_schema_has_every_field_of_the_type_required_in_order_and_no_other(schema, doc_type):
    js = tool_input_schema(schema, doc_type)
    assert js["type"] == "object" and js["additionalProperties"] is False
    assert list(js["properties"]) == schema.fields_for(doc_type)
    assert js["required"] == schema.fields_for(doc_type)


def test_list_fields_are_arrays_of_strings_and_the_rest_strings(schema):
    props = tool_input_schema(schema, "invoice")["properties"]
    assert props["LINE_ITEM_PRICES"]["type"] == "array"
    assert props["LINE_ITEM_PRICES"]["items"] == {"type": "string"}
    for name in ("TOTAL_AMOUNT", "INVOICE_DATE", "IS_GST_INCLUDED", "BUSINESS_ABN"):
        assert props[name]["type"] == "string"
    # the description comes from fields.yaml and says how to write an absent value
    assert props["TOTAL_AMOUNT"]["description"].startswith(schema.fields["TOTAL_AMOUNT"].description)
    assert "NOT_FOUND" in props["TOTAL_AMOUNT"]["description"]


def test_tool_names_fit_bedrocks_pattern():
    assert tool_name("bank_statement") == "record_bank_statement"
    assert tool_name("tax invoice/2") == "record_tax_invoice_2"
    assert len(tool_name("x" * 200)) == 64


def test_the_tool_prompt_keeps_the_instructions_but_not_the_answer_format(schema):
    tool = load_prompt("default", "invoice", "tool", schema)
    text = load_prompt("default", "invoice", "json", schema)
    assert "tool" in STYLES
    assert tool.tool == tool_spec(schema, "invoice")
    assert "record_invoice" in tool.user
    assert "- TOTAL_AMOUNT: Total amount payable ($)" in tool.user  # field meanings, as in json/kv
    assert "DOCUMENT_TYPE: INVOICE." in tool.user  # the family's notes
    assert '"TOTAL_AMOUNT": "..."' in text.user and '"TOTAL_AMOUNT": "..."' not in tool.user
    assert text.tool is None


def test_a_family_without_its_own_tool_style_inherits_the_default_one(schema):
    assert load_prompt("nova", "receipt", "tool", schema).tool.name == "record_receipt"


def test_the_prompt_hash_changes_with_the_tool_schema_alone(schema):
    p = load_prompt("default", "invoice", "tool", schema)
    other = schema.model_copy(deep=True)
    other.fields["PAYER_NAME"] = FieldSpec(type="list", item_type="text",
                                           description=schema.fields["PAYER_NAME"].description)
    q = load_prompt("default", "invoice", "tool", other)
    assert q.user == p.user  # the text the model reads is the same ...
    assert q.tool.input_schema["properties"]["PAYER_NAME"]["type"] == "array"
    assert q.sha256 != p.sha256  # ... the tool it must call is not
