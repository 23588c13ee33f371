"""OpenAI-compatible chat completions backend: vLLM `serve`, SGLang, llama.cpp server, Ollama.

One POST /chat/completions attempt per `generate`; the harness's retry loop and rate limiter do the
rest, exactly as for the cloud backends. The request body and the answer's reading are pure
functions (`chat_request`, `parse_chat_response`), testable without a server.

Client choice: plain `httpx` rather than the `openai` SDK. The SDK retries on its own (a hidden
second attempt under the harness's retry loop) and turns bodies into models before we can check
them; httpx (the SDK's own transport) gives the raw status, headers and bytes, so a 429's
Retry-After, an HTML page from a proxy or a cut-off body are classified here like the AWS answers
(migbench.adapters.aws_common's answer checks, reused).

Where a self-hosted server runs is the user's business: its host is recorded with the run, and a
plain-http base URL that is not loopback gets one warning recorded on the run (documents travel
unencrypted). The API key comes from an environment variable, is only registered with the
scrubber (migbench.redact) and never stored or printed. Self-hosted inference has no per-token
price: runs of this backend are "not priced" (instance-hours are the operator's to add).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

from migbench.adapters.aws_common import (
    AnswerError,
    MalformedAnswer,
    load_json_answer,
    parse_retry_after,
    safe_message,
)
from migbench.adapters.bedrock_body import MEDIA_TYPES, ParsedOutput
from migbench.contracts import (
    AuditEntry,
    Backend,
    BackendConfig,
    BackendError,
    BackendOptions,
    EncodedImage,
    ErrorClass,
    GenParams,
    ImageBudget,
    Request,
    Response,
    UsageError,
)
from migbench.redact import install_log_scrubber, register_secret, scrub
from pydantic import Field, field_validator

log = logging.getLogger("migbench.openai")

SERVICE = "openai-compatible"
OPERATION = "ChatCompletions"
BASE_URL_ENV = "OPENAI_BASE_URL"
_DEFAULT_PARAMS = GenParams()


# ---------------------------------------------------------------- pure request / answer


def data_uri(image: EncodedImage) -> str:
    """The prepared page bytes, unchanged, as a base64 data URI (what every OpenAI-style server takes)."""
    return f"data:{MEDIA_TYPES[image.format]};base64,{base64.b64encode(image.data).decode('ascii')}"


def chat_request(model: str, prompt: str, images: Sequence[EncodedImage] = (), *, system: str | None = None,
                 params: GenParams = _DEFAULT_PARAMS, image_detail: str | None = None,
                 max_tokens: int | None = None) -> dict[str, Any]:
    """A chat completions body: system message, then one user message with the pages before the text."""
    content: list[dict[str, Any]] = []
    for img in images:
        part: dict[str, Any] = {"url": data_uri(img)}
        if image_detail:
            part["detail"] = image_detail
        content.append({"type": "image_url", "image_url": part})
    content.append({"type": "text", "text": prompt})
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": content})
    body: dict[str, Any] = {"model": model, "messages": messages,
                            "max_tokens": int(max_tokens or params.max_tokens),
                            "temperature": float(params.temperature), "stream": False}
    if params.top_p != _DEFAULT_PARAMS.top_p:
        body["top_p"] = float(params.top_p)
    if params.stop:
        body["stop"] = list(params.stop)
    return body


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def parse_chat_response(body: bytes, headers: Mapping[str, str] | None = None) -> ParsedOutput:
    """A 200's body -> text, usage and finish reason. An empty or cut-off body raises IncompleteAnswer
    (retried); anything that is not a chat completion with `choices[0].message.content` (an HTML
    page, other JSON, a null content) raises MalformedAnswer: never an empty success."""
    hdrs = {str(k).lower(): str(v) for k, v in (headers or {}).items()}
    obj = load_json_answer(body, hdrs, OPERATION)
    choices = obj.get("choices") if isinstance(obj, dict) else None
    first = choices[0] if isinstance(choices, list) and choices else None
    message = first.get("message") if isinstance(first, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):  # content as parts: [{"type": "text", "text": ...}]
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        keys = list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise MalformedAnswer(f"{OPERATION}: answer has no choices[0].message.content (got {keys})")
    usage = obj.get("usage") if isinstance(obj.get("usage"), dict) else {}
    finish = first.get("finish_reason")
    return ParsedOutput(text=content, input_tokens=_int(usage.get("prompt_tokens")),
                        output_tokens=_int(usage.get("completion_tokens")),
                        stop_reason=str(finish) if finish is not None else None)


def classify_status(status: int) -> ErrorClass:
    """An error answer's HTTP status -> ErrorClass (429 throttling, 408 timeout, 5xx transient)."""
    if status == 429:
        return ErrorClass.THROTTLING
    if status == 408:
        return ErrorClass.TIMEOUT
    if status >= 500:
        return ErrorClass.TRANSIENT
    return ErrorClass.PERMANENT


