"""Sample-size planning for a non-inferiority verdict, and the "underpowered" mark the report shows.

How many documents does a run need before a paired comparison can establish that a candidate is
no worse than the baseline by more than a margin? The verdict (migbench.stats.non_inferiority)
reads the lower bound of the two-sided (1 - alpha) interval of mean(candidate - baseline) document
F1, so it is a one-sided test at alpha/2 of H0: true difference <= -margin.

Formulas (one-sample / paired mean, non-inferiority), with d = assumed true difference + margin:
- normal approximation (Chow, Shao & Wang, "Sample Size Calculations in Clinical Research",
  2nd ed. 2008, section 3.1, test for non-inferiority; equivalently Lehr's "8 s^2 / d^2" rule,
  Stat Med 1992;11:1099-1102, for two-sided 0.05 and 80% power):
      n = ((z_{1-alpha/2} + z_{power}) * sd / d) ^ 2
- Student-t refinement (Julious, "Sample sizes for clinical trials with Normal data", Stat Med
  2004;23:1921-1986, section 3): the same with t quantiles on n - 1 degrees of freedom, iterated
  from the normal answer until n stops changing, then settled on the smallest n whose exact power
  (noncentral t, scipy.stats.nct) reaches the target; it is what `required_n` returns, because the
  intervals migbench prints are t (mean_ci) or bootstrap intervals on small samples.
sd is the standard deviation of the paired per-document differences when a candidate run is
given; with the baseline alone it is sqrt(2) x the baseline's standard deviation (the candidate
assumed as variable as the baseline and uncorrelated with it: conservative, since documents that
are hard for one backend are usually hard for the other, which shrinks the paired variance).
The assumed true difference defaults to 0 (the usual planning assumption: "if they were equally
good"); planning on the observed difference instead is the "observed power" trap (Hoenig &
Heisey, Am Stat 2001;55:19-24), so it is available only on request (--assume-diff observed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

from migbench.contracts import MigbenchError, UsageError
from migbench.doctable import DocTable, Documents
from migbench.stats import doc_f1_values, paired_f1, t_quantile

DEFAULT_POWER = 0.8
DEFAULT_MARGIN = 0.02
DEFAULT_ALPHA = 0.05
MIN_N = 2  # an interval needs two documents
MAX_ITER = 100


def _check(margin: float, alpha: float, power: float) -> None:
    if not (math.isfinite(margin) and margin >= 0):
        raise UsageError(f"--margin must be a non-negative number, got {margin!r}")
    if not 0.0 < alpha < 1.0:
        raise UsageError(f"--alpha must be in (0, 1), got {alpha!r}")
    if not 0.0 < power < 1.0:
        raise UsageError(f"--power must be in (0, 1), got {power!r}")


def required_n_normal(sd: float, margin: float, *, alpha: float = DEFAULT_ALPHA, power: float = DEFAULT_POWER,
                      assumed_diff: float = 0.0) -> int | None:
    """Documents needed (normal approximation); None when the assumed difference is at or below -margin
    (non-inferiority cannot be shown however many documents there are)."""
    _check(margin, alpha, power)
    d = assumed_diff + margin
    if d <= 0:
        return None
    if sd <= 0:
        return MIN_N
    z = NormalDist().inv_cdf
    return max(MIN_N, math.ceil(((z(1 - alpha / 2) + z(power)) * sd / d) ** 2))


def exact_power(n: int, sd: float, margin: float, *, alpha: float = DEFAULT_ALPHA,
                assumed_diff: float = 0.0) -> float:
    """Power of the one-sided t test at alpha/2 on n paired documents: P(T > t_crit) with T
    noncentral t, df = n - 1, noncentrality (assumed_diff + margin) / (sd / sqrt(n))."""
    try:
        from scipy.stats import nct
    except ImportError:
        raise ImportError("sample-size planning needs scipy: pip install 'migbench[report]'") from None
    if n < MIN_N:
        return 0.0
    if sd <= 0:
        return 1.0 if assumed_diff + margin > 0 else 0.0
    df = n - 1
    nc = (assumed_diff + margin) / (sd / math.sqrt(n))
    return float(nct.sf(t_quantile(1 - alpha / 2, df), df, nc))


def required_n(sd: float, margin: float, *, alpha: float = DEFAULT_ALPHA, power: float = DEFAULT_POWER,
               assumed_diff: float = 0.0) -> int | None:
    """Documents needed (Student-t formula iterated from the normal answer, then checked against the
    exact noncentral-t power and moved to the smallest n that reaches it); None when unreachable."""
    n = required_n_normal(sd, margin, alpha=alpha, power=power, assumed_diff=assumed_diff)
    if n is None or sd <= 0:
        return n
    d = assumed_diff + margin
    seen = set()
    for _ in range(MAX_ITER):
        df = n - 1
        nxt = max(MIN_N, math.ceil(((t_quantile(1 - alpha / 2, df) + t_quantile(power, df)) * sd / d) ** 2))
        if nxt == n:
            break
        if nxt in seen:  # alternates between two values: take the larger (the safe side)
            n = max(n, nxt)
            break
        seen.add(n)
        n = nxt

    # The t formula is itself an approximation (it can be a document short); the exact power decides.
    def reaches(m: int) -> bool:
        return exact_power(m, sd, margin, alpha=alpha, assumed_diff=assumed_diff) >= power

    while not reaches(n):
        n += 1
    while n > MIN_N and reaches(n - 1):
        n -= 1
    return n


def underpowered(n: int, required: int | None) -> bool:
    """True when a comparison on n documents is smaller than planning says it must be (or cannot succeed)."""
    return required is None or n < required


# --------------------------------------------------------------------------------------- per type
@dataclass
class PlanRow:
    doc_type: str  # "all" or a document type
    n: int  # documents the run has (paired documents when a candidate is given)
    sd: float | None  # sd of the paired differences (or sqrt(2) x the baseline's sd)
    sd_basis: str
    observed_diff: float | None  # mean(candidate - baseline); None without a candidate
    assumed_diff: float | None  # the true difference planned for
    required_normal: int | None
    required: int | None  # Student-t; None: unreachable or not measured
    status: str  # powered | underpowered | unreachable | not measured

    @property
    def underpowered(self) -> bool:
        return self.status in ("underpowered", "unreachable")


def _sd(xs: Sequence[float]) -> float | None:
    n = len(xs)
    if n < 2:
        return None
    mean = math.fsum(xs) / n
    return math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))


def plan_row(doc_type: str, diffs_or_scores: Sequence[float], *, paired: bool, margin: float, alpha: float,
             power: float, assumed_diff: float | None) -> PlanRow:
    """One plan: `diffs_or_scores` are paired differences (paired=True) or the baseline's scores."""
    n = len(diffs_or_scores)
    sd = _sd(diffs_or_scores)
    observed = (math.fsum(diffs_or_scores) / n) if paired and n else None
    basis = "sd of the paired differences" if paired else "sqrt(2) x the baseline's sd (no correlation assumed)"
    if sd is not None and not paired:
        sd *= math.sqrt(2.0)
    assume = observed if assumed_diff is None else assumed_diff
    if sd is None or assume is None:
        return PlanRow(doc_type, n, sd, basis, observed, assume, None, None, "not measured")
    req_z = required_n_normal(sd, margin, alpha=alpha, power=power, assumed_diff=assume)
    req = required_n(sd, margin, alpha=alpha, power=power, assumed_diff=assume)
    status = "unreachable" if req is None else ("underpowered" if underpowered(n, req) else "powered")
    return PlanRow(doc_type, n, sd, basis, observed, assume, req_z, req, status)


