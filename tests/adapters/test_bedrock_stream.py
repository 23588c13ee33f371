"""The pure stream assemblers: events in, the one-shot answer's shape out, first text timed, and a
stream that stops early is an incomplete answer (never a success with part of the text)."""

import json

import pytest
from migbench.adapters import bedrock_body as body
from migbench.adapters.aws_common import IncompleteAnswer, MalformedAnswer
from migbench.adapters.bedrock_stream import (
    assemble_anthropic_stream,
    assemble_converse_stream,
    assemble_nova_stream,
    decode_invoke_chunks,
)
from migbench.contracts import ErrorClass


class Ticks:
    """A clock that reads 1, 2, 3, ... and remembers how often it was read."""

    def __init__(self):
        self.reads = 0

    def __call__(self):
        self.reads += 1
        return float(self.reads)


CONVERSE = [
    {"messageStart": {"role": "assistant"}},
    {"contentBlockDelta": {"delta": {"text": "TOTAL_"}, "contentBlockIndex": 0}},
    {"contentBlockDelta": {"delta": {"text": "AMOUNT: 12.50"}, "contentBlockIndex": 0}},
    {"contentBlockStop": {"contentBlockIndex": 0}},
    {"messageStop": {"stopReason": "end_turn"}},
    {"metadata": {"usage": {"inputTokens": 40, "outputTokens": 7, "totalTokens": 47}, "metrics": {"latencyMs": 321}}},
]


def test_converse_stream_rebuilds_the_converse_answer_and_times_the_first_text_once():
    clock = Ticks()
    done = assemble_converse_stream(iter(CONVERSE), clock)
    parsed = body.parse_converse_response(done.answer)
    assert (parsed.text, parsed.input_tokens, parsed.output_tokens, parsed.stop_reason, parsed.server_latency_ms) == \
        ("TOTAL_AMOUNT: 12.50", 40, 7, "end_turn", 321.0)
    assert done.first_token_at == 1.0 and clock.reads == 1 and done.events == len(CONVERSE)


def test_an_empty_delta_is_not_the_first_token():
    events = [{"contentBlockDelta": {"delta": {"text": ""}, "contentBlockIndex": 0}}, *CONVERSE]
    done = assemble_converse_stream(events, Ticks())
    assert done.first_token_at == 1.0 and done.events == len(events)


@pytest.mark.parametrize("drop,missing", [("metadata", "metadata"), ("messageStop", "messageStop")])
def test_a_converse_stream_without_its_stop_or_metadata_is_incomplete(drop, missing):
    events = [e for e in CONVERSE if drop not in e]
    with pytest.raises(IncompleteAnswer, match=missing) as err:
        assemble_converse_stream(events, Ticks())
    assert err.value.error_class is ErrorClass.TRANSIENT
    assert "19 characters" in str(err.value)


def test_a_stream_that_ends_after_part_of_the_text_is_incomplete():
    with pytest.raises(IncompleteAnswer, match="6 characters"):
        assemble_converse_stream(CONVERSE[:2], Ticks())


def _chunks(chunks):
    return [{"chunk": {"bytes": json.dumps(c).encode()}} for c in chunks]


NOVA = [
    {"messageStart": {"role": "assistant"}},
    {"contentBlockDelta": {"delta": {"text": "ABN: 51 824"}, "contentBlockIndex": 0}},
    {"contentBlockDelta": {"delta": {"text": " 753 556"}, "contentBlockIndex": 0}},
    {"contentBlockStop": {"contentBlockIndex": 0}},
    {"messageStop": {"stopReason": "max_tokens"}},
    {"metadata": {"usage": {"inputTokens": 90, "outputTokens": 9}, "metrics": {}, "trace": {}},
     "amazon-bedrock-invocationMetrics": {"inputTokenCount": 90, "outputTokenCount": 9, "invocationLatency": 640,
                                          "firstByteLatency": 120}},
]


