"""Pure Bedrock request builders and response parsers: shapes botocore and the models expect."""

import base64
import json

import pytest
from migbench.adapters import bedrock_body as b
from migbench.adapters.aws_common import MalformedAnswer
from migbench.contracts import ErrorClass, GenParams

PNG = b"\x89PNG\r\n\x1a\nfake-bytes"


def test_converse_request_puts_raw_image_bytes_then_prompt_and_inference_config():
    kw = b.converse_request("amazon.nova-pro-v1:0", "Extract fields", [(PNG, "png")], system="Be exact",
                            params=GenParams(max_tokens=512, temperature=0.0))
    assert kw["modelId"] == "amazon.nova-pro-v1:0"
    content = kw["messages"][0]["content"]
    assert kw["messages"][0]["role"] == "user"
    assert content[0] == {"image": {"format": "png", "source": {"bytes": PNG}}}  # raw: botocore base64s it
    assert content[-1] == {"text": "Extract fields"}
    assert kw["system"] == [{"text": "Be exact"}]
    assert kw["inferenceConfig"] == {"maxTokens": 512, "temperature": 0.0}


def test_converse_request_omits_default_top_p_but_sends_a_set_one_and_stops():
    kw = b.converse_request("m", "p", params=GenParams(top_p=0.9, stop=("END",)))
    assert kw["inferenceConfig"]["topP"] == 0.9
    assert kw["inferenceConfig"]["stopSequences"] == ["END"]
    assert "topP" not in b.converse_request("m", "p")["inferenceConfig"]
    assert "system" not in b.converse_request("m", "p")


def test_converse_request_sends_pdf_as_document_block_with_a_legal_name():
    kw = b.converse_request("m", "p", document=b"%PDF-1.7", document_name_="inv_001.final.pdf")
    doc = kw["messages"][0]["content"][0]["document"]
    assert doc["format"] == "pdf" and doc["source"]["bytes"] == b"%PDF-1.7"
    assert doc["name"] == "inv-001-final-pdf"


def test_parse_converse_response_reads_camel_case_usage_latency_and_stop_reason():
    resp = {"output": {"message": {"role": "assistant", "content": [{"text": "TOTAL: "}, {"text": "$9.90"}]}},
            "stopReason": "end_turn", "usage": {"inputTokens": 1412, "outputTokens": 37, "totalTokens": 1449},
            "metrics": {"latencyMs": 812}}
    p = b.parse_converse_response(resp)
    assert (p.text, p.input_tokens, p.output_tokens, p.stop_reason, p.server_latency_ms) == \
        ("TOTAL: $9.90", 1412, 37, "end_turn", 812.0)


def test_nova_invoke_body_is_messages_v1_with_base64_image_strings():
    body = b.nova_invoke_body("Extract", [(PNG, "jpeg")], system="sys", params=GenParams(max_tokens=100))
    assert body["schemaVersion"] == "messages-v1"
    img = body["messages"][0]["content"][0]["image"]
    assert img["format"] == "jpeg" and base64.b64decode(img["source"]["bytes"]) == PNG
    assert body["system"] == [{"text": "sys"}]
    assert body["inferenceConfig"]["maxTokens"] == 100
    json.dumps(body)  # serialisable as the InvokeModel body


def test_nova_usage_is_read_from_camel_case_keys_the_guides_snake_case_read_gives_zero():
    nova = {"output": {"message": {"content": [{"text": "ABN: 51 824 753 556"}]}}, "stopReason": "end_turn",
            "usage": {"inputTokens": 1300, "outputTokens": 12, "totalTokens": 1312}}
    # The migration guide's cost tracking: result["usage"].get("input_tokens", 0) -> always 0 for Nova.
    assert nova["usage"].get("input_tokens", 0) == 0
    p = b.parse_nova_invoke_response(nova)
    assert p.input_tokens == 1300 and p.output_tokens == 12 and p.text == "ABN: 51 824 753 556"


def test_nova_invoke_falls_back_to_bedrock_headers_for_usage_and_latency():
    headers = {"x-amzn-bedrock-input-token-count": "900", "x-amzn-bedrock-output-token-count": "8",
               "x-amzn-bedrock-invocation-latency": "640"}
    p = b.parse_nova_invoke_response({"output": {"message": {"content": [{"text": "x"}]}}}, headers)
    assert (p.input_tokens, p.output_tokens, p.server_latency_ms) == (900, 8, 640.0)


def test_anthropic_invoke_body_and_snake_case_usage():
    body = b.anthropic_invoke_body("Extract", [(PNG, "webp")], system="sys", document=b"%PDF",
                                   params=GenParams(max_tokens=64, stop=("\n\n",)))
    assert body["anthropic_version"] == "bedrock-2023-05-31" and body["max_tokens"] == 64
    img, doc, text = body["messages"][0]["content"]
    assert img["source"]["media_type"] == "image/webp" and base64.b64decode(img["source"]["data"]) == PNG
    assert doc["type"] == "document" and doc["source"]["media_type"] == "application/pdf"
    assert text == {"type": "text", "text": "Extract"}
    assert body["system"] == "sys" and body["stop_sequences"] == ["\n\n"] and "top_p" not in body
    p = b.parse_anthropic_invoke_response({"content": [{"type": "text", "text": "hi"}, {"type": "tool_use"}],
                                           "stop_reason": "max_tokens",
                                           "usage": {"input_tokens": 50, "output_tokens": 64}})
    assert (p.text, p.input_tokens, p.output_tokens, p.stop_reason) == ("hi", 50, 64, "max_tokens")


def test_invoke_request_carries_json_bytes():
    kw = b.invoke_request("au.amazon.nova-lite-v1:0", {"a": 1})
    assert kw["modelId"] == "au.amazon.nova-lite-v1:0" and json.loads(kw["body"]) == {"a": 1}
    assert kw["contentType"] == "application/json"


def test_a_filtered_answer_keeps_its_shape_and_parses_as_empty_text():
    p = b.parse_converse_response({"output": {"message": {"role": "assistant", "content": []}},
                                   "stopReason": "content_filtered"})
    assert p.text == "" and p.input_tokens is None and p.stop_reason == "content_filtered"


@pytest.mark.parametrize("parse,answer", [
    (b.parse_converse_response, {"stopReason": "end_turn", "usage": {"inputTokens": 3}}),
    (b.parse_converse_response, {}),
    (b.parse_converse_response, {"output": {"message": {"content": "not a list"}}}),
    (b.parse_nova_invoke_response, {"stopReason": "end_turn"}),
    (b.parse_anthropic_invoke_response, {"type": "message", "stop_reason": "end_turn"}),
])
def test_an_answer_without_its_shapes_content_is_malformed_never_empty_text(parse, answer):
    with pytest.raises(MalformedAnswer, match="no .*content") as info:
        parse(answer)
    assert info.value.error_class is ErrorClass.PERMANENT
