"""The AWS base backend: client setup behind the residency guard, one bounded attempt, the
classification of every failure, and the audit facts of each request. Bedrock and SageMaker
only build their request and read their answer's shape (`_prepare_call`, `_send`, `_parse`).

The harness owns retrying (harness/retry.py), so every client is built with botocore's own retries
off (`total_max_attempts=1`: one call, no hidden second attempt) and timeouts sized for long
generations. Credentials come from the standard chain (env, profile, SSO, container/instance role);
their values are only registered with the scrubber (migbench.redact), never stored or printed.

Classification goes by the error CODE in `err.response["Error"]["Code"]`, never by exception class:
`from botocore.exceptions import ThrottlingException` does not exist (the migration guide's bug),
the per-client classes are generated at runtime, and a streaming error arrives as EventStreamError
with a lower-case code (`throttlingException`). Codes are compared case-insensitively.

A 200 is an answer only when it is complete and has the API's shape: a body shorter than its
Content-Length or empty is an incomplete answer (TRANSIENT: the next attempt may get all of it);
a body that is not the API's JSON (an HTML page from a proxy, JSON without the answer's key) is
a malformed answer (PERMANENT: the same request gets the same reply). Neither is ever stored as
an empty success.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal
from urllib.parse import urlsplit

from migbench.contracts import (
    AuditEntry,
    Backend,
    BackendConfig,
    BackendError,
    BackendOptions,
    ErrorClass,
    Request,
    Response,
    SetupError,
)
from migbench.redact import install_log_scrubber, register_credentials, scrub
from migbench.residency import (
    Decision,
    ResidencyGuard,
    is_loopback,
    load_model_catalog,
    load_policy,
    loopback_allowed_by_env,
)
from pydantic import Field, field_validator

log = logging.getLogger("migbench.aws")

# Residency: requests go to Sydney unless the region option names another allowed region.
DEFAULT_REGION = "ap-southeast-2"
EMULATED_HEADER = "x-migbench-emulated"
# Seconds an attempt may take beyond connect + read timeouts (sending the request, reading the body).
ATTEMPT_SLACK_S = 60.0


class AwsOptions(BackendOptions):
    """Options every AWS backend takes."""

    region: str = Field(DEFAULT_REGION, min_length=1, description=(
        "signing region; AWS_REGION / AWS_DEFAULT_REGION are deliberately not used: a developer's shell "
        "default must not move a residency run"))
    endpoint_url: str | None = Field(None, description=(
        "else botocore applies AWS_ENDPOINT_URL_<SERVICE>; the residency guard judges either"))
    allow_loopback: bool = Field(False, description="allow 127.0.0.1/localhost/::1 (emulators); "
                                                    "also MIGBENCH_ALLOW_LOOPBACK=1")
    read_timeout: float = Field(300.0, gt=0, description="socket read timeout, seconds (long generations)")
    connect_timeout: float = Field(10.0, gt=0)
    attempt_timeout: float | None = Field(None, gt=0, description=(
        "total seconds one attempt may take, answer read included (default: connect + read timeout + 60)"))
    max_image_dim: int | None = Field(None, ge=1, description="downscale pages whose longer side exceeds this")
    profile: str | None = Field(None, description="AWS named profile for the standard credential chain")
    residency_file: str | None = Field(None, description=(
        "residency policy YAML of your own (default: the packaged harness/data/residency.yaml)"))
    allow_destinations: list[str] = Field([], description=(
        "extra regions inference may run in, comma-separated (e.g. ap-southeast-6, Auckland); "
        "every run that allows one records it and the report says so"))
    model_catalog: str | None = Field(None, description=(
        "model catalog YAML (a `migbench catalog refresh` file); default $MIGBENCH_MODEL_CATALOG, else packaged"))
    quota_check: Literal["auto", "always", "never"] = Field("auto", description=(
        "read the model's tokens-per-minute quota from Service Quotas at preflight (auto: when it and the "
        "model endpoint are both AWS or both local); the rate limiter's default when no --tpm is given"))

    @field_validator("allow_destinations", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):  # -o allow_destinations=ap-southeast-6,ap-southeast-4
            return [v.strip() for v in value.split(",") if v.strip()]
        return value


class AnswerError(BackendError):
    """The service answered 2xx, but not with a usable answer. Keeps the answer's status and request
    id for the audit (the request was sent and answered)."""

    status: int | None = None
    request_id: str | None = None


class IncompleteAnswer(AnswerError):
    """A 2xx whose body is empty or shorter than its Content-Length: retried."""

    def __init__(self, message: str):
        super().__init__(message, ErrorClass.TRANSIENT)


class MalformedAnswer(AnswerError):
    """A 2xx whose body is not the API's response shape (HTML, other JSON): not an answer."""

    def __init__(self, message: str):
        super().__init__(message, ErrorClass.PERMANENT)


