"""A run's documents as columns: every per-document number the analysis reads, and nothing else.

A stored row (`DocResult`) carries its extracted values, expected values and scores as strings and
objects, about 4 KB per document even without the raw answer; a million-document run held as rows
needs gigabytes just to be summarised. `DocTable` keeps, per document, its id and numbers in numpy
arrays (about 250 bytes), filled in ONE pass over rows (`TableBuilder.add`, fed a chunk at a time by
`RunStore.iter_documents`, or a list the suites already hold). Everything the analysis derives from
a document's strings (its validation checks, which fields it filled, its F1 under other scoring
profiles) is computed in that pass, so the figures are those the rows would give, one code path
for a 24-document suite run and a million-document archive.

The few documents the report shows in full (the worst ones, a few failures per cause) are kept as
bounded samples while the rows stream past.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from migbench.consistency import RULES as CHECKS
from migbench.consistency import check_fields
from migbench.contracts import NOT_FOUND, DocResult
from migbench.normalize import is_not_found

# Per (document, field) flags.
IN_GT = 1  # the document's ground truth has the field
GT_NOT_FOUND = 2  # the field's score expected NOT_FOUND (the hallucination opportunity)
HALLUCINATED = 4
MISSED = 8
PRED_VALUE = 16  # the extraction holds a value for the field (not absent, not NOT_FOUND)

NUMBERS = ("doc_f1", "latency_s", "server_latency_ms", "ttft_s", "input_tokens", "output_tokens", "cache_read_tokens",
           "cache_write_tokens", "attempts", "retry_wait_s", "cost_usd", "on_demand_cost_usd")  # NaN = not recorded
FLAGS = ("status_ok", "ok", "batch", "truncated", "unreadable", "imperfect")
COUNTS = ("throttled",)
CATEGORIES = ("doc_type", "tier", "error_class")
FAILURE_ERROR_CHARS = 400


def _num(value: Any) -> float:
    return float("nan") if value is None else float(value)


@dataclass
class DocTable:
    """Columns over a run's n documents, in the order they were added (the store's: doc_id order)."""

    doc_ids: list[str]
    numbers: dict[str, np.ndarray]  # NUMBERS: float64, NaN where not recorded
    flags: dict[str, np.ndarray]  # FLAGS: bool
    counts: dict[str, np.ndarray]  # COUNTS: int64
    codes: dict[str, np.ndarray]  # CATEGORIES: int32 index into `categories` (values as the rows held them)
    categories: dict[str, list[Any]]
    fields: list[str]  # the columns of f1 / field_flags
    f1: np.ndarray  # (n, len(fields)) float64: the field's score; NaN where the document has none
    field_flags: np.ndarray  # (n, len(fields)) uint8: IN_GT | GT_NOT_FOUND | HALLUCINATED | MISSED | PRED_VALUE
    checks: dict[str, np.ndarray]  # validation rule -> int8: 1 passes, 0 fails, -1 not applicable / not completed
    profile_f1: dict[str, np.ndarray] = field(default_factory=dict)  # scoring profile -> document F1 under it
    worst: list[DocResult] = field(default_factory=list)  # the lowest-F1 imperfect documents, worst first
    failure_examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # cause -> first few
    batch_prices: list[dict[str, Any]] = field(default_factory=list)  # distinct batch prices seen, latest last

    def __len__(self) -> int:
        return len(self.doc_ids)

    @classmethod
    def of(cls, rows: DocTable | Iterable[DocResult], **options: Any) -> DocTable:
        """The table itself, or one built from rows (a suite's list, a test's few)."""
        if isinstance(rows, DocTable):
            return rows
        builder = TableBuilder(**options)
        for row in rows:
            builder.add(row)
        return builder.build()

    # -------------------------------------------------------------------------------- selection
    def mask(self, name: str, value: Any) -> np.ndarray:
        """Documents whose category `name` equals `value` (doc_type None: every document)."""
        if name == "doc_type" and value is None:
            return np.ones(len(self), dtype=bool)
        codes = [i for i, v in enumerate(self.categories[name]) if v == value]
        return np.isin(self.codes[name], codes) if codes else np.zeros(len(self), dtype=bool)

    def present(self, name: str) -> list[Any]:
        """The category's distinct values that documents have."""
        used = np.unique(self.codes[name])
        return [self.categories[name][c] for c in used.tolist() if c >= 0]

    def groups(self, name: str, label: Callable[[Any], str], within: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """label -> the documents (of `within`) whose category `name` has a value with that label
        (the value None included), labels in first-code order; values sharing a label are one group."""
        codes = self.codes[name]
        out: dict[str, np.ndarray] = {}
        for code in np.unique(codes if within is None else codes[within]).tolist():
            key = label(self.categories[name][code] if code >= 0 else None)
            m = codes == code if within is None else within & (codes == code)
            out[key] = out[key] | m if key in out else m
        return out

    def field_column(self, name: str) -> int | None:
        try:
            return self.fields.index(name)
        except ValueError:
            return None

    def ids(self, mask: np.ndarray) -> list[str]:
        return [self.doc_ids[i] for i in np.flatnonzero(mask).tolist()]


class TableBuilder:
    """Reduces rows to a DocTable, one row at a time (memory grows by the numbers only).

    keep_worst: how many of the lowest-F1 imperfect documents to keep whole (the report's drill-down);
    failure_examples: how many failed documents per cause to keep (id, error, attempts);
    profiles + schema: also score every document under these scoring profiles (the report's
    "other profiles" headline; `classified` as the run's config says)."""

    def __init__(self, *, keep_worst: int = 0, failure_examples: int = 0, profiles: Sequence[str] = (),
                 schema: Any = None, classified: bool = False):
        if profiles and schema is None:
            raise ValueError("scoring under other profiles needs the field schema")
        self.keep_worst, self.n_examples = keep_worst, failure_examples
        self.profiles, self.schema, self.classified = tuple(profiles), schema, classified
        self.n = 0
        self.doc_ids: list[str] = []
        self.numbers = {k: array("d") for k in NUMBERS}
        self.flags = {k: array("b") for k in FLAGS}
        self.counts = {k: array("q") for k in COUNTS}
        self.codes = {k: array("i") for k in CATEGORIES}
        self.cat_index: dict[str, dict[Any, int]] = {k: {} for k in CATEGORIES}
        self.fields: list[str] = []
        self.f1: list[array] = []
        self.field_flags: list[array] = []
        self.checks = {k: array("b") for k in CHECKS}
        self.profile_f1 = {p: array("d") for p in self.profiles}
        self.worst: list[tuple[tuple[float, str], DocResult]] = []
        self.examples: dict[str, list[dict[str, Any]]] = {}
        self.batch_prices: list[dict[str, Any]] = []

    def _code(self, name: str, value: Any) -> int:
        if value is None:
            return -1
        index = self.cat_index[name]
        if value not in index:
            index[value] = len(index)
        return index[value]

    def _field(self, name: str) -> int:
        try:
            return self.fields.index(name)
        except ValueError:
            # a field first seen now: every earlier document had no score and no flag for it
            self.fields.append(name)
            self.f1.append(array("d", [float("nan")]) * self.n)
            self.field_flags.append(array("B", [0]) * self.n)
            return len(self.fields) - 1

    def add(self, row: DocResult) -> None:
        resp = row.response
        extra = resp.extra or {}
        status_ok = row.status == "ok"
        self.doc_ids.append(row.doc_id)
        nums = self.numbers
        for k in ("latency_s", "server_latency_ms", "ttft_s", "input_tokens", "output_tokens", "cache_read_tokens",
                  "cache_write_tokens", "attempts", "cost_usd"):
            nums[k].append(_num(getattr(resp, k)))
        nums["doc_f1"].append(_num(row.doc_f1))
        nums["retry_wait_s"].append(float(resp.retry_wait_s or 0.0))
        od = extra.get("on_demand_cost_usd")
        nums["on_demand_cost_usd"].append(_num(od))
        self.counts["throttled"].append(int(resp.throttled or 0))
        for k, v in (("doc_type", row.doc_type), ("tier", row.tier), ("error_class", row.error_class)):
            self.codes[k].append(self._code(k, v))

        row_flags = [0] * len(self.fields)
        row_f1 = [float("nan")] * len(self.fields)

        def at(name: str) -> int:
            j = self._field(name)
            while j >= len(row_flags):
                row_flags.append(0)
                row_f1.append(float("nan"))
            return j

        imperfect = False
        for s in row.scores:
            j = at(s.field)
            row_f1[j] = float(s.f1)
            row_flags[j] |= ((GT_NOT_FOUND if is_not_found(s.expected) else 0) | (HALLUCINATED if s.hallucinated else 0)
                             | (MISSED if s.missed else 0))
            imperfect = imperfect or s.f1 < 1.0
        for name in row.ground_truth:
            row_flags[at(name)] |= IN_GT
        values = row.fields or {}
        for name, value in values.items():
            if not is_not_found(value):
                row_flags[at(name)] |= PRED_VALUE
        for j, col in enumerate(self.f1):
            col.append(row_f1[j])
            self.field_flags[j].append(row_flags[j])

        checks = check_fields(values) if status_ok else dict.fromkeys(CHECKS)
        for k in CHECKS:
            v = checks.get(k)
            self.checks[k].append(-1 if v is None else int(bool(v)))
        unreadable = (status_ok and bool(values) and all(v == NOT_FOUND for v in values.values())
                      and any(v != NOT_FOUND for v in row.ground_truth.values()))
        imperfect = status_ok and imperfect
        for k, v in (("status_ok", status_ok), ("ok", row.ok), ("batch", "batch_job" in extra),
                     ("truncated", bool(extra.get("raw_text_truncated"))), ("unreadable", unreadable),
                     ("imperfect", imperfect)):
            self.flags[k].append(v)
        bp = extra.get("batch_price") if "batch_job" in extra else None
        # distinct records, the most recently seen last (it names the run's batch price)
        if bp and (not self.batch_prices or self.batch_prices[-1] != bp):
            self.batch_prices = [x for x in self.batch_prices if x != bp] + [dict(bp)]
        for p in self.profiles:
            self.profile_f1[p].append(self._rescored(row, p))
        if imperfect and self.keep_worst:
            self._keep_worst(row)
        if not status_ok and self.n_examples:
            got = self.examples.setdefault(row.error_class or "unknown", [])
            if len(got) < self.n_examples:
                got.append({"doc_id": row.doc_id, "error": (row.error or "")[:FAILURE_ERROR_CHARS],
                            "attempts": resp.attempts})
        self.n += 1

    def _rescored(self, row: DocResult, profile: str) -> float:
        from migbench.scoring import document_f1, score_document

        if row.status == "ok" and row.ground_truth:
            f1 = document_f1(score_document(row.ground_truth, row.fields, self.schema, profile,
                                            classified=self.classified))
        else:
            f1 = row.doc_f1
        return _num(f1)

    def _keep_worst(self, row: DocResult) -> None:
        key = (row.doc_f1 if row.doc_f1 is not None else -1.0, row.doc_id)
        self.worst.append((key, row))
        if len(self.worst) >= 2 * self.keep_worst + 64:
            self.worst.sort(key=lambda t: t[0])
            del self.worst[self.keep_worst:]

    def build(self) -> DocTable:
        """The table; the builder's buffers become its columns (no copy), and each per-field buffer is
        let go as soon as it is in the matrix, so building never holds two copies of the run."""
        n, width = self.n, len(self.fields)
        f1 = np.empty((n, width), dtype=np.float64)
        flags = np.empty((n, width), dtype=np.uint8)
        for j in range(width):
            if n:
                f1[:, j] = np.frombuffer(self.f1[j], dtype=np.float64)
                flags[:, j] = np.frombuffer(self.field_flags[j], dtype=np.uint8)
            self.f1[j] = self.field_flags[j] = array("d")
        self.worst.sort(key=lambda t: t[0])

        def column(buf: array, dtype: Any) -> np.ndarray:
            return np.frombuffer(buf, dtype=dtype) if len(buf) else np.zeros(0, dtype=dtype)

        return DocTable(
            doc_ids=self.doc_ids,
            numbers={k: column(v, np.float64) for k, v in self.numbers.items()},
            flags={k: column(v, np.int8).view(bool) for k, v in self.flags.items()},
            counts={k: column(v, np.int64) for k, v in self.counts.items()},
            codes={k: column(v, np.int32) for k, v in self.codes.items()},
            categories={k: list(ix) for k, ix in self.cat_index.items()},
            fields=list(self.fields), f1=f1, field_flags=flags,
            checks={k: column(v, np.int8) for k, v in self.checks.items()},
            profile_f1={p: column(v, np.float64) for p, v in self.profile_f1.items()},
            worst=[r for _, r in self.worst[: self.keep_worst]], failure_examples=self.examples,
            batch_prices=self.batch_prices)


# What the analysis functions take: a table, or typed rows they turn into one.
Documents = DocTable | Iterable[DocResult]
