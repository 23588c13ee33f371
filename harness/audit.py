"""The residency audit trail: one entry per request attempt, sent or refused.

Never holds image bytes, prompts or credentials: only where a request went and what it was.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol


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