def check_answer_body(body: bytes, headers: dict[str, str], what: str) -> None:
    """Refuse an incomplete 2xx body; shared by the botocore hook and the streamed bodies."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and len(body) < int(declared):
        raise IncompleteAnswer(f"{what}: answer cut off after {len(body)} of {declared} bytes")
    if not body.strip():
        raise IncompleteAnswer(f"{what}: 200 with an empty body")


def load_json_answer(body: bytes, headers: dict[str, str], what: str) -> Any:
    """A complete JSON answer, or IncompleteAnswer / MalformedAnswer naming what arrived instead."""
    check_answer_body(body, headers, what)
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        kind = headers.get("content-type") or "unknown content type"
        raise MalformedAnswer(f"{what}: answer is not JSON ({kind}, {len(body)} bytes: "
                              f"{body[:60].decode('utf-8', 'replace')!r})") from None


def _decode_cbor(body: bytes) -> Any:
    from botocore.parsers import RpcV2CBORParser

    parser = RpcV2CBORParser()
    try:
        return parser.parse_data_item(parser.get_peekable_stream_from_bytes(body))
    except Exception:  # noqa: BLE001 - any decoder failure means "not CBOR"
        return None


def load_answer(body: bytes, headers: dict[str, str], what: str, protocol: str) -> None:
    """Refuse a 2xx body that is not a complete answer in the protocol the client speaks (JSON
    object, or CBOR map for Smithy RPC v2); XML/query protocols are left to botocore's parser."""
    if protocol == "smithy-rpc-v2-cbor":
        check_answer_body(body, headers, what)
        if not isinstance(_decode_cbor(body), dict):
            raise MalformedAnswer(f"{what}: answer is not a CBOR map ({headers.get('content-type')}, "
                                  f"{len(body)} bytes)")
    elif protocol in ("json", "rest-json"):
        load_json_answer(body, headers, what)


def _check_2xx_body(response_dict: dict[str, Any] | None = None, operation_model: Any = None, **_: Any) -> None:
    """botocore `before-parse` hook: botocore parses an empty, cut-off or HTML 200 body as `{}`, so
    a Converse answer would look like a success with no text. Streamed bodies are read (and checked)
    by the backend itself."""
    if not response_dict or not 200 <= int(response_dict.get("status_code") or 0) < 300:
        return
    body = response_dict.get("body")
    if not isinstance(body, (bytes, bytearray)):
        return
    headers = {str(k).lower(): str(v) for k, v in (response_dict.get("headers") or {}).items()}
    name = getattr(operation_model, "name", "answer")
    if getattr(operation_model, "has_streaming_output", False):
        return
    service = getattr(operation_model, "service_model", None)
    protocol = getattr(service, "resolved_protocol", None) or getattr(service, "protocol", "json")
    try:
        load_answer(bytes(body), headers, name, protocol)
    except AnswerError as exc:
        exc.status = int(response_dict["status_code"])
        exc.request_id = headers.get("x-amzn-requestid")
        raise


