"""Compare two analysed runs on the documents they share: what changed, by how much, and where.

`compare(a, b)` takes two `migbench.analysis.RunAnalysis` (so the figures are the analysis' own)
and returns a `Comparison`: paired B - A differences of document F1 overall, per document type and
per field, each with its paired bootstrap interval (migbench.stats.paired_bootstrap, with the
level, resamples and seed of A's thresholds); the documents whose verdict changed (status, or a
field's verdict: correct / partial / wrong / missed / hallucinated / failed), with the expected, A
and B values; review-flag changes; cost and latency deltas. `migbench compare RUN_A RUN_B` prints
it; the suites and the report call `compare` on the analyses they already have.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from migbench.contracts import DocResult, FieldScore, MigbenchError
from migbench.stats import paired_bootstrap, paired_f1

FAILED = "failed"


@dataclass
class PairedDiff:
    key: str  # "all", a document type or a field
    n: int  # paired documents
    a_mean: float | None
    b_mean: float | None
    diff: float | None  # mean(B - A)
    lo: float | None
    hi: float | None

    @property
    def significant(self) -> bool:
        """The interval excludes 0."""
        return self.lo is not None and self.hi is not None and (self.lo > 0 or self.hi < 0)


@dataclass
class FieldChange:
    field: str
    expected: str
    a: str
    b: str
    a_verdict: str
    b_verdict: str
    a_f1: float | None
    b_f1: float | None


@dataclass
class ChangedDoc:
    doc_id: str
    doc_type: str
    a_status: str
    b_status: str
    a_f1: float | None
    b_f1: float | None
    fields: list[FieldChange] = field(default_factory=list)
    a_flagged: bool | None = None  # sent to review under the rules (None: no review figures)
    b_flagged: bool | None = None

    @property
    def delta(self) -> float:
        return (self.b_f1 or 0.0) - (self.a_f1 or 0.0)


@dataclass
class Comparison:
    run_a: str
    run_b: str
    backend_a: str
    backend_b: str
    same_dataset: bool
    paired_documents: int
    only_a: int  # documents only A has (left out of every paired figure)
    only_b: int
    level: float
    n_boot: int
    seed: int
    failed_as_zero: bool
    overall: PairedDiff
    doc_types: list[PairedDiff]
    fields: list[PairedDiff]
    changed: list[ChangedDoc]  # largest F1 change first
    cost: dict[str, Any]
    latency: dict[str, Any]
    review: dict[str, Any] | None

    @property
    def improved(self) -> int:
        return sum(1 for c in self.changed if c.delta > 0)

    @property
    def worsened(self) -> int:
        return sum(1 for c in self.changed if c.delta < 0)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["improved"], out["worsened"] = self.improved, self.worsened
        for key in ("doc_types", "fields"):
            for d, obj in zip(out[key], getattr(self, key)):
                d["significant"] = obj.significant
        out["overall"]["significant"] = self.overall.significant
        return out


def verdict(row: DocResult | None, score: FieldScore | None) -> str:
    """One field's verdict in one document (the report's error kinds, plus correct and failed)."""
    if row is None or row.status != "ok":
        return FAILED
    if score is None:
        return "not scored"
    if score.hallucinated:
        return "hallucinated"
    if score.missed:
        return "missed"
    if score.f1 >= 1.0:
        return "correct"
    return "wrong" if score.f1 == 0 else "partial"


def _diff(key: str, a: Sequence[float], b: Sequence[float], level: float, n_boot: int, seed: int) -> PairedDiff:
    if not a:
        return PairedDiff(key, 0, None, None, None, None, None)
    diff, lo, hi = paired_bootstrap(b, a, n_boot=n_boot, seed=seed, level=level)
    return PairedDiff(key, len(a), sum(a) / len(a), sum(b) / len(b), diff, lo, hi)


def _field_value(row: DocResult, name: str, failed_as_zero: bool) -> float | None:
    """A field's F1 in a document whose ground truth has it (the convention of stats.field_f1_values)."""
    if row.ok:
        return next((float(s.f1) for s in row.scores if s.field == name), 0.0)
    return 0.0 if failed_as_zero else None


