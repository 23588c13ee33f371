"""The contracts every layer shares: records, audit entries, errors and the Backend base class.

One typed record flows adapter -> parser -> scorer -> store -> analysis -> report:
Document -> Request -> Response -> parsed fields -> FieldScore list -> DocResult.
This module depends on no other migbench module, so the core (runner, retry, residency) and the
adapters both point at it and never at each other. Everything here is plain data or an interface.
"""

from __future__ import annotations

import enum
import threading
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

NOT_FOUND = "NOT_FOUND"


class ErrorClass(str, enum.Enum):
    """How a failure is treated. Providers only classify; the shared retry loop acts."""

    THROTTLING = "throttling"  # retry with backoff, tell the rate limiter
    TRANSIENT = "transient"  # 5xx, resets, model not ready: retry with backoff
    TIMEOUT = "timeout"  # read timeout / ModelTimeoutException: retry a bounded number of times
    PERMANENT = "permanent"  # validation, access denied, bad input: fail the document now
    RESIDENCY = "residency"  # refused before sending: fail the document, never retry
    INPUT = "input"  # the document itself could not be read
    PARSE = "parse"  # reserved: the parser never raises, but a backend may return nothing usable


RETRYABLE = {ErrorClass.THROTTLING, ErrorClass.TRANSIENT, ErrorClass.TIMEOUT}


@dataclass(frozen=True)
class Document:
    doc_id: str  # file name relative to the dataset root; unique within a dataset
    path: Path
    doc_type: str  # a key of the field schema: invoice | receipt | bank_statement
    ground_truth: dict[str, str]  # only the fields the ground truth has, raw strings
    tier: str = "unknown"  # degradation tier of synthetic documents (clean/light/moderate/heavy)
    pages: int = 1


@dataclass(frozen=True)
class GenParams:
    max_tokens: int = 1024
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()


# What a backend needs the runner to prepare from each document file (migbench.images, once per
# document; retries reuse it): "encoded" page bytes within the backend's ImageBudget (cloud APIs),
# decoded "pages" (local models, OCR), or "pdf-or-encoded": the original PDF where the backend
# takes document blocks (ImageBudget.takes_pdf), encoded pages otherwise; or "pdf-text-or-pages": a
# PDF's bytes plus decoded pages only for its pages without a text layer (OCR), decoded pages otherwise.
InputForm = Literal["encoded", "pages", "pdf-or-encoded", "pdf-text-or-pages"]


@dataclass(frozen=True)
class ImageBudget:
    """What a backend's API accepts; the runner prepares every document within it, once."""

    formats: tuple[str, ...] = ("png", "jpeg", "gif", "webp")
    max_side_px: int | None = None  # longer side; None: no limit
    max_request_bytes: int | None = None  # the whole request body (the pages share it); None: no limit
    takes_pdf: bool = False  # form "pdf-or-encoded": the PDF itself goes as a document block
    max_document_bytes: int | None = None  # a larger PDF is sent as pages


@dataclass(frozen=True)
class EncodedImage:
    """One page as an API receives it."""

    data: bytes
    format: str  # png | jpeg | gif | webp
    width: int
    height: int
    converted: bool = False  # re-encoded from the source (format, mode, orientation or size changed)


@dataclass(frozen=True)
class ToolSpec:
    """The one tool a model is made to call (`--prompt-style tool`): its input is the answer's fields
    (structured output), validated by the model service against `input_schema` (JSON Schema)."""

    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass
class Request:
    doc_id: str
    doc_type: str
    prompt: str
    system: str | None = None
    images: list[EncodedImage] = field(default_factory=list)  # form "encoded": pages within the budget
    params: GenParams = field(default_factory=GenParams)
    pages: list[Any] = field(default_factory=list)  # form "pages": decoded 8-bit RGB PIL images, upright
    pdf_bytes: bytes | None = None  # form "pdf-or-encoded": the original PDF, sent as a document block
    pdf_page_sizes: list[tuple[int, int]] = field(default_factory=list)  # its pages in pixels, for estimates
    estimated_input_tokens: int | None = None  # for rate limiting before the call
    tool: ToolSpec | None = None  # answer by calling this tool (structured output), not in text

    def page_sizes(self) -> list[tuple[int, int]]:
        """Pixel size of each page the request carries, whatever its form (read from no image data)."""
        if self.images:
            return [(i.width, i.height) for i in self.images]
        if self.pages:
            return [tuple(p.size) for p in self.pages]
        return list(self.pdf_page_sizes)