# Decisions (documented in the report and pinned by tests/adapters/test_bedrock_errors.py):
# - ServiceQuotaExceededException -> THROTTLING: Bedrock quotas are tokens/requests per minute, so
#   backing off (and telling the rate limiter) is the right reaction; the retry loop bounds it.
# - ModelErrorException (424) -> TRANSIENT: a failure inside the model service, not a request the
#   service rejected; a bounded retry is cheap and the run records that it happened.
# - ModelNotReadyException -> TRANSIENT (botocore itself treats it as retryable).
# - ModelTimeoutException (408) -> TIMEOUT: retried a bounded number of times, and botocore does
#   NOT retry it, so the harness must.
_CODE_CLASSES: dict[str, ErrorClass] = {
    # throttling
    "throttlingexception": ErrorClass.THROTTLING,
    "throttling": ErrorClass.THROTTLING,
    "throttledexception": ErrorClass.THROTTLING,
    "toomanyrequestsexception": ErrorClass.THROTTLING,
    "requestlimitexceeded": ErrorClass.THROTTLING,
    "servicequotaexceededexception": ErrorClass.THROTTLING,
    "provisionedthroughputexceededexception": ErrorClass.THROTTLING,
    # transient service-side failures
    "serviceunavailableexception": ErrorClass.TRANSIENT,
    "serviceunavailable": ErrorClass.TRANSIENT,
    "internalserverexception": ErrorClass.TRANSIENT,
    "internalservererror": ErrorClass.TRANSIENT,
    "internalfailure": ErrorClass.TRANSIENT,
    "internaldependencyexception": ErrorClass.TRANSIENT,
    "modelnotreadyexception": ErrorClass.TRANSIENT,
    "modelerrorexception": ErrorClass.TRANSIENT,
    "modelstreamerrorexception": ErrorClass.TRANSIENT,
    # timeouts
    "modeltimeoutexception": ErrorClass.TIMEOUT,
    "requesttimeout": ErrorClass.TIMEOUT,
    "requesttimeoutexception": ErrorClass.TIMEOUT,
    # permanent: the same request will fail the same way
    "validationexception": ErrorClass.PERMANENT,
    "validationerror": ErrorClass.PERMANENT,
    "accessdeniedexception": ErrorClass.PERMANENT,
    "resourcenotfoundexception": ErrorClass.PERMANENT,
    "unrecognizedclientexception": ErrorClass.PERMANENT,
    "invalidsignatureexception": ErrorClass.PERMANENT,
    "expiredtokenexception": ErrorClass.PERMANENT,
    "incompletesignature": ErrorClass.PERMANENT,
    "missingauthenticationtokenexception": ErrorClass.PERMANENT,
    "conflictexception": ErrorClass.PERMANENT,
}


def error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = (response.get("Error") or {}).get("Code")
        return str(code) if code else None
    return None


def http_status(exc: BaseException) -> int | None:
    if isinstance(exc, AnswerError):
        return exc.status
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        return int(status) if status else None
    return None


def request_id(exc_or_response: Any) -> str | None:
    if isinstance(exc_or_response, AnswerError):
        return exc_or_response.request_id
    response = getattr(exc_or_response, "response", exc_or_response)
    if isinstance(response, dict):
        return (response.get("ResponseMetadata") or {}).get("RequestId") or None
    return None


def response_headers(exc_or_response: Any) -> dict[str, str]:
    response = getattr(exc_or_response, "response", exc_or_response)
    if isinstance(response, dict):
        return dict((response.get("ResponseMetadata") or {}).get("HTTPHeaders") or {})
    return {}


def _class_from_status(status: int | None) -> ErrorClass:
    if status == 429:
        return ErrorClass.THROTTLING
    if status == 408:
        return ErrorClass.TIMEOUT
    if status is not None and status >= 500:
        return ErrorClass.TRANSIENT
    return ErrorClass.PERMANENT


