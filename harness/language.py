"""Words documents print, per language: labels for the OCR rules and month names for every date reader.

The lists live in harness/data/ocr_labels.yaml (one block per language, never per dataset) and are
validated here at load: a month number outside 1-12, an empty label or one month name that two
languages give different numbers fails at start-up with the key.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

LABELS_FILE = "ocr_labels.yaml"
CATEGORIES = ("total_strong", "total", "total_exclude", "tax", "cash", "change", "date_issue", "date",
              "date_other")


def _clean(words: list[str]) -> list[str]:
    out = [" ".join(str(w).split()) for w in words]
    if any(not w for w in out):
        raise ValueError("empty label")
    return out


class LanguageLabels(BaseModel):
    model_config = ConfigDict(extra="forbid")

    total_strong: list[str] = []
    total: list[str] = []
    total_exclude: list[str] = []
    tax: list[str] = []
    cash: list[str] = []
    change: list[str] = []
    date_issue: list[str] = []
    date: list[str] = []
    date_other: list[str] = []
    months: dict[int, list[str]]

    _labels = field_validator(*CATEGORIES)(classmethod(lambda cls, v: _clean(v)))

    @field_validator("months")
    @classmethod
    def _months(cls, v: dict[int, list[str]]) -> dict[int, list[str]]:
        if sorted(v) != list(range(1, 13)):
            raise ValueError(f"months must list 1 to 12 once each, got {sorted(v)}")
        for n, names in v.items():
            if not names or any(not str(x).strip() or not str(x).strip().isalpha() for x in names):
                raise ValueError(f"month {n}: names must be non-empty words, got {names}")
        return v


class OcrLabels(BaseModel):
    model_config = ConfigDict(extra="forbid")

    languages: dict[str, LanguageLabels]

    @model_validator(mode="after")
    def _one_number_per_month_name(self) -> OcrLabels:
        seen: dict[str, tuple[int, str]] = {}
        for lang, block in self.languages.items():
            for n, names in block.months.items():
                for name in names:
                    key = fold(name)
                    if key in seen and seen[key][0] != n:
                        raise ValueError(f"month name {name!r} is {n} in {lang} but {seen[key][0]} in {seen[key][1]}")
                    seen[key] = (n, lang)
        return self


def fold(word: str) -> str:
    """Lower case without accents: OCR and ASCII-only printers drop them ('Marz' is 'März')."""
    decomposed = unicodedata.normalize("NFKD", word.strip().lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


@cache
def labels() -> OcrLabels:
    from migbench.catalog import load_packaged

    return load_packaged(OcrLabels, LABELS_FILE)


@cache
def month_table() -> dict[str, int]:
    """Folded month name -> number, every language (validated: no name means two months)."""
    return {fold(name): n for block in labels().languages.values() for n, names in block.months.items()
            for name in names}


def words(category: str) -> list[str]:
    """Every language's labels of one category, longest first (so 'TOTAL TTC' is tried before 'TOTAL')."""
    if category not in CATEGORIES:
        raise KeyError(category)
    found = {w for block in labels().languages.values() for w in getattr(block, category)}
    return sorted(found, key=lambda w: (-len(w), w))


def _label_pattern(label: str) -> str:
    """One label as a regex on upper-cased text: spaces optional (OCR glues words), accents optional,
    not starting inside a word; a short label (BAR, TVA) must also end at a word's end."""
    body = r"\s*".join(re.escape(word) for word in fold(label).upper().split())
    end = r"(?![A-Z])" if len(label.replace(" ", "")) <= 4 else ""
    return rf"(?<![A-Z]){body}{end}"


@cache
def label_regex(*categories: str) -> re.Pattern[str]:
    """A regex matching any label of the categories, run on fold()-ed, upper-cased text."""
    pats = [_label_pattern(w) for c in categories for w in words(c)]
    return re.compile("|".join(pats) if pats else r"(?!x)x")


def fold_upper(text: str) -> str:
    """The form label_regex runs on: upper case, accents dropped."""
    return text.upper() if text.isascii() else fold(text).upper()
