"""Converse tool use and prompt caching as pure request builders and answer parsers."""

import json

from migbench.adapters import bedrock_body as b
from migbench.contracts import ToolSpec

PNG = b"\x89PNG\r\n\x1a\nfake-bytes"
TOOL = ToolSpec("record_invoice", "Record the fields.",
                {"type": "object", "properties": {"TOTAL_AMOUNT": {"type": "string"}}, "required": ["TOTAL_AMOUNT"]})


def _answer(content, usage=None):
    return {"output": {"message": {"role": "assistant", "content": content}}, "stopReason": "tool_use",
            "usage": usage or {"inputTokens": 10, "outputTokens": 5, "totalTokens": 15}, "metrics": {"latencyMs": 9}}


def test_a_tool_request_offers_one_tool_with_its_json_schema_and_forces_it():
    kw = b.converse_request("m", "Extract", [(PNG, "png")], tool=TOOL)
    assert kw["toolConfig"] == {
        "tools": [{"toolSpec": {"name": "record_invoice", "description": "Record the fields.",
                                "inputSchema": {"json": TOOL.input_schema}}}],
        "toolChoice": {"tool": {"name": "record_invoice"}}}
    assert "toolConfig" not in b.converse_request("m", "Extract")


def test_a_cached_request_puts_the_instructions_and_a_cache_point_before_the_pages():
    kw = b.converse_request("m", "Extract", [(PNG, "png")], system="Be exact", cache_point=True)
    content = kw["messages"][0]["content"]
    assert content[0] == {"text": "Extract"}
    assert content[1] == {"cachePoint": {"type": "default"}}
    assert "image" in content[2]
    # without caching the layout is unchanged: pages first, then the text, no cache point
    plain = b.converse_request("m", "Extract", [(PNG, "png")])["messages"][0]["content"]
    assert "image" in plain[0] and plain[-1] == {"text": "Extract"}
    assert not any("cachePoint" in c for c in plain)


def test_the_tool_input_becomes_the_answer_text_as_json():
    fields = {"TOTAL_AMOUNT": "$9.90", "LINE_ITEM_PRICES": ["$1.00", "$8.90"]}
    p = b.parse_converse_response(_answer([{"text": "Here you go"},
                                           {"toolUse": {"toolUseId": "t1", "name": "record_invoice",
                                                        "input": fields}}]), "record_invoice")
    assert json.loads(p.text) == fields
    assert p.extra == {b.STRUCTURED_KEY: "tool_use"}
    assert p.stop_reason == "tool_use"


def test_a_text_answer_to_a_tool_request_keeps_its_text_and_says_the_tool_was_not_called():
    p = b.parse_converse_response(_answer([{"text": "TOTAL_AMOUNT: $9.90"}]), "record_invoice")
    assert p.text == "TOTAL_AMOUNT: $9.90"
    assert p.extra == {b.STRUCTURED_KEY: "text"}


def test_a_call_to_another_tool_is_not_the_answer():
    p = b.parse_converse_response(_answer([{"toolUse": {"toolUseId": "t", "name": "other", "input": {"A": "1"}}}]),
                                  "record_invoice")
    assert p.extra[b.STRUCTURED_KEY] == "text" and p.text == ""


def test_without_a_tool_request_nothing_is_said_about_structured_output():
    assert b.parse_converse_response(_answer([{"text": "x"}])).extra == {}


def test_cache_read_and_write_tokens_are_read_from_the_usage():
    usage = {"inputTokens": 120, "outputTokens": 30, "cacheReadInputTokens": 900, "cacheWriteInputTokens": 0,
             "totalTokens": 1050}
    p = b.parse_converse_response(_answer([{"text": "x"}], usage))
    assert (p.input_tokens, p.cache_read_tokens, p.cache_write_tokens) == (120, 900, 0)
    p = b.parse_converse_response(_answer([{"text": "x"}]))
    assert (p.cache_read_tokens, p.cache_write_tokens) == (None, None)
