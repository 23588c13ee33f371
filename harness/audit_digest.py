"""A run's audit log reduced, in one pass, to what the report's residency section reads.

A run records at least one audit row per document (one per attempt, one per refusal), so a
million-document run's log does not fit in memory as dicts. The residency section only counts:
how many requests were sent or refused, where the sent ones went and what they were, and why
requests were refused. `AuditDigest` keeps a count per distinct sent destination (region, host,
service, operation, model id, status) and per refusal reason and target, so its size follows the
number of distinct destinations, not the number of documents.

Every counter keeps its keys in first-seen order, the order a Counter over the full log would have,
so `most_common` breaks ties exactly as it did over the list.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

# The fields of a sent entry that the residency judge and the report read, in the key's order.
SENT_FIELDS = ("region", "host", "service", "operation", "model_id", "status")


class AuditDigest:
    """Counts over one run's audit entries (dicts as `RunStore.audit` returns them)."""

    def __init__(self) -> None:
        self.entries = 0
        self.sent = 0
        self.refused = 0
        self.bytes_sent = 0
        # (region, host, service, operation, model_id, status) -> sent entries with exactly these values
        self.destinations: dict[tuple[Any, ...], int] = {}
        self.refused_reasons: Counter[str] = Counter()
        self.refused_targets: Counter[str] = Counter()

    @classmethod
    def from_entries(cls, entries: Iterable[Mapping[str, Any]]) -> AuditDigest:
        digest = cls()
        for entry in entries:
            digest.add(entry)
        return digest

    @classmethod
    def of(cls, audit: AuditDigest | Iterable[Mapping[str, Any]]) -> AuditDigest:
        """A digest as given, or one made from a list of entries (tests and small callers pass lists)."""
        return audit if isinstance(audit, AuditDigest) else cls.from_entries(audit)

    def add(self, entry: Mapping[str, Any]) -> None:
        self.entries += 1
        if entry.get("allowed"):
            self.sent += 1
            self.bytes_sent += int(entry.get("bytes_sent") or 0)
            key = tuple(entry.get(f) for f in SENT_FIELDS)
            self.destinations[key] = self.destinations.get(key, 0) + 1
        else:
            self.refused += 1
            self.refused_reasons[entry.get("reason") or "no reason recorded"] += 1
            self.refused_targets[f"{entry.get('region')} {entry.get('model_id')}"] += 1

    def sent_destinations(self) -> Iterable[tuple[dict[str, Any], int]]:
        """Each distinct sent destination as an entry-like dict (what a judge reads), with its count."""
        for key, n in self.destinations.items():
            yield dict(zip(SENT_FIELDS, key)), n

    def count_sent(self, label: Callable[[dict[str, Any]], str]) -> Counter[str]:
        """Sent entries counted by `label(entry)` (an entry-like dict of SENT_FIELDS), in first-seen order."""
        out: Counter[str] = Counter()
        for entry, n in self.sent_destinations():
            out[label(entry)] += n
        return out

    def model_ids(self) -> list[str]:
        """The model ids of sent requests, each once, in the order they were first called."""
        at = SENT_FIELDS.index("model_id")
        return list(dict.fromkeys(key[at] for key in self.destinations if key[at]))