def field_diffs(rows_a: Sequence[DocResult], rows_b: Sequence[DocResult], *, failed_as_zero: bool, level: float,
                n_boot: int, seed: int) -> list[PairedDiff]:
    """Per field, over the documents both runs have whose ground truth holds the field."""
    by_b = {r.doc_id: r for r in rows_b}
    names = sorted({s.field for r in [*rows_a, *rows_b] for s in r.scores})
    out = []
    for name in names:
        a_vals, b_vals = [], []
        for ra in sorted(rows_a, key=lambda r: r.doc_id):
            rb = by_b.get(ra.doc_id)
            if rb is None or name not in ra.ground_truth:
                continue
            va, vb = _field_value(ra, name, failed_as_zero), _field_value(rb, name, failed_as_zero)
            if va is not None and vb is not None:
                a_vals.append(va)
                b_vals.append(vb)
        out.append(_diff(name, a_vals, b_vals, level, n_boot, seed))
    return out


def changed_documents(rows_a: Sequence[DocResult], rows_b: Sequence[DocResult],
                      flags_a: dict[str, bool] | None = None, flags_b: dict[str, bool] | None = None
                      ) -> list[ChangedDoc]:
    """Documents both runs have whose status, a field's verdict or the review flag changed."""
    by_b = {r.doc_id: r for r in rows_b}
    out = []
    for ra in rows_a:
        rb = by_b.get(ra.doc_id)
        if rb is None:
            continue
        sa, sb = {s.field: s for s in ra.scores}, {s.field: s for s in rb.scores}
        changes = []
        for name in sorted(set(sa) | set(sb)):
            va, vb = verdict(ra, sa.get(name)), verdict(rb, sb.get(name))
            if va == vb:
                continue
            score = sa.get(name) or sb.get(name)
            expected = score.expected if score is not None else ra.ground_truth.get(name, "")
            changes.append(FieldChange(
                name, expected, sa[name].predicted if name in sa else "", sb[name].predicted if name in sb else "",
                va, vb, sa[name].f1 if name in sa else None, sb[name].f1 if name in sb else None))
        fa = None if flags_a is None else flags_a.get(ra.doc_id)
        fb = None if flags_b is None else flags_b.get(rb.doc_id)
        if changes or ra.status != rb.status or fa != fb:
            out.append(ChangedDoc(ra.doc_id, str(ra.doc_type), ra.status, rb.status, ra.doc_f1, rb.doc_f1,
                                  changes, fa, fb))
    out.sort(key=lambda c: (-abs(c.delta), c.doc_id))
    return out


def _latency(a: Any, b: Any, level: float, n_boot: int, seed: int) -> dict[str, Any]:
    la, lb = a.summary.latency["all"], b.summary.latency["all"]
    by_b = {r.doc_id: r.response.latency_s for r in b.rows if r.status == "ok"}
    pairs = [(r.response.latency_s, by_b[r.doc_id]) for r in sorted(a.rows, key=lambda r: r.doc_id)
             if r.status == "ok" and r.response.latency_s is not None and by_b.get(r.doc_id) is not None]
    paired = _diff("latency_s", [p[0] for p in pairs], [p[1] for p in pairs], level, n_boot, seed)

    def delta(x: float | None, y: float | None) -> float | None:
        return None if x is None or y is None else y - x

    return {"a_p50": la.p50, "b_p50": lb.p50, "p50_delta": delta(la.p50, lb.p50),
            "a_p95": la.p95, "b_p95": lb.p95, "p95_delta": delta(la.p95, lb.p95), "paired_mean": asdict(paired)}


def _cost(a: Any, b: Any) -> dict[str, Any]:
    def delta(x: float | None, y: float | None) -> float | None:
        return None if x is None or y is None else y - x

    ta = a.review.total_per_doc if getattr(a, "review", None) is not None else None
    tb = b.review.total_per_doc if getattr(b, "review", None) is not None else None
    return {"a_basis": a.cost.basis, "b_basis": b.cost.basis, "a_per_doc": a.cost.per_doc,
            "b_per_doc": b.cost.per_doc, "per_doc_delta": delta(a.cost.per_doc, b.cost.per_doc),
            "a_total_per_doc": ta, "b_total_per_doc": tb, "total_per_doc_delta": delta(ta, tb),
            "a_note": a.cost.note, "b_note": b.cost.note}