def error_message(status: int, body: bytes) -> str:
    """One scrubbed line for an error answer: the OpenAI `{"error": {"message"}}` or vLLM's
    `{"message"}` when present, else the start of the body (a server may echo anything)."""
    text = ""
    try:
        obj = json.loads(body)
        err = obj.get("error") if isinstance(obj, dict) else None
        text = str((err.get("message") if isinstance(err, dict) else err) or obj.get("message") or "")
    except (ValueError, UnicodeDecodeError, AttributeError):
        text = body[:200].decode("utf-8", "replace")
    line = " ".join(text.split())[:300]
    return scrub(f"HTTP {status}: {line}" if line else f"HTTP {status}") or f"HTTP {status}"


def classify_exception(exc: BaseException) -> ErrorClass:
    """Anything an attempt can raise -> ErrorClass (httpx's exceptions by their documented bases)."""
    if isinstance(exc, BackendError):
        return exc.error_class
    try:
        import httpx
    except ImportError:  # pragma: no cover - httpx is this backend's extra
        httpx = None
    if httpx is not None:
        if isinstance(exc, httpx.ConnectTimeout):  # nothing reached the server: another try is cheap
            return ErrorClass.TRANSIENT
        if isinstance(exc, httpx.TimeoutException):  # read / write / pool timeouts
            return ErrorClass.TIMEOUT
        if isinstance(exc, (httpx.NetworkError, httpx.RemoteProtocolError)):  # refused, reset, cut off
            return ErrorClass.TRANSIENT
        if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
            return ErrorClass.PERMANENT
    if isinstance(exc, TimeoutError):
        return ErrorClass.TIMEOUT
    if isinstance(exc, (ConnectionError, OSError)):
        return ErrorClass.TRANSIENT
    return ErrorClass.PERMANENT


def is_loopback_host(host: str | None) -> bool:
    from migbench.residency import is_loopback, load_policy

    return is_loopback(host, load_policy())


def plain_http_warning(base_url: str) -> str | None:
    """One line when documents would cross a network unencrypted (http:// to a non-loopback host)."""
    parts = urlsplit(base_url)
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        return (f"base_url {parts.scheme}://{parts.hostname}:{parts.port or 80} is plain http to a "
                "non-loopback host: documents travel unencrypted (use https, or a tunnel)")
    return None


# ---------------------------------------------------------------- backend


