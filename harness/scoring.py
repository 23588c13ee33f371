"""The incumbent's per-field comparators and position-aware F1 (tmnestor/LMM_POC,
`common/evaluation_metrics.py`).

Per field, with the schema's field type:
- NOT_FOUND rules first: both NOT_FOUND -> 1; GT NOT_FOUND but a value -> 0 (hallucinated);
  GT value but NOT_FOUND -> 0 (missed). In both failure cases precision = recall = f1 = 0 and the
  flag on the FieldScore says which failure it was.
- monetary: 1 if |pred - gt| <= 1% of |gt| (0.01 absolute when gt is 0), else 0.
- date: both sides read day-first into sets of (d, m, y); score |E & G| / max(|E|, |G|).
- id: normalised (labels, spaces, dashes stripped) exact match.
- boolean: yes/true/1 vs no/false/0 exact.
- text: ANLS, s = 1 - Levenshtein / max length on lower-cased text; s if s >= 0.5 else 0.
- list: items at the same position compared by the item type (money 1%, dates fuzzy, text word
  overlap (Jaccard) >= 0.75); match = TP, wrong item = FN, extra = FP, missing = FN.
Scalar fields report precision = recall = f1 = the score.

When the ground truth itself cannot be read as its type (e.g. an amount column holding words), the
comparison falls back to ANLS on the raw text rather than scoring every prediction 0.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from decimal import Decimal

from migbench.contracts import NOT_FOUND, FieldScore
from migbench.normalize import (
    is_not_found,
    normalize_id,
    normalize_text,
    parse_amount,
    parse_bool,
    parse_date,
    parse_date_set,
)
from migbench.schema import Schema, load_schema
from rapidfuzz.distance import Levenshtein

MONEY_REL_TOL = Decimal("0.01")
MONEY_ZERO_TOL = Decimal("0.01")
ANLS_THRESHOLD = 0.5
WORD_OVERLAP_THRESHOLD = 0.75


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert, delete, substitute all cost 1), computed by rapidfuzz."""
    return Levenshtein.distance(a, b)


def anls(expected: str, predicted: str, threshold: float = ANLS_THRESHOLD) -> float:
    """Normalised Levenshtein similarity 1 - distance / longer length, zeroed below the threshold
    (0.5 as the incumbent). rapidfuzz's normalized_similarity is exactly that ratio and its
    score_cutoff returns 0 below the threshold."""
    e, p = normalize_text(expected), normalize_text(predicted)
    if not e and not p:
        return 1.0
    return Levenshtein.normalized_similarity(e, p, score_cutoff=threshold)


def money_match(expected: str, predicted: str) -> bool | None:
    """True/False within 1% of the ground truth; None when the ground truth is not an amount."""
    g = parse_amount(expected)
    if g is None:
        return None
    p = parse_amount(predicted)
    if p is None:
        return False
    tol = abs(g) * MONEY_REL_TOL if g != 0 else MONEY_ZERO_TOL
    return abs(p - g) <= tol


def date_overlap(expected: str, predicted: str) -> float | None:
    """|E & G| / max(|E|, |G|) over day-first date sets; None when the ground truth has no date."""
    g = set(parse_date_set(expected))
    if not g:
        return None
    e = set(parse_date_set(predicted))
    if not e:
        return 0.0
    return len(e & g) / max(len(e), len(g))


def _words(s: str) -> set[str]:
    return set(re.findall(r"\w+", s.lower()))


def word_overlap_match(expected: str, predicted: str,
                       threshold: float = WORD_OVERLAP_THRESHOLD) -> bool:
    """Jaccard overlap of the word sets >= threshold (exact text when either has no words)."""
    we, wp = _words(expected), _words(predicted)
    if not we or not wp:
        return normalize_text(expected) == normalize_text(predicted)
    return len(we & wp) / len(we | wp) >= threshold


def _item_match(item_type: str, expected: str, predicted: str) -> bool:
    if item_type == "monetary":
        got = money_match(expected, predicted)
    elif item_type == "date":
        g = parse_date(expected)
        got = None if g is None else parse_date(predicted) == g
    elif item_type == "id":
        got = normalize_id(expected) == normalize_id(predicted)
    elif item_type == "boolean":
        g = parse_bool(expected)
        got = None if g is None else parse_bool(predicted) == g
    else:
        got = word_overlap_match(expected, predicted)
    if got is None:  # ground-truth item not readable as its type
        got = normalize_text(expected) == normalize_text(predicted)
    return got