def plan(baseline: Documents, candidate: Documents | None = None, *,
         margin: float = DEFAULT_MARGIN, alpha: float = DEFAULT_ALPHA, power: float = DEFAULT_POWER,
         failed_as_zero: bool = True, assumed_diff: float | None = 0.0) -> list[PlanRow]:
    """Documents needed overall ("all") and per document type. `assumed_diff=None`: plan on the
    observed mean difference (needs a candidate)."""
    _check(margin, alpha, power)
    if assumed_diff is None and candidate is None:
        raise UsageError("--assume-diff observed needs --candidate (the baseline alone has no difference)")
    baseline = DocTable.of(baseline)
    candidate = None if candidate is None else DocTable.of(candidate)
    types = sorted({str(dt) for t in (baseline, candidate) if t is not None for dt in t.present("doc_type") if dt})
    rows = []
    for dt in [None, *types]:
        if candidate is not None:
            _, a, b = paired_f1(candidate, baseline, dt, failed_as_zero)
            values, paired = [x - y for x, y in zip(a, b)], True
        else:
            values, paired = doc_f1_values(baseline, dt, failed_as_zero), False
        rows.append(plan_row(dt or "all", values, paired=paired, margin=margin, alpha=alpha, power=power,
                             assumed_diff=assumed_diff))
    return rows


