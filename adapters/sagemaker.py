"""SageMaker real-time endpoint backend: one InvokeEndpoint attempt per `generate`, behind the residency guard.

Payload shapes are data (harness/data/sagemaker_payloads.yaml): `openai_chat` for Hugging Face TGI
and LMI/vLLM containers, `guide_simple` for the migration guide's {image, prompt, max_new_tokens}.

Options are `SageMakerOptions` (below, plus the AWS ones in aws_common.AwsOptions), validated when
the backend is loaded. Client setup, the bounded attempt, classification and audit facts are the
AWS base's (migbench.adapters.aws_common); this module builds the payload and reads the answer.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any, Literal

from migbench.adapters import aws_common as aws
from migbench.adapters.bedrock_body import MEDIA_TYPES, ParsedOutput
from migbench.catalog import load_model, load_packaged
from migbench.contracts import (
    BackendConfig,
    BackendError,
    ErrorClass,
    GenParams,
    ImageBudget,
    Request,
    SetupError,
)
from migbench.residency import check_config, load_model_catalog
from pydantic import BaseModel, Field, field_validator

_DEFAULT_PARAMS = GenParams()


class ResponsePaths(BaseModel):
    text: list[str] = Field(min_length=1)
    input_tokens: list[str] = []
    output_tokens: list[str] = []
    stop_reason: list[str] = []


class PayloadSchema(BaseModel):
    builder: Literal["openai_chat", "simple"]
    content_type: str = "application/json"
    accept: str = "application/json"
    image_encoding: Literal["data_uri", "base64"]
    fields: dict[str, str]
    extra: dict[str, Any] = {}
    response: ResponsePaths


class PayloadCatalog(BaseModel):
    schemas: dict[str, PayloadSchema]
    max_payload_bytes: int = Field(gt=0)


def load_payload_catalog(path: str | None = None) -> PayloadCatalog:
    return load_model(PayloadCatalog, path) if path else load_packaged(PayloadCatalog, "sagemaker_payloads.yaml")


# ---------------------------------------------------------------- pure payload functions


def _encode_image(data: bytes, fmt: str, encoding: str) -> str:
    b64 = base64.b64encode(data).decode("ascii")
    return f"data:{MEDIA_TYPES[fmt]};base64,{b64}" if encoding == "data_uri" else b64


def build_payload(schema: PayloadSchema, prompt: str, images: Sequence[tuple[bytes, str]] = (), *,
                  system: str | None = None, params: GenParams = _DEFAULT_PARAMS) -> dict[str, Any]:
    f = schema.fields
    if schema.builder == "openai_chat":
        content: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": _encode_image(d, fmt, schema.image_encoding)}}
            for d, fmt in images]
        content.append({"type": "text", "text": prompt})
        messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": content})
        payload: dict[str, Any] = {"messages": messages, f.get("max_tokens", "max_tokens"): int(params.max_tokens)}
        if "temperature" in f:
            payload[f["temperature"]] = float(params.temperature)
        if "top_p" in f and params.top_p != _DEFAULT_PARAMS.top_p:
            payload[f["top_p"]] = float(params.top_p)
        if "stop" in f and params.stop:
            payload[f["stop"]] = list(params.stop)
    else:  # simple: one image, one prompt string
        if len(images) > 1:
            raise ValueError(f"payload schema takes one image, the request has {len(images)} pages")
        text = f"{system}\n\n{prompt}" if system else prompt
        payload = {f.get("prompt", "prompt"): text, f.get("max_tokens", "max_new_tokens"): int(params.max_tokens)}
        if images:
            payload[f.get("image", "image")] = _encode_image(images[0][0], images[0][1], schema.image_encoding)
    return {**schema.extra, **payload}


def resolve_path(obj: Any, path: str) -> Any:
    """Dotted path with integer list indices: 'choices.0.message.content'. None when it does not resolve."""
    cur = obj
    for key in path.split("."):
        if isinstance(cur, list) and key.lstrip("-").isdigit():
            idx = int(key)
            if not -len(cur) <= idx < len(cur):
                return None
            cur = cur[idx]
        elif isinstance(cur, dict) and key in cur:
            cur = cur[key]
        else:
            return None
    return cur


def _first(obj: Any, paths: Sequence[str]) -> Any:
    for p in paths:
        value = resolve_path(obj, p)
        if value is not None:
            return value
    return None


def _text_of(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # content as parts: [{"type":"text","text":...}]
        return "".join(p.get("text", "") for p in value if isinstance(p, dict))
    return None


def parse_payload_response(schema: PayloadSchema, raw: bytes) -> ParsedOutput:
    """Endpoint answer -> ParsedOutput; raises ValueError when the text path does not resolve."""
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"endpoint answer is not JSON: {exc}") from None
    text = _text_of(_first(obj, schema.response.text))
    if text is None:
        raise ValueError(f"endpoint answer has none of {schema.response.text}: keys "
                         f"{list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__}")

    def _int(paths: Sequence[str]) -> int | None:
        v = _first(obj, paths)
        return int(v) if isinstance(v, (int, float)) else None

    stop = _first(obj, schema.response.stop_reason)
    return ParsedOutput(text=text, input_tokens=_int(schema.response.input_tokens),
                        output_tokens=_int(schema.response.output_tokens),
                        stop_reason=str(stop) if stop is not None else None)


# ---------------------------------------------------------------- backend


class SageMakerOptions(aws.AwsOptions):
    endpoint_name: str | None = Field(None, description="SageMaker endpoint (else --model)")
    payload: str = Field("openai_chat", description="payload schema in sagemaker_payloads.yaml")
    instance_type: str | None = Field(None, description="reported for the cost model (paid per instance-hour)")
    max_payload_bytes: int | None = Field(None, gt=0, description="default: the payload catalog's limit")

    @field_validator("payload")
    @classmethod
    def _known_payload(cls, name: str) -> str:
        known = load_payload_catalog().schemas
        if name not in known:
            raise ValueError(f"not in sagemaker_payloads.yaml; known: {', '.join(known)}")
        return name


class SageMakerBackend(aws.AwsBackend):
    service = "sagemaker-runtime"
    family = "sagemaker"
    Options = SageMakerOptions
    input_form = "encoded"  # page images within image_budget(), prepared once by the runner

    def __init__(self, config: BackendConfig):
        super().__init__(config)
        opts: SageMakerOptions = self.opts  # type: ignore[assignment]
        self.endpoint_name: str | None = opts.endpoint_name or config.model
        if not self.endpoint_name:
            raise SetupError(f"backend {config.name!r}: set the endpoint_name option (or --model) to a "
                             "SageMaker endpoint in ap-southeast-2")
        payloads = load_payload_catalog()
        self.payload_name = opts.payload
        self.schema = payloads.schemas[self.payload_name]
        self.max_payload_bytes = opts.max_payload_bytes or payloads.max_payload_bytes
        self.instance_type: str | None = opts.instance_type

    @property
    def model_id(self) -> str:
        return str(self.endpoint_name)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update({"model": self.endpoint_name, "endpoint_name": self.endpoint_name, "region": self.region,
                  "payload": self.payload_name, "instance_type": self.instance_type,
                  "endpoint": self._client.meta.endpoint_url if self._client is not None else self.endpoint_url,
                  "emulated": self.emulated})
        return d

    def image_budget(self) -> ImageBudget:
        """The vision formats and side limit of the catalog, within the endpoint's payload limit."""
        limits = load_model_catalog().image_limits
        side = min(limits.max_side_px, self.max_image_dim) if self.max_image_dim else limits.max_side_px
        return ImageBudget(formats=tuple(limits.formats), max_side_px=side,
                           max_request_bytes=self.max_payload_bytes)

    def preflight(self) -> None:
        client = self._get_client()
        check_config(self.region, client.meta.endpoint_url, None, service="sagemaker-runtime",
                     policy=self.policy, allow_loopback=self.allow_loopback, catalog=load_model_catalog())
        aws.require_credentials(self._session, self.name)

    def _prepare_call(self, request: Request) -> aws.Call:
        try:
            payload = build_payload(self.schema, request.prompt, [(p.data, p.format) for p in request.images],
                                    system=request.system, params=request.params)
        except ValueError as exc:
            raise BackendError(f"request preparation failed: {exc}", ErrorClass.INPUT) from None
        return aws.Call("InvokeEndpoint", {
            "EndpointName": self.endpoint_name, "Body": json.dumps(payload).encode(),
            "ContentType": self.schema.content_type, "Accept": self.schema.accept},
            extra={"payload": self.payload_name, "instance_type": self.instance_type})

    def _send(self, client: Any, call: aws.Call) -> aws.Answer:
        raw = client.invoke_endpoint(**call.kwargs)
        return aws.Answer.streamed(raw, "Body", call.operation)

    def _parse(self, call: aws.Call, answer: aws.Answer) -> ParsedOutput:
        call.extra["variant"] = answer.raw.get("InvokedProductionVariant")
        aws.check_answer_body(answer.body or b"", answer.headers, "InvokeEndpoint")
        try:
            return parse_payload_response(self.schema, answer.body or b"")
        except ValueError as exc:
            # The endpoint answered, but not in the configured schema: the same request will not improve.
            raise aws.MalformedAnswer(f"payload {self.payload_name}: {exc}") from None
