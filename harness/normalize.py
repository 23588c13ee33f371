"""Value normalisation for scoring and parsing: amounts, dates, ids, booleans, text, NOT_FOUND.

Pure functions, no I/O. Every parser returns None for "cannot read this" rather than raising, so
the scorer can decide what an unreadable value is worth. The regexes are all bounded (no nested
quantifiers) so that megabyte inputs stay linear.
"""

from __future__ import annotations

import datetime as _dt
import functools
import re
from decimal import Decimal, InvalidOperation

# ---------------------------------------------------------------------------------------------
# NOT_FOUND synonyms
# ---------------------------------------------------------------------------------------------

# Compared after lower-casing, replacing "_" by " ", collapsing spaces and trimming punctuation.
_NOT_FOUND_WORDS = frozenset(
    {
        "", "none", "null", "nil", "nan", "n/a", "na", "n.a", "n a", "not found", "notfound",
        "not available", "not present", "not applicable", "unknown", "-", "--", "---", "—", "–",
        "not visible", "not provided", "not stated", "not specified", "not shown", "not listed",
        "not given", "not mentioned", "not detected", "not legible", "not readable", "illegible",
        "unreadable", "missing", "no data", "undefined", "[]", "{}", "not found in document",
        "not found in the document", "not present in document", "not present in the document",
        "not visible in document", "not visible in the document", "not applicable (n/a)",
    }
)
_NF_TRIM = " \t\r\n.*`'\"()[]<>:"


def is_not_found(value: object) -> bool:
    """True for None and every way a model or a CSV says "no value"."""
    if value is None:
        return True
    s = str(value)
    if len(s) > 64:  # no synonym is this long; avoids work on big blobs
        return False
    s = " ".join(s.replace("_", " ").lower().split())
    if s in _NOT_FOUND_WORDS:
        return True
    return s.strip(_NF_TRIM) in _NOT_FOUND_WORDS


# ---------------------------------------------------------------------------------------------
# Amounts
# ---------------------------------------------------------------------------------------------

# Currency codes and symbols a printed amount may carry (dropped before reading the number).
CURRENCY_CODES = ("AUD", "USD", "MYR", "NZD", "SGD", "EUR", "GBP", "INR", "CHF", "CAD", "HKD", "JPY", "CNY",
                  "IDR", "PHP", "THB", "SEK", "NOK", "DKK", "PLN", "CZK", "ZAR", "RM", "RS", "RP", "KR", "A$",
                  "US$", "NZ$", "S$", "HK$", "C$", "R$")
CURRENCY_SYMBOLS = "$€£¥₹₩₱฿₫"
_CURRENCY = re.compile(
    r"(?i)(?<![a-z])(?:" + "|".join(re.escape(c) for c in CURRENCY_CODES) + r")(?![a-z])\.?|["
    + CURRENCY_SYMBOLS + "]")
_DRCR = re.compile(r"(?i)\s*\b(?:cr|dr)\.?\s*$")
# One number: digits with optional group separators (, . space apostrophe) and a decimal part.
_NUMBER = re.compile(r"\d(?:[\d,.'\u00a0\u202f]|[ ](?=\d{3}(?!\d)))*")


def _resolve_separators(tok: str) -> str | None:
    """Turn '1.234,56' / '1,234.56' / '1 234,5' / '12,50' into a plain '1234.56'."""
    tok = re.sub(r"[ '\u00a0\u202f]", "", tok).rstrip(".,")
    if not tok:
        return None
    has_c, has_d = "," in tok, "." in tok
    if has_c and has_d:
        dec = "," if tok.rfind(",") > tok.rfind(".") else "."
        thou = "." if dec == "," else ","
        whole, _, frac = tok.rpartition(dec)
        if dec in whole:
            return None
        tok = whole.replace(thou, "") + "." + frac
    elif has_c:
        parts = tok.split(",")
        if len(parts) > 2 or len(parts[1]) == 3:
            # '1,234' and '1,234,567' are thousands; decimals carry one or two digits
            if any(len(p) != 3 for p in parts[1:]):
                return None
            tok = "".join(parts)
        else:
            tok = parts[0] + "." + parts[1]
    elif has_d and tok.count(".") > 1:
        parts = tok.split(".")
        if any(len(p) != 3 for p in parts[1:]):
            return None
        tok = "".join(parts)
    return tok


def _negative_sign(before: str) -> bool:
    """A minus or '(' that belongs to the number, not a dash in 'Total - $5.00'."""
    b = before.rstrip()
    if b.endswith("("):
        return True
    if not b.endswith(("-", "−")):
        return False
    rest = b[:-1]
    # a lone sign, or a sign glued to the number with no word just before it
    return not rest.strip() or (b == before and not rest[-1:].isalnum())


