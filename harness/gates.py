"""Gates: thresholds (harness/data/thresholds*.yaml) judged against one run's figures.

Pure functions over the typed rows `RunStore.documents()` returns (DocResult) and the figures of
`migbench.stats`. They are called in one place, `migbench.analysis.analyse`, whose result the
pytest suites, the console, the JSON summary and the HTML report all render.

Choices:
- A failed document counts as F1 0 for its document type and for every field its ground truth
  has (`failed_as_zero`, default on): a backend must not pass by failing the hard documents.
- The statistic compared with a threshold is the mean by default; `statistic: ci_low` demands the
  whole 95% interval clear it (stricter), `ci_high` fails only what is significantly below.
- A gate with nothing to measure (no documents of a type, no NOT_FOUND opportunities) is
  "skip" with the reason, never "pass"; a gate whose evidence is missing (no latency or token
  usage recorded for completed documents) is "fail".
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from migbench.catalog import CatalogError, data_path, load_model
from migbench.contracts import RunRecord
from migbench.doctable import IN_GT, DocTable, Documents
from migbench.stats import (
    PERCENTILES,
    Paired,
    doc_f1_values,
    field_f1_values,
    hallucination_counts,
    latency_stats,
    mean_ci,
    paired_comparison,
    wilson_ci,
)
from pydantic import BaseModel, Field, field_validator, model_validator

Score = Field(default=None, ge=0.0, le=1.0)
OFFLINE_FAMILIES = frozenset({"ocr", "local"})
CLOUD_FAMILIES = frozenset({"bedrock", "sagemaker", "textract"})
# Named threshold files shipped with the package: `--thresholds dry-run`.
PACKAGED = {"incumbent": "thresholds.yaml", "default": "thresholds.yaml", "dry-run": "thresholds-dryrun.yaml",
            "offline-floor": "thresholds-offline-floor.yaml"}


# ---------------------------------------------------------------------------------------------
# thresholds file
# ---------------------------------------------------------------------------------------------

class AccuracyThresholds(BaseModel):
    overall: float | None = Score
    doc_types: dict[str, float | None] = {}  # doc type -> min document F1 (default: overall)
    critical_fields: list[str] | None = None  # None: the schema's critical fields
    critical: float | None = Score
    field_default: float | None = Score  # non-critical fields without their own entry
    fields: dict[str, float | None] = {}  # FIELD or doc_type/FIELD -> min field F1

    @field_validator("doc_types", "fields")
    @classmethod
    def _in_unit_interval(cls, v: dict[str, float | None]) -> dict[str, float | None]:
        bad = {k: x for k, x in v.items() if x is not None and not 0.0 <= x <= 1.0}
        if bad:
            raise ValueError(f"F1 thresholds must lie in [0, 1]: {bad}")
        return v


class RateThreshold(BaseModel):
    max_rate: float | None = Score


class LatencyBudget(BaseModel):
    p50_s: float | None = Field(default=None, ge=0)
    p95_s: float | None = Field(default=None, ge=0)
    p99_s: float | None = Field(default=None, ge=0)

    def budget(self, pct: str) -> float | None:
        return getattr(self, f"{pct}_s")


class LatencyThresholds(BaseModel):
    default: LatencyBudget = LatencyBudget()
    doc_types: dict[str, LatencyBudget] = {}

    def for_doc_type(self, doc_type: str) -> LatencyBudget:
        return self.doc_types.get(doc_type, self.default)


class CostThresholds(BaseModel):
    per_doc_usd: float | None = Field(default=None, ge=0)
    per_month_usd: float | None = Field(default=None, ge=0)
    volumes_per_day: list[int] = Field(default_factory=lambda: [1000])

    @field_validator("volumes_per_day")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(x <= 0 for x in v):
            raise ValueError(f"volumes_per_day must be positive, got {v}")
        return v


class NonInferiority(BaseModel):
    margin: float = Field(default=0.02, ge=0.0, le=1.0)
    fail_on: list[Literal["superior", "non-inferior", "inconclusive", "inferior"]] = ["inferior"]
    n_boot: int = Field(default=2000, ge=100)
    seed: int = 0


class Thresholds(BaseModel):
    name: str
    dry_run: bool = False  # meant for emulated runs only; never gates a real run
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0)
    statistic: Literal["mean", "ci_low", "ci_high"] = "mean"
    failed_as_zero: bool = True
    accuracy: AccuracyThresholds = AccuracyThresholds()
    hallucination: RateThreshold = RateThreshold()
    failures: RateThreshold = RateThreshold()
    latency: LatencyThresholds = LatencyThresholds()
    cost: CostThresholds = CostThresholds()
    non_inferiority: NonInferiority = NonInferiority()

    @model_validator(mode="after")
    def _known_doc_types_in_field_keys(self) -> Thresholds:
        for key in self.accuracy.fields:
            if key.count("/") > 1 or not key.strip("/"):
                raise ValueError(f"accuracy.fields key {key!r}: use FIELD or doc_type/FIELD")
        return self

    def check_schema(self, schema: Any) -> None:
        """Names in the file must exist in the field schema: a typo must not silently gate nothing."""
        problems = []
        for key in self.accuracy.fields:
            dt, _, name = key.rpartition("/")
            if name not in schema.fields:
                problems.append(f"unknown field {name!r} in accuracy.fields")
            if dt and dt not in schema.document_types:
                problems.append(f"unknown document type {dt!r} in accuracy.fields")
        for name in self.accuracy.critical_fields or []:
            if name not in schema.fields:
                problems.append(f"unknown critical field {name!r}")
        for dt in [*self.accuracy.doc_types, *self.latency.doc_types]:
            if dt not in schema.document_types:
                problems.append(f"unknown document type {dt!r}")
        if problems:
            raise CatalogError(f"thresholds {self.name!r}: " + "; ".join(problems))


def thresholds_path(ref: str | Path | None) -> Path:
    """A file path, or a packaged name (incumbent, dry-run)."""
    if ref is None:
        return data_path(PACKAGED["incumbent"])
    if str(ref) in PACKAGED:
        return data_path(PACKAGED[str(ref)])
    return Path(ref)


def load_thresholds(ref: str | Path | None = None, schema: Any = None) -> Thresholds:
    th = load_model(Thresholds, thresholds_path(ref))
    if schema is not None:
        th.check_schema(schema)
    return th


@dataclass(frozen=True)
class ThresholdSet:
    """Thresholds with where they came from: what a verdict names ("gated with ...")."""

    thresholds: Thresholds
    ref: str  # what was asked for: a packaged name (offline-floor) or a path
    path: str
    sha256: str  # of the file's bytes, or of the stored values when rebuilt from a record
    stored: bool = False  # rebuilt from the values stored with a run, not read from the file

    @property
    def name(self) -> str:
        return self.thresholds.name

    @property
    def file(self) -> str:
        return Path(self.path).name

    @property
    def label(self) -> str:
        return f"{self.name} ({self.file}, sha256 {self.sha256[:12]})"

    def record(self) -> dict[str, Any]:
        """What is stored with a gated run: enough to judge it again with exactly these values."""
        return {"ref": self.ref, "file": self.file, "path": self.path, "sha256": self.sha256, "name": self.name,
                "dry_run": self.thresholds.dry_run, "values": self.thresholds.model_dump(mode="json")}

    @classmethod
    def from_record(cls, rec: Mapping[str, Any], schema: Any = None) -> ThresholdSet:
        th = Thresholds.model_validate(rec["values"])
        if schema is not None:
            th.check_schema(schema)
        return cls(th, str(rec.get("ref") or rec.get("file")), str(rec.get("path") or rec.get("file")),
                   str(rec.get("sha256") or ""), stored=True)


def load_threshold_set(ref: str | Path | None = None, schema: Any = None) -> ThresholdSet:
    path = thresholds_path(ref)
    th = load_thresholds(ref, schema)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return ThresholdSet(th, str(ref) if ref is not None else "incumbent", str(path), digest)


def critical_fields(th: Thresholds, schema: Any) -> list[str]:
    return list(th.accuracy.critical_fields if th.accuracy.critical_fields is not None else schema.critical_fields)


def field_threshold(th: Thresholds, doc_type: str, name: str, critical: Iterable[str]) -> float | None:
    """Most specific wins: doc_type/FIELD, FIELD, critical, field_default."""
    f = th.accuracy.fields
    if f"{doc_type}/{name}" in f:
        return f[f"{doc_type}/{name}"]
    if name in f:
        return f[name]
    if name in set(critical):
        return th.accuracy.critical
    return th.accuracy.field_default


def doc_type_threshold(th: Thresholds, doc_type: str) -> float | None:
    return th.accuracy.doc_types.get(doc_type, th.accuracy.overall)


# ---------------------------------------------------------------------------------------------
# gates
# ---------------------------------------------------------------------------------------------

@dataclass
class Gate:
    gate_id: str  # e.g. nova-lite/invoice/GST_AMOUNT
    kind: str  # overall_f1 | doc_type_f1 | field_f1 | hallucination | failure_rate | latency | cost_* | non_inferiority
    metric: str  # what `value` is, as printed
    value: float | None
    threshold: float | None
    op: Literal[">=", "<="]  # value op threshold must hold
    status: Literal["pass", "fail", "skip"]
    message: str
    lo: float | None = None
    hi: float | None = None
    n: int = 0
    unit: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fmt(x: float | None, unit: str = "") -> str:
    if x is None:
        return "n/a"
    if unit == "USD":
        return f"${x:.4f}" if abs(x) < 1 else f"${x:,.2f}"
    if unit == "s":
        return f"{x:.2f} s"
    return f"{x:.2f}"


def _ci_text(lo: float | None, hi: float | None, level: float, unit: str = "") -> str:
    pct = f"{level * 100:g}%"
    if lo is None or hi is None:
        return f"({pct} CI n/a)"
    return f"({pct} CI {_fmt(lo, unit)}-{_fmt(hi, unit)})"


def judge(gate_id: str, kind: str, metric: str, value: float | None, threshold: float | None,
          op: Literal[">=", "<="], *, lo: float | None = None, hi: float | None = None, n: int = 0,
          level: float = 0.95, statistic: str = "mean", unit: str = "", show_ci: bool = True,
          skip_reason: str | None = None, detail: dict[str, Any] | None = None) -> Gate:
    """Compare one measured value (or an end of its CI) with a threshold and word the verdict.

    The message reads `id: METRIC value (95% CI lo-hi) < threshold`.
    """
    detail = dict(detail or {})
    ci = f" {_ci_text(lo, hi, level, unit)}" if show_ci else ""
    head = f"{gate_id}: {metric} {_fmt(value, unit)}{ci}"
    if skip_reason is not None:
        return Gate(gate_id, kind, metric, value, threshold, op, "skip", f"{head}: {skip_reason}", lo, hi, n, unit, detail)
    if threshold is None:
        return Gate(gate_id, kind, metric, value, None, op, "skip", f"{head}: no threshold configured",
                    lo, hi, n, unit, detail)
    if value is None:
        return Gate(gate_id, kind, metric, None, threshold, op, "fail",
                    f"{gate_id}: {metric} not measured (n={n}); threshold {op} {_fmt(threshold, unit)}",
                    lo, hi, n, unit, detail)
    compared = {"mean": value, "ci_low": lo, "ci_high": hi}[statistic] if show_ci else value
    if compared is None:  # one observation: no interval; fall back to the point estimate
        compared, statistic = value, "mean"
    ok = compared >= threshold if op == ">=" else compared <= threshold
    if ok:
        return Gate(gate_id, kind, metric, value, threshold, op, "pass",
                    f"{head} {op} {_fmt(threshold, unit)} (n={n})", lo, hi, n, unit, detail)
    bad_op = "<" if op == ">=" else ">"
    which = "" if statistic == "mean" else f" [{statistic.replace('_', ' ')} {_fmt(compared, unit)}]"
    return Gate(gate_id, kind, metric, value, threshold, op, "fail",
                f"{head}{which} {bad_op} {_fmt(threshold, unit)} (n={n})", lo, hi, n, unit, detail)


# ---------------------------------------------------------------------------------------------
# accuracy
# ---------------------------------------------------------------------------------------------

def f1_gate(gate_id: str, kind: str, values: Sequence[float], threshold: float | None, th: Thresholds,
            skip_reason: str | None = None) -> Gate:
    mean, lo, hi = mean_ci(values, th.confidence, clip=(0.0, 1.0))
    if not values and skip_reason is None:
        skip_reason = "no documents to score"
    return judge(gate_id, kind, "F1", mean, threshold, ">=", lo=lo, hi=hi, n=len(values),
                 level=th.confidence, statistic=th.statistic, skip_reason=skip_reason)


def overall_gate(backend: str, rows: Documents, th: Thresholds) -> Gate:
    return f1_gate(backend, "overall_f1", doc_f1_values(rows, None, th.failed_as_zero), th.accuracy.overall, th)


def doc_type_gate(backend: str, rows: Documents, doc_type: str, th: Thresholds) -> Gate:
    vals = doc_f1_values(rows, doc_type, th.failed_as_zero)
    return f1_gate(f"{backend}/{doc_type}", "doc_type_f1", vals, doc_type_threshold(th, doc_type), th)


def field_gate(backend: str, rows: Documents, doc_type: str, name: str, th: Thresholds,
               critical: Iterable[str]) -> Gate:
    critical = list(critical)
    vals = field_f1_values(rows, doc_type, name, th.failed_as_zero)
    g = f1_gate(f"{backend}/{doc_type}/{name}", "field_f1", vals, field_threshold(th, doc_type, name, critical), th,
                skip_reason=None if vals else f"no {doc_type} document's ground truth has {name}")
    g.detail["critical"] = name in critical
    return g


def hallucination_gate(gate_id: str, rows: Documents, th: Thresholds,
                       doc_type: str | None = None) -> Gate:
    hall, opp = hallucination_counts(rows, doc_type)
    rate, lo, hi = wilson_ci(hall, opp, th.confidence)
    skip = None if opp else "no ground-truth NOT_FOUND fields in scored documents: nothing could be hallucinated"
    return judge(gate_id, "hallucination", "hallucination rate", rate, th.hallucination.max_rate, "<=", lo=lo, hi=hi,
                 n=opp, level=th.confidence, statistic=_flip(th.statistic), skip_reason=skip,
                 detail={"hallucinated": hall, "opportunities": opp})


def _flip(statistic: str) -> str:
    """For an upper bound the strict end of the interval is the high one."""
    return {"ci_low": "ci_high", "ci_high": "ci_low"}.get(statistic, statistic)


def failure_gate(backend: str, rows: Documents, th: Thresholds) -> Gate:
    t = DocTable.of(rows)
    n = len(t)
    failed = ~t.flags["ok"]
    rate, lo, hi = wilson_ci(int(failed.sum()), n, th.confidence)
    causes: dict[str, int] = {}
    for code in t.codes["error_class"][failed].tolist():  # in document order: first seen first
        key = (t.categories["error_class"][code] if code >= 0 else None) or "unknown"
        causes[key] = causes.get(key, 0) + 1
    return judge(backend, "failure_rate", "failure rate", rate, th.failures.max_rate, "<=", lo=lo, hi=hi, n=n,
                 level=th.confidence, statistic=_flip(th.statistic),
                 skip_reason=None if n else "no documents", detail={"failed": int(failed.sum()), "causes": causes})


def accuracy_units(rows: Documents, schema: Any) -> list[tuple[str, str]]:
    """(doc_type, field) pairs the rows' ground truth has and the scorer scores, in a stable order.

    A field the schema marks `scored: false` (DOCUMENT_TYPE) is never a gate: nothing scores it.
    """
    t = DocTable.of(rows)
    units = set()
    for dt in t.present("doc_type"):
        if dt not in schema.document_types:
            continue
        in_gt = (t.field_flags[t.mask("doc_type", dt)] & IN_GT) != 0
        units.update((str(dt), name) for j, name in enumerate(t.fields) if in_gt[:, j].any() and schema.is_scored(name))
    return sorted(units)


# ---------------------------------------------------------------------------------------------
# latency
# ---------------------------------------------------------------------------------------------

def latency_gate(backend: str, rows: Documents, doc_type: str, pct: str, th: Thresholds) -> Gate:
    if pct not in PERCENTILES:
        raise ValueError(f"percentile must be one of {PERCENTILES}, got {pct!r}")
    lat = latency_stats(rows, doc_type)
    gid = f"{backend}/{doc_type}/{pct}"
    budget = th.latency.for_doc_type(doc_type).budget(pct)
    if lat.missing:
        return Gate(gid, "latency", f"{pct} latency", None, budget, "<=", "fail",
                    f"{gid}: latency not recorded for {lat.missing} completed document(s)", n=lat.n, unit="s")
    return judge(gid, "latency", f"{pct} latency", lat.get(pct), budget, "<=", n=lat.n,
                 unit="s", show_ci=False, skip_reason=None if lat.n else f"no completed {doc_type} documents")


# ---------------------------------------------------------------------------------------------
# cost
# ---------------------------------------------------------------------------------------------

def _unpriced(cost: Any) -> str | None:
    """Why a cost cannot be gated for a reason that is configuration, not missing evidence."""
    if cost.per_doc is None and cost.basis == "hourly" and "no hourly price" in cost.note:
        return f"not priced: {cost.note}"
    return None


def cost_per_doc_gate(backend: str, cost: Any, th: Thresholds) -> Gate:
    """cost: a migbench.cost.RunCost. Missing usage on a priced backend fails; an unpriced GPU skips."""
    g = judge(backend, "cost_per_doc", "cost per document", cost.per_doc, th.cost.per_doc_usd, "<=",
              unit="USD", show_ci=False, skip_reason=_unpriced(cost),
              detail={"basis": cost.basis, "price_key": cost.price_key, "note": cost.note,
                      "per_1000": cost.per_1000, "price": cost.price})
    if g.status == "fail" and cost.per_doc is None:
        g.message = f"{backend}: cost per document not computable: {cost.note}"
    return g


def monthly_cost_gate(backend: str, cost: Any, docs_per_day: int, th: Thresholds) -> Gate:
    gid = f"{backend}/{docs_per_day}-per-day"
    monthly = cost.monthly(docs_per_day)
    skip = _unpriced(cost)
    if monthly is None and cost.basis == "none" and cost.per_doc == 0.0:
        monthly = 0.0  # no marginal price (OCR on hardware already owned)
    g = judge(gid, "cost_per_month", "monthly cost", monthly, th.cost.per_month_usd, "<=", unit="USD",
              show_ci=False, skip_reason=skip, detail={"basis": cost.basis, "docs_per_day": docs_per_day})
    if g.status == "fail" and monthly is None:
        g.message = f"{gid}: monthly cost not computable: {cost.note}"
    return g


# ---------------------------------------------------------------------------------------------
# baseline comparison
# ---------------------------------------------------------------------------------------------

def resolve_run(runs: Sequence[RunRecord], ref: str, dataset_hash: str | None = None,
                exclude: str | None = None) -> RunRecord:
    """A run by id, unique id prefix, or backend name (its latest run on the same dataset)."""
    candidates = [r for r in runs if r.run_id != exclude]
    exact = [r for r in candidates if r.run_id == ref]
    if exact:
        return exact[0]
    by_backend = [r for r in candidates if r.backend == ref]
    if by_backend:
        same = [r for r in by_backend if dataset_hash is None or r.dataset_hash == dataset_hash]
        if not same:
            raise LookupError(f"baseline {ref!r}: its runs used another dataset "
                              f"({', '.join(r.run_id for r in by_backend)}); run it on this dataset first")
        return max(same, key=lambda r: (r.started_at or "", r.run_id))
    prefixed = [r for r in candidates if r.run_id.startswith(ref)]
    if len(prefixed) == 1:
        return prefixed[0]
    known = ", ".join(sorted({r.run_id for r in candidates})) or "none"
    if prefixed:
        raise LookupError(f"baseline {ref!r} is ambiguous: {', '.join(r.run_id for r in prefixed)}")
    raise LookupError(f"baseline {ref!r}: no run id or backend of that name in the store (runs: {known})")


def paired(candidate: Documents, baseline: Documents, baseline_name: str,
           doc_type: str | None, th: Thresholds) -> Paired:
    """The paired comparison with the thresholds' margin, resamples, seed and confidence."""
    ni = th.non_inferiority
    return paired_comparison(candidate, baseline, baseline_name, margin=ni.margin, doc_type=doc_type,
                             failed_as_zero=th.failed_as_zero, n_boot=ni.n_boot, seed=ni.seed, level=th.confidence)