@dataclass
class Response:
    text: str = ""
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_s: float | None = None  # client wall time of the successful attempt
    server_latency_ms: float | None = None  # what the service says it spent (Bedrock metrics.latencyMs)
    attempts: int = 1
    region: str | None = None
    endpoint: str | None = None
    model_id: str | None = None
    request_id: str | None = None
    stop_reason: str | None = None
    error_class: ErrorClass | None = None
    error: str | None = None
    retry_wait_s: float = 0.0
    throttled: int = 0  # throttling answers seen across attempts
    peak_memory_mb: float | None = None  # local GPU backends
    ttft_s: float | None = None  # streamed answers: time from sending to the first output token
    cache_read_tokens: int | None = None  # prompt caching: input tokens read from the cache
    cache_write_tokens: int | None = None  # prompt caching: input tokens written to the cache
    cost_usd: float | None = None  # set by the cost model, not by adapters
    extra: dict[str, Any] = field(default_factory=dict)
    # What this attempt sent or was refused (one AuditEntry per request, without doc id or attempt
    # number); the retry loop stamps and records them in the audit sink and empties the list.
    sent: list[AuditEntry] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return self.error_class is None


@dataclass
class FieldScore:
    field: str
    expected: str
    predicted: str
    f1: float
    precision: float
    recall: float
    hallucinated: bool = False  # ground truth NOT_FOUND but a value predicted
    missed: bool = False  # ground truth has a value, NOT_FOUND predicted


@dataclass
class DocResult:
    doc_id: str
    doc_type: str
    tier: str
    status: str  # "ok" | "failed"
    response: Response
    fields: dict[str, str] = field(default_factory=dict)
    scores: list[FieldScore] = field(default_factory=list)
    doc_f1: float | None = None
    error_class: str | None = None
    error: str | None = None
    ground_truth: dict[str, str] = field(default_factory=dict)  # what the document holds (raw strings)
    completed_at: str | None = None  # set when the store wrote the row

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.response.error_class is not None:
            d["response"]["error_class"] = self.response.error_class.value
        return d

    @property
    def ok(self) -> bool:
        """Scored: completed and given a document F1. Every other document counts as failed."""
        return self.status == "ok" and self.doc_f1 is not None


@dataclass
class RunRecord:
    """One stored run: what determined its results, where it ran, how it ended, how it was gated."""

    run_id: str
    backend: str
    family: str | None = None
    model: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    dataset_path: str | None = None
    dataset_hash: str | None = None
    n_documents: int | None = None
    prompt_hash: str | None = None
    prompt_style: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    git_commit: str | None = None
    host: str | None = None
    describe: dict[str, Any] = field(default_factory=dict)
    emulated: bool = False
    started_at: str | None = None
    finished_at: str | None = None
    status: str | None = None  # running | complete | partial | interrupted
    wall_s: float = 0.0
    # The suites' verdict and the thresholds it was judged with (file, sha256, values); None when the
    # run was never gated by `pytest suites`.
    gating: dict[str, Any] | None = None

    @property
    def is_emulated(self) -> bool:
        return bool(self.emulated) or self.family == "emulated"


# ---------------------------------------------------------------- errors
# One hierarchy; the CLI and the pytest plugin map it to exit codes in one place (EXIT_CODES).


class MigbenchError(Exception):
    """Every error migbench raises on purpose. Its message is one line meant for the user."""

    exit_code: ClassVar[int] = 1


class UsageError(MigbenchError, ValueError):
    """A wrong option, file or name given by the user."""

    exit_code = 2


class SetupError(MigbenchError, RuntimeError):
    """A backend cannot start: a missing extra, model path, credential or a residency refusal.

    The message is one line that says what to install or set; the CLI prints it without a trace.
    """

    exit_code = 2


class InputError(MigbenchError, ValueError):
    """A document or dataset cannot be read (the document fails; a dataset refuses to load)."""

    exit_code = 2


class BackendError(MigbenchError):
    """Raised by an adapter for a failed attempt, already classified."""

    exit_code = 1

    def __init__(self, message: str, error_class: ErrorClass, *, retry_after_s: float | None = None,
                 response: Response | None = None):
        super().__init__(message)
        self.error_class = error_class
        self.retry_after_s = retry_after_s
        self.response = response  # partial facts about the attempt (region, request id, latency)


class ResidencyError(BackendError):
    """A request refused because it could leave the allowed regions. Never retried."""

    def __init__(self, message: str, *, reasons: list[str] | None = None):
        super().__init__(message, ErrorClass.RESIDENCY)
        self.reasons = reasons or [message]


