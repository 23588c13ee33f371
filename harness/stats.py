"""Means with confidence intervals, paired bootstrap, run aggregation, non-inferiority verdicts.

Choices:
- `mean_ci` is a Student-t interval on the mean. F1 per document is a bounded continuous score,
  not a 0/1 proportion, so t (not Wilson) fits it; the quantile comes from scipy (the report and
  suites extras, which are what import this module). Intervals can be clipped to the
  score range. n = 0 gives (None, None, None); n = 1 gives (x, None, None): no spread is known.
- `wilson_ci` is for true proportions (hallucination rate, failure rate), where the t interval
  misbehaves near 0 and 1.
- `paired_bootstrap` resamples documents (the pairing unit), percentile interval, numpy RNG with a
  fixed seed so reports are reproducible.
- Percentiles interpolate linearly between closest ranks (numpy's default), the one definition the
  gates, the JSON summary and the report's tables and charts share.
- Every figure below reads a run's documents as columns (`migbench.doctable.DocTable`; typed rows,
  `migbench.contracts.DocResult`, are turned into one on the way in): a document is scored when
  `row.ok` (status "ok" with a document F1).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
from migbench.doctable import GT_NOT_FOUND, HALLUCINATED, IN_GT, MISSED, DocTable, Documents

Interval = tuple[float | None, float | None, float | None]


# ---------------------------------------------------------------------------------------------
# distributions
# ---------------------------------------------------------------------------------------------

def t_quantile(p: float, df: float) -> float:
    """Inverse Student-t CDF (scipy.stats.t.ppf; scipy comes with the report and suites extras)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"probability must be in (0, 1), got {p}")
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    try:
        from scipy.stats import t as student_t
    except ImportError:
        raise ImportError("Student-t intervals need scipy: pip install 'migbench[report]'") from None
    return float(student_t.ppf(p, df))


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")


# ---------------------------------------------------------------------------------------------
# intervals
# ---------------------------------------------------------------------------------------------

def mean_ci(values: Iterable[float], level: float = 0.95,
            clip: tuple[float, float] | None = None) -> Interval:
    """(mean, lo, hi) with a Student-t interval; None where it is undefined (n = 0, or lo/hi at n = 1)."""
    _check_level(level)
    xs = [float(v) for v in values if v is not None]
    n = len(xs)
    if n == 0:
        return (None, None, None)
    mean = math.fsum(xs) / n
    if n == 1:
        return (mean, None, None)
    var = math.fsum((x - mean) ** 2 for x in xs) / (n - 1)
    half = t_quantile(0.5 + level / 2.0, n - 1) * math.sqrt(var / n)
    lo, hi = mean - half, mean + half
    if clip is not None:
        lo, hi = max(clip[0], lo), min(clip[1], hi)
    return (mean, lo, hi)


def wilson_ci(successes: int, n: int, level: float = 0.95) -> Interval:
    """(proportion, lo, hi) with the Wilson score interval; (None, None, None) when n = 0."""
    _check_level(level)
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got {successes}/{n}")
    if n == 0:
        return (None, None, None)
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return (p, lo, hi)