def non_inferiority_gate(backend: str, baseline_name: str, candidate: Documents,
                         baseline: Documents, doc_type: str | None, th: Thresholds) -> Gate:
    ni = th.non_inferiority
    gid = backend if doc_type is None else f"{backend}/{doc_type}"
    p = paired(candidate, baseline, baseline_name, doc_type, th)
    detail: dict[str, Any] = {"baseline": baseline_name, "margin": ni.margin, "paired_documents": p.n}
    if not p.n:
        return Gate(gid, "non_inferiority", "F1 difference", None, -ni.margin, ">=", "fail",
                    f"{gid}: no documents in common with baseline {baseline_name}: nothing to compare", detail=detail)
    detail.update(verdict=p.verdict, candidate_mean=p.candidate_mean, baseline_mean=p.baseline_mean)
    text = (f"{gid}: F1 difference vs {baseline_name} {p.diff:+.3f} {_ci_text(p.lo, p.hi, th.confidence)}, "
            f"margin {ni.margin:.2f}, n={p.n} paired documents: {p.verdict}")
    status = "fail" if p.verdict in ni.fail_on else "pass"
    return Gate(gid, "non_inferiority", "F1 difference", p.diff, -ni.margin, ">=", status, text, p.lo, p.hi, p.n,
                detail=detail)


