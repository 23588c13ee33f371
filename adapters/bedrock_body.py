"""Pure request builders and response parsers for the three Bedrock call shapes.

- Converse (`client.converse(**kwargs)`): raw image bytes, camelCase usage, metrics.latencyMs.
- Nova native InvokeModel: `schemaVersion: messages-v1`, base64 image strings, camelCase usage.
- Anthropic messages InvokeModel: `anthropic_version`, base64 sources, snake_case usage.

The usage keys differ by shape and that is the migration guide's cost bug: it reads
`usage.input_tokens` from a Nova body, which only has `inputTokens`, so Nova cost was always zero.
Each parser reads its own shape's keys and nothing else, and refuses an answer without its shape's
text (MalformedAnswer): an empty, HTML or keyless 200 is a failed attempt, never an empty success.

Two Converse features are experiment variables: a forced tool call (structured output: the answer
is the tool's input, returned as its JSON text so parsing, storage and rescoring read it like any
JSON answer) and a prompt-cache checkpoint after the instructions shared by every document.
No I/O here.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from migbench.adapters.aws_common import MalformedAnswer
from migbench.contracts import GenParams, ToolSpec

ImagePart = tuple[bytes, str]  # (encoded bytes, format: png | jpeg | gif | webp)

MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "gif": "image/gif", "webp": "image/webp"}
_DEFAULT = GenParams()


@dataclass(frozen=True)
class ParsedOutput:
    text: str
    input_tokens: int | None
    output_tokens: int | None
    stop_reason: str | None
    server_latency_ms: float | None = None
    cache_read_tokens: int | None = None  # input tokens read from the prompt cache
    cache_write_tokens: int | None = None  # input tokens written to the prompt cache
    extra: dict[str, Any] = field(default_factory=dict)  # facts for Response.extra (structured_output)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def document_name(doc_id: str) -> str:
    """Converse document names allow letters, digits, single spaces, hyphens, parentheses, brackets."""
    name = re.sub(r"[^A-Za-z0-9\-\(\)\[\] ]+", "-", doc_id).strip("- ")
    return re.sub(r"\s{2,}", " ", name)[:200] or "document"


def _inference_config(params: GenParams) -> dict[str, Any]:
    # Defaults are left out: some models (Claude 4.5) refuse temperature and topP together.
    cfg: dict[str, Any] = {"maxTokens": int(params.max_tokens), "temperature": float(params.temperature)}
    if params.top_p != _DEFAULT.top_p:
        cfg["topP"] = float(params.top_p)
    if params.stop:
        cfg["stopSequences"] = list(params.stop)
    return cfg


# ---------------------------------------------------------------- Converse


CACHE_POINT: dict[str, Any] = {"cachePoint": {"type": "default"}}


def tool_config(tool: ToolSpec) -> dict[str, Any]:
    """Converse toolConfig offering one tool and forcing the model to call it (toolChoice.tool)."""
    return {"tools": [{"toolSpec": {"name": tool.name, "description": tool.description,
                                    "inputSchema": {"json": tool.input_schema}}}],
            "toolChoice": {"tool": {"name": tool.name}}}


def converse_request(model_id: str, prompt: str, images: Sequence[ImagePart] = (), *, system: str | None = None,
                     params: GenParams = _DEFAULT, document: bytes | None = None,
                     document_name_: str = "document", tool: ToolSpec | None = None,
                     cache_point: bool = False) -> dict[str, Any]:
    """kwargs for bedrock-runtime `converse`: images (and an optional PDF document block), then the text.

    cache_point: the instructions come first, then a cachePoint, then the pages, so the cached prefix
    (tools, system, instructions) is the same for every document of a type; the pages never are.
    """
    pages: list[dict[str, Any]] = [{"image": {"format": fmt, "source": {"bytes": data}}} for data, fmt in images]
    if document is not None:
        pages.append({"document": {"format": "pdf", "name": document_name(document_name_),
                                   "source": {"bytes": document}}})
    content = [{"text": prompt}, dict(CACHE_POINT), *pages] if cache_point else [*pages, {"text": prompt}]
    kwargs: dict[str, Any] = {
        "modelId": model_id,
        "messages": [{"role": "user", "content": content}],
        "inferenceConfig": _inference_config(params),
    }
    if system:
        kwargs["system"] = [{"text": system}]
    if tool is not None:
        kwargs["toolConfig"] = tool_config(tool)
    return kwargs


def _content(answer: Mapping[str, Any], path: tuple[str, ...], what: str) -> list[Any]:
    """The answer's content list at `path`, or MalformedAnswer naming the keys that did arrive."""
    node: Any = answer
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
    if not isinstance(node, list):
        keys = sorted(k for k in answer if k != "ResponseMetadata") if isinstance(answer, Mapping) else []
        raise MalformedAnswer(f"{what} answer has no {'.'.join(path)} list (keys: {', '.join(keys) or 'none'})")
    return node


