"""bedrock-runtime wire protocol as botocore speaks it: pure functions, no sockets.

Request parsing turns a JSON body into a `ParsedRequest` or raises `ApiError`; response builders
return plain dicts. Shapes follow botocore's service model (bedrock-runtime 2023-09-30,
service-2.json): Converse is rest-json with blobs base64-encoded in JSON, InvokeModel carries the
model-native body untouched. Error statuses are the model's `httpStatusCode` values.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from migbench.tokens import estimate_image_tokens, estimate_text_tokens

CORAL_BEDROCK = "http://internal.amazon.com/coral/com.amazon.bedrock/"
# Authentication failures are raised by the Coral front end, not by Bedrock itself.
CORAL_SERVICE = "http://internal.amazon.com/coral/com.amazon.coral.service/"

# HTTP status per error code, from service-2.json (`error.httpStatusCode`) and, for the
# authentication codes, from what AWS front ends answer.
ERROR_STATUS: dict[str, int] = {
    "ValidationException": 400,
    "ServiceQuotaExceededException": 400,
    "AccessDeniedException": 403,
    "ResourceNotFoundException": 404,
    "ModelTimeoutException": 408,
    "ModelErrorException": 424,
    "ThrottlingException": 429,
    "ModelNotReadyException": 429,
    "InternalServerException": 500,
    "ServiceUnavailableException": 503,
    "MissingAuthenticationTokenException": 403,
    "InvalidSignatureException": 403,
    "UnrecognizedClientException": 403,
    "IncompleteSignatureException": 400,
    "UnknownOperationException": 404,
}
AUTH_CODES = {"MissingAuthenticationTokenException", "InvalidSignatureException",
              "UnrecognizedClientException", "IncompleteSignatureException", "UnknownOperationException"}

# Messages. "seen" = quoted in public bug reports of real responses; "modelled" = plausible
# wording in the service's style, not confirmed against a live endpoint.
MSG_INVALID_MODEL = "The provided model identifier is invalid."  # seen
MSG_ON_DEMAND = ("Invocation of model ID {model} with on-demand throughput isn\u2019t supported. Retry your "
                 "request with the ID or ARN of an inference profile that contains this model.")  # seen
MSG_NO_ACCESS = "You don't have access to the model with the specified model ID."  # seen
MSG_TOO_MANY_TOKENS = "Too many tokens, please wait before trying again."  # seen
MSG_TOO_MANY_REQUESTS = "Too many requests, please wait before trying again."  # seen
MSG_FIRST_USER = ("A conversation must start with a user message. Try again with a conversation that starts "
                  "with a user message.")  # seen
MSG_UNSUPPORTED_IMAGE = ("This model doesn't support the image content block that you provided. Try again "
                         "with a supported content block.")  # modelled
MSG_IMAGE_TOO_BIG = "Image dimensions {w}x{h} exceed the maximum allowed size: {limit} pixels per side."  # modelled
MSG_PAYLOAD_TOO_BIG = "Request payload of {n} bytes exceeds the maximum of {limit} bytes."  # modelled
MSG_BAD_IMAGE = "Unable to process the provided image: the bytes are not a valid {fmt} image."  # modelled
MSG_MALFORMED = "Malformed input request: {detail}, please reformat your input and try again."  # seen (form)
MSG_MISSING_TOKEN = "Missing Authentication Token"  # seen
MSG_BAD_SIGNATURE = ("The request signature we calculated does not match the signature you provided. Check "
                     "your AWS Secret Access Key and signing method. Consult the service documentation for "
                     "details.")  # seen
MSG_SCOPE_REGION = "Credential should be scoped to a valid region."  # seen (Bedrock, 2026 report)
MSG_SCOPE_SERVICE = "Credential should be scoped to correct service: '{service}'."  # seen
MSG_UNKNOWN_KEY = "The security token included in the request is invalid."  # seen
MSG_EXPIRED = "Signature expired: {stamp} is now earlier than {limit}."  # seen (form)

IMAGE_FORMATS = ("png", "jpeg", "gif", "webp")
ANTHROPIC_MEDIA = {"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif", "image/webp": "webp"}
PIL_FORMAT = {"PNG": "png", "JPEG": "jpeg", "GIF": "gif", "WEBP": "webp", "MPO": "jpeg"}


class ApiError(Exception):
    """An error answer: code (x-amzn-ErrorType), HTTP status and message."""

    def __init__(self, code: str, message: str, status: int | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status if status is not None else ERROR_STATUS.get(code, 400)


@dataclass
class ImageInfo:
    format: str  # declared format
    width: int
    height: int
    nbytes: int
    data: bytes = field(repr=False, default=b"")

    def summary(self) -> dict[str, Any]:
        return {"format": self.format, "width": self.width, "height": self.height, "bytes": self.nbytes}


@dataclass
class ParsedRequest:
    """What a request asked for, decoded. `body_kind` is converse | nova | anthropic."""

    operation: str  # Converse | InvokeModel
    model_id: str
    body_kind: str
    prompt: str  # user text blocks joined with newlines
    system: str | None
    images: list[ImageInfo]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop_sequences: list[str] = field(default_factory=list)
    messages: int = 0

    def summary(self) -> dict[str, Any]:
        """The bounded record kept for assertions: everything but the image bytes."""
        return {"operation": self.operation, "model_id": self.model_id, "body_kind": self.body_kind,
                "prompt": self.prompt, "system": self.system, "images": [i.summary() for i in self.images],
                "inference": {"max_tokens": self.max_tokens, "temperature": self.temperature,
                              "top_p": self.top_p, "top_k": self.top_k, "stop_sequences": self.stop_sequences},
                "messages": self.messages}


@dataclass(frozen=True)
class Limits:
    max_image_side_px: int = 8000
    max_payload_bytes: int = 25 * 1024 * 1024


# --- routing --------------------------------------------------------------------------------

_ROUTE = re.compile(r"^/model/(?P<model>[^/?]+)/(?P<op>converse|invoke)$")


def route(raw_path: str) -> tuple[str, str]:
    """Map a request path to (operation, decoded model id). The model id arrives percent-encoded."""
    path = raw_path.split("?", 1)[0]
    m = _ROUTE.match(path)
    if not m:
        raise ApiError("UnknownOperationException", "", 404)
    op = "Converse" if m.group("op") == "converse" else "InvokeModel"
    return op, unquote(m.group("model"))


def base_model_id(model_id: str, region: str) -> str:
    """Strip an ARN to its resource id; an ARN naming another region is an invalid identifier."""
    if not model_id.startswith("arn:"):
        return model_id
    parts = model_id.split(":", 5)
    if len(parts) < 6 or "/" not in parts[5]:
        raise ApiError("ValidationException", MSG_INVALID_MODEL)
    if parts[3] != region:
        raise ApiError("ValidationException", MSG_INVALID_MODEL)
    return parts[5].split("/", 1)[1]


# --- token estimates --------------------------------------------------------------------------

# estimate_image_tokens / estimate_text_tokens: one estimator for the emulator, the adapters and
# the rate limiter, in migbench.tokens.

def estimate_input_tokens(req: ParsedRequest) -> int:
    tokens = estimate_text_tokens(req.prompt) + estimate_text_tokens(req.system)
    tokens += sum(estimate_image_tokens(i.width, i.height) for i in req.images)
    return max(tokens, 1)


# --- request parsing --------------------------------------------------------------------------

def load_json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body.decode("utf-8")) if body else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ApiError("ValidationException", MSG_MALFORMED.format(detail="the body is not valid JSON")) from None
    if not isinstance(data, dict):
        raise ApiError("ValidationException", MSG_MALFORMED.format(detail="#: expected type: JSONObject"))
    return data


def _constraint(value: object, where: str, rule: str) -> ApiError:
    # Coral's wording for a model constraint violation; member indexes are 1-based.
    return ApiError("ValidationException",
                    f"1 validation error detected: Value '{value}' at '{where}' failed to satisfy constraint: "
                    f"{rule}")


def decode_image(b64: object, declared: str, where: str, limits: Limits) -> ImageInfo:
    """Decode base64 image bytes, check they are the declared format and within the size limits."""
    if not isinstance(b64, str):
        raise _constraint(type(b64).__name__, where, "Member must be base64-encoded bytes")
    try:
        data = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError("ValidationException", f"Invalid base64 image bytes at '{where}'.") from None
    from PIL import Image, UnidentifiedImageError  # the server imports PIL only when an image arrives

    try:
        with Image.open(io.BytesIO(data)) as img:
            actual = PIL_FORMAT.get(img.format or "", (img.format or "unknown").lower())
            width, height = img.size
    except (UnidentifiedImageError, OSError, ValueError):
        raise ApiError("ValidationException", MSG_BAD_IMAGE.format(fmt=declared)) from None
    if actual != declared:
        raise ApiError("ValidationException", MSG_BAD_IMAGE.format(fmt=declared))
    if max(width, height) > limits.max_image_side_px:
        raise ApiError("ValidationException",
                       MSG_IMAGE_TOO_BIG.format(w=width, h=height, limit=limits.max_image_side_px))
    return ImageInfo(declared, width, height, len(data), data)


def _inference(cfg: object, where: str) -> dict[str, Any]:
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        raise _constraint(cfg, where, "Member must be a structure")
    out: dict[str, Any] = {}
    mt = cfg.get("maxTokens")
    if mt is not None:
        if not isinstance(mt, int) or mt < 1:
            raise _constraint(mt, f"{where}.maxTokens", "Member must have value greater than or equal to 1")
        out["max_tokens"] = mt
    for key, name in (("temperature", "temperature"), ("topP", "top_p")):
        v = cfg.get(key)
        if v is not None:
            if not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise _constraint(v, f"{where}.{key}", "Member must have value less than or equal to 1")
            out[name] = float(v)
    if cfg.get("topK") is not None:
        out["top_k"] = cfg["topK"]
    stops = cfg.get("stopSequences")
    if stops is not None:
        out["stop_sequences"] = list(stops)
    return out


def _check_roles(messages: object) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise ApiError("ValidationException", MSG_FIRST_USER)
    for i, m in enumerate(messages, 1):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            role = m.get("role") if isinstance(m, dict) else m
            raise _constraint(role, f"messages.{i}.member.role",
                              "Member must satisfy enum value set: [user, assistant]")
    if messages[0]["role"] != "user":
        raise ApiError("ValidationException", MSG_FIRST_USER)
    return messages


def parse_converse(model_id: str, body: dict[str, Any], limits: Limits = Limits()) -> ParsedRequest:
    """Converse (and the Nova native body, which has the same content blocks)."""
    messages = _check_roles(body.get("messages"))
    texts: list[str] = []
    images: list[ImageInfo] = []
    for i, m in enumerate(messages, 1):
        content = m.get("content")
        if not isinstance(content, list) or not content:
            raise _constraint("[]", f"messages.{i}.member.content",
                              "Member must have length greater than or equal to 1")
        for j, block in enumerate(content, 1):
            where = f"messages.{i}.member.content.{j}.member"
            if not isinstance(block, dict):
                raise _constraint(block, where, "Member must be a structure")
            if "text" in block:
                if m["role"] == "user":
                    texts.append(str(block["text"]))
            elif "image" in block:
                img = block["image"] or {}
                fmt = img.get("format")
                if fmt not in IMAGE_FORMATS:
                    raise _constraint(fmt, f"{where}.image.format",
                                      "Member must satisfy enum value set: [gif, jpeg, png, webp]")
                src = img.get("source") or {}
                if "bytes" not in src:
                    raise _constraint(None, f"{where}.image.source", "Member must not be null")
                images.append(decode_image(src["bytes"], fmt, f"{where}.image.source.bytes", limits))
    system_blocks = body.get("system") or []
    system = "\n".join(str(b.get("text", "")) for b in system_blocks if isinstance(b, dict)) or None
    inf = _inference(body.get("inferenceConfig"), "inferenceConfig")
    return ParsedRequest("Converse", model_id, "converse", "\n".join(texts), system, images,
                         messages=len(messages), **inf)


NOVA_KEYS = {"schemaVersion", "system", "messages", "inferenceConfig", "toolConfig"}


def parse_nova_invoke(model_id: str, body: dict[str, Any], limits: Limits = Limits()) -> ParsedRequest:
    extra = sorted(set(body) - NOVA_KEYS)
    if extra:
        raise ApiError("ValidationException",
                       MSG_MALFORMED.format(detail=f"#: extraneous key [{extra[0]}] is not permitted"))
    if "messages" not in body:
        raise ApiError("ValidationException", MSG_MALFORMED.format(detail="#: required key [messages] not found"))
    if body.get("schemaVersion", "messages-v1") != "messages-v1":
        raise ApiError("ValidationException",
                       MSG_MALFORMED.format(detail=f"#/schemaVersion: {body['schemaVersion']} is not a valid "
                                                   f"enum value"))
    parsed = parse_converse(model_id, {k: v for k, v in body.items() if k != "schemaVersion"}, limits)
    parsed.operation, parsed.body_kind = "InvokeModel", "nova"
    return parsed


ANTHROPIC_KEYS = {"anthropic_version", "anthropic_beta", "messages", "system", "max_tokens", "temperature",
                  "top_p", "top_k", "stop_sequences", "tools", "tool_choice", "metadata", "thinking"}


def parse_anthropic_invoke(model_id: str, body: dict[str, Any], limits: Limits = Limits()) -> ParsedRequest:
    extra = sorted(set(body) - ANTHROPIC_KEYS)
    if extra:
        raise ApiError("ValidationException",
                       MSG_MALFORMED.format(detail=f"#: extraneous key [{extra[0]}] is not permitted"))
    for key in ("anthropic_version", "max_tokens", "messages"):
        if key not in body:
            raise ApiError("ValidationException", MSG_MALFORMED.format(detail=f"#: required key [{key}] not found"))
    if body["anthropic_version"] != "bedrock-2023-05-31":
        raise ApiError("ValidationException", "invalid beta flag" if "beta" in str(body["anthropic_version"])
                       else MSG_MALFORMED.format(detail="#/anthropic_version: unsupported value"))
    messages = _check_roles(body["messages"])
    texts: list[str] = []
    images: list[ImageInfo] = []
    for i, m in enumerate(messages):
        content = m.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list):
            raise ApiError("ValidationException", MSG_MALFORMED.format(detail=f"#/messages/{i}/content: expected "
                                                                              f"type: JSONArray"))
        for j, b in enumerate(blocks):
            where = f"messages.{i}.content.{j}"
            kind = b.get("type") if isinstance(b, dict) else None
            if kind == "text":
                if m["role"] == "user":
                    texts.append(str(b.get("text", "")))
            elif kind == "image":
                src = b.get("source") or {}
                fmt = ANTHROPIC_MEDIA.get(src.get("media_type", ""))
                if src.get("type") != "base64" or fmt is None:
                    raise ApiError("ValidationException",
                                   f"{where}.image.source.media_type: Input should be 'image/jpeg', 'image/png', "
                                   f"'image/gif' or 'image/webp'")
                images.append(decode_image(src.get("data"), fmt, f"{where}.image.source.base64.data", limits))
            else:
                raise ApiError("ValidationException", MSG_MALFORMED.format(
                    detail=f"#/messages/{i}/content/{j}: unsupported content type {kind!r}"))
    system = body.get("system")
    if isinstance(system, list):
        system = "\n".join(str(b.get("text", "")) for b in system if isinstance(b, dict))
    return ParsedRequest("InvokeModel", model_id, "anthropic", "\n".join(texts), system or None, images,
                         max_tokens=body.get("max_tokens"), temperature=body.get("temperature"),
                         top_p=body.get("top_p"), top_k=body.get("top_k"),
                         stop_sequences=list(body.get("stop_sequences") or []), messages=len(messages))


def parse_request(operation: str, model_id: str, family: str, body: bytes,
                  limits: Limits = Limits()) -> ParsedRequest:
    """Parse a request body for a model of the given family (nova | anthropic)."""
    if len(body) > limits.max_payload_bytes:
        raise ApiError("ValidationException", MSG_PAYLOAD_TOO_BIG.format(n=len(body), limit=limits.max_payload_bytes))
    data = load_json(body)
    if operation == "Converse":
        return parse_converse(model_id, data, limits)
    if family == "anthropic":
        return parse_anthropic_invoke(model_id, data, limits)
    return parse_nova_invoke(model_id, data, limits)


# --- responses ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def converse_response(text: str, usage: Usage, latency_ms: int, stop_reason: str = "end_turn") -> dict[str, Any]:
    return {"output": {"message": {"role": "assistant", "content": [{"text": text}]}},
            "stopReason": stop_reason,
            "usage": {"inputTokens": usage.input_tokens, "outputTokens": usage.output_tokens,
                      "totalTokens": usage.total_tokens},
            "metrics": {"latencyMs": latency_ms}}


def nova_invoke_response(text: str, usage: Usage, stop_reason: str = "end_turn") -> dict[str, Any]:
    return {"output": {"message": {"content": [{"text": text}], "role": "assistant"}},
            "stopReason": stop_reason,
            "usage": {"inputTokens": usage.input_tokens, "outputTokens": usage.output_tokens,
                      "totalTokens": usage.total_tokens}}


def anthropic_invoke_response(text: str, usage: Usage, model: str, request_id: str,
                              stop_reason: str = "end_turn") -> dict[str, Any]:
    return {"id": f"msg_bdrk_{request_id.replace('-', '')[:24]}", "type": "message", "role": "assistant",
            "model": model, "content": [{"type": "text", "text": text}], "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}}


def truncate_to_max_tokens(text: str, max_tokens: int | None) -> tuple[str, str]:
    """Cut a reply to max_tokens (at ~4 chars a token) and say why generation stopped."""
    if max_tokens is not None and estimate_text_tokens(text) > max_tokens:
        return text[: max_tokens * 4], "max_tokens"
    return text, "end_turn"


def error_headers(code: str) -> dict[str, str]:
    ns = CORAL_SERVICE if code in AUTH_CODES else CORAL_BEDROCK
    return {"x-amzn-ErrorType": f"{code}:{ns}", "Content-Type": "application/json"}


def error_body(message: str) -> bytes:
    return json.dumps({"message": message}).encode()
