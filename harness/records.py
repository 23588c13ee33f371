"""The one typed record that flows adapter -> parser -> scorer -> store -> report.

Document -> Request -> Response -> parsed fields -> FieldScore list -> DocResult.
Everything here is plain data: no I/O, no service, so every stage is testable alone.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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


@dataclass
class Request:
    doc_id: str
    doc_type: str
    prompt: str
    system: str | None = None
    images: list[bytes] = field(default_factory=list)  # encoded page images
    image_format: str = "png"  # png | jpeg | webp | gif
    params: GenParams = field(default_factory=GenParams)
    pdf_bytes: bytes | None = None  # a PDF sent as a document block where the backend allows it
    estimated_input_tokens: int | None = None  # for rate limiting before the call

    def payload_bytes(self) -> int:
        return sum(len(b) for b in self.images) + len(self.prompt.encode()) + len(self.pdf_bytes or b"")


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
    cost_usd: float | None = None  # set by the cost model, not by adapters
    extra: dict[str, Any] = field(default_factory=dict)

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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.response.error_class is not None:
            d["response"]["error_class"] = self.response.error_class.value
        return d