def compare(a: Any, b: Any) -> Comparison:
    """B against A (`migbench.analysis.RunAnalysis` each), with A's thresholds' level, resamples and seed."""
    th = a.thresholds.thresholds
    level, n_boot, seed, faz = th.confidence, th.non_inferiority.n_boot, th.non_inferiority.seed, th.failed_as_zero
    ids_a, ids_b = {r.doc_id for r in a.rows}, {r.doc_id for r in b.rows}

    def overall(dt: str | None) -> PairedDiff:
        _, fb, fa = paired_f1(b.rows, a.rows, dt, faz)
        return _diff(dt or "all", fa, fb, level, n_boot, seed)

    types = sorted({str(r.doc_type) for r in a.rows if r.doc_id in ids_b})
    ra, rb = getattr(a, "review", None), getattr(b, "review", None)
    flags_a = {d.doc_id: d.flagged for d in ra.docs} if ra is not None else None
    flags_b = {d.doc_id: d.flagged for d in rb.docs} if rb is not None else None
    review = None
    if ra is not None and rb is not None:
        review = {"a_flagged_rate": ra.flagged.rate, "b_flagged_rate": rb.flagged.rate,
                  "a_escaped_rate": ra.escaped.rate, "b_escaped_rate": rb.escaped.rate,
                  "rules": ra.rules_file, "same_rules": ra.rules_sha256 == rb.rules_sha256}
    return Comparison(
        run_a=a.run.run_id, run_b=b.run.run_id, backend_a=a.run.backend, backend_b=b.run.backend,
        same_dataset=a.run.dataset_hash == b.run.dataset_hash, paired_documents=len(ids_a & ids_b),
        only_a=len(ids_a - ids_b), only_b=len(ids_b - ids_a), level=level, n_boot=n_boot, seed=seed,
        failed_as_zero=faz, overall=overall(None), doc_types=[overall(t) for t in types],
        fields=field_diffs(a.rows, b.rows, failed_as_zero=faz, level=level, n_boot=n_boot, seed=seed),
        changed=changed_documents(a.rows, b.rows, flags_a, flags_b), cost=_cost(a, b),
        latency=_latency(a, b, level, n_boot, seed), review=review)


# -------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="migbench compare",
                                description="Paired comparison of two stored runs (B - A) on the documents both have.")
    p.add_argument("run_a", metavar="RUN_A", help="the reference run (id, prefix or 'latest')")
    p.add_argument("run_b", metavar="RUN_B", help="the run compared with it")
    p.add_argument("--results", default=os.environ.get("MIGBENCH_RESULTS", "results"),
                   help="results directory holding the run store (default: ./results or $MIGBENCH_RESULTS)")
    p.add_argument("--json", action="store_true", help="print the whole comparison as JSON")
    p.add_argument("--thresholds", help="thresholds YAML or packaged name (confidence, resamples, seed, failed "
                                        "documents; default: the incumbent's)")
    p.add_argument("--review-rules", metavar="FILE", help="review routing rules YAML (default: the packaged ones)")
    p.add_argument("--pricing", help="pricing YAML overriding harness/data/pricing.yaml")
    p.add_argument("--top", type=int, default=20, help="changed documents listed in the table (default 20)")
    return p


def analyse_pair(results: str, ref_a: str, ref_b: str, *, thresholds: str | None = None,
                 review_rules: str | None = None, pricing: str | None = None) -> Comparison:
    """Read both runs from the store, analyse each with the same thresholds and rules, compare."""
    from migbench.analysis import analyse
    from migbench.cost import load_pricing
    from migbench.notebook import open_store
    from migbench.options import resolve_thresholds
    from migbench.review import load_review_rules
    from migbench.schema import load_schema

    schema = load_schema()
    ts = resolve_thresholds(thresholds, schema)
    rules = load_review_rules(review_rules, schema)
    prices = load_pricing(pricing)
    with open_store(results) as store:
        runs = [store.run(ref_a), store.run(ref_b)]
        rows = [store.documents(r.run_id) for r in runs]
    a, b = (analyse(r, d, ts, schema, pricing=prices, review_rules=rules) for r, d in zip(runs, rows))
    return compare(a, b)


