"""The `application/vnd.amazon.eventstream` encoding and the two bedrock-runtime streaming answers
built with it (ConverseStream, InvokeModelWithResponseStream). Pure: frames are bytes, the server
writes them.

A frame (botocore.eventstream decodes it) is: a 12-byte prelude (total length, headers length,
CRC32 of those 8 bytes; big-endian), the headers, the payload, and a CRC32 of everything before it.
A header is a 1-byte name length, the name, a 1-byte value type (7: string), a 2-byte value length
and the value. An event has `:message-type: event`, `:event-type` (the union member's name) and
`:content-type: application/json`; an exception inside the stream has `:message-type: exception`
and `:exception-type` in lower camel case (`throttlingException`), with `{"message": ...}` as payload.

The answers carry the same text, usage and stop reason as the non-streamed call (the server
reuses its responder), split into several text deltas so a client can tell its first token apart
from the end of the answer.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import struct
from binascii import crc32
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote

from migbench.emulator.protocol import Usage, converse_response

CONTENT_TYPE = "application/vnd.amazon.eventstream"
_STRING = 7
_PRELUDE = struct.Struct(">II")
_ROUTE = re.compile(r"^/model/(?P<model>[^/?]+)/(?P<op>converse-stream|invoke-with-response-stream)$")
STREAM_OPERATIONS = {"converse-stream": ("ConverseStream", "Converse"),
                     "invoke-with-response-stream": ("InvokeModelWithResponseStream", "InvokeModel")}


# --- the encoding -------------------------------------------------------------------------------

def encode_headers(headers: dict[str, str]) -> bytes:
    out = bytearray()
    for name, value in headers.items():
        raw_name, raw_value = name.encode("utf-8"), value.encode("utf-8")
        if len(raw_name) > 255 or len(raw_value) > 0xFFFF:
            raise ValueError(f"event stream header {name!r} is too long")
        out += struct.pack(">B", len(raw_name)) + raw_name + struct.pack(">BH", _STRING, len(raw_value)) + raw_value
    return bytes(out)


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One frame: prelude + prelude CRC, headers, payload, message CRC (CRC32, as botocore checks)."""
    raw_headers = encode_headers(headers)
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = _PRELUDE.pack(total, len(raw_headers))
    head = prelude + struct.pack(">I", crc32(prelude) & 0xFFFFFFFF) + raw_headers + payload
    return head + struct.pack(">I", crc32(head) & 0xFFFFFFFF)


def event(event_type: str, payload: dict[str, Any]) -> bytes:
    return encode_message({":message-type": "event", ":event-type": event_type,
                           ":content-type": "application/json"}, json.dumps(payload).encode("utf-8"))


def exception(exception_type: str, message: str) -> bytes:
    """An exception event (`throttlingException`, `modelStreamErrorException`, ...): botocore raises
    it as EventStreamError with that code while the client iterates the stream."""
    return encode_message({":message-type": "exception", ":exception-type": exception_type,
                           ":content-type": "application/json"}, json.dumps({"message": message}).encode("utf-8"))


# --- routing ------------------------------------------------------------------------------------

def route(raw_path: str) -> tuple[str, str, str] | None:
    """(streaming operation, the one-shot operation it mirrors, decoded model id), or None when
    the path is not a streaming one."""
    m = _ROUTE.match(raw_path.split("?", 1)[0])
    if not m:
        return None
    stream_op, base_op = STREAM_OPERATIONS[m.group("op")]
    return stream_op, base_op, unquote(m.group("model"))


# --- the answers --------------------------------------------------------------------------------