def classify_client_error(code: str | None, status: int | None, response: dict | None = None) -> ErrorClass:
    """Pure: an AWS error code (+ HTTP status) -> ErrorClass. Unknown codes fall back to the status."""
    if code:
        lowered = code.lower()
        if lowered == "modelerror":
            # SageMaker: the container answered with an error; its own status says whose fault it is.
            original = (response or {}).get("OriginalStatusCode")
            return _class_from_status(int(original)) if original else ErrorClass.TRANSIENT
        if lowered in _CODE_CLASSES:
            return _CODE_CLASSES[lowered]
    return _class_from_status(status)


def classify_aws_error(exc: BaseException) -> ErrorClass:
    """Map anything a boto3 call can raise to an ErrorClass (the residency error classifies itself)."""
    if isinstance(exc, BackendError):
        return exc.error_class
    try:
        from botocore import exceptions as bx
    except ImportError:  # pragma: no cover - boto3 is this module's extra
        bx = None
    if bx is not None:
        if isinstance(exc, bx.ClientError):  # includes EventStreamError and per-client classes
            return classify_client_error(error_code(exc), http_status(exc), exc.response)
        if isinstance(exc, bx.ReadTimeoutError):
            return ErrorClass.TIMEOUT
        # Nothing reached the model: a new connection is worth another try.
        if isinstance(exc, (bx.ConnectTimeoutError, bx.EndpointConnectionError, bx.ConnectionClosedError)):
            return ErrorClass.TRANSIENT
        if isinstance(exc, bx.SSLError):
            return ErrorClass.PERMANENT if "certificate verify failed" in str(exc) else ErrorClass.TRANSIENT
        if isinstance(exc, (bx.ConnectionError, bx.HTTPClientError)):
            return ErrorClass.TRANSIENT
        # A streamed body that ended before its Content-Length: the next attempt may get all of it.
        if isinstance(exc, bx.IncompleteReadError):
            return ErrorClass.TRANSIENT
        if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError, bx.ParamValidationError,
                            bx.NoRegionError)):
            return ErrorClass.PERMANENT
    try:
        from urllib3 import exceptions as ux
    except ImportError:  # pragma: no cover - botocore depends on urllib3
        ux = None
    if ux is not None:
        # An event stream is read from urllib3 directly: what breaks mid-stream is not wrapped by botocore.
        if isinstance(exc, ux.ReadTimeoutError):
            return ErrorClass.TIMEOUT
        if isinstance(exc, (ux.ProtocolError, ux.IncompleteRead)):
            return ErrorClass.TRANSIENT
    if isinstance(exc, TimeoutError):
        return ErrorClass.TIMEOUT
    if isinstance(exc, (ConnectionError, OSError)):
        return ErrorClass.TRANSIENT
    return ErrorClass.PERMANENT


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """A Retry-After header as seconds to wait: delta-seconds or an HTTP date (RFC 9110 10.2.3).

    Whatever a server sends stays a number the retry loop can cap: `inf`, `1e10` and far dates
    come back as they are (the loop caps every hint), negative values and past dates as 0, and
    `nan` or text as None (the loop's own backoff decides).
    """
    if value is None:
        return None
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


def retry_after_s(exc: BaseException) -> float | None:
    return parse_retry_after(response_headers(exc).get("retry-after"))




def client_config(*, region: str, read_timeout: float = 300.0, connect_timeout: float = 10.0,
                  concurrency: int = 1) -> Any:
    """botocore Config for one harness attempt per call; the pool matches the harness's threads."""
    from botocore.config import Config

    return Config(
        region_name=region,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=max(1, int(concurrency)),
        retries={"total_max_attempts": 1, "mode": "standard"},
        tcp_keepalive=True,
        user_agent_extra="migbench",
    )


def make_session(profile: str | None = None) -> Any:
    import boto3

    return boto3.session.Session(profile_name=profile) if profile else boto3.session.Session()