def parse_amount(value: object) -> Decimal | None:
    """'$1,234.50' -> Decimal('1234.50'). Negative for '-12', '(12.00)', '12.00-'.

    Currency symbols/codes ($, A$, AUD, RM, ...) and spaces are ignored. 'CR'/'DR' markers are
    dropped without changing the sign: bank-statement fields in this schema hold magnitudes
    (amount paid), and the column already says which way the money moved.
    Returns None when there is no number or the separators are contradictory.
    """
    if value is None:
        return None
    s = str(value)
    if is_not_found(s) or len(s) > 200:
        return None
    s = _DRCR.sub("", s.strip())
    s = _CURRENCY.sub("", s).strip()
    m = _NUMBER.search(s)
    if not m:
        return None
    before, after = s[: m.start()], s[m.end():]
    neg = _negative_sign(before) or after.startswith(("-", "−"))
    plain = _resolve_separators(m.group(0))
    if plain is None:
        return None
    try:
        amount = Decimal(plain)
    except InvalidOperation:
        return None
    return -amount if neg and amount != 0 else amount


def format_amount(amount: Decimal | float, currency: str = "$") -> str:
    """Canonical printed form used by renderers: '$1234.50', '-$12.00'; a code is spaced ('EUR 12.00')
    and '' prints the bare number. The number always has a '.' decimal and no groups, so every
    amount reader (including digits-only ones) reads it back."""
    d = Decimal(str(amount)).quantize(Decimal("0.01"))
    sign, body = ("-", -d) if d < 0 else ("", d)
    if currency and currency[-1].isalpha():
        currency += " "
    return f"{sign}{currency}{body}"


def normalize_amount(value: object) -> str | None:
    a = parse_amount(value)
    return None if a is None else format_amount(a)


# ---------------------------------------------------------------------------------------------
# Dates
# ---------------------------------------------------------------------------------------------

_SEP = r"[\s\-/.,]{0,4}"
# A 4-digit year directly followed by ':' is a 2-digit year glued to a time ('25.04.2009:37' is
# 25.04.20 09:37); a day followed by 'hh:' is a day glued to a time ('2016/05/0114:11:20').
_YEAR = r"(\d{4}(?!:\d)|\d{2})"
_ISO = re.compile(r"(?<!\d)(\d{4})[-/.](\d{1,2})[-/.](\d{2}(?=\d{1,2}[:.]\d{2})|\d{1,2}(?!\d{2}))")
# Day-first numeric; the year alternation takes 4 digits first so '25/12/201814:32' reads 2018.
_DMY = re.compile(r"(?<!\d)(\d{1,2})\s{0,2}[-/.]\s{0,2}(\d{1,2})\s{0,2}[-/.]\s{0,2}" + _YEAR)
_COMPACT = re.compile(r"(?<!\d)(\d{8})(?!\d)")


@functools.cache
def _month_patterns() -> tuple[dict[str, int], re.Pattern[str], re.Pattern[str]]:
    """Month names of every language in harness/data/ocr_labels.yaml (loaded on first use, so importing
    this module reads no file): the table and the two month-name date patterns built from it."""
    from migbench.language import month_table

    table = month_table()
    names = set(table)
    names |= {n for n in _raw_month_names()}  # printed with accents as well as without
    mon = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    d_mon_y = re.compile(
        rf"(?i)(?<!\d)(\d{{1,2}})(?:st|nd|rd|th|er|\.)?{_SEP}(?:of\s{{1,3}}|de\s{{1,3}})?({mon})(?![^\W\d_])\.?"
        rf"{_SEP}(?:de\s{{1,3}})?{_YEAR}")
    mon_d_y = re.compile(
        rf"(?i)(?<![^\W\d_])({mon})(?![^\W\d_])\.?{_SEP}(\d{{1,2}})(?:st|nd|rd|th)?(?!\d){_SEP}{_YEAR}")
    return table, d_mon_y, mon_d_y


def _raw_month_names() -> set[str]:
    from migbench.language import labels

    return {name.lower() for block in labels().languages.values() for names in block.months.values()
            for name in names}


def month_number(word: str) -> int | None:
    """'Mar' / 'MARCH' / 'sept' / 'maart' / 'März' -> 3 / 3 / 9 / 3 / 3; None when the word is not a
    month name in any language of the labels file. The OCR rules read month names through this, so
    one table serves every date reader."""
    from migbench.language import fold

    return _month_patterns()[0].get(fold(word))


def _year(text: str) -> int:
    y = int(text)
    if len(text) <= 2:
        # POSIX strptime pivot: 00-68 -> 2000s, 69-99 -> 1900s (business documents are recent)
        return 2000 + y if y <= 68 else 1900 + y
    return y


def _valid(d: int, m: int, y: int) -> tuple[int, int, int] | None:
    if not 1900 <= y <= 2099:
        return None
    try:
        _dt.date(y, m, d)
    except ValueError:
        return None
    return (d, m, y)


def _dmy(d: str, m: str, y: str) -> tuple[int, int, int] | None:
    dd, mm = int(d), int(m)
    if len(y) == 4 and not 1900 <= int(y) <= 2099:
        return None
    yy = _year(y)
    got = _valid(dd, mm, yy)
    if got is None and mm > 12 and dd <= 12:
        got = _valid(mm, dd, yy)  # unambiguous month-first (US) date: 12/25/2018
    return got


