"""Total cost per document with human review: which documents a person would see, and what that costs.

In production an extraction that fails a validation rule (ABN checksum, GST = 1/11 of the total,
line arithmetic) or misses a critical field goes to a person. `review_run` applies the routing
rules (data: harness/data/review_rules.yaml, or a team's own file) to a run's stored extractions
and measures, per run and per document type:

- the flagged rate (sent to review) and the straight-through rate (1 - flagged);
- the escaped-error rate: documents NOT flagged whose critical field is wrong against the ground
  truth (the errors review would not catch), over all documents;
- the total cost per document: model cost + flagged rate x review cost (+ escaped rate x the
  optional cost of an escaped error).

Computed once, in `migbench.analysis.analyse`; the suites, the JSON summary and the report read it.
No ground truth is used to flag (production has none); it is used only to judge escapes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from migbench.catalog import CatalogError, data_path, read_yaml
from migbench.consistency import RULES as VALIDATION_RULES
from migbench.contracts import DocResult, UsageError
from migbench.cost import DAYS_PER_MONTH
from migbench.doctable import IN_GT, PRED_VALUE, DocTable, Documents
from migbench.stats import RateStat, rate_stat
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

DEFAULT_RULES = "review_rules.yaml"

# The checks a rule may name: the validation rules on extracted fields, plus the two routing
# facts that need no arithmetic. A rule naming anything else is refused at load.
CHECKS: dict[str, str] = {
    "abn_checksum": "extracted ABN fails the ATO mod-89 checksum",
    "gst_one_eleventh": "extracted GST is not 1/11 of the GST-inclusive total",
    "line_arithmetic": "a line's quantity x unit price is not its line total",
    "lists_aligned": "the extracted line/transaction lists have different lengths",
    "critical_field_missing": "a critical field of the document type was not extracted",
    "extraction_failed": "the backend returned nothing usable (failed after retries)",
}
assert set(VALIDATION_RULES) <= set(CHECKS), "every validation rule must be nameable by a routing rule"


class ReviewRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    check: str
    doc_types: list[str] | None = None  # None: every document type
    fields: list[str] | None = None  # critical_field_missing only: these fields instead of the critical ones

    @field_validator("check")
    @classmethod
    def _known_check(cls, v: str) -> str:
        if v not in CHECKS:
            raise ValueError(f"unknown check {v!r} (known: {', '.join(CHECKS)})")
        return v

    @property
    def name(self) -> str:
        return self.check + (f"[{','.join(self.doc_types)}]" if self.doc_types else "")


class ReviewRules(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: Literal[1]
    currency: str = Field(min_length=1)
    review_cost: float = Field(ge=0, allow_inf_nan=False)
    escaped_error_cost: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    wrong_below: float = Field(default=1.0, gt=0.0, le=1.0)
    critical_fields: list[str] | None = None
    rules: list[ReviewRule] = Field(min_length=1)
    _file: str = PrivateAttr(default="")
    _sha256: str = PrivateAttr(default="")

    @field_validator("rules")
    @classmethod
    def _fields_only_for_missing(cls, v: list[ReviewRule]) -> list[ReviewRule]:
        for r in v:
            if r.fields is not None and r.check != "critical_field_missing":
                raise ValueError(f"rule {r.check}: 'fields' applies to critical_field_missing only")
        return v

    @property
    def file(self) -> str:
        return self._file

    @property
    def sha256(self) -> str:
        return self._sha256

    @property
    def label(self) -> str:
        return f"{self._file} (sha256 {self._sha256[:12]})" if self._sha256 else "(built in code)"

    def check_schema(self, schema: Any) -> None:
        """Refuse names the field schema does not know (a typo would silently never fire)."""
        problems = [f"unknown field {f!r}" for f in (self.critical_fields or []) if f not in schema.fields]
        for r in self.rules:
            problems += [f"rule {r.check}: unknown document type {t!r}" for t in r.doc_types or []
                         if t not in schema.document_types]
            problems += [f"rule {r.check}: unknown field {f!r}" for f in r.fields or [] if f not in schema.fields]
        if problems:
            raise CatalogError("; ".join(problems))


def load_review_rules(path: str | Path | None = None, schema: Any = None) -> ReviewRules:
    """The packaged routing rules, or a team's file; validated (and against `schema` when given).
    Every mistake is named on one line, prefixed with the flag that brought the file."""
    p = Path(path) if path else data_path(DEFAULT_RULES)
    where = f"--review-rules {p}" if path else str(p)
    try:
        rules = ReviewRules.model_validate(read_yaml(p))
    except CatalogError as exc:
        raise CatalogError(f"--review-rules: {exc}" if path else str(exc)) from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or '(file)'}: "
                             f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
        raise CatalogError(f"{where}: {problems}") from None
    rules._file, rules._sha256 = p.name, hashlib.sha256(p.read_bytes()).hexdigest()
    if schema is not None:
        try:
            rules.check_schema(schema)
        except CatalogError as exc:
            raise CatalogError(f"{where}: {exc}") from None
    return rules


# ------------------------------------------------------------------------------------ per document
@dataclass(frozen=True)
class DocReview:
    doc_id: str
    doc_type: str
    flagged: bool
    reasons: tuple[str, ...]  # the rules that fired (rule names)
    wrong_critical: tuple[str, ...]  # critical fields wrong against the ground truth
    escaped: bool  # not flagged, yet a critical field is wrong


class Verdicts:
    """Per-document review verdicts of a run, as masks over its DocTable (a million documents cost a
    few bytes each); `docs` / `doc(i)` give them as DocReview rows for the few who want rows."""

    def __init__(self, table: DocTable, fired: dict[str, np.ndarray], wrong: list[tuple[str, np.ndarray]]):
        self.table, self.fired, self.wrong = table, fired, wrong
        n = len(table)
        self.flagged = np.zeros(n, dtype=bool)
        for m in fired.values():
            self.flagged |= m
        self.wrong_any = np.zeros(n, dtype=bool)
        for _, m in wrong:
            self.wrong_any |= m
        self.escaped = ~self.flagged & self.wrong_any

    def doc(self, i: int) -> DocReview:
        code = int(self.table.codes["doc_type"][i])
        dt = self.table.categories["doc_type"][code] if code >= 0 else None
        return DocReview(self.table.doc_ids[i], str(dt), bool(self.flagged[i]),
                         tuple(name for name, m in self.fired.items() if m[i]),
                         tuple(f for f, m in self.wrong if m[i]), escaped=bool(self.escaped[i]))

    @property
    def docs(self) -> list[DocReview]:
        return [self.doc(i) for i in range(len(self.table))]


def _type_fields(t: DocTable, schema: Any) -> dict[int, set[str] | None]:
    """Per doc_type code, the fields the type has (None: a type the schema does not know: every field)."""
    out: dict[int, set[str] | None] = {-1: None}
    for code, dt in enumerate(t.categories["doc_type"]):
        out[code] = set(schema.fields_for(dt)) if dt in schema.document_types else None
    return out


def _applies(t: DocTable, has: dict[int, set[str] | None], name: str) -> np.ndarray:
    """Documents whose type has field `name`."""
    codes = [c for c, fields in has.items() if fields is None or name in fields]
    return np.isin(t.codes["doc_type"], codes)


def review_table(rows: Documents, rules: ReviewRules, critical: Sequence[str], schema: Any) -> Verdicts:
    """Which rules fire on each document's extraction, and where an error escaped them."""
    t = DocTable.of(rows)
    n = len(t)
    has = _type_fields(t, schema)
    done = t.flags["status_ok"]

    def value(name: str) -> np.ndarray:  # the extraction holds a value for the field
        j = t.field_column(name)
        return np.zeros(n, dtype=bool) if j is None else (t.field_flags[:, j] & PRED_VALUE) != 0

    fired: dict[str, np.ndarray] = {}
    for rule in rules.rules:
        if rule.check == "extraction_failed":
            fires = ~done
        elif rule.check == "critical_field_missing":
            fires = np.zeros(n, dtype=bool)
            for f in rule.fields if rule.fields is not None else critical:
                fires |= _applies(t, has, f) & ~value(f)
        else:
            check = t.checks.get(rule.check)
            fires = np.zeros(n, dtype=bool) if check is None else check == 0  # -1: the rule does not apply
        if rule.doc_types is not None:
            fires = fires & np.isin(t.codes["doc_type"], [c for c, dt in enumerate(t.categories["doc_type"])
                                                          if dt in rule.doc_types])
        fired[rule.name] = fired[rule.name] | fires if rule.name in fired else fires
    wrong = []
    for f in critical:
        j = t.field_column(f)
        if j is None:  # no document's ground truth has it
            wrong.append((f, np.zeros(n, dtype=bool)))
            continue
        f1 = np.nan_to_num(t.f1[:, j], nan=0.0)
        wrong.append((f, ((t.field_flags[:, j] & IN_GT) != 0) & _applies(t, has, f)
                      & (~done | (f1 < rules.wrong_below))))
    return Verdicts(t, fired, wrong)


