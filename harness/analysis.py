"""The analysis step: one run's figures and the gates judged on them, computed once.

`analyse(run, rows, thresholds, schema, ...)` returns a `RunAnalysis`: the summary (per field, per
document type, per tier, latency percentiles, hallucination counts), the cost, the paired
comparison with a baseline, and every gate in the suites' order, judged with ONE named threshold
set. The pytest suites check its gates test by test, the console and the JSON summary print it,
the HTML report renders it: none of them computes a figure or a verdict of its own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from migbench import gates as g
from migbench.contracts import DocResult, RunRecord
from migbench.doctable import DocTable, Documents
from migbench.stats import PERCENTILES, Paired, Summary, aggregate, percentile

RUN_FIELDS = ("run_id", "backend", "family", "model", "emulated", "dataset_path", "dataset_hash", "status",
              "started_at", "finished_at", "wall_s")


@dataclass(frozen=True)
class StreamFigures:
    """Time to first token and generation speed of a streamed run's completed documents. A run that
    was not streamed has n == 0: its figures are not measured, never zero."""

    n: int  # completed documents with a time to first token
    ttft_p50: float | None
    ttft_p95: float | None
    tokens_per_s_n: int  # of those, documents whose output tokens/s is computable
    tokens_per_s_p50: float | None
    ttft_after_latency: tuple[str, ...]  # documents whose first token came after their answer ended

    @property
    def measured(self) -> bool:
        return self.n > 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ttft_after_latency": list(self.ttft_after_latency), "measured": self.measured}


def output_tokens_per_s(output_tokens: int | None, latency_s: float | None, ttft_s: float | None) -> float | None:
    """Generation speed after the first token, output_tokens / (latency - ttft); None when a figure
    is missing or no time passed after the first token."""
    if not output_tokens or latency_s is None or ttft_s is None or latency_s - ttft_s <= 0:
        return None
    return output_tokens / (latency_s - ttft_s)


def stream_figures(rows: Documents) -> StreamFigures:
    """TTFT percentiles (the latency percentile helper) and median output tokens/s of completed documents."""
    t = DocTable.of(rows)
    nums = t.numbers
    ok = t.flags["status_ok"] & ~np.isnan(nums["ttft_s"])
    ttft, lat, out = nums["ttft_s"][ok], nums["latency_s"][ok], nums["output_tokens"][ok]
    after = lat - ttft  # NaN where the latency is missing: no speed, never "late"
    with np.errstate(invalid="ignore"):
        fast = (out > 0) & (after > 0)
        late = ok & (nums["ttft_s"] > nums["latency_s"])
    speed = (out[fast] / after[fast]).tolist()
    return StreamFigures(int(ok.sum()), percentile(ttft.tolist(), 50), percentile(ttft.tolist(), 95), len(speed),
                         percentile(speed, 50), tuple(t.ids(late)))


@dataclass
class RunAnalysis:
    run: RunRecord
    table: DocTable  # the run's documents as columns: every figure below comes from it
    thresholds: g.ThresholdSet
    summary: Summary
    cost: Any  # migbench.cost.RunCost
    gates: list[g.Gate]
    paired: Paired | None = None  # all documents against the baseline (the gates are per document type)
    baseline: RunRecord | None = None
    review: Any = None  # migbench.review.ReviewSummary: flagged / escaped rates, total cost with review
    power: list[Any] = field(default_factory=list)  # migbench.planning.PlanRow per type: powered or not
    stream: StreamFigures | None = None  # time to first token, output tokens/s (streamed runs)
    rows: list[DocResult] | None = None  # the typed rows, when the caller had them (compare reads values)
    _index: dict[tuple[str, str], g.Gate] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._index = {(x.kind, x.gate_id): x for x in self.gates}
        if self.stream is None:
            self.stream = stream_figures(self.table)

    @property
    def verdict(self) -> str:
        return g.verdict(self.gates)

    @property
    def failed(self) -> list[g.Gate]:
        return [x for x in self.gates if x.status == "fail"]

    def gate(self, kind: str, gate_id: str) -> g.Gate:
        """The gate a suite test checks; a test with no such gate names what the analysis has."""
        try:
            return self._index[(kind, gate_id)]
        except KeyError:
            have = sorted(i for k, i in self._index if k == kind)
            raise LookupError(f"no {kind} gate {gate_id!r} in the analysis of run {self.run.run_id} "
                              f"(it has: {', '.join(have) or 'none'})") from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the run, the thresholds it was judged with, the verdict, gates and figures."""
        metrics = self.summary.to_dict()
        latency = metrics.pop("latency")
        for stats in latency.values():
            stats.pop("values", None)
        out: dict[str, Any] = {
            "run": {k: getattr(self.run, k) for k in RUN_FIELDS},
            "thresholds": self.thresholds.record(),
            "verdict": self.verdict,
            "gate_counts": {s: sum(1 for x in self.gates if x.status == s) for s in ("pass", "fail", "skip")},
            "gates": [x.to_dict() for x in self.gates],
            "metrics": metrics, "latency": latency,
            "streaming": self.stream.to_dict() if self.stream else None,
            "cost": {"basis": self.cost.basis, "price_key": self.cost.price_key, "per_doc_usd": self.cost.per_doc,
                     "per_1000_usd": self.cost.per_1000, "docs_per_hour": self.cost.docs_per_hour,
                     "note": self.cost.note},
        }
        if self.paired is not None and self.baseline is not None:
            out["baseline"] = {"run_id": self.baseline.run_id, "backend": self.baseline.backend,
                               "paired": asdict(self.paired), "power": [asdict(p) for p in self.power]}
        if self.review is not None:
            out["review"] = self.review.to_dict()
        return out