def generate_one(backend: Backend, request: Request) -> Response:
    """The single call of a backend whose native call is a batch (local models): a batch of one,
    its error raised as generate() promises."""
    result = backend.generate_batch([request])[0]
    if isinstance(result, BackendError):
        raise result
    return result


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (an orderly stop) but exiting as a terminated process does."""


def exit_code_for(exc: BaseException) -> int | None:
    """The process exit code for an error migbench raised on purpose; None for a bug (re-raise)."""
    if isinstance(exc, Terminated):
        return 128 + 15  # the shell's code for SIGTERM: supervisors and CI see a termination, not Ctrl-C
    if isinstance(exc, KeyboardInterrupt):
        return 130
    if isinstance(exc, MigbenchError):
        return exc.exit_code
    return None


# ---------------------------------------------------------------- audit

def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class AuditEntry:
    backend: str
    service: str  # bedrock-runtime | sagemaker-runtime | bedrock
    operation: str  # Converse | InvokeModel | InvokeEndpoint | GetInferenceProfile
    region: str | None  # signing region
    host: str | None
    model_id: str | None  # model id, inference profile id or endpoint name
    doc_id: str | None = None
    request_id: str | None = None
    status: int | None = None  # HTTP status; None when refused before sending
    attempt: int = 1
    bytes_sent: int = 0
    allowed: bool = True
    reason: str | None = None  # why a request was refused
    ts: str = field(default_factory=utc_now)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AuditSink(Protocol):
    def record_audit(self, entry: AuditEntry) -> None: ...


class MemoryAudit:
    """An in-memory sink (tests, dry runs); the run store is the persistent one."""

    def __init__(self) -> None:
        self.entries: list[AuditEntry] = []
        self._lock = threading.Lock()

    def record_audit(self, entry: AuditEntry) -> None:
        with self._lock:
            self.entries.append(entry)

# ---------------------------------------------------------------- backends




class BackendOptions(BaseModel):
    """Options every backend takes; a backend's own `Options` subclass adds its keys.

    Validated when the backend is loaded: an unknown key, a wrong type or a bad value is refused
    with one line per mistake (`BackendOptions.parse`), never discovered mid-run.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    concurrency: int = Field(1, ge=1, description="requests in flight (threads)")
    prompt_family: str | None = Field(None, description="prompt YAML family (default: the backend's)")
    tokens_per_min: float | None = Field(None, gt=0, description="client-side token quota to stay under")
    requests_per_min: float | None = Field(None, gt=0, description="client-side request quota to stay under")
    batch_size: int | None = Field(None, ge=1, description="documents per generate_batch call")

    @classmethod
    def parse(cls, backend: str, raw: dict[str, Any]) -> BackendOptions:
        """Validate `raw` (registry defaults, then config/CLI values; strings are coerced) or raise
        UsageError naming every mistake on its own line."""
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise UsageError("\n".join(_option_errors(cls, backend, exc))) from None


def _option_errors(model: type[BaseModel], backend: str, exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(options)"
        if err["type"] == "extra_forbidden":
            known = sorted(f.alias or name for name, f in model.model_fields.items())
            lines.append(f"{backend}: unknown option {key!r} (known: {', '.join(known)})")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{backend}: option {key}={err.get('input')!r}: {msg}")
    return lines


@dataclass
class BackendConfig:
    name: str  # registry name, e.g. nova-pro
    model: str | None = None  # model id, profile id, endpoint name or model directory
    # The options as given (registry defaults, then config/CLI): recorded with the run, part of its identity.
    options: dict[str, Any] = field(default_factory=dict)
    settings: BackendOptions | None = None  # the same, validated and typed (set when the backend loads)

    def get(self, key: str, default: Any = None) -> Any:
        """A typed option when the backend declares it and it is set, else the given value, else default."""
        declared = self.settings is not None and key in type(self.settings).model_fields
        value = getattr(self.settings, key) if declared else None
        if value is None:
            value = self.options.get(key)
        return default if value is None else value


class Backend(ABC):
    family: ClassVar[str] = "base"  # ocr | bedrock | sagemaker | local | emulated
    # The form in which the runner prepares each document for this backend (see InputForm).
    input_form: ClassVar[InputForm] = "encoded"
    # Backends that batch (local GPUs) override generate_batch; others get a thread pool.
    batches: ClassVar[bool] = False
    # The backend's typed options; the registry validates a run's options against it when loading.
    Options: ClassVar[type[BackendOptions]] = BackendOptions

    def __init__(self, config: BackendConfig):
        if not isinstance(config.settings, type(self).Options):
            config.settings = type(self).Options.parse(config.name, config.options)
        self.config = config
        # Set by the runner. Requests made outside the retry loop (preflight checks) are recorded here;
        # the loop records each attempt's `Response.sent` itself.
        self.audit: AuditSink | None = None

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

    def image_budget(self) -> ImageBudget:
        """The limits the runner prepares pages within (formats, side, payload, PDF documents)."""
        return ImageBudget()

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

    def estimate_input_tokens(self, request: Request) -> int | None:
        """Input tokens expected before the call (rate limiting), where the backend knows better
        than the shared estimate (migbench.tokens); None uses the shared one."""
        return None

    def quota_hint(self) -> float | None:
        """Tokens per minute the provider allows this model, when the backend could read it at
        preflight (AWS Service Quotas); the runner's token limit when the user set none. None: unknown."""
        return None

    def max_concurrency(self) -> int:
        return int(self.config.get("concurrency", 1))

    def tools_unsupported(self) -> str | None:
        """None when this backend sends Request.tool as a forced tool call; else why it cannot (the
        runner refuses `--prompt-style tool` with that line rather than score text as tool answers)."""
        return "it has no tool use (structured output)"

    def close(self) -> None:
        """Release clients, pools, models."""