def split_text(text: str, pieces: int) -> list[str]:
    """`text` in up to `pieces` non-empty consecutive parts (joined, they are `text` again)."""
    if not text:
        return []
    n = max(1, min(pieces, len(text)))
    size, extra = divmod(len(text), n)
    bounds = [i * size + min(i, extra) for i in range(n + 1)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


Block = tuple[dict[str, Any] | None, list[dict[str, Any]]]  # (contentBlockStart's start, the deltas)


def converse_blocks(answer: dict[str, Any], pieces: int) -> list[Block]:
    """A Converse answer's content as stream blocks: a text block as text deltas; a tool call as its
    contentBlockStart (id, name) and its input's JSON in `toolUse.input` string deltas."""
    blocks: list[Block] = []
    for part in answer["output"]["message"]["content"]:
        if "toolUse" in part:
            use = part["toolUse"]
            deltas = [{"toolUse": {"input": p}} for p in split_text(json.dumps(use.get("input", {})), pieces)]
            blocks.append(({"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}, deltas))
        else:
            blocks.append((None, [{"text": p} for p in split_text(str(part.get("text", "")), pieces)]))
    return blocks


def converse_events(blocks: list[Block], answer: dict[str, Any],
                    latency_ms: Callable[[], int]) -> Iterator[tuple[str, dict[str, Any]]]:
    """ConverseStream's events in order; the metadata's latency is read when it is sent."""
    yield "messageStart", {"role": "assistant"}
    for i, (start, deltas) in enumerate(blocks):
        if start is not None:
            yield "contentBlockStart", {"start": start, "contentBlockIndex": i}
        for delta in deltas:
            yield "contentBlockDelta", {"contentBlockIndex": i, "delta": delta}
        yield "contentBlockStop", {"contentBlockIndex": i}
    yield "messageStop", {"stopReason": answer["stopReason"]}
    yield "metadata", {"usage": dict(answer["usage"]), "metrics": {"latencyMs": latency_ms()}}


def _invocation_metrics(usage: Usage, latency_ms: int, first_byte_ms: int) -> dict[str, int]:
    return {"inputTokenCount": usage.input_tokens, "outputTokenCount": usage.output_tokens,
            "invocationLatency": latency_ms, "firstByteLatency": first_byte_ms}


def nova_chunks(deltas: list[str], usage: Usage, stop_reason: str, latency_ms: Callable[[], int],
                first_byte_ms: Callable[[], int]) -> Iterator[dict[str, Any]]:
    """Nova's native stream: one Converse-named event per chunk; the last carries the metrics."""
    yield {"messageStart": {"role": "assistant"}}
    for piece in deltas:
        yield {"contentBlockDelta": {"delta": {"text": piece}, "contentBlockIndex": 0}}
    yield {"contentBlockStop": {"contentBlockIndex": 0}}
    yield {"messageStop": {"stopReason": stop_reason}}
    yield {"metadata": {"usage": {"inputTokens": usage.input_tokens, "outputTokens": usage.output_tokens},
                        "metrics": {}, "trace": {}},
           "amazon-bedrock-invocationMetrics": _invocation_metrics(usage, latency_ms(), first_byte_ms())}


def anthropic_chunks(deltas: list[str], usage: Usage, stop_reason: str, model: str, request_id: str,
                     latency_ms: Callable[[], int], first_byte_ms: Callable[[], int]) -> Iterator[dict[str, Any]]:
    """Anthropic's messages stream as Bedrock relays it; message_stop carries the metrics."""
    yield {"type": "message_start", "message": {
        "id": f"msg_bdrk_{request_id.replace('-', '')[:24]}", "type": "message", "role": "assistant",
        "model": model, "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": usage.input_tokens, "output_tokens": 1}}}
    yield {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    for piece in deltas:
        yield {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
    yield {"type": "content_block_stop", "index": 0}
    yield {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None},
           "usage": {"output_tokens": usage.output_tokens}}
    yield {"type": "message_stop",
           "amazon-bedrock-invocationMetrics": _invocation_metrics(usage, latency_ms(), first_byte_ms())}


def chunk_event(chunk: dict[str, Any]) -> bytes:
    """An InvokeModelWithResponseStream `chunk` event: the model's JSON chunk, base64 in `bytes`."""
    return event("chunk", {"bytes": base64.b64encode(json.dumps(chunk).encode("utf-8")).decode("ascii")})


def _is_delta(name: str, payload: dict[str, Any]) -> bool:
    return name == "contentBlockDelta" or "contentBlockDelta" in payload or payload.get("type") == "content_block_delta"


def stream_frames(kind: str, text: str, usage: Usage, stop_reason: str, *, model: str, request_id: str,
                  first_token_s: float, delta_s: float, pieces: int, wait: Callable[[float], bool],
                  clock: Callable[[], float], started: float,
                  fault: tuple[str, str] | None | bool = False, answer: dict[str, Any] | None = None) -> Iterator[bytes]:
    """The frames of one streamed answer, produced as they are due: the model's time before its first
    token (`first_token_s`), then `delta_s` between text deltas. `kind` is converse | nova |
    anthropic. `wait(seconds)` returns True when the server is stopping (the stream ends there).

    `fault`: False answers in full; (exception type, message) puts that exception event after half
    the deltas; None ends the stream there without its stop and metadata events (a cut stream).
    `answer`: for converse, the non-streamed Converse answer to stream (tool calls and cache counts
    included); default: `text` as a plain answer."""
    deltas = split_text(text, pieces)
    if kind == "converse":
        answer = answer or converse_response(text, usage, 0, stop_reason)
        blocks = converse_blocks(answer, pieces)
        n_deltas = sum(len(d) for _, d in blocks)
    else:
        n_deltas = len(deltas)
    cut_at = max(1, n_deltas // 2) if fault is not False else -1
    marks: dict[str, float] = {}

    def elapsed_ms(key: str = "end") -> Callable[[], int]:
        return lambda: int(((marks.get(key) or clock()) - started) * 1000)

    if kind == "converse":
        messages: Iterator[tuple[str, dict[str, Any]]] = converse_events(blocks, answer, elapsed_ms())
    elif kind == "nova":
        messages = (("chunk", c) for c in nova_chunks(deltas, usage, stop_reason, elapsed_ms(), elapsed_ms("first")))
    else:
        messages = (("chunk", c) for c in anthropic_chunks(deltas, usage, stop_reason, model, request_id,
                                                           elapsed_ms(), elapsed_ms("first")))
    if wait(first_token_s):
        return
    sent = 0
    for name, payload in messages:
        if _is_delta(name, payload):
            if sent and wait(delta_s):
                return
            marks.setdefault("first", clock())
            sent += 1
        yield event(name, payload) if kind == "converse" else chunk_event(payload)
        if sent == cut_at and _is_delta(name, payload):
            if fault is not None and fault is not False:
                yield exception(*fault)
            return
