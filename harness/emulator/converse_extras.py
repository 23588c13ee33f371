"""Converse tool use and prompt caching as the emulator answers them. SYNTHETIC: no model runs here.

Tool use: a request's `toolConfig` is validated the way Bedrock refuses it (ValidationException, 400:
no tools, a bad name or schema, a toolChoice naming a tool that is not offered). When a tool is
offered, an answer that is a JSON object becomes a call to it (`stopReason: tool_use`, content
`[{"toolUse": {"toolUseId", "name", "input"}}]`), its list properties as arrays; any other answer
stays text, which is how a model that ignores the tool looks to a client.

Prompt caching: everything before the request's first `cachePoint` block (tools, system, messages,
in that order) is the cached prefix. The first request with a prefix writes it
(`cacheWriteInputTokens`), later ones within the TTL read it (`cacheReadInputTokens`); each read
renews the TTL (AWS: five minutes after each access). `inputTokens` then counts only the tokens
neither read nor written, as Bedrock bills them
(https://docs.aws.amazon.com/bedrock/latest/userguide/prompt-caching.html). Unlike Bedrock, no
minimum prefix size is enforced (Nova needs about 1,000 tokens per checkpoint), so short prompts
exercise the path.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from migbench.contracts import NOT_FOUND
from migbench.emulator import protocol as P
from migbench.tokens import estimate_image_tokens, estimate_text_tokens

TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # ToolSpecification.name pattern (service-2.json)
CACHE_TTL_S = 300.0
# Messages in the service's style, not confirmed against a live endpoint ("modelled").
MSG_UNKNOWN_TOOL = "The tool {name} named in toolChoice isn't defined in toolConfig.tools."  # modelled
MSG_DUPLICATE_TOOL = "The toolConfig field must not contain duplicate tool names: {name}."  # modelled
MSG_SCHEMA_TYPE = "The value at toolConfig.tools.{i}.toolSpec.inputSchema.json.type must be object"  # modelled


@dataclass(frozen=True)
class ToolAsk:
    """What a request's toolConfig offers and demands."""

    schemas: dict[str, dict[str, Any]]  # tool name -> its input JSON Schema
    choice: str  # auto | any | tool
    forced: str | None = None  # the tool toolChoice.tool names

    @property
    def tool(self) -> str:
        """The tool an answer calls: the forced one, else the first offered."""
        return self.forced or next(iter(self.schemas))


def _invalid(value: object, where: str, rule: str) -> P.ApiError:
    return P.ApiError("ValidationException", f"1 validation error detected: Value '{value}' at '{where}' "
                                             f"failed to satisfy constraint: {rule}")


def read_tool_config(body: dict[str, Any]) -> ToolAsk | None:
    """The request's toolConfig, validated; None when it has none."""
    cfg = body.get("toolConfig")
    if cfg is None:
        return None
    if not isinstance(cfg, dict):
        raise _invalid(cfg, "toolConfig", "Member must be a structure")
    tools = cfg.get("tools")
    if not isinstance(tools, list) or not tools:
        raise _invalid(tools if tools is not None else "null", "toolConfig.tools",
                       "Member must have length greater than or equal to 1")
    schemas: dict[str, dict[str, Any]] = {}
    for i, tool in enumerate(tools, 1):
        where = f"toolConfig.tools.{i}.member"
        if isinstance(tool, dict) and "cachePoint" in tool and len(tool) == 1:
            continue
        spec = tool.get("toolSpec") if isinstance(tool, dict) else None
        if not isinstance(spec, dict):
            raise _invalid(tool, where, "Member must be a structure with toolSpec")
        name = spec.get("name")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise _invalid(name, f"{where}.toolSpec.name",
                           "Member must satisfy regular expression pattern: [a-zA-Z0-9_-]+")
        schema = (spec.get("inputSchema") or {}).get("json") if isinstance(spec.get("inputSchema"), dict) else None
        if not isinstance(schema, dict):
            raise _invalid("null", f"{where}.toolSpec.inputSchema.json", "Member must not be null")
        if schema.get("type") != "object":
            raise P.ApiError("ValidationException", MSG_SCHEMA_TYPE.format(i=i - 1))
        if name in schemas:
            raise P.ApiError("ValidationException", MSG_DUPLICATE_TOOL.format(name=name))
        schemas[name] = schema
    if not schemas:
        raise _invalid("[]", "toolConfig.tools", "Member must contain at least one toolSpec")
    choice = cfg.get("toolChoice")
    if choice is None:
        return ToolAsk(schemas, "auto")
    if not isinstance(choice, dict) or len(choice) != 1 or next(iter(choice)) not in ("auto", "any", "tool"):
        raise _invalid(choice, "toolConfig.toolChoice", "Member must have exactly one of: auto, any, tool")
    kind = next(iter(choice))
    if kind != "tool":
        return ToolAsk(schemas, kind)
    name = (choice["tool"] or {}).get("name") if isinstance(choice["tool"], dict) else None
    if name not in schemas:
        raise P.ApiError("ValidationException", MSG_UNKNOWN_TOOL.format(name=name))
    return ToolAsk(schemas, "tool", name)