class OpenAICompatOptions(BackendOptions):
    base_url: str | None = Field(None, description=(
        f"the server's OpenAI base URL, e.g. http://127.0.0.1:8000/v1 (else ${BASE_URL_ENV})"))
    api_key_env: str = Field("OPENAI_API_KEY", min_length=1, description=(
        "environment variable holding the API key (optional; sent as a bearer token, never stored)"))
    connect_timeout: float = Field(10.0, gt=0, description="seconds to connect")
    read_timeout: float = Field(300.0, gt=0, description="socket read timeout, seconds (long generations)")
    attempt_timeout: float | None = Field(None, gt=0, description=(
        "total seconds one attempt may take, answer read included (default: connect + read timeout + 60)"))
    max_tokens: int | None = Field(None, ge=1, description="override the prompt's output token budget")
    image_detail: Literal["auto", "low", "high"] | None = Field(None, description=(
        "OpenAI `detail` of each image_url (most self-hosted servers ignore it)"))
    image_formats: list[Literal["png", "jpeg", "webp"]] = Field(["png", "jpeg", "webp"], min_length=1, description=(
        "page encodings the server takes; others are re-encoded"))
    max_image_dim: int | None = Field(None, ge=1, description="downscale pages whose longer side exceeds this")
    max_request_bytes: int | None = Field(None, gt=0, description="the server's request body limit, if any")

    @field_validator("image_formats", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):  # -o image_formats=png,jpeg
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:8000/v1")
        return value.rstrip("/")


