"""Scoring profiles (ground_truth/scoring_profiles.yaml): which reading of a prediction a score uses.

`incumbent` reproduces the incumbent pipeline's evaluator (tmnestor/LMM_POC,
common/evaluation_metrics.py `calculate_field_accuracy_f1` via common/extraction_evaluator.py),
quirks included; `exact` is migbench's strict reading. Each rule below is one key of the profile's
`rules`; the YAML carries a one-line note for every quirk. Rules a profile does not change keep the
comparators of migbench.scoring (NOT_FOUND rules, ANLS text, ids, booleans).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Literal

from migbench.catalog import load_model
from migbench.contracts import NOT_FOUND, FieldScore, UsageError
from migbench.ground_truth import ground_truth_dir
from migbench.normalize import (
    is_not_found,
    normalize_text,
    parse_amount,
    parse_date,
    parse_date_set,
)
from migbench.schema import Schema
from pydantic import BaseModel, ConfigDict, model_validator

DEFAULT_PROFILE = "incumbent"
PROFILE_NAMES = ("incumbent", "exact")


class Rules(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount_reading: Literal["digits_only", "migbench"]
    money_tolerance: Literal["relative", "cent"]
    scalar_dates: Literal["parsed"]
    date_wrong_year_credit: float = 0.0
    list_dates: Literal["positional_numbers", "parsed"]
    list_text_word_overlap: float | None = None
    list_text_edit_similarity: float | None = None
    list_word_split: Literal["whitespace", "words"] = "words"
    text_item_fields: list[str] = []
    pipe_means_list: bool = False
    single_item_lists_as_scalar: bool = False
    transaction_list_fields: list[str] = []
    bank_statement_debit_rows: bool = False
    bank_statement_sort_by_date: bool = False
    document_type_scored_when_classified: bool = False
    failed_documents: Literal["excluded", "zero"] = "zero"


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str
    rules: Rules
    quirks: dict[str, str] = {}

    @model_validator(mode="after")
    def _quirks_name_rules(self) -> Profile:
        unknown = [q for q in self.quirks if q not in Rules.model_fields]
        if unknown:
            raise ValueError(f"quirks name unknown rules {unknown}")
        return self


class ProfileSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int
    default: str
    profiles: dict[str, Profile]

    @model_validator(mode="after")
    def _default_known(self) -> ProfileSet:
        if self.default not in self.profiles:
            raise ValueError(f"default profile {self.default!r} is not defined")
        return self


def profiles_path() -> Path:
    return ground_truth_dir() / "scoring_profiles.yaml"


@cache
def load_profiles(path: str | None = None) -> ProfileSet:
    return load_model(ProfileSet, path or profiles_path())


def get_profile(name: str | Profile | None = None) -> Profile:
    """The named profile (default: the YAML's default). A clear usage error for an unknown name."""
    if isinstance(name, Profile):
        return name
    ps = load_profiles()
    name = name or ps.default
    if name not in ps.profiles:
        raise UsageError(f"unknown scoring profile {name!r}; known: {', '.join(ps.profiles)}")
    return ps.profiles[name]


def profile_names() -> list[str]:
    return list(load_profiles().profiles)


# ---------------------------------------------------------------------------------------------
# Comparators under a profile
# ---------------------------------------------------------------------------------------------

_MONTHS_IN_ORDER = (
    ("jan", "01"), ("january", "01"), ("feb", "02"), ("february", "02"), ("mar", "03"), ("march", "03"),
    ("apr", "04"), ("april", "04"), ("may", "05"), ("jun", "06"), ("june", "06"), ("jul", "07"),
    ("july", "07"), ("aug", "08"), ("august", "08"), ("sep", "09"), ("sept", "09"), ("september", "09"),
    ("oct", "10"), ("october", "10"), ("nov", "11"), ("november", "11"), ("dec", "12"), ("december", "12"),
)
_AMOUNT_JUNK = re.compile(r"[^\d.\-]")
_DIGITS = re.compile(r"\d+")


def read_amount(value: str, rules: Rules) -> Decimal | None:
    """An amount as the profile reads it; None when unreadable."""
    if rules.amount_reading == "migbench":
        return parse_amount(value)
    # the incumbent: float(re.sub(r"[^\d.-]", "", s)); anything float() refuses is unreadable
    s = _AMOUNT_JUNK.sub("", str(value))
    try:
        return Decimal(repr(float(s)))
    except ValueError:
        return None


def money_equal(expected: str, predicted: str, rules: Rules) -> bool | None:
    """None when the ground truth is unreadable as an amount (under migbench's reading)."""
    g = read_amount(expected, rules)
    if g is None:
        return None if rules.amount_reading == "migbench" else False
    p = read_amount(predicted, rules)
    if p is None:
        return False
    if rules.money_tolerance == "cent":
        return abs(p - g) < Decimal("0.005")
    tol = abs(g) * Decimal("0.01") if g != 0 else Decimal("0.01")
    return abs(p - g) <= tol


def parsed_date_score(expected: str, predicted: str, rules: Rules) -> float | None:
    """Day-first date sets, |E & G| / max(|E|, |G|); a single date with day and month right and the
    year wrong earns the profile's wrong-year credit (the incumbent's 0.8). None: no date in the truth."""
    from migbench.scoring import date_overlap

    score = date_overlap(expected, predicted)
    if score == 0.0 and rules.date_wrong_year_credit:
        g, p = parse_date_set(expected), parse_date_set(predicted)
        if len(g) == 1 and len(p) == 1 and g[0][:2] == p[0][:2] and g[0][2] != p[0][2]:
            return rules.date_wrong_year_credit
    return score


def _positional_parts(s: str) -> tuple[str | None, str | None, str | None] | None:
    low = s.lower()
    nums = _DIGITS.findall(s)
    month = next((num for name, num in _MONTHS_IN_ORDER if name in low), None)
    if len(nums) == 3:
        d, m, y = nums[0], nums[1], nums[2]
    elif len(nums) == 2 and month:
        d, m, y = nums[0], month, nums[1]
    elif len(nums) == 2:
        d, m, y = nums[0], None, nums[1]
    elif len(nums) == 1 and month:
        d, m, y = nums[0], month, None
    else:
        return None
    if y is not None and len(y) == 2:
        y = str(2000 + int(y)) if int(y) <= 50 else str(1900 + int(y))
    return d.zfill(2), (m.zfill(2) if m else None), y


def positional_date_match(expected: str, predicted: str) -> bool:
    """The incumbent's list-date match: numbers in order are day, month, year (ISO is misread)."""
    if expected.strip() == predicted.strip():
        return True
    e, p = _positional_parts(predicted), _positional_parts(expected)
    if e is None or p is None:
        return False
    if any(a is not None and b is not None and a != b for a, b in zip(e, p, strict=True)):
        return False
    return sum(1 for a, b in zip(e, p, strict=True) if a is not None and a == b) >= 2


def _edit_similarity(a: str, b: str) -> float:
    from migbench.scoring import levenshtein

    longest = max(len(a), len(b))
    return 1.0 if longest == 0 else 1 - levenshtein(a, b) / longest


def text_item_match(expected: str, predicted: str, rules: Rules) -> bool:
    e, p = expected.lower().strip(), predicted.lower().strip()
    if rules.list_text_word_overlap is None and rules.list_text_edit_similarity is None:
        return normalize_text(e) == normalize_text(p)  # exact: same text, case and spacing aside
    if rules.list_word_split == "whitespace":
        we, wp = set(e.split()), set(p.split())
    else:
        we, wp = set(re.findall(r"\w+", e)), set(re.findall(r"\w+", p))
    if not we or not wp:
        return e == p
    if rules.list_text_word_overlap is not None and len(we & wp) / len(we | wp) >= rules.list_text_word_overlap:
        return True
    return rules.list_text_edit_similarity is not None and _edit_similarity(e, p) >= rules.list_text_edit_similarity


def item_match(name: str, item_type: str, expected: str, predicted: str, rules: Rules, schema_list: bool) -> bool:
    if name in rules.text_item_fields or not schema_list:
        return text_item_match(expected, predicted, rules)
    # the incumbent types only its transaction lists (line-item money keeps the 1% rule)
    if rules.transaction_list_fields and name not in rules.transaction_list_fields and item_type != "monetary":
        return text_item_match(expected, predicted, rules)
    if item_type == "monetary":
        m = money_equal(expected, predicted, rules)
        # a ground-truth item that is no amount (a credit row's NOT_FOUND) must be said the same way
        return normalize_text(expected) == normalize_text(predicted) if m is None else m
    if item_type == "date":
        if rules.list_dates == "positional_numbers":
            return positional_date_match(expected, predicted)
        g = parse_date(expected)
        return g is not None and parse_date(predicted) == g
    from migbench.scoring import _item_match

    if item_type in ("id", "boolean"):
        return _item_match(item_type, expected, predicted)
    return text_item_match(expected, predicted, rules)


def _split(value: str, rules: Rules) -> list[str]:
    return [i.strip() for i in str(value).split("|") if i.strip()]


def compare_field_profiled(name: str, expected: object, predicted: object, schema: Schema,
                           profile: Profile) -> FieldScore:
    from migbench.scoring import anls, compare_field, prf

    rules = profile.rules
    exp = NOT_FOUND if expected is None else str(expected)
    pred = NOT_FOUND if predicted is None else str(predicted)
    ftype = schema.field_type(name)
    is_list = ftype == "list"
    exp_nf, pred_nf = is_not_found(exp), is_not_found(pred)
    if is_list:
        exp_nf = exp_nf or not _split(exp, rules)
        pred_nf = pred_nf or not _split(pred, rules)
    if exp_nf or pred_nf:
        return compare_field(name, exp, pred, schema)  # NOT_FOUND rules are shared by every profile

    piped = "|" in exp or "|" in pred
    list_path = is_list and (piped or not rules.single_item_lists_as_scalar)
    if list_path or (piped and rules.pipe_means_list):
        e_items, p_items = _split(exp, rules), _split(pred, rules)
        tp = fp = fn = 0
        item_type = schema.item_type(name)
        for k in range(max(len(e_items), len(p_items))):
            if k >= len(e_items):
                fp += 1
            elif k >= len(p_items):
                fn += 1
            elif item_match(name, item_type, e_items[k], p_items[k], rules, is_list):
                tp += 1
            else:
                fn += 1
        p, r, f = prf(tp, fp, fn)
        return FieldScore(name, exp, pred, f1=f, precision=p, recall=r)

    score: float | None
    if is_list:  # one item on each side, scored as a scalar (incumbent)
        if name in rules.transaction_list_fields:
            score = float(item_match(name, schema.item_type(name), exp, pred, rules, True))
        else:
            score = anls(exp, pred)
    elif ftype == "monetary":
        m = money_equal(exp, pred, rules)
        score = None if m is None else float(m)
    elif ftype == "date":
        score = parsed_date_score(exp, pred, rules)
    else:
        return compare_field(name, exp, pred, schema)
    if score is None:
        score = anls(exp, pred)
    return FieldScore(name, exp, pred, f1=score, precision=score, recall=score)


# ---------------------------------------------------------------------------------------------
# Whole-document preparation
# ---------------------------------------------------------------------------------------------

ROW_FIELDS = ("LINE_ITEM_DESCRIPTIONS", "TRANSACTION_DATES", "TRANSACTION_AMOUNTS_PAID")
PAID = "TRANSACTION_AMOUNTS_PAID"
DATES = "TRANSACTION_DATES"


def _rows(values: Mapping[str, str]) -> tuple[list[str], dict[str, list[str]]] | None:
    """The statement's rows (fields present with as many items as TRANSACTION_AMOUNTS_PAID)."""
    paid = values.get(PAID)
    if paid is None or is_not_found(paid):
        return None
    paid_items = [i.strip() for i in str(paid).split("|")]
    cols = {}
    for f in ROW_FIELDS:
        v = values.get(f)
        if v is None or is_not_found(v):
            continue
        items = [i.strip() for i in str(v).split("|")]
        if len(items) == len(paid_items):
            cols[f] = items
    return paid_items, cols


def debit_rows(values: Mapping[str, str], *, drop_credits: bool, sort_by_date: bool) -> dict[str, str]:
    """A bank statement's debit rows, sorted by date: the incumbent's view of a statement."""
    got = _rows(values)
    if got is None:
        return dict(values)
    paid, cols = got
    idx = list(range(len(paid)))
    if drop_credits:
        idx = [i for i in idx if not is_not_found(paid[i])]
    if sort_by_date and DATES in cols:
        def key(i: int) -> tuple[int, int, int, int]:
            d = parse_date(cols[DATES][i])
            return (0, d[2], d[1], d[0]) if d else (1, 0, 0, 0)
        idx = sorted(idx, key=key)  # stable: same-day rows keep their order
    out = dict(values)
    for f, items in cols.items():
        out[f] = " | ".join(items[i] for i in idx) if idx else NOT_FOUND
    return out


def score_document_profiled(ground_truth: Mapping[str, str], predicted: Mapping[str, str], schema: Schema,
                            profile: Profile, classified: bool = False) -> list[FieldScore]:
    rules = profile.rules
    gt, pred = dict(ground_truth), dict(predicted)
    is_statement = str(gt.get("DOCUMENT_TYPE", "")).strip().upper().replace(" ", "_") == "BANK_STATEMENT"
    if is_statement and (rules.bank_statement_debit_rows or rules.bank_statement_sort_by_date):
        kw = {"drop_credits": rules.bank_statement_debit_rows, "sort_by_date": rules.bank_statement_sort_by_date}
        gt, pred = debit_rows(gt, **kw), debit_rows(pred, **kw)
    count_type = classified and rules.document_type_scored_when_classified
    return [compare_field_profiled(name, exp, pred.get(name, NOT_FOUND), schema, profile)
            for name, exp in gt.items()
            if schema.is_scored(name) or (count_type and name == "DOCUMENT_TYPE")]


def profile_for(name: str | None) -> tuple[str, Profile]:
    """(name, profile) for a CLI/pytest option value; None means the default profile."""
    ps = load_profiles()
    name = name or ps.default
    return name, get_profile(name)


__all__ = ["DEFAULT_PROFILE", "Profile", "Rules", "compare_field_profiled", "debit_rows", "get_profile",
           "load_profiles", "profile_names", "score_document_profiled"]