def review_document(row: DocResult, rules: ReviewRules, critical: Sequence[str], schema: Any) -> DocReview:
    """Which rules fire on one document's extraction, and whether an error escaped them."""
    return review_table([row], rules, critical, schema).doc(0)


# --------------------------------------------------------------------------------------- per run
@dataclass
class TypeReview:
    documents: int
    flagged: int
    escaped: int
    flagged_rate: float | None
    escaped_rate: float | None


@dataclass
class ReviewSummary:
    rules_file: str
    rules_sha256: str
    currency: str
    review_cost: float  # per flagged document
    escaped_error_cost: float | None  # per escaped error; None: not costed
    documents: int
    flagged: RateStat  # flagged / documents, Wilson interval
    straight_through_rate: float | None
    escaped: RateStat  # escaped / documents, Wilson interval
    caught: int  # flagged documents that did have a wrong critical field
    wrong: int  # documents with a wrong critical field (caught + escaped)
    by_rule: dict[str, int]  # documents each rule fired on (a document can trip several)
    by_doc_type: dict[str, TypeReview]
    model_cost_per_doc: float | None  # the run's model cost (migbench.cost.RunCost.per_doc)
    review_cost_per_doc: float | None  # flagged rate x review cost
    escaped_cost_per_doc: float | None  # escaped rate x escaped-error cost; None: not costed
    total_per_doc: float | None  # model + review (+ escaped); None when the model cost is not measured
    verdicts: Verdicts | None = field(default=None, repr=False, compare=False)

    @property
    def docs(self) -> list[DocReview]:
        """Per-document verdicts as rows (built on demand from the masks)."""
        return self.verdicts.docs if self.verdicts is not None else []

    @property
    def catch_rate(self) -> float | None:
        """Share of the documents with a wrong critical field that review would see."""
        return self.caught / self.wrong if self.wrong else None

    def monthly(self, model_monthly: float | None, docs_per_day: float) -> float | None:
        """Model cost per month (a RunCost.monthly figure) plus the review (and escape) cost of the volume."""
        if model_monthly is None or self.review_cost_per_doc is None:
            return None
        per_doc = self.review_cost_per_doc + (self.escaped_cost_per_doc or 0.0)
        return model_monthly + per_doc * docs_per_day * DAYS_PER_MONTH

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures (per-document verdicts left out: they are in the store's rows)."""
        from dataclasses import asdict, replace

        out = asdict(replace(self, verdicts=None))
        out.pop("verdicts")
        out["catch_rate"] = self.catch_rate
        return out


def review_run(rows: Documents, rules: ReviewRules, critical: Sequence[str], schema: Any, *,
               model_cost_per_doc: float | None, currency: str | None = None,
               level: float = 0.95) -> ReviewSummary:
    """Flagged, straight-through and escaped-error rates of one run, and its total cost per document.

    `critical`: the critical fields (the rules file's own, else the caller's: the thresholds');
    `currency`: the pricing catalog's, which the review prices must be in."""
    if currency is not None and currency != rules.currency:
        raise UsageError(f"review rules {rules.label} price reviews in {rules.currency}, "
                         f"the pricing catalog in {currency}: use one currency")
    critical = list(rules.critical_fields if rules.critical_fields is not None else critical)
    v = review_table(rows, rules, critical, schema)
    t = v.table
    n = len(t)
    flagged, escaped = int(v.flagged.sum()), int(v.escaped.sum())
    caught = int((v.flagged & v.wrong_any).sum())
    by_rule: dict[str, int] = {r.name: int(v.fired[r.name].sum()) for r in rules.rules}

    def rate(k: int, m: int) -> float | None:
        return k / m if m else None

    by_type = {}
    for name, m in sorted(t.groups("doc_type", str).items()):  # keyed as DocReview names types
        k, f, e = int(m.sum()), int((v.flagged & m).sum()), int((v.escaped & m).sum())
        by_type[name] = TypeReview(k, f, e, rate(f, k), rate(e, k))
    f_rate, e_rate = rate(flagged, n), rate(escaped, n)
    review_per_doc = None if f_rate is None else f_rate * rules.review_cost
    escaped_per_doc = (None if e_rate is None or rules.escaped_error_cost is None
                       else e_rate * rules.escaped_error_cost)
    total = (None if model_cost_per_doc is None or review_per_doc is None
             else model_cost_per_doc + review_per_doc + (escaped_per_doc or 0.0))
    return ReviewSummary(
        rules_file=rules.file, rules_sha256=rules.sha256, currency=rules.currency, review_cost=rules.review_cost,
        escaped_error_cost=rules.escaped_error_cost, documents=n, flagged=rate_stat(flagged, n, level),
        straight_through_rate=None if f_rate is None else 1.0 - f_rate, escaped=rate_stat(escaped, n, level),
        caught=caught, wrong=caught + escaped, by_rule=by_rule, by_doc_type=by_type,
        model_cost_per_doc=model_cost_per_doc, review_cost_per_doc=review_per_doc,
        escaped_cost_per_doc=escaped_per_doc, total_per_doc=total, verdicts=v)


# ------------------------------------------------------------------------------------ report view
def review_section(views: Sequence[dict[str, Any]], volumes: Sequence[int]) -> dict[str, Any]:
    """The report's "total cost with review" section from its run views (migbench.report_data):
    per run the review figures, the monthly projections with review beside the model-only ones,
    the cost/accuracy frontier on the total, and whether each paired comparison is big enough."""
    from markupsafe import Markup
    from migbench import svg

    rows, rules, power = [], [], []
    for v in views:
        a = v["analysis"]
        r: ReviewSummary | None = a.review
        if r is not None:
            monthly = {}
            for vol in volumes:
                model = v["monthly"][vol]
                if model is None and a.cost.per_doc == 0:  # no marginal price (own CPU): nothing a month
                    model = 0.0
                monthly[vol] = {"model": model, "total": r.monthly(model, vol)}
            rows.append({"v": v, "r": r, "catch_rate": r.catch_rate, "monthly": monthly})
            rules += [k for k in r.by_rule if k not in rules]
        verdicts = {"all": a.paired.verdict if a.paired is not None else None}
        verdicts.update({x.gate_id.rsplit("/", 1)[-1]: (x.detail or {}).get("verdict")
                         for x in a.gates if x.kind == "non_inferiority" and "/" in x.gate_id})
        for p in a.power:
            power.append({"v": v, "plan": p, "verdict": verdicts.get(p.doc_type)})
    pts = [svg.Point(x["v"]["label"], x["r"].total_per_doc, x["v"]["summary"].overall_failed_as_zero.mean,
                     x["v"]["latency"]["p95"], muted=x["v"]["emulated"])
           for x in rows if x["r"].total_per_doc is not None
           and x["v"]["summary"].overall_failed_as_zero.mean is not None]
    for pt in svg.pareto_front([pt for pt in pts if not pt.muted]):
        pt.on_frontier = True
    first = rows[0]["r"] if rows else None
    # svg.scatter escapes every text it writes, so its output is markup, not data.
    chart = Markup(svg.scatter(pts, title="accuracy vs total cost per document, review included "
                                          "(marker area: p95 latency)",
                               x_label=f"total cost per document ({first.currency if first else ''})",
                               y_label="document F1 (failed = 0)")) if pts else None
    return {"rows": rows, "rules": rules, "power": power, "chart": chart, "first": first,
            "same_rules": len({x["r"].rules_sha256 for x in rows}) <= 1, "checks": CHECKS}