class OpenAICompatBackend(Backend):
    family = "openai"
    input_form = "encoded"  # page bytes within image_budget(), prepared once by the runner
    Options = OpenAICompatOptions

    def __init__(self, config: BackendConfig):
        super().__init__(config)
        self.opts: OpenAICompatOptions = config.settings  # type: ignore[assignment]
        if not config.model:
            raise UsageError(f"backend {config.name!r}: --model is required: the model name the server "
                             "serves (vLLM: the --served-model-name or model path; Ollama: e.g. qwen2.5vl:7b)")
        base = self.opts.base_url or os.environ.get(BASE_URL_ENV, "").strip()
        if not base:
            raise UsageError(f"backend {config.name!r}: set the server with -o base_url=URL or "
                             f"{BASE_URL_ENV} (e.g. http://127.0.0.1:8000/v1)")
        try:
            self.base_url = str(OpenAICompatOptions._http_url(base))
        except ValueError as exc:
            raise UsageError(f"{BASE_URL_ENV}={base!r}: {exc}") from None
        self.url = f"{self.base_url}/chat/completions"
        self.host = urlsplit(self.base_url).hostname
        self.attempt_timeout = self.opts.attempt_timeout or (self.opts.connect_timeout + self.opts.read_timeout + 60)
        self.warnings = [w for w in (plain_http_warning(self.base_url),) if w]
        for line in self.warnings:
            log.warning("%s: %s", self.name, line)
        self._client: Any = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------ facts

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        parts = urlsplit(self.base_url)
        # Never the key, never userinfo in the URL: scheme, host, port and path only.
        d.update({"base_url": f"{parts.scheme}://{self.host}{f':{parts.port}' if parts.port else ''}{parts.path}",
                  "host": self.host, "endpoint": self.host, "loopback": is_loopback_host(self.host),
                  "api_key_set": bool(self._api_key()), "warnings": list(self.warnings),
                  "priced": "not priced: self-hosted (instance-hours are the operator's)"})
        return d

    def endpoint_kind(self) -> str:
        parts = urlsplit(self.base_url)
        return f"openai:{self.host}:{parts.port or (443 if parts.scheme == 'https' else 80)}"

    def image_budget(self) -> ImageBudget:
        return ImageBudget(formats=tuple(self.opts.image_formats), max_side_px=self.opts.max_image_dim,
                           max_request_bytes=self.opts.max_request_bytes)

    def _api_key(self) -> str | None:
        return os.environ.get(self.opts.api_key_env) or None

    # ------------------------------------------------------------ client

    def _get_client(self) -> Any:
        import httpx

        with self._lock:
            if self._client is None:
                install_log_scrubber()  # httpx/httpcore DEBUG logs carry headers
                n = self.max_concurrency()
                self._client = httpx.Client(
                    timeout=httpx.Timeout(self.opts.read_timeout, connect=self.opts.connect_timeout),
                    limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
                    headers={"User-Agent": "migbench"}, follow_redirects=False)
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def classify(self, exc: BaseException) -> ErrorClass:
        return classify_exception(exc)

    # ------------------------------------------------------------ one attempt

    def generate(self, request: Request) -> Response:
        body = json.dumps(chat_request(self.model_id, request.prompt, request.images, system=request.system,
                                       params=request.params, image_detail=self.opts.image_detail,
                                       max_tokens=self.opts.max_tokens)).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = self._api_key()
        if key:
            register_secret(key)
            headers["Authorization"] = f"Bearer {key}"
        client = self._get_client()
        t0 = time.perf_counter()
        status: int | None = None
        rid: str | None = None
        try:
            status, answer_headers, raw = self._post(client, body, headers, t0)
            rid = answer_headers.get("x-request-id")
            if status != 200:
                error_class = classify_status(status)
                retry_after = parse_retry_after(answer_headers.get("retry-after"))
                raise BackendError(error_message(status, raw), error_class, retry_after_s=retry_after)
            try:
                parsed = parse_chat_response(raw, answer_headers)
            except AnswerError as exc:
                exc.status, exc.request_id = status, rid
                raise
        except Exception as exc:  # noqa: BLE001 - every failure is classified and raised as BackendError
            self._fail(exc, len(body), status, rid, time.perf_counter() - t0)
        latency = time.perf_counter() - t0
        return Response(text=parsed.text, input_tokens=parsed.input_tokens, output_tokens=parsed.output_tokens,
                        latency_s=latency, endpoint=self.host, model_id=self.model_id, request_id=rid,
                        stop_reason=parsed.stop_reason, extra={"base_url_host": self.host},
                        sent=[self._entry(len(body), status, rid)])

    def _post(self, client: Any, body: bytes, headers: dict[str, str], t0: float) -> tuple[int, dict[str, str], bytes]:
        """Send once and read the whole answer, ending at attempt_timeout even when a server trickles
        (the read timeout only bounds the silence between bytes)."""
        with client.stream("POST", self.url, content=body, headers=headers) as r:
            chunks = []
            for chunk in r.iter_bytes():  # decoded (gzip etc.); h11 refuses a body short of its length
                chunks.append(chunk)
                if time.perf_counter() - t0 > self.attempt_timeout:
                    raise BackendError(f"no complete answer within attempt_timeout={self.attempt_timeout:g}s",
                                       ErrorClass.TIMEOUT)
            answer_headers = {k.lower(): v for k, v in r.headers.items()}
            if "content-encoding" in answer_headers:  # the declared length is of the compressed body
                answer_headers.pop("content-length", None)
            return r.status_code, answer_headers, b"".join(chunks)

    def _fail(self, exc: Exception, nbytes: int, status: int | None, rid: str | None, latency: float) -> None:
        if isinstance(exc, AnswerError):
            status = exc.status
        error_class = self.classify(exc)
        sent = status is not None or error_class in (ErrorClass.TIMEOUT,)
        partial = Response(latency_s=latency, endpoint=self.host, model_id=self.model_id, request_id=rid,
                           error_class=error_class, error=safe_message(exc),
                           throttled=int(error_class is ErrorClass.THROTTLING),
                           sent=[self._entry(nbytes if sent else 0, status, rid, error_class)])
        if isinstance(exc, BackendError):
            exc.response = partial
            raise exc
        raise BackendError(partial.error or type(exc).__name__, error_class, response=partial) from exc

    def _entry(self, nbytes: int, status: int | None, rid: str | None,
               error_class: ErrorClass | None = None) -> AuditEntry:
        """What the audit keeps of one request: where it went, never the body, headers or key."""
        return AuditEntry(backend=self.name, service=SERVICE, operation=OPERATION, region=None, host=self.host,
                          model_id=self.model_id, request_id=rid, status=status, bytes_sent=nbytes, allowed=True,
                          reason=error_class.value if error_class else None)

