"""Pure assembly of Bedrock's streamed answers: ConverseStream events and InvokeModelWithResponseStream
chunks become the one answer the non-streamed call would have given, plus when its first text came.

Each assembler takes an iterable of already-decoded events (what botocore's EventStream yields, or
the JSON of each invoke chunk) and rebuilds the non-streamed answer's shape, so the existing
parsers (migbench.adapters.bedrock_body) read text, usage, stop reason and server latency from it
in one place. Time to first token is read from `clock` when the first event carrying output text
is consumed: the iterable is lazy, so that is when it arrived.

A stream is an answer only when it ended properly. One that stops before its stop event (and,
for Converse and Nova, before the metadata carrying usage) is an IncompleteAnswer, retried like a
cut-off body and never stored as a success with partial text. An exception event inside the stream
is raised by botocore's EventStream as EventStreamError while iterating; it passes through here
untouched and is classified by its lower-case code (aws_common). No I/O here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from migbench.adapters.aws_common import IncompleteAnswer, MalformedAnswer

Clock = Callable[[], float]


@dataclass(frozen=True)
class Assembled:
    """The non-streamed answer's shape rebuilt from a stream, and when its first text arrived
    (a `clock` reading; None when no text came)."""

    answer: dict[str, Any]
    first_token_at: float | None
    events: int
    headers: dict[str, str]  # what the non-streamed InvokeModel sends as x-amzn-bedrock-* headers


def _incomplete(what: str, missing: list[str], events: int, chars: int) -> IncompleteAnswer:
    return IncompleteAnswer(f"{what}: stream ended without {' and '.join(missing)} after {events} event(s) "
                            f"({chars} characters of text): not a complete answer")


def assemble_converse_stream(events: Iterable[Mapping[str, Any]], clock: Clock = time.perf_counter) -> Assembled:
    """ConverseStream events -> a Converse response dict (output.message.content, stopReason, usage,
    metrics) for parse_converse_response. A tool call (contentBlockStart with toolUse, then its
    input's JSON in string deltas) becomes the toolUse block the one-shot answer carries; its first
    input delta is the answer's first output, like a text delta."""
    texts: dict[int, list[str]] = {}
    tools: dict[int, dict[str, Any]] = {}
    inputs: dict[int, list[str]] = {}
    stop: Mapping[str, Any] | None = None
    metadata: Mapping[str, Any] | None = None
    first: float | None = None
    n = 0
    for event in events:
        n += 1
        if "contentBlockStart" in event:
            block = event["contentBlockStart"] or {}
            use = (block.get("start") or {}).get("toolUse")
            if isinstance(use, Mapping):
                tools[int(block.get("contentBlockIndex") or 0)] = {"toolUseId": use.get("toolUseId"),
                                                                   "name": use.get("name")}
        elif "contentBlockDelta" in event:
            block = event["contentBlockDelta"] or {}
            index = int(block.get("contentBlockIndex") or 0)
            delta = block.get("delta") or {}
            text = delta.get("text")
            part = (delta.get("toolUse") or {}).get("input") if isinstance(delta.get("toolUse"), Mapping) else None
            if isinstance(text, str) and text:
                texts.setdefault(index, []).append(text)
            elif isinstance(part, str) and part:
                inputs.setdefault(index, []).append(part)
            else:
                continue
            if first is None:
                first = clock()
        elif "messageStop" in event:
            stop = event["messageStop"] or {}
        elif "metadata" in event:
            metadata = event["metadata"] or {}
    missing = [name for name, seen in (("messageStop", stop), ("metadata", metadata)) if seen is None]
    if missing:
        chars = sum(len("".join(t)) for t in (*texts.values(), *inputs.values()))
        raise _incomplete("ConverseStream", missing, n, chars)
    assert stop is not None and metadata is not None
    content: list[dict[str, Any]] = []
    for index in sorted(texts.keys() | tools.keys()):
        if index in tools:
            raw = "".join(inputs.get(index, [])) or "{}"
            try:
                tool_input: Any = json.loads(raw)
            except ValueError:
                # The one-shot API hands back a parsed object; input that is not JSON is the model's
                # mistake, kept as text so the structured-output parser counts a parse failure.
                tool_input = raw
            content.append({"toolUse": {**tools[index], "input": tool_input}})
        else:
            content.append({"text": "".join(texts[index])})
    answer: dict[str, Any] = {"output": {"message": {"role": "assistant", "content": content}},
                              "stopReason": stop.get("stopReason"), "usage": dict(metadata.get("usage") or {}),
                              "metrics": dict(metadata.get("metrics") or {})}
    return Assembled(answer, first, n, {})


def decode_invoke_chunks(events: Iterable[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
    """InvokeModelWithResponseStream events ({"chunk": {"bytes": b"<model JSON>"}}) -> the model's
    JSON chunks; a chunk that is not a JSON object is a malformed answer."""
    for event in events:
        if "chunk" not in event:
            continue  # an event this version does not know: its members are not answer text
        raw = (event["chunk"] or {}).get("bytes") or b""
        try:
            chunk = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise MalformedAnswer(f"InvokeModelWithResponseStream: a chunk is not JSON ({len(raw)} bytes: "
                                  f"{bytes(raw[:60]).decode('utf-8', 'replace')!r})") from None
        if not isinstance(chunk, dict):
            raise MalformedAnswer("InvokeModelWithResponseStream: a chunk is not a JSON object")
        yield chunk


def _metric_headers(metrics: Mapping[str, Any] | None) -> dict[str, str]:
    """Bedrock's per-invocation metrics in a stream's last chunk, as the headers the non-streamed
    InvokeModel answer carries them in (the body parsers read those)."""
    m = metrics or {}
    pairs = (("x-amzn-bedrock-input-token-count", "inputTokenCount"),
             ("x-amzn-bedrock-output-token-count", "outputTokenCount"),
             ("x-amzn-bedrock-invocation-latency", "invocationLatency"))
    return {header: str(m[key]) for header, key in pairs if m.get(key) is not None}


INVOCATION_METRICS = "amazon-bedrock-invocationMetrics"


def assemble_nova_stream(chunks: Iterable[Mapping[str, Any]], clock: Clock = time.perf_counter) -> Assembled:
    """Nova's native stream chunks (the Converse event names, one per chunk) -> the Nova
    InvokeModel body for parse_nova_invoke_response."""
    texts: list[str] = []
    stop: Mapping[str, Any] | None = None
    usage: Mapping[str, Any] | None = None
    metrics: Mapping[str, Any] | None = None
    first: float | None = None
    n = 0
    for chunk in chunks:
        n += 1
        delta = (chunk.get("contentBlockDelta") or {}).get("delta") or {}
        text = delta.get("text")
        if isinstance(text, str) and text:
            if first is None:
                first = clock()
            texts.append(text)
        if "messageStop" in chunk:
            stop = chunk["messageStop"] or {}
        if "metadata" in chunk:
            usage = (chunk["metadata"] or {}).get("usage") or {}
        if INVOCATION_METRICS in chunk:
            metrics = chunk[INVOCATION_METRICS] or {}
    missing = [name for name, seen in (("messageStop", stop), ("metadata", usage if usage is not None else metrics))
               if seen is None]
    if missing:
        raise _incomplete("InvokeModelWithResponseStream (nova)", missing, n, len("".join(texts)))
    assert stop is not None
    answer: dict[str, Any] = {"output": {"message": {"role": "assistant", "content": [{"text": "".join(texts)}]}},
                              "stopReason": stop.get("stopReason"), "usage": dict(usage or {})}
    return Assembled(answer, first, n, _metric_headers(metrics))


def assemble_anthropic_stream(chunks: Iterable[Mapping[str, Any]], clock: Clock = time.perf_counter) -> Assembled:
    """Anthropic messages stream chunks (message_start, content_block_delta, message_delta,
    message_stop) -> the Anthropic InvokeModel body for parse_anthropic_invoke_response."""
    texts: dict[int, list[str]] = {}
    usage: dict[str, Any] = {}
    stop_reason: str | None = None
    stopped = False
    metrics: Mapping[str, Any] | None = None
    first: float | None = None
    n = 0
    for chunk in chunks:
        n += 1
        kind = chunk.get("type")
        if kind == "message_start":
            usage.update((chunk.get("message") or {}).get("usage") or {})
        elif kind == "content_block_delta":
            delta = chunk.get("delta") or {}
            text = delta.get("text") if delta.get("type", "text_delta") == "text_delta" else None
            if isinstance(text, str) and text:
                if first is None:
                    first = clock()
                texts.setdefault(int(chunk.get("index") or 0), []).append(text)
        elif kind == "message_delta":
            stop_reason = (chunk.get("delta") or {}).get("stop_reason") or stop_reason
            usage.update(chunk.get("usage") or {})
        elif kind == "message_stop":
            stopped = True
        if INVOCATION_METRICS in chunk:
            metrics = chunk[INVOCATION_METRICS] or {}
    if not stopped:
        raise _incomplete("InvokeModelWithResponseStream (anthropic)", ["message_stop"], n,
                          sum(len("".join(t)) for t in texts.values()))
    answer = {"type": "message", "role": "assistant",
              "content": [{"type": "text", "text": "".join(texts[i])} for i in sorted(texts)],
              "stop_reason": stop_reason, "usage": usage}
    return Assembled(answer, first, n, _metric_headers(metrics))