def paired_bootstrap(a: Sequence[float], b: Sequence[float], n_boot: int = 2000, seed: int = 0,
                     level: float = 0.95) -> Interval:
    """mean(a - b) and its percentile bootstrap interval, resampling the pairs.

    a and b are per-document scores of two backends on the same documents, in the same order.
    """
    _check_level(level)
    if len(a) != len(b):
        raise ValueError(f"paired samples need equal lengths, got {len(a)} and {len(b)}")
    if n_boot < 1:
        raise ValueError("n_boot must be at least 1")
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = d.size
    if n == 0:
        return (None, None, None)
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, 4_000_000 // n)  # bound memory: chunk x n indices at a time
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(k, n))
        means[start:start + k] = d[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return (float(d.mean()), float(lo), float(hi))


def non_inferiority(diff_lo: float | None, margin: float, diff_hi: float | None = None) -> str:
    """Verdict on candidate - incumbent with the CI [diff_lo, diff_hi] and a margin >= 0.

    'superior' (lo > 0), 'non-inferior' (lo > -margin), 'inferior' (hi < -margin, when given),
    otherwise 'inconclusive'; 'inconclusive' too when there is no interval.
    """
    if margin < 0 or math.isnan(margin):
        raise ValueError(f"margin must be a non-negative number, got {margin}")
    if diff_lo is None or math.isnan(diff_lo):
        return "inconclusive"
    if diff_lo > 0:
        return "superior"
    if diff_lo > -margin:
        return "non-inferior"
    if diff_hi is not None and diff_hi < -margin:
        return "inferior"
    return "inconclusive"


# ---------------------------------------------------------------------------------------------
# per-document figures (typed rows)
# ---------------------------------------------------------------------------------------------

PERCENTILES = ("p50", "p95", "p99")


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0-100), linear interpolation (numpy's default); None for no values."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    if isinstance(values, np.ndarray):  # a column: no None in it, and no copy into Python floats
        return float(np.percentile(values.astype(np.float64), q)) if values.size else None
    xs = [float(v) for v in values if v is not None]
    return float(np.percentile(xs, q)) if xs else None


def _f1_or_zero(t: DocTable, doc_type: str | None, failed_as_zero: bool) -> tuple[np.ndarray, np.ndarray]:
    """(selected documents, their F1: a failed one 0) of a type; failed ones only when they count."""
    ok = t.flags["ok"]
    sel = t.mask("doc_type", doc_type) & (ok | failed_as_zero)
    return sel, np.where(ok, t.numbers["doc_f1"], 0.0)[sel]


def doc_f1_values(rows: Documents, doc_type: str | None = None, failed_as_zero: bool = True) -> list[float]:
    """Document F1 of each document (of a type); a failed one is 0, or left out."""
    return _f1_or_zero(DocTable.of(rows), doc_type, failed_as_zero)[1].tolist()


def field_f1_values(rows: Documents, doc_type: str, name: str, failed_as_zero: bool = True) -> list[float]:
    """F1 of one field over the documents of a type whose ground truth has it."""
    t = DocTable.of(rows)
    j = t.field_column(name)
    if j is None:
        return []
    ok = t.flags["ok"]
    sel = t.mask("doc_type", doc_type) & ((t.field_flags[:, j] & IN_GT) != 0) & (ok | failed_as_zero)
    # a scored document without this field's score counts it missed
    return np.where(ok, np.nan_to_num(t.f1[:, j], nan=0.0), 0.0)[sel].tolist()


def hallucination_counts(rows: Documents, doc_type: str | None = None) -> tuple[int, int]:
    """(hallucinated, opportunities): fields whose ground truth is NOT_FOUND, in scored documents."""
    t = DocTable.of(rows)
    flags = t.field_flags[t.mask("doc_type", doc_type) & t.flags["ok"]]
    opp = (flags & GT_NOT_FOUND) != 0
    return int(((flags & HALLUCINATED) != 0)[opp].sum()), int(opp.sum())


@dataclass
class LatencyStats:
    n: int  # completed documents with a recorded latency
    missing: int  # completed documents without one (missing evidence)
    p50: float | None
    p95: float | None
    p99: float | None
    mean: float | None
    max: float | None
    values: Sequence[float] = field(default_factory=list, repr=False)  # array('d'): 8 bytes a value

    def get(self, pct: str) -> float | None:
        return getattr(self, pct)


def latency_stats(rows: Documents, doc_type: str | None = None) -> LatencyStats:
    """Client latency of the completed documents (of a type): percentiles, mean, max."""
    t = DocTable.of(rows)
    lat = t.numbers["latency_s"][t.mask("doc_type", doc_type) & t.flags["status_ok"]]
    recorded = ~np.isnan(lat)
    vals = lat[recorded]
    kept = array("d", vals.tobytes())
    return LatencyStats(len(vals), int((~recorded).sum()), *(percentile(vals, float(p[1:])) for p in PERCENTILES),
                        mean=math.fsum(kept) / len(kept) if len(kept) else None,
                        max=float(vals.max()) if len(vals) else None, values=kept)


def paired_f1(candidate: Documents, baseline: Documents, doc_type: str | None = None,
              failed_as_zero: bool = True) -> tuple[list[str], list[float], list[float]]:
    """Document F1 of both runs on the documents both have, in doc_id order."""
    def by_id(rows: Documents) -> tuple[np.ndarray, np.ndarray]:
        t = DocTable.of(rows)
        sel, f1 = _f1_or_zero(t, doc_type, failed_as_zero)
        ids = np.empty(int(sel.sum()), dtype=object)
        ids[:] = t.ids(sel)
        return ids, f1
    (ids_a, a), (ids_b, b) = by_id(candidate), by_id(baseline)
    ids, ia, ib = np.intersect1d(ids_a, ids_b, assume_unique=True, return_indices=True)
    return ids.tolist(), a[ia].tolist(), b[ib].tolist()


@dataclass
class Paired:
    """Candidate - baseline document F1 on the same documents: paired bootstrap and its verdict."""

    baseline: str
    n: int
    diff: float | None
    lo: float | None
    hi: float | None
    verdict: str  # superior | non-inferior | inconclusive | inferior | not measured
    margin: float
    candidate_mean: float | None = None
    baseline_mean: float | None = None


def paired_comparison(candidate: Documents, baseline: Documents, baseline_name: str, *,
                      margin: float, doc_type: str | None = None, failed_as_zero: bool = True,
                      n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> Paired:
    ids, a, b = paired_f1(candidate, baseline, doc_type, failed_as_zero)
    if not ids:
        return Paired(baseline_name, 0, None, None, None, "not measured", margin)
    diff, lo, hi = paired_bootstrap(a, b, n_boot=n_boot, seed=seed, level=level)
    return Paired(baseline_name, len(ids), diff, lo, hi, non_inferiority(lo, margin, hi), margin,
                  math.fsum(a) / len(a), math.fsum(b) / len(b))


# ---------------------------------------------------------------------------------------------
# aggregation
# ---------------------------------------------------------------------------------------------

@dataclass
class GroupStat:
    n: int  # scored documents (or fields)
    mean: float | None
    lo: float | None
    hi: float | None
    failed: int = 0


@dataclass
class RateStat:
    k: int  # events (hallucinations, failures)
    n: int  # opportunities
    rate: float | None
    lo: float | None  # Wilson interval
    hi: float | None


@dataclass
class FieldStat:
    field: str
    n: int
    mean_f1: float | None
    lo: float | None
    hi: float | None
    gt_not_found: int  # times the ground truth said NOT_FOUND
    hallucinated: int  # ... and a value was predicted anyway
    hallucination_rate: float | None  # hallucinated / gt_not_found
    gt_value: int  # times the ground truth had a value
    missed: int  # ... and NOT_FOUND was predicted
    wrong_value: int  # ... and a value scoring 0 was predicted (a confident wrong answer)
    wrong_value_rate: float | None  # wrong_value / gt_value


@dataclass
class Summary:
    documents: int
    scored: int
    failed: int
    failure_rate: float | None
    overall: GroupStat  # mean document F1 over scored documents
    overall_failed_as_zero: GroupStat  # failed documents counted as F1 = 0
    hallucination_rate: float | None  # all fields pooled
    wrong_value_rate: float | None
    fields: dict[str, FieldStat] = field(default_factory=dict)
    doc_types: dict[str, GroupStat] = field(default_factory=dict)
    tiers: dict[str, GroupStat] = field(default_factory=dict)
    hallucination: RateStat | None = None  # pooled, with its Wilson interval
    latency: dict[str, LatencyStats] = field(default_factory=dict)  # "all" and per document type

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _group(scores: list[float], failed: int, level: float) -> GroupStat:
    mean, lo, hi = mean_ci(scores, level, clip=(0.0, 1.0))
    return GroupStat(n=len(scores), mean=mean, lo=lo, hi=hi, failed=failed)


def _rate(k: int, n: int) -> float | None:
    return k / n if n else None


def rate_stat(k: int, n: int, level: float = 0.95) -> RateStat:
    rate, lo, hi = wilson_ci(k, n, level)
    return RateStat(k, n, rate, lo, hi)


def _groups(t: DocTable, category: str) -> dict[str, np.ndarray]:
    """Group name -> documents in it, for every name some document has (a missing value is "unknown")."""
    return t.groups(category, lambda v: str(v or "unknown"))


def aggregate(rows: Documents, level: float = 0.95) -> Summary:
    """Summarise one backend's run from its documents (doc_id, doc_type, tier, status, doc_f1,
    scores, response.latency_s). A document is scored when `row.ok`; every other one is failed."""
    t = DocTable.of(rows)
    ok = t.flags["ok"]
    f1 = t.numbers["doc_f1"]
    failed = int((~ok).sum())
    by_type = _groups(t, "doc_type")
    by_tier = _groups(t, "tier")
    fields = {}
    for j, name in enumerate(t.fields):  # a column at a time: no copy of the whole score matrix
        col = ok & ~np.isnan(t.f1[:, j])
        if not col.any():
            continue
        vals = t.f1[col, j]
        fl = t.field_flags[col, j]
        nf = (fl & GT_NOT_FOUND) != 0
        missed = (fl & MISSED) != 0
        gt_nf, gt_value = int(nf.sum()), int((~nf).sum())
        hall = int((nf & ((fl & HALLUCINATED) != 0)).sum())
        wrong = int((~nf & ~missed & (vals == 0.0)).sum())
        mean, lo, hi = mean_ci(vals.tolist(), level, clip=(0.0, 1.0))
        fields[name] = FieldStat(name, int(col.sum()), mean, lo, hi, gt_nf, hall, _rate(hall, gt_nf), gt_value,
                                 int((~nf & missed).sum()), wrong, _rate(wrong, gt_value))
    hall, opp = hallucination_counts(t)
    wrong = sum(x.wrong_value for x in fields.values())
    gt_value = sum(x.gt_value for x in fields.values())
    latency = {"all": latency_stats(t)}
    latency.update({name: latency_stats(t, name) for name in sorted(by_type)})

    def group(m: np.ndarray) -> GroupStat:
        return _group(f1[m & ok].tolist(), int((m & ~ok).sum()), level)

    return Summary(
        documents=len(t),
        scored=int(ok.sum()),
        failed=failed,
        failure_rate=_rate(failed, len(t)),
        overall=_group(f1[ok].tolist(), failed, level),
        overall_failed_as_zero=_group(np.where(ok, f1, 0.0).tolist(), failed, level),
        hallucination_rate=_rate(hall, opp),
        wrong_value_rate=_rate(wrong, gt_value),
        fields=dict(sorted(fields.items())),
        doc_types={name: group(m) for name, m in sorted(by_type.items())},
        tiers={name: group(m) for name, m in sorted(by_tier.items())},
        hallucination=rate_stat(hall, opp, level),
        latency=latency,
    )