def make_client(service: str, *, region: str, endpoint_url: str | None = None, read_timeout: float = 300.0,
                connect_timeout: float = 10.0, concurrency: int = 1, session: Any = None) -> Any:
    """A boto3 client with the explicit Config. endpoint_url None lets botocore apply the standard
    AWS_ENDPOINT_URL_<SERVICE> variable itself; the residency guard checks whatever results.

    Making a client is where AWS enters the process, so this is where botocore's DEBUG logs (signed
    headers, tokens) start being scrubbed and the resolved credentials are registered as secrets.
    """
    install_log_scrubber()
    session = session or make_session()
    register_credentials(_credentials(session))
    client = session.client(
        service,
        region_name=region,
        endpoint_url=endpoint_url or None,
        config=client_config(region=region, read_timeout=read_timeout, connect_timeout=connect_timeout,
                             concurrency=concurrency),
    )
    client.meta.events.register("before-parse", _check_2xx_body, unique_id="migbench-answer-check")
    return client


def _credentials(session: Any) -> Any:
    try:
        return session.get_credentials()
    except Exception:  # noqa: BLE001 - a broken profile is "no credentials" (require_credentials says so)
        return None


def has_credentials(session: Any) -> bool:
    return _credentials(session) is not None


def require_credentials(session: Any, backend: str) -> None:
    """Fail the run at start, in one line, rather than every document with the same cause."""
    if not has_credentials(session):
        raise SetupError(
            f"{backend}: no AWS credentials found. Use the standard chain: AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY (+AWS_SESSION_TOKEN), AWS_PROFILE, SSO, or an instance/task role"
        )


def host_of(url: str | None) -> str | None:
    if not url:
        return None
    return urlsplit(url).hostname


def error_line(exc: BaseException) -> str:
    """`Code: message` for a service error (botocore's own wording repeats the operation), else
    safe_message; scrubbed, one line."""
    code = error_code(exc)
    message = ((getattr(exc, "response", None) or {}).get("Error") or {}).get("Message") if code else None
    if code:
        return (scrub(f"{code}: {str(message).splitlines()[0]}") if message else None) or code
    return safe_message(exc)


def safe_message(exc: BaseException) -> str:
    """One scrubbed line naming the error (a server may echo anything, credentials included)."""
    code = error_code(exc)
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return scrub(f"{code}: {text}" if code and code not in text else text) or type(exc).__name__


# ---------------------------------------------------------------- the base backend


@dataclass
class Call:
    """One prepared request: the operation, the boto3 keyword arguments, facts for Response.extra."""

    operation: str  # Converse | InvokeModel | InvokeEndpoint
    kwargs: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Answer:
    """What came back: the response metadata and, for streamed operations, the body read in full."""

    raw: dict[str, Any]
    body: bytes | None = None
    # Streamed answers (ConverseStream, InvokeModelWithResponseStream): the answer rebuilt from the
    # events, and the perf_counter reading when its first output text arrived (for Response.ttft_s).
    assembled: Any = None
    first_token_at: float | None = None

    @property
    def headers(self) -> dict[str, str]:
        return response_headers(self.raw)

    @classmethod
    def streamed(cls, raw: dict[str, Any], key: str, what: str) -> Answer:
        """Read a streamed body in full. botocore checks it against Content-Length; a body that
        breaks off is an incomplete answer of a 200 (a read timeout stays a timeout)."""
        try:
            return cls(raw, raw[key].read())
        except Exception as exc:  # classified here or below, never swallowed
            if classify_aws_error(exc) is ErrorClass.TIMEOUT:
                raise
            err = IncompleteAnswer(f"{what}: answer broke off: {safe_message(exc)}")
            err.status, err.request_id = http_status(raw) or 200, request_id(raw)
            raise err from exc