def _short(text: str, width: int = 60) -> str:
    """A value cut for the table (--json has it whole)."""
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def _print(c: Comparison, top: int) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    con = Console(highlight=False)

    def say(text: str) -> None:
        con.print(text, markup=False)  # run ids and values are data, never markup

    def f(x: float | None, fmt: str = "+.3f") -> str:
        return "n/a" if x is None else format(x, fmt)

    pct = f"{100 * c.level:g}%"
    say(f"B = {c.run_b} ({c.backend_b}) against A = {c.run_a} ({c.backend_a}): {c.paired_documents} paired "
              f"documents{'' if c.same_dataset else ' (dataset hashes differ)'}; only in A {c.only_a}, only in B "
              f"{c.only_b}; {c.improved} improved, {c.worsened} worsened")
    t = Table(title=f"document / field F1, B - A with paired bootstrap {pct} interval")
    for col in ("scope", "n", "A", "B", "B - A", "interval", ""):
        t.add_column(col)
    for d in [c.overall, *c.doc_types, *c.fields]:
        t.add_row(Text(d.key), str(d.n), f(d.a_mean, ".3f"), f(d.b_mean, ".3f"), f(d.diff),
                  "n/a" if d.lo is None else f"[{d.lo:+.3f}, {d.hi:+.3f}]", "*" if d.significant else "")
    con.print(t)
    lat, cost = c.latency, c.cost
    say(f"cost per document: A {f(cost['a_per_doc'], '.6f')}, B {f(cost['b_per_doc'], '.6f')}, "
              f"delta {f(cost['per_doc_delta'], '+.6f')}; with review: A {f(cost['a_total_per_doc'], '.4f')}, "
              f"B {f(cost['b_total_per_doc'], '.4f')}, delta {f(cost['total_per_doc_delta'], '+.4f')}")
    pm = lat["paired_mean"]
    say(f"latency: p50 {f(lat['a_p50'], '.2f')} -> {f(lat['b_p50'], '.2f')} s, p95 {f(lat['a_p95'], '.2f')} -> "
              f"{f(lat['b_p95'], '.2f')} s; paired mean {f(pm['diff'], '+.2f')} s "
              + ("" if pm["lo"] is None else f"[{pm['lo']:+.2f}, {pm['hi']:+.2f}]"))
    if c.review:
        r = c.review
        say(f"flagged for review: {f(r['a_flagged_rate'], '.1%')} -> {f(r['b_flagged_rate'], '.1%')}; "
                  f"escaped errors {f(r['a_escaped_rate'], '.1%')} -> {f(r['b_escaped_rate'], '.1%')}")
    if not c.changed:
        say("no document changed verdict")
        return
    t = Table(title=f"documents whose verdict changed ({min(top, len(c.changed))} of {len(c.changed)} shown)")
    for col in ("document", "type", "F1 A -> B", "field", "expected", "A", "B", "verdict A -> B"):
        t.add_column(col)
    for d in c.changed[:max(0, top)]:
        head = (d.doc_id, d.doc_type, f"{f(d.a_f1, '.3f')} -> {f(d.b_f1, '.3f')}")
        lines = [(x.field, _short(x.expected), _short(x.a), _short(x.b), f"{x.a_verdict} -> {x.b_verdict}")
                 for x in d.fields]
        if d.a_status != d.b_status:
            lines.insert(0, ("(status)", "", d.a_status, d.b_status, ""))
        if d.a_flagged != d.b_flagged and d.a_flagged is not None:
            flag = {True: "flagged", False: "straight through"}
            lines.append(("(review)", "", flag[d.a_flagged], flag[bool(d.b_flagged)], ""))
        for i, line in enumerate(lines):
            t.add_row(*(Text(x) for x in (*(head if i == 0 else ("", "", "")), *line)))
    con.print(t)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        c = analyse_pair(args.results, args.run_a, args.run_b, thresholds=args.thresholds,
                         review_rules=args.review_rules, pricing=args.pricing)
    except MigbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.json:
        sys.stdout.write(json.dumps(c.to_dict(), indent=2, ensure_ascii=False) + "\n")
    else:
        _print(c, args.top)
    return 0