def split_list(value: str) -> list[str]:
    """' | '-joined list to items; blank items dropped."""
    return [item.strip() for item in str(value).split("|") if item.strip()]


def list_counts(expected: str, predicted: str, item_type: str) -> tuple[int, int, int]:
    """(TP, FP, FN) of the position-aware list comparison."""
    e_items, p_items = split_list(expected), split_list(predicted)
    tp = fp = fn = 0
    for k in range(max(len(e_items), len(p_items))):
        if k >= len(e_items):
            fp += 1  # extra item
        elif k >= len(p_items):
            fn += 1  # missing item
        elif _item_match(item_type, e_items[k], p_items[k]):
            tp += 1
        else:
            fn += 1  # wrong item at this position
    return tp, fp, fn


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def _scalar(name: str, expected: str, predicted: str, score: float) -> FieldScore:
    return FieldScore(name, expected, predicted, f1=score, precision=score, recall=score)


def compare_field(name: str, expected: object, predicted: object,
                  schema: Schema | None = None, profile: str | None = None) -> FieldScore:
    """Score one field the incumbent's way. Never raises on odd strings.

    Without a profile: migbench's base comparators (above). With one (ground_truth/
    scoring_profiles.yaml: 'incumbent', 'exact'), that profile's reading (migbench.scoring_profiles).
    """
    schema = schema or load_schema()
    if profile is not None:
        from migbench.scoring_profiles import compare_field_profiled, get_profile

        return compare_field_profiled(name, expected, predicted, schema, get_profile(profile))
    exp = NOT_FOUND if expected is None else str(expected)
    pred = NOT_FOUND if predicted is None else str(predicted)
    exp_nf, pred_nf = is_not_found(exp), is_not_found(pred)
    ftype = schema.field_type(name)
    if ftype == "list":
        # a list of nothing (' | ') is NOT_FOUND too
        exp_nf = exp_nf or not split_list(exp)
        pred_nf = pred_nf or not split_list(pred)
    if exp_nf and pred_nf:
        return _scalar(name, exp, pred, 1.0)
    if exp_nf:
        return FieldScore(name, exp, pred, 0.0, 0.0, 0.0, hallucinated=True)
    if pred_nf:
        return FieldScore(name, exp, pred, 0.0, 0.0, 0.0, missed=True)

    if ftype == "list":
        p, r, f = prf(*list_counts(exp, pred, schema.item_type(name)))
        return FieldScore(name, exp, pred, f1=f, precision=p, recall=r)
    score: float | None
    if ftype == "monetary":
        m = money_match(exp, pred)
        score = None if m is None else float(m)
    elif ftype == "date":
        score = date_overlap(exp, pred)
    elif ftype == "id":
        score = float(normalize_id(exp) == normalize_id(pred))
    elif ftype == "boolean":
        g = parse_bool(exp)
        score = None if g is None else float(parse_bool(pred) == g)
    else:
        score = anls(exp, pred)
    if score is None:  # ground truth unreadable as its type
        score = anls(exp, pred)
    return _scalar(name, exp, pred, score)


def score_document(ground_truth: Mapping[str, str], predicted: Mapping[str, str],
                   schema: Schema | None = None, profile: str | None = "incumbent", *,
                   classified: bool = False) -> list[FieldScore]:
    """Score the scored fields present in the ground truth; a field the prediction lacks is NOT_FOUND.

    profile: a scoring profile (default 'incumbent', comparable with the team's history); None for
    the base comparators alone. classified: the document type was predicted, not given (the
    incumbent then scores DOCUMENT_TYPE too).
    """
    schema = schema or load_schema()
    if profile is not None:
        from migbench.scoring_profiles import get_profile, score_document_profiled

        return score_document_profiled(ground_truth, predicted, schema, get_profile(profile), classified)
    return [compare_field(name, exp, predicted.get(name, NOT_FOUND), schema)
            for name, exp in ground_truth.items() if schema.is_scored(name)]


def document_f1(scores: Iterable[FieldScore]) -> float | None:
    """Mean field F1; None when nothing was scored."""
    values = [s.f1 for s in scores]
    return sum(values) / len(values) if values else None