def test_nova_invoke_stream_rebuilds_the_nova_body_with_its_invocation_metrics():
    done = assemble_nova_stream(decode_invoke_chunks(_chunks(NOVA)), Ticks())
    parsed = body.parse_nova_invoke_response(done.answer, done.headers)
    assert (parsed.text, parsed.input_tokens, parsed.output_tokens, parsed.stop_reason, parsed.server_latency_ms) == \
        ("ABN: 51 824 753 556", 90, 9, "max_tokens", 640.0)
    assert done.first_token_at == 1.0


def test_nova_invoke_stream_without_message_stop_is_incomplete():
    with pytest.raises(IncompleteAnswer, match="messageStop"):
        assemble_nova_stream(decode_invoke_chunks(_chunks(NOVA[:3])), Ticks())


ANTHROPIC = [
    {"type": "message_start", "message": {"role": "assistant", "content": [], "usage": {"input_tokens": 55,
                                                                                        "output_tokens": 1}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "GST: "}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "1.14"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 4}},
    {"type": "message_stop", "amazon-bedrock-invocationMetrics": {"inputTokenCount": 55, "outputTokenCount": 4,
                                                                 "invocationLatency": 410, "firstByteLatency": 80}},
]


def test_anthropic_invoke_stream_rebuilds_the_messages_body():
    done = assemble_anthropic_stream(decode_invoke_chunks(_chunks(ANTHROPIC)), Ticks())
    parsed = body.parse_anthropic_invoke_response(done.answer, done.headers)
    assert (parsed.text, parsed.input_tokens, parsed.output_tokens, parsed.stop_reason, parsed.server_latency_ms) == \
        ("GST: 1.14", 55, 4, "end_turn", 410.0)


def test_anthropic_stream_without_message_stop_is_incomplete():
    with pytest.raises(IncompleteAnswer, match="message_stop"):
        assemble_anthropic_stream(decode_invoke_chunks(_chunks(ANTHROPIC[:-1])), Ticks())


def test_an_invoke_chunk_that_is_not_json_is_malformed():
    with pytest.raises(MalformedAnswer, match="not JSON"):
        list(decode_invoke_chunks([{"chunk": {"bytes": b"<html>502</html>"}}]))


def _tool_events(input_parts):
    return [
        {"messageStart": {"role": "assistant"}},
        {"contentBlockStart": {"start": {"toolUse": {"toolUseId": "tooluse_1", "name": "record_invoice"}},
                               "contentBlockIndex": 0}},
        *({"contentBlockDelta": {"delta": {"toolUse": {"input": p}}, "contentBlockIndex": 0}} for p in input_parts),
        {"contentBlockStop": {"contentBlockIndex": 0}},
        {"messageStop": {"stopReason": "tool_use"}},
        {"metadata": {"usage": {"inputTokens": 900, "outputTokens": 20, "cacheReadInputTokens": 800,
                                "cacheWriteInputTokens": 0}, "metrics": {"latencyMs": 200}}},
    ]


def test_a_streamed_tool_call_becomes_the_toolUse_block_with_its_input_parsed():
    done = assemble_converse_stream(_tool_events(['{"TOTAL_', 'AMOUNT": "12.50", "ABN"', ': "51 824 753 556"}']),
                                    Ticks())
    assert done.answer["output"]["message"]["content"] == [{"toolUse": {
        "toolUseId": "tooluse_1", "name": "record_invoice",
        "input": {"TOTAL_AMOUNT": "12.50", "ABN": "51 824 753 556"}}}]
    assert done.first_token_at == 1.0
    parsed = body.parse_converse_response(done.answer, "record_invoice")
    assert json.loads(parsed.text) == {"TOTAL_AMOUNT": "12.50", "ABN": "51 824 753 556"}
    assert parsed.extra[body.STRUCTURED_KEY] == "tool_use" and parsed.cache_read_tokens == 800


def test_tool_input_that_is_not_json_reads_as_a_parse_failure_not_an_empty_call():
    done = assemble_converse_stream(_tool_events(['{"TOTAL_AMOUNT": "12.5']), Ticks())
    parsed = body.parse_converse_response(done.answer, "record_invoice")
    assert parsed.extra[body.STRUCTURED_KEY] == "text"