class AwsBackend(Backend):
    """What the AWS backends share: options, one lazily created guarded client, one bounded attempt
    (`generate`), classification and the audit facts of every request, sent or refused."""

    service: str  # boto3 service name
    Options = AwsOptions

    def __init__(self, config: BackendConfig):
        super().__init__(config)
        self.opts: AwsOptions = config.settings  # type: ignore[assignment]
        self.region: str = self.opts.region
        self.endpoint_url: str | None = self.opts.endpoint_url
        self.read_timeout = self.opts.read_timeout
        self.connect_timeout = self.opts.connect_timeout
        self.attempt_timeout = self.opts.attempt_timeout or (
            self.connect_timeout + self.read_timeout + ATTEMPT_SLACK_S)
        self.max_image_dim = self.opts.max_image_dim
        self.allow_loopback = self.opts.allow_loopback or loopback_allowed_by_env()
        self.policy = load_policy(self.opts.residency_file).with_destinations(self.opts.allow_destinations)
        self.model_catalog = load_model_catalog(self.opts.model_catalog)
        self.guard = ResidencyGuard(self.policy, allow_loopback=self.allow_loopback, catalog=self.model_catalog)
        self.quota_tpm: float | None = None  # read at preflight (Service Quotas); see quota_hint
        self.quota_note: str = "not read"
        self.emulated: bool | None = None  # known after the first answered call
        self._client: Any = None
        self._session: Any = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------ client

    def _get_client(self) -> Any:
        """One client per backend, created on first use, with the residency guard attached."""
        with self._lock:
            if self._client is None:
                self._session = make_session(self.opts.profile)
                client = make_client(
                    self.service, region=self.region, endpoint_url=self.endpoint_url,
                    read_timeout=self.read_timeout, connect_timeout=self.connect_timeout,
                    concurrency=self.max_concurrency(), session=self._session)
                self._client = self.guard.attach(client)
            return self._client

    def classify(self, exc: BaseException) -> ErrorClass:
        return classify_aws_error(exc)

    def quota_hint(self) -> float | None:
        """Tokens per minute this model may use in this region, as Service Quotas reported it at
        preflight; None when not read (the runner then uses --tpm or no token limit)."""
        return self.quota_tpm

    def residency_facts(self) -> dict[str, Any]:
        """What describe() records about the policy: allowed destinations, and any the user added
        beyond Australia (the report shows those)."""
        return self.policy.describe(self.opts.residency_file)

    def read_quota(self, names: list[str], *, runtime_endpoint: str | None) -> None:
        """Read the tokens-per-minute quota named by one of `names` (service-quotas
        ListServiceQuotas, service code bedrock) into `quota_tpm`. Any failure is a note, never a
        failure of the run: the quota only seeds the rate limiter."""
        mode = self.opts.quota_check
        if mode == "never":
            self.quota_note = "not read: quota_check=never"
            return
        if not names:
            self.quota_note = "not read: the catalog has no quota name for this model"
            return
        try:
            sq = self.guard.attach(make_client("service-quotas", region=self.region, read_timeout=30,
                                               connect_timeout=self.connect_timeout, session=self._session))
        except Exception as exc:  # noqa: BLE001 - a note, never a failure
            self.quota_note = f"not read: {safe_message(exc)}"
            log.info("Service Quotas not read: %s", self.quota_note)
            return
        decisions: list[Decision] = []
        try:
            local = is_loopback(host_of(sq.meta.endpoint_url), self.policy)
            if mode == "auto" and local != is_loopback(host_of(runtime_endpoint), self.policy):
                # A dry run against a local model endpoint must not ask AWS; a real run must not
                # take its quota from a local server.
                self.quota_note = "not read: the Service Quotas endpoint and the model endpoint differ (local/AWS)"
                return
            wanted = {n.lower(): n for n in names}
            with self.guard.recording(decisions):
                for page in sq.get_paginator("list_service_quotas").paginate(ServiceCode="bedrock"):
                    for quota in page.get("Quotas") or []:
                        name = str(quota.get("QuotaName") or "")
                        if name.lower() in wanted and quota.get("Value") is not None and float(quota["Value"]) > 0:
                            self.quota_tpm = float(quota["Value"])
                            self.quota_note = f"{name} = {self.quota_tpm:g} ({quota.get('QuotaCode')}, {self.region})"
                            return
            self.quota_note = f"not read: no quota named {names[0]!r} in {self.region}"
        except Exception as exc:  # noqa: BLE001 - AccessDenied, unreachable, refused: a note
            self.quota_note = f"not read: {error_line(exc)}"
        finally:
            sq.close()
            # Audited like the profile check: a request to AWS before any document (never a body).
            self.record_outside_loop(self._facts("ListServiceQuotas", decisions, status=None, request_id=None,
                                                 service="service-quotas"))
            if self.quota_tpm is None:
                log.info("Service Quotas: %s", self.quota_note)

    def endpoint_kind(self) -> str:
        host = host_of(self._get_client().meta.endpoint_url)
        return f"loopback:{host}" if is_loopback(host, self.policy) else "aws"

    def answered_by_emulator(self, headers: dict[str, str] | None) -> bool:
        """Our emulator says so in a header; any other server on loopback is not AWS either
        (moto, a local mock), so its answers are not evidence of a model."""
        if headers and (headers.get(EMULATED_HEADER) or "").strip() == "1":
            return True
        client = self._client
        if client is None:
            return False
        return is_loopback(host_of(client.meta.endpoint_url), self.policy)

    def _note_emulated(self, headers: dict[str, str]) -> bool:
        emulated = self.answered_by_emulator(headers)
        if headers:
            self.emulated = emulated
        return emulated

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # ------------------------------------------------------------ what a backend supplies

    def _prepare_call(self, request: Request) -> Call:
        """Build the request (raise BackendError INPUT for a document that cannot be sent)."""
        raise NotImplementedError

    def _send(self, client: Any, call: Call) -> Answer:
        """The boto3 call; runs on the attempt's thread and reads a streamed body in full."""
        raise NotImplementedError

    def _parse(self, call: Call, answer: Answer) -> Any:
        """The answer's text and usage (a ParsedOutput); raise IncompleteAnswer/MalformedAnswer."""
        raise NotImplementedError

    # ------------------------------------------------------------ one attempt

    def generate(self, request: Request) -> Response:
        """One bounded attempt: sent (or refused) once, classified, with its audit facts attached.

        The attempt runs on its own thread so it ends at `attempt_timeout` even when a server
        trickles its answer byte by byte (socket timeouts only bound the silence between bytes).
        An abandoned call finishes or times out on its own; its result is discarded.
        """
        call = self._prepare_call(request)
        client = self._get_client()
        register_credentials(_credentials(self._session))  # role/SSO credentials rotate
        decisions: list[Decision] = []
        t0 = time.perf_counter()
        try:
            answer = self._bounded(lambda: self._send(client, call), decisions)
            try:
                parsed = self._parse(call, answer)
            except AnswerError as exc:
                exc.status, exc.request_id = http_status(answer.raw) or 200, request_id(answer.raw)
                raise
        except Exception as exc:  # noqa: BLE001 - every failure is classified and raised as BackendError
            self._fail(exc, call, decisions, time.perf_counter() - t0)
        latency = time.perf_counter() - t0
        rid = request_id(answer.raw)
        emulated = self._note_emulated(answer.headers)
        decision = decisions[-1] if decisions else None
        return Response(
            text=parsed.text, input_tokens=parsed.input_tokens, output_tokens=parsed.output_tokens,
            latency_s=latency, server_latency_ms=parsed.server_latency_ms, region=self.region,
            endpoint=decision.host if decision else host_of(client.meta.endpoint_url), model_id=self.model_id,
            request_id=rid, stop_reason=parsed.stop_reason,
            extra={"emulated": emulated, **call.extra, **getattr(parsed, "extra", {})},
            cache_read_tokens=getattr(parsed, "cache_read_tokens", None),
            cache_write_tokens=getattr(parsed, "cache_write_tokens", None),
            ttft_s=answer.first_token_at - t0 if answer.first_token_at is not None else None,
            sent=self._facts(call.operation, decisions, status=http_status(answer.raw) or 200, request_id=rid))

    def _bounded(self, send: Callable[[], Answer], decisions: list[Decision]) -> Answer:
        result: dict[str, Any] = {}
        done = threading.Event()

        def run() -> None:
            try:
                with self.guard.recording(decisions):
                    result["answer"] = send()
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                result["error"] = exc
            finally:
                done.set()

        threading.Thread(target=run, name="migbench-attempt", daemon=True).start()
        if not done.wait(self.attempt_timeout):
            raise BackendError(f"no complete answer within attempt_timeout={self.attempt_timeout:g}s",
                               ErrorClass.TIMEOUT)
        if "error" in result:
            raise result["error"]
        return result["answer"]

    def _fail(self, exc: Exception, call: Call, decisions: list[Decision], latency: float) -> None:
        error_class = self.classify(exc)
        self._note_emulated(response_headers(exc))
        decision = decisions[-1] if decisions else None
        partial = Response(
            latency_s=latency, region=self.region, endpoint=decision.host if decision else None,
            model_id=self.model_id, request_id=request_id(exc), error_class=error_class,
            error=safe_message(exc), throttled=int(error_class is ErrorClass.THROTTLING),
            sent=self._facts(call.operation, decisions, status=http_status(exc), request_id=request_id(exc),
                             error_class=error_class))
        if isinstance(exc, BackendError):
            exc.response = partial
            raise exc
        raise BackendError(partial.error or type(exc).__name__, error_class, retry_after_s=retry_after_s(exc),
                           response=partial) from exc

    def _facts(self, operation: str, decisions: list[Decision], *, status: int | None, request_id: str | None,
               error_class: ErrorClass | None = None, service: str | None = None) -> list[AuditEntry]:
        """AuditEntries for what the guard judged during one call (refusals included). A call that
        failed before the guard ran (no connection attempt) still leaves one entry."""
        if not decisions:
            if error_class is None:
                return []
            decisions = [None]  # type: ignore[list-item]
        host = host_of(self._client.meta.endpoint_url) if self._client is not None else None
        return [audit_entry(backend=self.name, service=service or self.service, operation=operation,
                            model_id=self.model_id, decision=d, region=self.region, host=host,
                            status=status, request_id=request_id, error_class=error_class)
                for d in decisions]

    def record_outside_loop(self, entries: list[AuditEntry]) -> None:
        """Preflight requests are not attempts of a document: recorded straight to the sink."""
        if self.audit is not None:
            for entry in entries:
                self.audit.record_audit(entry)


def audit_entry(*, backend: str, service: str, operation: str, model_id: str | None, decision: Decision | None,
                region: str | None, host: str | None, status: int | None, request_id: str | None,
                error_class: ErrorClass | None = None) -> AuditEntry:
    """One request as the audit keeps it: where it went and what it was; never bodies, headers or
    credentials. Doc id and attempt number are the retry loop's to fill in."""
    refused = error_class is ErrorClass.RESIDENCY
    allowed = decision.allowed if decision is not None else not refused
    if decision is not None and not decision.allowed:
        reason = decision.reason
    elif refused:
        reason = "refused before sending"
    else:
        reason = error_class.value if error_class else None
    return AuditEntry(
        backend=backend, service=service, operation=operation,
        region=decision.region if decision is not None else region,
        host=decision.host if decision is not None else host,
        model_id=model_id, request_id=request_id,
        status=None if not allowed else status,
        bytes_sent=decision.bytes_sent if decision is not None else 0,
        allowed=allowed, reason=reason)