def power_checks(candidate: Documents, baseline: Documents, thresholds: Any,
                 power: float = DEFAULT_POWER) -> list[PlanRow]:
    """The analysis' check: is this paired comparison big enough for its own margin and confidence?"""
    ni = thresholds.non_inferiority
    return plan(baseline, candidate, margin=ni.margin, alpha=1.0 - thresholds.confidence, power=power,
                failed_as_zero=thresholds.failed_as_zero, assumed_diff=0.0)


# -------------------------------------------------------------------------------------------- CLI
def _assume(text: str) -> float | None:
    if text == "observed":
        return None
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--assume-diff expects a number or 'observed', got {text!r}") from None
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"--assume-diff must be finite, got {text!r}")
    return x


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="migbench plan",
        description="How many documents a run needs to establish non-inferiority at a margin, per document type.")
    p.add_argument("--results", default=os.environ.get("MIGBENCH_RESULTS", "results"),
                   help="results directory holding the run store (default: ./results or $MIGBENCH_RESULTS)")
    p.add_argument("--baseline", required=True, metavar="RUN", help="the incumbent's run (id, prefix or 'latest')")
    p.add_argument("--candidate", metavar="RUN", help="a candidate run: plan from the paired differences")
    p.add_argument("--margin", type=float, default=DEFAULT_MARGIN, help="non-inferiority margin in F1 (default 0.02)")
    p.add_argument("--power", type=float, default=DEFAULT_POWER, help="chance of showing it when true (default 0.8)")
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                   help="1 - confidence of the interval the verdict reads (default 0.05: the 95%% CI)")
    p.add_argument("--assume-diff", type=_assume, default=0.0, metavar="X|observed",
                   help="true difference to plan for (default 0: equally good; 'observed': the candidate's)")
    p.add_argument("--failed-as-nonzero", dest="failed_as_zero", action="store_false",
                   help="leave failed documents out instead of scoring them 0")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def main(argv: list[str]) -> int:
    from migbench.notebook import open_store

    args = build_parser().parse_args(argv)
    try:
        with open_store(args.results) as store:
            base = store.run(args.baseline)
            # as columns, read a chunk at a time: a plan needs only each document's F1 and type
            base_rows = DocTable.of(store.iter_documents(base.run_id, raw_text=False))
            cand = store.run(args.candidate) if args.candidate else None
            cand_rows = DocTable.of(store.iter_documents(cand.run_id, raw_text=False)) if cand else None
        rows = plan(base_rows, cand_rows, margin=args.margin, alpha=args.alpha, power=args.power,
                    failed_as_zero=args.failed_as_zero, assumed_diff=args.assume_diff)
    except MigbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    head = {"baseline": base.run_id, "candidate": cand.run_id if cand else None, "margin": args.margin,
            "alpha": args.alpha, "power": args.power}
    if args.json:
        print(json.dumps({**head, "plan": [asdict(r) for r in rows]}, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    title = (f"documents needed for non-inferiority at margin {args.margin:g} (power {args.power:g}, "
             f"{100 * (1 - args.alpha):g}% interval): {base.run_id}" + (f" vs {cand.run_id}" if cand else ""))
    t = Table(title=title)
    for col in ("doc type", "documents", "sd", "observed diff", "assumed diff", "needed (normal)",
                "needed (t, exact power)", "power"):
        t.add_column(col)

    def f(x: float | None, fmt: str = ".4f") -> str:
        return "n/a" if x is None else format(x, fmt)

    for r in rows:
        t.add_row(r.doc_type, str(r.n), f(r.sd), f(r.observed_diff, "+.4f"), f(r.assumed_diff, "+.4f"),
                  f(r.required_normal, "d"), f(r.required, "d"), r.status)
    Console().print(t)
    Console().print(f"sd basis: {rows[0].sd_basis}")
    return 0