def _candidates(s: str) -> list[tuple[int, int, tuple[int, int, int]]]:
    """All readable dates in s as (start, end, (d, m, y)), sorted by position."""
    found: list[tuple[int, int, tuple[int, int, int]]] = []

    def add(m: re.Match, date: tuple[int, int, int] | None) -> None:
        if date is not None:
            found.append((m.start(), m.end(), date))

    for m in _ISO.finditer(s):
        add(m, _valid(int(m.group(3)), int(m.group(2)), int(m.group(1))))
    for m in _DMY.finditer(s):
        date = _dmy(*m.groups())
        if date is None and len(m.group(3)) == 4:
            # '25/12/1814:32': a 2-digit year glued to a time
            date = _dmy(m.group(1), m.group(2), m.group(3)[:2])
        add(m, date)
    _, d_mon_y, mon_d_y = _month_patterns()
    for m in d_mon_y.finditer(s):
        add(m, _valid(int(m.group(1)), month_number(m.group(2)), _year(m.group(3))))
    for m in mon_d_y.finditer(s):
        add(m, _valid(int(m.group(2)), month_number(m.group(1)), _year(m.group(3))))
    for m in _COMPACT.finditer(s):
        t = m.group(1)
        add(m, _valid(int(t[6:]), int(t[4:6]), int(t[:4])) or _valid(int(t[:2]), int(t[2:4]), int(t[4:])))
    found.sort(key=lambda c: (c[0], -(c[1] - c[0])))
    kept: list[tuple[int, int, tuple[int, int, int]]] = []
    end = -1
    for c in found:
        if c[0] >= end:
            kept.append(c)
            end = c[1]
    return kept


def parse_date_set(value: object) -> list[tuple[int, int, int]]:
    """Every date in the text, in order, without repeats: '01/03/2024 - 31/03/2024' -> two dates."""
    if value is None or is_not_found(value):
        return []
    out: list[tuple[int, int, int]] = []
    for _, _, date in _candidates(str(value)):
        if date not in out:
            out.append(date)
    return out


def parse_date(value: object) -> tuple[int, int, int] | None:
    """First date in the text as (day, month, year), day-first. None if there is none.

    Reads 25/12/2018, 25-12-18, 25.12.2018, 2018-12-25, 10 MAR 2018, March 10, 2018, 10-Mar-18,
    20181225, and dates glued to a time ('25/12/201814:32').
    """
    if value is None or is_not_found(value):
        return None
    c = _candidates(str(value))
    return c[0][2] if c else None


def format_date(date: tuple[int, int, int]) -> str:
    d, m, y = date
    return f"{d:02d}/{m:02d}/{y:04d}"


def normalize_date(value: object) -> str | None:
    """'10-Mar-18' -> '10/03/2018'; None when no date can be read."""
    date = parse_date(value)
    return None if date is None else format_date(date)


# ---------------------------------------------------------------------------------------------
# Ids, booleans, text
# ---------------------------------------------------------------------------------------------

_ID_LABEL = re.compile(
    r"(?i)^\s*(?:abn|acn|arbn|tfn|bsb|gst(?:\s*(?:reg(?:istration)?|id))?|tax\s*id|company\s*no|"
    r"reg(?:istration)?)\.?\s*(?:no\.?|number|#)?\s*[:#.\-]?\s*"
)
_ID_STRIP = re.compile(r"[\s\-./:_#]")


def normalize_id(value: object) -> str:
    """'ABN: 51 824 753 556' -> '51824753556'. Labels, spaces, dashes and dots go; case folds up."""
    if value is None:
        return ""
    s = str(value)
    while True:  # labels may be stacked ('GST Reg No: ABN 51 ...'); never strip to nothing
        m = _ID_LABEL.match(s)
        if not m or m.end() == 0 or m.end() >= len(s.rstrip()):
            break
        s = s[m.end():]
    return _ID_STRIP.sub("", s).upper()


_TRUE = frozenset({"yes", "y", "true", "t", "1", "included", "inclusive", "incl", "inc", "gst included",
                   "includes gst", "incl gst", "inc gst", "on", "checked"})
_FALSE = frozenset({"no", "n", "false", "f", "0", "excluded", "exclusive", "excl", "not included",
                    "gst excluded", "excludes gst", "excl gst", "ex gst", "off", "unchecked"})


def parse_bool(value: object) -> bool | None:
    """yes/true/1/y/included -> True; no/false/0/n/excluded -> False; anything else None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    s = " ".join(str(value).lower().replace("_", " ").replace(".", " ").split()).strip(" '\"*`")
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    return None


def normalize_text(value: object) -> str:
    """Lower-case and collapse whitespace; punctuation kept (ANLS scores it)."""
    if value is None:
        return ""
    return " ".join(str(value).lower().split())
