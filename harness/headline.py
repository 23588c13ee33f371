"""Document-F1 headlines as the incumbent reports them, and honestly beside them.

The incumbent (tmnestor/LMM_POC stages/evaluate.py) prints the mean and the median document F1 over
the documents it could score, leaving failed documents out. migbench gives both readings, each
labelled: failed documents excluded (comparable with the incumbent's figures) and failed documents
counted as 0 (what a user of the system gets).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

EXCLUDED_LABEL = "failed documents excluded (as the incumbent reports)"
AS_ZERO_LABEL = "failed documents counted as 0"


@dataclass(frozen=True)
class Headline:
    profile: str | None
    n_documents: int  # scored + failed
    n_scored: int
    n_failed: int
    mean_excluded: float | None  # over scored documents only
    median_excluded: float | None
    mean_as_zero: float | None  # failed documents scored 0
    median_as_zero: float | None

    def lines(self) -> list[str]:
        def fmt(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.3f}"

        head = f"document F1 ({self.profile} scoring)" if self.profile else "document F1"
        return [
            (f"{head}, {EXCLUDED_LABEL}: mean {fmt(self.mean_excluded)}, median {fmt(self.median_excluded)}"
            f" over {self.n_scored} documents"),
            (f"{head}, {AS_ZERO_LABEL}: mean {fmt(self.mean_as_zero)}, median {fmt(self.median_as_zero)}"
            f" over {self.n_documents} documents ({self.n_failed} failed)"),
        ]


def _get(doc: Any, key: str) -> Any:
    return doc[key] if isinstance(doc, dict) else getattr(doc, key)


def headline_f1(docs: Iterable[Any], profile: str | None = None) -> Headline:
    """Mean and median document F1 of a run's documents (StoredDocument/DocResult rows or dicts).

    A document counts as failed when its status is not 'ok'; an ok document with no scored field
    (doc_f1 None) counts in neither reading.
    """
    scored: list[float] = []
    failed = 0
    for d in docs:
        if _get(d, "status") != "ok":
            failed += 1
        elif _get(d, "doc_f1") is not None:
            scored.append(float(_get(d, "doc_f1")))
    return headline_of(scored, failed, profile)


def headline_of(scored: list[float], failed: int, profile: str | None = None) -> Headline:
    """The headline of a run whose completed documents scored `scored` and `failed` more failed."""
    with_zero = scored + [0.0] * failed

    def mean(v: list[float]) -> float | None:
        return statistics.fmean(v) if v else None

    def median(v: list[float]) -> float | None:
        return statistics.median(v) if v else None

    return Headline(profile, len(with_zero), len(scored), failed, mean(scored), median(scored),
                    mean(with_zero), median(with_zero))
