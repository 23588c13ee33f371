"""What the Bedrock and SageMaker backends share: the boto3 client factory and error classification.

The harness owns retrying (harness/retry.py), so every client is built with botocore's own retries
off (`total_max_attempts=1`: one call, no hidden second attempt) and timeouts sized for long
generations. Credentials come from the standard chain (env, profile, SSO, container/instance role);
nothing here reads, stores or prints them.

Classification goes by the error CODE in `err.response["Error"]["Code"]`, never by exception class:
`from botocore.exceptions import ThrottlingException` does not exist (the migration guide's bug),
the per-client classes are generated at runtime, and a streaming error arrives as EventStreamError
with a lower-case code (`throttlingException`). Codes are compared case-insensitively.
"""

from __future__ import annotations

import ipaddress
import threading
from typing import Any
from urllib.parse import urlsplit

from migbench.contracts import Backend, ErrorClass, SetupError
from migbench.redact import install_log_scrubber

# botocore's DEBUG logs print signed headers and security tokens; scrub before any handler sees them.
install_log_scrubber()

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
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        return int(status) if status else None
    return None


def request_id(exc_or_response: Any) -> str | None:
    response = getattr(exc_or_response, "response", exc_or_response)
    if isinstance(response, dict):
        return (response.get("ResponseMetadata") or {}).get("RequestId") or None
    return None


def response_headers(exc_or_response: Any) -> dict[str, str]:
    response = getattr(exc_or_response, "response", exc_or_response)
    if isinstance(response, dict):
        return dict((response.get("ResponseMetadata") or {}).get("HTTPHeaders") or {})
    return {}


def retry_after_s(exc: BaseException) -> float | None:
    value = response_headers(exc).get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # an HTTP date: leave the wait to the backoff
        return None


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
    from migbench.contracts import BackendError

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
        if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError, bx.ParamValidationError,
                            bx.NoRegionError)):
            return ErrorClass.PERMANENT
    if isinstance(exc, TimeoutError):
        return ErrorClass.TIMEOUT
    if isinstance(exc, (ConnectionError, OSError)):
        return ErrorClass.TRANSIENT
    return ErrorClass.PERMANENT


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
    AWS_ENDPOINT_URL_<SERVICE> variable itself; the residency guard checks whatever results."""
    session = session or make_session()
    return session.client(
        service,
        region_name=region,
        endpoint_url=endpoint_url or None,
        config=client_config(region=region, read_timeout=read_timeout, connect_timeout=connect_timeout,
                             concurrency=concurrency),
    )


def has_credentials(session: Any) -> bool:
    try:
        return session.get_credentials() is not None
    except Exception:  # noqa: BLE001 - a broken profile is "no credentials" for the optional preflight
        return False


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


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def env_flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def record_attempt(sink: Any, *, backend: str, service: str, operation: str, model_id: str | None,
                   doc_id: str | None, decision: Any, region: str | None, host: str | None,
                   status: int | None, request_id: str | None, attempt: int = 1,
                   error_class: ErrorClass | None = None) -> None:
    """One AuditEntry for an attempt, sent or refused. `decision` is the guard's (None if it never ran).

    Holds where the request went and what it was; never bodies, headers or credentials.
    """
    if sink is None:
        return
    from migbench.contracts import AuditEntry

    refused = error_class is ErrorClass.RESIDENCY
    allowed = decision.allowed if decision is not None else not refused
    if decision is not None and not decision.allowed:
        reason = decision.reason
    elif refused:
        reason = "refused before sending"
    else:
        reason = error_class.value if error_class else None
    sink.record_audit(AuditEntry(
        backend=backend, service=service, operation=operation,
        region=decision.region if decision is not None else region,
        host=decision.host if decision is not None else host,
        model_id=model_id, doc_id=doc_id, request_id=request_id,
        status=None if not allowed else status, attempt=attempt,
        bytes_sent=decision.bytes_sent if decision is not None else 0,
        allowed=allowed, reason=reason))


EMULATED_HEADER = "x-migbench-emulated"


class AwsBackend(Backend):
    """What the AWS backends share: one lazily created client under a lock, AWS error classes."""

    service: str  # boto3 service name
    _client: Any = None
    _session: Any = None
    _lock: threading.Lock
    # set by the subclass: region, endpoint_url, read_timeout, connect_timeout, guard

    def _get_client(self) -> Any:
        """One client per backend, created on first use, with the residency guard attached."""
        with self._lock:
            if self._client is None:
                self._session = make_session(self.config.get("profile"))
                client = make_client(
                    self.service, region=self.region, endpoint_url=self.endpoint_url,
                    read_timeout=self.read_timeout, connect_timeout=self.connect_timeout,
                    concurrency=self.max_concurrency(), session=self._session)
                self._client = self.guard.attach(client)
            return self._client

    def classify(self, exc: BaseException) -> ErrorClass:
        return classify_aws_error(exc)

    def endpoint_kind(self) -> str:
        from migbench.residency import is_loopback, load_policy

        host = host_of(self._get_client().meta.endpoint_url)
        return f"loopback:{host}" if is_loopback(host, load_policy()) else "aws"

    def answered_by_emulator(self, headers: dict[str, str] | None) -> bool:
        """Our emulator says so in a header; any other server on loopback is not AWS either
        (moto, a local mock), so its answers are not evidence of a model."""
        if headers and env_flag(headers.get(EMULATED_HEADER)):
            return True
        client = self._client
        if client is None:
            return False
        from migbench.residency import is_loopback, load_policy

        return is_loopback(host_of(client.meta.endpoint_url), load_policy())

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
