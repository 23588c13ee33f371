"""The emulator's event stream encoding, read back by botocore's own decoder and parser."""

import base64
import json

import pytest
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer
from migbench.emulator import eventstream as ES
from migbench.emulator.protocol import Usage


def decode(data):
    buf = EventStreamBuffer()
    buf.add_data(data)
    return list(buf)


def test_an_event_round_trips_through_botocores_decoder():
    payload = {"contentBlockIndex": 0, "delta": {"text": "TOTAL: $1 \u00e9"}}
    [msg] = decode(ES.event("contentBlockDelta", payload))
    assert msg.headers == {":message-type": "event", ":event-type": "contentBlockDelta",
                           ":content-type": "application/json"}
    assert json.loads(msg.payload) == payload


def test_an_exception_frame_carries_its_lower_case_type_and_reads_as_an_error():
    [msg] = decode(ES.exception("throttlingException", "slow down"))
    assert msg.headers[":message-type"] == "exception"
    assert msg.headers[":exception-type"] == "throttlingException"
    assert msg.to_response_dict()["status_code"] == 400
    assert json.loads(msg.payload) == {"message": "slow down"}


def test_frames_split_anywhere_decode_in_order():
    frames = b"".join(ES.event("messageStop", {"stopReason": "end_turn"}) for _ in range(3))
    buf = EventStreamBuffer()
    out = []
    for i in range(0, len(frames), 7):
        buf.add_data(frames[i:i + 7])
        out.extend(buf)
    assert [json.loads(m.payload) for m in out] == [{"stopReason": "end_turn"}] * 3


def test_a_flipped_payload_byte_fails_botocores_checksum():
    frame = bytearray(ES.event("messageStart", {"role": "assistant"}))
    frame[-6] ^= 0x01
    with pytest.raises(ChecksumMismatch):
        decode(bytes(frame))


def test_stream_paths_route_to_the_operation_they_mirror():
    assert ES.route("/model/au.amazon.nova-pro-v1%3A0/converse-stream") == (
        "ConverseStream", "Converse", "au.amazon.nova-pro-v1:0")
    assert ES.route("/model/m/invoke-with-response-stream") == ("InvokeModelWithResponseStream", "InvokeModel", "m")
    assert ES.route("/model/m/converse") is None


def test_split_text_keeps_every_character():
    assert "".join(ES.split_text("SUPPLIER_NAME: ACME", 6)) == "SUPPLIER_NAME: ACME"
    assert len(ES.split_text("SUPPLIER_NAME: ACME", 6)) == 6
    assert ES.split_text("ab", 6) == ["a", "b"] and ES.split_text("", 6) == []


def _frames(kind="converse", fault=False, text="KEY: value and more", pieces=4):
    waits = []
    frames = list(ES.stream_frames(kind, text, Usage(10, 5), "end_turn", model="m", request_id="r-1",
                                   first_token_s=0.5, delta_s=0.01, pieces=pieces,
                                   wait=lambda s: waits.append(s) and False, clock=lambda: 1.0, started=0.0,
                                   fault=fault))
    return [m for f in frames for m in decode(f)], waits


def test_a_converse_stream_waits_before_the_first_delta_and_between_deltas():
    msgs, waits = _frames()
    names = [m.headers.get(":event-type") for m in msgs]
    assert names == ["messageStart", *["contentBlockDelta"] * 4, "contentBlockStop", "messageStop", "metadata"]
    assert waits == [0.5, 0.01, 0.01, 0.01]
    assert json.loads(msgs[-1].payload)["metrics"] == {"latencyMs": 1000}


def test_a_stream_fault_puts_the_exception_after_half_the_deltas():
    msgs, _ = _frames(fault=("throttlingException", "Too many tokens"))
    assert [m.headers.get(":event-type") for m in msgs[:-1]] == ["messageStart", "contentBlockDelta",
                                                                 "contentBlockDelta"]
    assert msgs[-1].headers[":exception-type"] == "throttlingException"


def test_a_cut_stream_ends_without_stop_or_metadata():
    msgs, _ = _frames(fault=None)
    assert [m.headers.get(":event-type") for m in msgs] == ["messageStart", "contentBlockDelta", "contentBlockDelta"]


def test_invoke_chunks_are_the_models_json_in_base64():
    msgs, _ = _frames(kind="anthropic")
    chunks = [json.loads(base64.b64decode(json.loads(m.payload)["bytes"])) for m in msgs]
    assert {m.headers[":event-type"] for m in msgs} == {"chunk"}
    assert "".join(c["delta"]["text"] for c in chunks if c["type"] == "content_block_delta") == "KEY: value and more"
    assert chunks[-1]["amazon-bedrock-invocationMetrics"]["outputTokenCount"] == 5


def test_a_converse_tool_answer_streams_as_block_start_and_input_deltas():
    from migbench.emulator.protocol import converse_response

    answer = converse_response("", Usage(10, 5), 0, "tool_use")
    answer["output"]["message"]["content"] = [{"toolUse": {"toolUseId": "t1", "name": "record", "input": {"A": "1"}}}]
    frames = ES.stream_frames("converse", "", Usage(10, 5), "tool_use", model="m", request_id="r", first_token_s=0,
                              delta_s=0, pieces=3, wait=lambda s: False, clock=lambda: 0.0, started=0.0,
                              answer=answer)
    msgs = [m for f in frames for m in decode(f)]
    payloads = [(m.headers[":event-type"], json.loads(m.payload)) for m in msgs]
    assert payloads[1] == ("contentBlockStart", {"start": {"toolUse": {"toolUseId": "t1", "name": "record"}},
                                                 "contentBlockIndex": 0})
    joined = "".join(p["delta"]["toolUse"]["input"] for n, p in payloads if n == "contentBlockDelta")
    assert json.loads(joined) == {"A": "1"} and payloads[-2] == ("messageStop", {"stopReason": "tool_use"})
