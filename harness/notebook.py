"""Stored results as pandas DataFrames, for notebooks (`pip install 'migbench[notebook]'`).

    from migbench import load_results
    r = load_results("results")
    r.runs            # one row per run
    r.documents       # one row per (run, document)
    r.field_scores    # one row per (run, document, field)
    r.audit           # one row per audit entry (every request sent or refused)
    r.per_field("nova-pro")   # the analysis' own aggregates (the figures the report prints)

Rows are read through RunStore's typed rows (never SQL of our own). The aggregates come from
`migbench.analysis.analyse`, the one step the suites and the report use, so a notebook and the
report cannot disagree. The store is opened only to read, and closed before a frame is returned.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, fields
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migbench.contracts import UsageError

if TYPE_CHECKING:  # pandas is the notebook extra's; importing this module must not need it
    import pandas as pd

RUN_COLUMNS = {  # column -> pandas dtype
    "run_id": "string", "backend": "string", "family": "string", "model": "string", "emulated": "bool",
    "status": "string", "dataset_path": "string", "dataset_hash": "string", "n_documents": "Int64",
    "prompt_hash": "string", "prompt_style": "string", "git_commit": "string", "host": "string",
    "started_at": "datetime64[ns, UTC]", "finished_at": "datetime64[ns, UTC]", "wall_s": "float64",
    "verdict": "string",
}
DOCUMENT_COLUMNS = {
    "run_id": "string", "backend": "string", "doc_id": "string", "doc_type": "category", "tier": "category",
    "status": "category", "doc_f1": "float64", "input_tokens": "Int64", "output_tokens": "Int64",
    "latency_s": "float64", "server_latency_ms": "float64", "attempts": "Int64", "throttled": "Int64",
    "retry_wait_s": "float64", "cost_usd": "float64", "region": "string", "model_id": "string",
    "stop_reason": "string", "error_class": "string", "error": "string", "completed_at": "datetime64[ns, UTC]",
}
FIELD_COLUMNS = {
    "run_id": "string", "backend": "string", "doc_id": "string", "doc_type": "category", "tier": "category",
    "field": "category", "expected": "string", "predicted": "string", "f1": "float64", "precision": "float64",
    "recall": "float64", "hallucinated": "bool", "missed": "bool",
}
AUDIT_COLUMNS = {
    "run_id": "string", "id": "Int64", "ts": "datetime64[ns, UTC]", "backend": "string", "service": "string",
    "operation": "string", "region": "string", "host": "string", "model_id": "string", "doc_id": "string",
    "request_id": "string", "status": "Int64", "attempt": "Int64", "bytes_sent": "Int64", "allowed": "bool",
    "reason": "string",
}


def _pandas() -> Any:
    try:
        import pandas as pd
    except ImportError:
        raise UsageError("the notebook API needs pandas: pip install 'migbench[notebook]'") from None
    return pd


@contextmanager
def open_store(results: str | Path) -> Iterator[Any]:
    """The run store of a results directory, for reading (closed on exit); a directory without one
    is refused in one line instead of getting an empty store where the user mistyped a path."""
    from migbench.store import RunStore

    store = RunStore.open_existing(results)
    try:
        yield store
    finally:
        store.close()


def _frame(records: list[dict[str, Any]], columns: dict[str, str]) -> pd.DataFrame:
    """A DataFrame with exactly `columns`, in order and typed, even when there are no records."""
    pd = _pandas()
    df = pd.DataFrame.from_records(records, columns=list(columns))
    for col, dtype in columns.items():
        if dtype.startswith("datetime"):
            df[col] = pd.to_datetime(df[col], utc=True, errors="coerce", format="ISO8601")
        elif dtype == "bool":
            df[col] = df[col].fillna(False).astype(bool)
        else:
            df[col] = df[col].astype(dtype)
    return df


class Results:
    """The runs of one results directory, read once, as DataFrames; aggregates from the analysis."""

    def __init__(self, results: str | Path, runs: Sequence[str] | None = None):
        _pandas()
        self.results = Path(results)
        with open_store(self.results) as store:
            ids = [store.resolve(r) for r in runs] if runs else [r.run_id for r in store.runs()]
            by_id = {r.run_id: r for r in store.runs()}
            self._runs = [by_id[i] for i in dict.fromkeys(ids)]
            self._docs = {i: store.documents(i) for i in by_id if i in ids}
            self._audit = {i: store.audit(i) for i in by_id if i in ids}
        self._analyses: dict[tuple[str, str | None, str | None], Any] = {}

    def __repr__(self) -> str:
        return f"Results({str(self.results)!r}: {len(self._runs)} run(s))"

    # ------------------------------------------------------------------------------------ frames
    @cached_property
    def runs(self) -> pd.DataFrame:
        return _frame([{**{k: getattr(r, k) for k in RUN_COLUMNS if k != "verdict"},
                        "verdict": (r.gating or {}).get("verdict")} for r in self._runs], RUN_COLUMNS)

    @cached_property
    def documents(self) -> pd.DataFrame:
        backends = {r.run_id: r.backend for r in self._runs}
        recs = []
        for run_id, rows in self._docs.items():
            for d in rows:
                resp = d.response
                recs.append({"run_id": run_id, "backend": backends[run_id], "doc_id": d.doc_id,
                             "doc_type": d.doc_type, "tier": d.tier, "status": d.status, "doc_f1": d.doc_f1,
                             **{k: getattr(resp, k) for k in DOCUMENT_COLUMNS if hasattr(resp, k)},
                             "error_class": d.error_class, "error": d.error, "completed_at": d.completed_at})
        return _frame(recs, DOCUMENT_COLUMNS)

    @cached_property
    def field_scores(self) -> pd.DataFrame:
        backends = {r.run_id: r.backend for r in self._runs}
        recs = [{"run_id": run_id, "backend": backends[run_id], "doc_id": d.doc_id, "doc_type": d.doc_type,
                 "tier": d.tier, **asdict(s)}
                for run_id, rows in self._docs.items() for d in rows for s in d.scores]
        return _frame(recs, FIELD_COLUMNS)

    @cached_property
    def audit(self) -> pd.DataFrame:
        recs = [{**{k: e.get(k) for k in AUDIT_COLUMNS}, "run_id": run_id}
                for run_id, entries in self._audit.items() for e in entries]
        return _frame(recs, AUDIT_COLUMNS)

    # ------------------------------------------------------------------------- the analysis layer
    def run_id(self, ref: str) -> str:
        """A run id from an id, a backend name (its latest run), a unique prefix or 'latest'."""
        ids = [r.run_id for r in self._runs]  # in the store's order: oldest first
        if ref == "latest" and ids:
            return ids[-1]
        if ref in ids:
            return ref
        of_backend = [r.run_id for r in self._runs if r.backend == ref]
        if of_backend:
            return of_backend[-1]
        prefixed = [i for i in ids if i.startswith(ref)]
        if len(prefixed) == 1:
            return prefixed[0]
        if prefixed:
            raise UsageError(f"run {ref!r} is ambiguous: {', '.join(prefixed)}")
        raise UsageError(f"no run {ref!r} in {self.results} (runs: {', '.join(ids) or 'none'})")

    def analyse(self, run: str, *, baseline: str | None = None, thresholds: str | None = None,
                review_rules: str | None = None, pricing: str | None = None) -> Any:
        """The run's `migbench.analysis.RunAnalysis` (figures, gates, review, power), computed once."""
        from migbench.analysis import analyse
        from migbench.cost import load_pricing
        from migbench.options import resolve_thresholds
        from migbench.review import load_review_rules
        from migbench.schema import load_schema

        run_id = self.run_id(run)
        base_id = self.run_id(baseline) if baseline else None
        key = (run_id, base_id, f"{thresholds}|{review_rules}|{pricing}")
        if key not in self._analyses:
            schema = load_schema()
            by_id = {r.run_id: r for r in self._runs}
            base = (by_id[base_id], self._docs[base_id]) if base_id else None
            self._analyses[key] = analyse(
                by_id[run_id], self._docs[run_id], resolve_thresholds(thresholds, schema), schema,
                pricing=load_pricing(pricing), baseline=base, review_rules=load_review_rules(review_rules, schema))
        return self._analyses[key]

    def per_field(self, run: str, **kw: Any) -> pd.DataFrame:
        """Field F1 with its interval, hallucination and wrong-value counts (the report's per-field table)."""
        from migbench.stats import FieldStat

        names = [f.name for f in fields(FieldStat)]
        stats = self.analyse(run, **kw).summary.fields.values()
        return _pandas().DataFrame([asdict(f) for f in stats], columns=names).set_index("field")

    def _groups(self, run: str, attr: str, name: str, **kw: Any) -> pd.DataFrame:
        groups = getattr(self.analyse(run, **kw).summary, attr)
        df = _pandas().DataFrame([{name: k, **asdict(g)} for k, g in groups.items()],
                                 columns=[name, "n", "mean", "lo", "hi", "failed"])
        return df.set_index(name)

    def per_type(self, run: str, **kw: Any) -> pd.DataFrame:
        """Mean document F1 per document type with its interval and failed count."""
        return self._groups(run, "doc_types", "doc_type", **kw)

    def per_tier(self, run: str, **kw: Any) -> pd.DataFrame:
        """Mean document F1 per degradation tier with its interval and failed count."""
        return self._groups(run, "tiers", "tier", **kw)

    def review(self, run: str, **kw: Any) -> pd.DataFrame:
        """Per document: flagged for review (and by which rules), wrong critical fields, escaped."""
        r = self.analyse(run, **kw).review
        return _pandas().DataFrame(
            [{"doc_id": d.doc_id, "doc_type": d.doc_type, "flagged": d.flagged, "reasons": ", ".join(d.reasons),
              "wrong_critical": ", ".join(d.wrong_critical), "escaped": d.escaped} for d in r.docs],
            columns=["doc_id", "doc_type", "flagged", "reasons", "wrong_critical", "escaped"])

    def compare(self, run_a: str, run_b: str, **kw: Any) -> Any:
        """`migbench.compare.Comparison` of B against A (paired differences, changed documents)."""
        from migbench.compare import compare

        return compare(self.analyse(run_a, **kw), self.analyse(run_b, **kw))


def load_results(results: str | Path = "results", runs: Sequence[str] | None = None) -> Results:
    """Every run of a results directory (or the `runs` given: ids, prefixes or 'latest') as DataFrames."""
    return Results(results, runs)