def _as_schema(obj: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """A flat answer shaped to the tool's schema: "a | b" for an array property becomes ["a", "b"]
    (NOT_FOUND: []), anything else stays as it is."""
    props = schema.get("properties") or {}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if (props.get(key) or {}).get("type") == "array" and isinstance(value, str):
            value = [] if value.strip() == NOT_FOUND else [v.strip() for v in value.split("|") if v.strip()]
        out[key] = value
    return out


def tool_answer(text: str, ask: ToolAsk, request_id: str) -> tuple[list[dict[str, Any]], str] | None:
    """(content, stopReason) of a call to the asked tool when `text` is a JSON object; None: the
    answer stays text (the model did not call the tool)."""
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    name = ask.tool
    use_id = "tooluse_" + hashlib.sha256(request_id.encode()).hexdigest()[:22]
    return [{"toolUse": {"toolUseId": use_id, "name": name, "input": _as_schema(obj, ask.schemas[name])}}], "tool_use"


def tool_tokens(body: dict[str, Any]) -> int:
    """Input tokens the tool definitions add (a model reads them as part of the prompt)."""
    cfg = body.get("toolConfig")
    return estimate_text_tokens(json.dumps(cfg, sort_keys=True)) if cfg else 0


# --- prompt caching -------------------------------------------------------------------------------

def _block_tokens(block: Any) -> int:
    if not isinstance(block, dict):
        return 0
    if "text" in block:
        return estimate_text_tokens(str(block["text"]))
    if "image" in block:
        img = block["image"] or {}
        info = P.decode_image((img.get("source") or {}).get("bytes"), img.get("format"), "cached image", P.Limits())
        return estimate_image_tokens(info.width, info.height)
    if "toolSpec" in block:
        return estimate_text_tokens(json.dumps(block, sort_keys=True))
    return estimate_text_tokens(json.dumps(block, sort_keys=True))


def cache_prefix(body: dict[str, Any]) -> tuple[str, int] | None:
    """(digest, tokens) of what precedes the request's first cachePoint; None without one."""
    parts: list[Any] = []
    tokens = 0
    sections: list[tuple[str, list[Any]]] = [
        ("tools", list(((body.get("toolConfig") or {}).get("tools")) or [])),
        ("system", list(body.get("system") or [])),
    ]
    for m in body.get("messages") or []:
        if isinstance(m, dict):
            sections.append((str(m.get("role")), list(m.get("content") or [])))
    for section, blocks in sections:
        for block in blocks:
            if isinstance(block, dict) and "cachePoint" in block:
                digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
                return digest, tokens
            parts.append([section, block])
            tokens += _block_tokens(block)
    return None


class PromptCache:
    """Cached prefixes per model, each alive for `ttl_s` after its last use. Deterministic: the first
    request with a prefix writes it, every later one within the TTL reads it."""

    def __init__(self, ttl_s: float = CACHE_TTL_S, clock: Callable[[], float] = time.monotonic):
        self.ttl_s = ttl_s
        self.clock = clock
        self._expires: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def use(self, model_id: str, digest: str, tokens: int) -> tuple[int, int]:
        """(read, written) tokens of this request's prefix."""
        with self._lock:
            now = self.clock()
            hit = self._expires.get((model_id, digest), float("-inf")) > now
            self._expires[(model_id, digest)] = now + self.ttl_s
        return (tokens, 0) if hit else (0, tokens)

    def clear(self) -> None:
        with self._lock:
            self._expires.clear()


def apply_extras(payload: dict[str, Any], *, tool: tuple[list[dict[str, Any]], str] | None,
                 cache: tuple[int, int] | None) -> dict[str, Any]:
    """A Converse answer with the tool call in place of its text and the cache counts in its usage.
    The cached tokens leave inputTokens (they are billed at their own prices)."""
    if tool is not None:
        payload["output"]["message"]["content"], payload["stopReason"] = tool
    if cache is not None:
        read, written = cache
        usage = payload["usage"]
        usage["inputTokens"] = max(usage["inputTokens"] - read - written, 0)
        usage["cacheReadInputTokens"], usage["cacheWriteInputTokens"] = read, written
        usage["totalTokens"] = usage["inputTokens"] + usage["outputTokens"] + read + written
    return payload