STRUCTURED_KEY = "structured_output"  # Response.extra: "tool_use", or "text" when the tool was not called


def tool_input(content: Sequence[Any], tool_name: str) -> dict[str, Any] | None:
    """The input object of the answer's call to `tool_name`; None when the model did not make one."""
    for part in content:
        use = part.get("toolUse") if isinstance(part, dict) else None
        if isinstance(use, dict) and use.get("name") == tool_name and isinstance(use.get("input"), dict):
            return use["input"]
    return None


def parse_converse_response(resp: Mapping[str, Any], tool_name: str | None = None) -> ParsedOutput:
    """The answer's text and usage. With `tool_name` (a forced tool call was asked for), the text is the
    JSON of that call's input; an answer without the call keeps its own text and says so in
    extra[STRUCTURED_KEY] = "text" (the caller records it as a parse failure)."""
    content = _content(resp, ("output", "message", "content"), "Converse")
    text = "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    extra: dict[str, Any] = {}
    if tool_name is not None:
        called = tool_input(content, tool_name)
        extra[STRUCTURED_KEY] = "text" if called is None else "tool_use"
        if called is not None:
            text = json.dumps(called, ensure_ascii=False)
    usage = resp.get("usage") or {}
    metrics = resp.get("metrics") or {}
    return ParsedOutput(text=text, input_tokens=_int(usage.get("inputTokens")),
                        output_tokens=_int(usage.get("outputTokens")), stop_reason=resp.get("stopReason"),
                        server_latency_ms=_float(metrics.get("latencyMs")),
                        cache_read_tokens=_int(usage.get("cacheReadInputTokens")),
                        cache_write_tokens=_int(usage.get("cacheWriteInputTokens")), extra=extra)


# ---------------------------------------------------------------- Nova native InvokeModel


def nova_invoke_body(prompt: str, images: Sequence[ImagePart] = (), *, system: str | None = None,
                     params: GenParams = _DEFAULT) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"image": {"format": fmt, "source": {"bytes": _b64(data)}}}
                                     for data, fmt in images]
    content.append({"text": prompt})
    body: dict[str, Any] = {"schemaVersion": "messages-v1",
                            "messages": [{"role": "user", "content": content}],
                            "inferenceConfig": _inference_config(params)}
    if system:
        body["system"] = [{"text": system}]
    return body


def parse_nova_invoke_response(body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> ParsedOutput:
    content = _content(body, ("output", "message", "content"), "Nova InvokeModel")
    text = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    usage = body.get("usage") or {}
    h = headers or {}
    return ParsedOutput(
        text=text,
        input_tokens=_int(usage.get("inputTokens", h.get("x-amzn-bedrock-input-token-count"))),
        output_tokens=_int(usage.get("outputTokens", h.get("x-amzn-bedrock-output-token-count"))),
        stop_reason=body.get("stopReason"),
        server_latency_ms=_float(h.get("x-amzn-bedrock-invocation-latency")))


# ---------------------------------------------------------------- Anthropic messages InvokeModel


def anthropic_invoke_body(prompt: str, images: Sequence[ImagePart] = (), *, system: str | None = None,
                          params: GenParams = _DEFAULT, document: bytes | None = None) -> dict[str, Any]:
    content: list[dict[str, Any]] = [
        {"type": "image", "source": {"type": "base64", "media_type": MEDIA_TYPES[fmt], "data": _b64(data)}}
        for data, fmt in images]
    if document is not None:
        content.append({"type": "document",
                        "source": {"type": "base64", "media_type": "application/pdf", "data": _b64(document)}})
    content.append({"type": "text", "text": prompt})
    body: dict[str, Any] = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": int(params.max_tokens),
                            "temperature": float(params.temperature),
                            "messages": [{"role": "user", "content": content}]}
    if params.top_p != _DEFAULT.top_p:
        body["top_p"] = float(params.top_p)
    if params.stop:
        body["stop_sequences"] = list(params.stop)
    if system:
        body["system"] = system
    return body


def parse_anthropic_invoke_response(body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> ParsedOutput:
    text = "".join(part.get("text", "") for part in _content(body, ("content",), "Anthropic InvokeModel")
                   if isinstance(part, dict) and part.get("type") == "text")
    usage = body.get("usage") or {}
    h = headers or {}
    return ParsedOutput(
        text=text,
        input_tokens=_int(usage.get("input_tokens", h.get("x-amzn-bedrock-input-token-count"))),
        output_tokens=_int(usage.get("output_tokens", h.get("x-amzn-bedrock-output-token-count"))),
        stop_reason=body.get("stop_reason"),
        server_latency_ms=_float(h.get("x-amzn-bedrock-invocation-latency")))


def invoke_request(model_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """kwargs for bedrock-runtime `invoke_model`."""
    return {"modelId": model_id, "body": json.dumps(body).encode("utf-8"),
            "contentType": "application/json", "accept": "application/json"}


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
