"""SageMaker real-time endpoint backend: one InvokeEndpoint attempt per `generate`, behind the residency guard.

Payload shapes are data (harness/data/sagemaker_payloads.yaml): `openai_chat` for Hugging Face TGI
and LMI/vLLM containers, `guide_simple` for the migration guide's {image, prompt, max_new_tokens}.

Options: endpoint_name (else BackendConfig.model), region (explicit, else ap-southeast-2; AWS_REGION
is not used), payload (schema name, default openai_chat), instance_type (reported in describe() for
the cost model: SageMaker is paid per instance-hour), endpoint_url (else botocore applies
AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME), allow_loopback / MIGBENCH_ALLOW_LOOPBACK=1, max_image_dim,
read_timeout (300), connect_timeout (10), concurrency, profile.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

from migbench.adapters import aws_common as aws
from migbench.adapters.bedrock_body import MEDIA_TYPES, ParsedOutput
from migbench.adapters.bedrock_images import ImagePrepError, prepare_images
from migbench.catalog import load_model, load_packaged
from migbench.contracts import (
    BackendConfig,
    BackendError,
    ErrorClass,
    GenParams,
    Request,
    Response,
    SetupError,
)
from migbench.residency import ResidencyGuard, check_config, load_model_catalog, load_policy
from pydantic import BaseModel, Field

DEFAULT_REGION = "ap-southeast-2"
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


class SageMakerBackend(aws.AwsBackend):
    service = "sagemaker-runtime"
    family = "sagemaker"

    def __init__(self, config: BackendConfig):
        super().__init__(config)
        self.endpoint_name: str | None = config.get("endpoint_name") or config.model
        if not self.endpoint_name:
            raise SetupError(f"backend {config.name!r}: set the endpoint_name option (or --model) to a "
                             "SageMaker endpoint in ap-southeast-2")
        self.region = str(config.get("region") or DEFAULT_REGION)
        payloads = load_payload_catalog()
        self.payload_name = str(config.get("payload", "openai_chat"))
        if self.payload_name not in payloads.schemas:
            raise SetupError(f"payload {self.payload_name!r} is not in sagemaker_payloads.yaml; "
                             f"known: {', '.join(payloads.schemas)}")
        self.schema = payloads.schemas[self.payload_name]
        self.max_payload_bytes = int(config.get("max_payload_bytes") or payloads.max_payload_bytes)
        self.instance_type: str | None = config.get("instance_type")
        self.max_image_dim = int(config.get("max_image_dim")) if config.get("max_image_dim") else None
        self.read_timeout = float(config.get("read_timeout", 300))
        self.connect_timeout = float(config.get("connect_timeout", 10))
        self.endpoint_url: str | None = config.get("endpoint_url") or None
        self.allow_loopback = bool(config.get("allow_loopback")) or aws.env_flag(os.environ.get("MIGBENCH_ALLOW_LOOPBACK"))
        self.policy = load_policy()
        self.guard = ResidencyGuard(self.policy, allow_loopback=self.allow_loopback)
        self.emulated: bool | None = None
        self._client: Any = None
        self._lock = threading.Lock()
        self._attempts: Counter[str] = Counter()

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

    def preflight(self) -> None:
        client = self._get_client()
        check_config(self.region, client.meta.endpoint_url, None, service="sagemaker-runtime",
                     policy=self.policy, allow_loopback=self.allow_loopback, catalog=load_model_catalog())
        aws.require_credentials(self._session, self.name)

    def generate(self, request: Request) -> Response:
        with self._lock:
            self._attempts[request.doc_id] += 1
            attempt = self._attempts[request.doc_id]
        if request.pdf_bytes is not None and not request.images:
            from migbench.adapters.bedrock_images import render_pdf_pages

            pages = render_pdf_pages(request.pdf_bytes)
        else:
            pages = list(request.images)
        try:
            limits = load_model_catalog().image_limits.model_copy(
                update={"max_request_bytes": self.max_payload_bytes})
            reserve = len(request.prompt.encode()) + len((request.system or "").encode()) + 4096
            prepared = prepare_images(pages, limits=limits, max_dim=self.max_image_dim, reserve_bytes=reserve)
            payload = build_payload(self.schema, request.prompt, [(p.data, p.format) for p in prepared],
                                    system=request.system, params=request.params)
        except (ImagePrepError, ValueError) as exc:
            raise BackendError(f"request preparation failed: {exc}", ErrorClass.INPUT) from None
        client = self._get_client()
        self.guard.take_last()
        t0 = time.perf_counter()
        try:
            raw = client.invoke_endpoint(EndpointName=self.endpoint_name, Body=json.dumps(payload).encode(),
                                         ContentType=self.schema.content_type, Accept=self.schema.accept)
            answer = raw["Body"].read()
        except Exception as exc:
            latency = time.perf_counter() - t0
            error_class = self.classify(exc)
            decision = self.guard.take_last()
            self._audit(request.doc_id, decision, status=aws.http_status(exc), request_id=aws.request_id(exc),
                        attempt=attempt, error_class=error_class)
            partial = Response(latency_s=latency, region=self.region, endpoint=decision.host if decision else None,
                               model_id=self.model_id, request_id=aws.request_id(exc), error_class=error_class,
                               error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            if isinstance(exc, BackendError):
                exc.response = partial
                raise
            raise BackendError(partial.error or type(exc).__name__, error_class,
                               retry_after_s=aws.retry_after_s(exc), response=partial) from exc
        latency = time.perf_counter() - t0
        decision = self.guard.take_last()
        rid = aws.request_id(raw)
        self._audit(request.doc_id, decision, status=aws.http_status(raw) or 200, request_id=rid, attempt=attempt)
        headers = aws.response_headers(raw)
        self.emulated = self.answered_by_emulator(headers)
        try:
            parsed = parse_payload_response(self.schema, answer)
        except ValueError as exc:
            # The endpoint answered but not in the configured schema: the same request will not improve.
            raise BackendError(f"payload {self.payload_name}: {exc}", ErrorClass.PERMANENT,
                               response=Response(latency_s=latency, region=self.region, request_id=rid,
                                                 model_id=self.model_id)) from None
        return Response(text=parsed.text, input_tokens=parsed.input_tokens, output_tokens=parsed.output_tokens,
                        latency_s=latency, region=self.region,
                        endpoint=decision.host if decision else aws.host_of(client.meta.endpoint_url),
                        model_id=self.model_id, request_id=rid, stop_reason=parsed.stop_reason,
                        extra={"emulated": self.emulated, "payload": self.payload_name,
                               "instance_type": self.instance_type,
                               "variant": raw.get("InvokedProductionVariant")})

    def _audit(self, doc_id: str, decision: Any, *, status: int | None, request_id: str | None, attempt: int,
               error_class: ErrorClass | None = None) -> None:
        aws.record_attempt(
            self.audit, backend=self.name, service="sagemaker-runtime", operation="InvokeEndpoint",
            model_id=self.endpoint_name, doc_id=doc_id, decision=decision, region=self.region,
            host=aws.host_of(self._client.meta.endpoint_url) if self._client is not None else None,
            status=status, request_id=request_id, attempt=attempt, error_class=error_class)
