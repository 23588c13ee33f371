"""The small base class every backend implements.

A backend turns a Request into a Response for ONE attempt and classifies its own errors.
Retrying, rate limiting, parsing, scoring and storing belong to the harness, so every backend
is measured by exactly the same loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from harness.audit import AuditSink
from harness.records import ErrorClass, Request, Response
from harness.tokens import estimate_request_tokens


class BackendError(Exception):
    """Raised by an adapter for a failed attempt, already classified."""

    def __init__(self, message: str, error_class: ErrorClass, *, retry_after_s: float | None = None,
                 response: Response | None = None):
        super().__init__(message)
        self.error_class = error_class
        self.retry_after_s = retry_after_s
        self.response = response  # partial facts about the attempt (region, request id, latency)


class SetupError(RuntimeError):
    """A backend cannot start: a missing extra, model path, credential or a residency refusal.

    The message is one line that says what to install or set; the CLI prints it without a trace.
    """


@dataclass
class BackendConfig:
    name: str  # registry name, e.g. nova-pro
    model: str | None = None  # model id, profile id, endpoint name or model directory
    options: dict[str, Any] = field(default_factory=dict)  # backend-specific settings from config/CLI

    def get(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)


class Backend(ABC):
    family: ClassVar[str] = "base"  # ocr | bedrock | sagemaker | local | emulated
    # What the request needs: images as encoded bytes (cloud) or decoded pages (local/OCR).
    wants_prompt: ClassVar[bool] = True
    # Backends that batch (local GPUs) override generate_batch; others get a thread pool.
    batches: ClassVar[bool] = False

    def __init__(self, config: BackendConfig):
        self.config = config
        self.audit: AuditSink | None = None  # set by the runner; cloud backends record every request

    def attach_audit(self, sink: AuditSink) -> None:
        self.audit = sink

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def model_id(self) -> str:
        return self.config.model or self.name

    def describe(self) -> dict[str, Any]:
        """Facts recorded with the run (model id, region, endpoint, emulated or not)."""
        return {"backend": self.name, "family": self.family, "model": self.model_id}

    def endpoint_kind(self) -> str:
        """Part of a run's identity: where requests go. A dry run against a local emulator and a
        real run against AWS must never resume each other's documents."""
        return "in-process"

    def preflight(self) -> None:
        """Checks before the first document (credentials, residency, model path). Raise SetupError."""

    @abstractmethod
    def generate(self, request: Request) -> Response:
        """One attempt. Return a Response or raise BackendError (or any exception: see classify)."""

    def generate_batch(self, requests: list[Request]) -> list[Response | BackendError]:
        out: list[Response | BackendError] = []
        for r in requests:
            try:
                out.append(self.generate(r))
            except BackendError as exc:
                out.append(exc)
        return out

    def classify(self, exc: BaseException) -> ErrorClass:
        """Map an exception an attempt raised to an ErrorClass. Providers override this."""
        if isinstance(exc, BackendError):
            return exc.error_class
        if isinstance(exc, (TimeoutError,)):
            return ErrorClass.TIMEOUT
        if isinstance(exc, (ConnectionError,)):
            return ErrorClass.TRANSIENT
        return ErrorClass.PERMANENT

    def estimate_input_tokens(self, request: Request) -> int:
        """Input tokens expected before the call (rate limiting); backends may know better."""
        return estimate_request_tokens(request.prompt, request.system, request.images)

    def max_concurrency(self) -> int:
        return int(self.config.get("concurrency", 1))

    def close(self) -> None:
        """Release clients, pools, models."""