def analyse(run: RunRecord, rows: Documents, thresholds: g.ThresholdSet, schema: Any, *,
            pricing: Any = None, baseline: tuple[RunRecord, Documents] | None = None,
            gpu_hourly: float | None = None, review_rules: Any = None) -> RunAnalysis:
    """Every figure and every gate of one run, judged with `thresholds` (in the suites' order).

    `review_rules` (migbench.review.ReviewRules; default: the packaged ones) route documents to
    human review for the total cost per document. `rows`: typed rows (kept on the analysis) or a
    DocTable (what the report builds from the store, a chunk at a time)."""
    from migbench.cost import load_pricing, run_cost
    from migbench.planning import power_checks
    from migbench.review import load_review_rules, review_run

    th = thresholds.thresholds
    kept = None if isinstance(rows, DocTable) else list(rows)
    rows = DocTable.of(rows if kept is None else kept)
    backend = run.backend
    crit = g.critical_fields(th, schema)
    doc_types = sorted(str(t) for t in rows.present("doc_type") if t in schema.document_types)
    summary = aggregate(rows, th.confidence)
    pricing = pricing or load_pricing()
    cost = run_cost(run, rows, pricing, gpu_hourly)
    review = review_run(rows, review_rules or load_review_rules(schema=schema), crit, schema,
                        model_cost_per_doc=cost.per_doc, currency=pricing.currency, level=th.confidence)
    gates = [g.overall_gate(backend, rows, th), g.failure_gate(backend, rows, th),
             g.hallucination_gate(backend, rows, th)]
    gates += [g.doc_type_gate(backend, rows, dt, th) for dt in doc_types]
    gates += [g.hallucination_gate(f"{backend}/{dt}", rows, th, dt) for dt in doc_types]
    gates += [g.field_gate(backend, rows, dt, f, th, crit) for dt, f in g.accuracy_units(rows, schema)]
    gates += [g.latency_gate(backend, rows, dt, p, th) for dt in doc_types for p in PERCENTILES]
    gates.append(g.cost_per_doc_gate(backend, cost, th))
    gates += [g.monthly_cost_gate(backend, cost, v, th) for v in th.cost.volumes_per_day]
    paired = base_run = None
    power: list[Any] = []
    if baseline is not None:
        base_run, base_rows = baseline
        base_rows = DocTable.of(base_rows)
        gates += [g.non_inferiority_gate(backend, base_run.backend, rows, base_rows, dt, th) for dt in doc_types]
        paired = g.paired(rows, base_rows, base_run.backend, None, th)
        power = power_checks(rows, base_rows, th)
    return RunAnalysis(run, rows, thresholds, summary, cost, gates, paired, base_run, review, power, rows=kept)
