"""The classification stage (--classify): read a classifier's answer, route, and tabulate the result.

The incumbent asks a model which type a document is, then extracts with the prompt of the predicted
type (tmnestor/LMM_POC models/orchestrator.py: detection, then document-aware extraction). An answer
naming no known type falls back to its configured type (`fallback_type: INVOICE`). migbench does the
same for any backend and records how each document was routed, so a fallback is never silent:

- `predicted`: the schema type the answer names, or None;
- `route`: the type whose prompt the extraction used (the prediction, else the fallback type);
- `label`: the DOCUMENT_TYPE the run predicted (scored when the profile scores a predicted type);
- `fallback`: None, "no_prompt" (the answer names a type the schema has no prompt for, e.g.
  TRAVEL_EXPENSE under the packaged schema) or "unparseable" (no type found in the answer).

`confusion_matrix(rows)` is the report's table: true type x predicted type over one run's documents.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from migbench.contracts import DocResult, RunRecord
from migbench.schema import Schema

UNPARSEABLE = "unparseable"
NO_PROMPT = "no_prompt"
FAILED_COLUMN = "(classification failed)"
UNPARSEABLE_COLUMN = "(unparseable)"
EXTRA_KEY = "classification"  # Response.extra key holding the stage's record
DEFAULT_FALLBACK = "invoice"  # the incumbent's classification fallback_type: INVOICE

_TYPE_KEY = re.compile(r"""DOCUMENT[\s_\-]*TYPE["'\s]*[:=]\s*["']?([^\n"',}\]]+)""", re.IGNORECASE)
# An answer in the requested shape (an upper-case label) that names no type of this schema.
_LABEL_LIKE = re.compile(r"^[A-Z][A-Z_ \-]{1,40}$")


@dataclass(frozen=True)
class Classification:
    predicted: str | None
    route: str
    label: str
    fallback: str | None = None
    answer: str = ""  # what the answer said, as read (the DOCUMENT_TYPE value or the whole text, trimmed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[_\-*`#.:;!?()\[\]{}\"']", " ", text.lower()).split())


def _phrases(schema: Schema) -> list[tuple[str, str]]:
    """(phrase, type key) for every name of every type: key, label, aliases."""
    out: list[tuple[str, str]] = []
    for key, spec in schema.document_types.items():
        for name in (key, spec.label, *spec.aliases):
            phrase = _norm(name)
            if phrase:
                out.append((phrase, key))
    return out


def fallback_type(schema: Schema, preferred: str | None = None) -> str:
    """The type an answer naming no known type is routed to: `preferred` (a key or label), else the
    incumbent's (invoice), else the schema's first type."""
    for name in (preferred, DEFAULT_FALLBACK):
        if name:
            key = name if name in schema.document_types else schema.doc_type_from_label(name)
            if key:
                return key
    return next(iter(schema.document_types))


def read_classification(text: str, schema: Schema, fallback: str | None = None) -> Classification:
    """The type a classifier's answer names. The earliest name of a known type in the answer wins
    (the longest at the same place: 'tax invoice' over 'invoice'); a `DOCUMENT_TYPE: X` key, when the
    model answered in the extraction format, is read first. Never raises."""
    text = text or ""
    m = _TYPE_KEY.search(text)
    answer = (m.group(1) if m else text).strip()
    norm = _norm(answer)
    best: tuple[int, int, str] | None = None  # (start, -length, key)
    for phrase, key in _phrases(schema):
        for hit in re.finditer(rf"(?<![a-z0-9]){re.escape(phrase)}(?![a-z0-9])", norm):
            cand = (hit.start(), -len(phrase), key)
            if best is None or cand < best:
                best = cand
            break  # the first hit of a phrase is its earliest
    fb = fallback_type(schema, fallback)
    shown = " ".join(answer.split())[:200]
    if best is not None:
        key = best[2]
        return Classification(key, key, schema.document_types[key].label, None, shown)
    bare = answer.strip(" \t\r\n.*`'\"")
    if _LABEL_LIKE.match(bare) and len(norm.split()) <= 4:
        # A short answer that names a type this schema has none of: score that answer, extract
        # with the fallback type's prompt (the incumbent extracts such documents generically).
        return Classification(None, fb, norm.upper().replace(" ", "_"), NO_PROMPT, shown)
    return Classification(None, fb, schema.document_types[fb].label, UNPARSEABLE, shown)


# ------------------------------------------------------------------------------ the report's table
def run_classified(run: RunRecord | Mapping[str, Any]) -> bool:
    """Whether a stored run predicted its document types (`migbench run --classify`, or an import of
    the incumbent's classifications). When False the type was given to the backend and DOCUMENT_TYPE
    was not scored: the report should say so."""
    config = run.config if isinstance(run, RunRecord) else (run.get("config") or {})
    return bool((config or {}).get("classified"))


def predicted_label(row: DocResult, schema: Schema) -> str | None:
    """The column a document falls in: its predicted type's label, another answer's label, or
    (unparseable) / (classification failed); None when the document was never classified."""
    rec = (row.response.extra or {}).get(EXTRA_KEY)
    if isinstance(rec, Mapping):
        if rec.get("error"):
            return FAILED_COLUMN
        if rec.get("fallback") == UNPARSEABLE:
            return UNPARSEABLE_COLUMN
        return str(rec.get("label") or "") or UNPARSEABLE_COLUMN
    # Imported runs keep the type the source predicted in DOCUMENT_TYPE (migbench.lmm_poc).
    value = (row.fields or {}).get("DOCUMENT_TYPE")
    if row.status == "ok" and value:
        key = schema.doc_type_from_label(str(value))
        return schema.document_types[key].label if key else str(value).strip().upper()
    return None


@dataclass
class ConfusionMatrix:
    """Documents of each true type (rows) by predicted type (columns)."""

    true_types: list[str]  # row labels: the schema's type labels present in the run, schema order
    predicted_types: list[str]  # column labels: the same first, then other answers, then the failure columns
    counts: list[list[int]]  # counts[i][j]: documents of true_types[i] predicted as predicted_types[j]
    total: int  # classified documents (the sum of counts)
    correct: int
    per_type: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> support, precision, recall
    fallbacks: dict[str, int] = field(default_factory=dict)  # no_prompt / unparseable routings
    not_classified: int = 0  # documents that never reached the classifier (unreadable files)

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.total if self.total else None

    def count(self, true_type: str, predicted: str) -> int:
        try:
            return self.counts[self.true_types.index(true_type)][self.predicted_types.index(predicted)]
        except ValueError:
            return 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["accuracy"] = self.accuracy
        return d


def confusion_matrix(rows: Iterable[DocResult], schema: Schema | None = None) -> ConfusionMatrix | None:
    """True x predicted document type over one classified run's rows; None when no row was classified.

    Call it for a run where `run_classified(run)` holds. The true type is the row's doc_type (from the
    ground truth); the prediction is what the classification stage recorded."""
    from migbench.schema import load_schema

    schema = schema or load_schema()
    pairs: list[tuple[str, str]] = []
    not_classified = 0
    fallbacks = {NO_PROMPT: 0, UNPARSEABLE: 0}
    for row in rows:
        pred = predicted_label(row, schema)
        if pred is None:
            not_classified += 1
            continue
        rec = (row.response.extra or {}).get(EXTRA_KEY)
        if isinstance(rec, Mapping) and rec.get("fallback") in fallbacks:
            fallbacks[rec["fallback"]] += 1
        spec = schema.document_types.get(row.doc_type)
        pairs.append((spec.label if spec else str(row.doc_type).upper(), pred))
    if not pairs:
        return None
    order = [spec.label for spec in schema.document_types.values()]
    true_types = [t for t in order if any(p[0] == t for p in pairs)]
    true_types += sorted({p[0] for p in pairs} - set(true_types))
    special = [FAILED_COLUMN, UNPARSEABLE_COLUMN]
    predicted = [t for t in order if any(p[1] == t for p in pairs) or t in true_types]
    predicted += sorted({p[1] for p in pairs} - set(predicted) - set(special))
    predicted += [c for c in special if any(p[1] == c for p in pairs)]
    counts = [[0] * len(predicted) for _ in true_types]
    for t, p in pairs:
        counts[true_types.index(t)][predicted.index(p)] += 1
    correct = sum(1 for t, p in pairs if t == p)
    per_type: dict[str, dict[str, Any]] = {}
    for t in true_types:
        support = sum(1 for a, _ in pairs if a == t)
        called = sum(1 for _, b in pairs if b == t)
        hit = sum(1 for a, b in pairs if a == t and b == t)
        per_type[t] = {"support": support, "predicted": called, "correct": hit,
                       "precision": hit / called if called else None, "recall": hit / support if support else None}
    return ConfusionMatrix(true_types, predicted, counts, len(pairs), correct, per_type, fallbacks, not_classified)


def classification_line(run: RunRecord, rows: Iterable[DocResult], schema: Schema | None = None) -> str:
    """One console line on how the run's document types were known: given, or predicted (how well,
    how many answers fell back)."""
    if not run_classified(run):
        return "document types given from the ground truth (not classified): DOCUMENT_TYPE not scored"
    cm = confusion_matrix(rows, schema)
    if cm is None:
        return "document types predicted (--classify): no document classified yet"
    falls = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in cm.fallbacks.items() if n)
    return (f"document types predicted (--classify): {cm.correct}/{cm.total} right ({cm.accuracy:.1%})"
            + (f"; fell back to {run.config.get('classify_fallback', DEFAULT_FALLBACK)}: {falls}" if falls else "")
            + "; DOCUMENT_TYPE scored (incumbent profile)")