# ---------------------------------------------------------------------------------------------
# residency (audit log)
# ---------------------------------------------------------------------------------------------

def audit_violations(entries: Iterable[Mapping[str, Any]], policy: Any, *, allow_loopback: bool) -> list[str]:
    """Audit rows that break residency: a sent request outside the allowed regions or hosts, or a
    refused request that nevertheless reports bytes sent or an HTTP status."""
    from migbench.residency import check_host, check_region

    out = []
    for e in entries:
        where = f"audit #{e.get('id')} ({e.get('operation')} {e.get('doc_id') or ''})".replace(" )", ")")
        if not e.get("allowed"):
            if e.get("bytes_sent") or e.get("status") is not None:
                out.append(f"{where}: refused request reports {e.get('bytes_sent')} bytes sent / status {e.get('status')}")
            continue
        for why in (check_region(e.get("region"), policy),
                    check_host(e.get("host"), e.get("service") or "", policy, allow_loopback=allow_loopback)):
            if why:
                out.append(f"{where}: {why}")
    return out


def unaudited_documents(rows: Documents, entries: Iterable[Mapping[str, Any]]) -> list[str]:
    """Completed documents with no allowed audit entry: traffic the audit log does not account for."""
    audited = {e.get("doc_id") for e in entries if e.get("allowed")}
    t = DocTable.of(rows)
    return sorted(i for i in t.ids(t.flags["status_ok"]) if i not in audited)


def verdict(gates: Iterable[Gate]) -> str:
    """'fail' if any gate failed, else 'pass' (skips are listed, not counted as passes)."""
    return "fail" if any(g.status == "fail" for g in gates) else "pass"
