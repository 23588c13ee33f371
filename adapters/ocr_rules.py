"""Rule-based field extraction from OCR lines with boxes: the OCR baseline's "model".

`extract(lines, doc_type, schema)` is a pure function: OCR lines in, `{FIELD: value}` out, every
field of the document type present (NOT_FOUND when absent, lists joined with " | ").

The rules are deliberately general (keywords, layout, checksums, arithmetic), never keyed on a
shop name or tuned to one sample: they run on receipts and invoices nobody has looked at. OCR
glues words ("TOTALAMOUNT", "RounddTotal(RM)") and confuses letters, so keywords are matched
on upper-cased text with the spaces removed and a few OCR confusions tolerated.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable, Sequence
from decimal import Decimal

from migbench.adapters.ocr_layout import OcrLine, group_rows, row_text
from migbench.adapters.ocr_statement import extract_statement
from migbench.contracts import NOT_FOUND
from migbench.language import fold_upper, label_regex
from migbench.normalize import (
    CURRENCY_CODES,
    CURRENCY_SYMBOLS,
    format_amount,
    format_date,
    month_number,
    parse_amount,
    parse_date,
    parse_date_set,
)
from migbench.schema import Schema, load_schema
from migbench.validation import abn_digits, abn_is_valid, format_abn, line_consistent

# A printed money amount: two decimals, optional currency and thousands groups. Integers are not
# amounts here: on receipts they are quantities, item codes and phone numbers.
MONEY = re.compile(
    r"(?<!\d)(?<!\d\.)(?:RM|A\$|\$|AUD)?\s?-?(\d{1,3}(?:,\d{3})+|\d+)\s?\.\s?(\d{2})(?!\d|\.\d)", re.IGNORECASE)

# Keyword patterns run on squashed text (upper case, spaces removed); OCR reads L as I/1, O as 0.
_T = r"T[O0Q]T[A4][LI1]"
TOTAL_WORD = re.compile(_T)
TOTAL_EXCLUDE = re.compile(
    r"SUBT[O0]|UBT[O0]T|SUB-|" + _T + r"(?:QTY|QUANTIT|ITEM|ITM|DISC|SAVING|TAX|GST|VAT|EXC|NO\b|UNIT|PCS|WEIGHT)"
    r"|EXCL|EXCLUD|BEFORE|CHANGE|CASH|TENDER|RECEIVED|PAYMENT|PAID|CARD|VISA|MASTER|EFTPOS|CREDIT"
    r"|DISCOUNT|ROUNDINGADJ|ADJUST|QTY|ITEMS|POINTS|SAVED|GSTSUMMARY|DEPOSIT|(?:GST|TAX|VAT)" + _T)
# "Total includes GST 1.61" / "GST included in total": a statement of the tax, not the total.
GST_STATEMENT = re.compile(r"(?:GST|TAX|VAT).*INCLUDE[SD]?|INCLUDE[SD]?.*(?:GST|TAX|VAT)")
TOTAL_STRONG = re.compile(
    r"ROUNDED|ROUNDD|" + _T + r"ROUND|GRAND|AMOUNTDUE|AMTDUE|TOTALDUE|BALANCEDUE|NETT|NET" + _T
    + r"|PAYABLE|INCL|INCLUSIVE|INC\.?GST|" + _T + r"(?:AMOUNT|AMT)|" + _T + r"\(?(?:RM|\$|AUD)")
AMOUNT_DUE = re.compile(r"AMOUNTDUE|AMTDUE|BALANCEDUE|TOTALDUE|AMOUNTPAYABLE")
CASH_WORD = re.compile(r"CASH|TENDER|RECEIVED|PAYMENT|PAID")
CHANGE_WORD = re.compile(r"CHANGE|CHANGEDUE|BALANCE(?!DUE)")

DATE_LABEL = re.compile(r"DATE|TARIKH|DATED|ISSUED")
DATE_PENALTY = re.compile(r"DUE|EXPIR|VALID|PERIOD|BIRTH|PRINTED|SUPPLY")
PHONE_LABEL = re.compile(r"TEL|PHONE|FAX|MOBILE|H/P")

NOISE = re.compile(
    r"TAXINVOICE|^INVOICE$|RECEIPT|CASHBILL|CASHSALE|WELCOME|THANKYOU|SIMPLIFIED|^TAX$|^COPY|"
    r"DUPLICATE|ORIGINAL|^BILL$|STATEMENT|^QUOTE|^QUOTATION|^ORDER")
# Contact and registration lines (checked on the raw text and on the squashed text, with
# patterns specific enough not to fire inside glued words: "STATIONERY" holds "GST").
ID_LINE_RAW = re.compile(
    r"\bTEL\b|TEL\s*[:.)]|PHONE|\bFAX|MOBILE|\bH/?P\b|E-?MAIL|@|WWW\.|HTTP|\.COM\b|\bGST\b|\bABN\b|\bACN\b"
    r"|\bPH\s*[:.(]?\s*\(?\d|\bREG(?:\.|ISTRATION)?\s*NO|\bCO(?:MPANY)?\.?\s*(?:REG|NO|RO)\b|\bROC\b|\bBRN\b|\bSST\b|TAX\s*ID",
    re.IGNORECASE)
ID_LINE_SQ = re.compile(
    r"GST(?:REG|ID|NO|N0|#|:)|COMPANY(?:REG|NO|RO)|CO\.?REG|CO-RE|REG(?:ISTRATION)?NO|ABN[:.\d]|TEL[:.)]"
    r"|FAX[:.]|^TEL|^FAX")


class _IdLine:
    """ID_LINE.search(text): either pattern set matches."""

    @staticmethod
    def search(text: str) -> bool:
        return bool(ID_LINE_RAW.search(text) or ID_LINE_SQ.search(squash(text)))


ID_LINE = _IdLine()
REGNO = re.compile(r"^\(?[A-Z]{0,3}[\d\s-]{5,}[A-Z]?\)?\.?$")
COMPANY_SUFFIX = re.compile(
    r"(?:SDN\.?BHD|\bBHD\b|BERHAD|PTY\.?LTD|\bLTD\b|LIMITED|\bINC\b|\bLLC\b|\bPLC\b|\bCORP|COMPANY|"
    r"\bCO\.?$|ENTERPRISE|TRADING|INDUSTRIES|HOLDINGS|GROUP\b|\bP/L\b)", re.IGNORECASE)
TRAILING_REGNO = re.compile(r"\s*[(（][\w·.:#\- ]*\d{4,}[\w·.\-]*\s*[)）]?\s*$")
STREET = re.compile(
    r"\b(?:NO|LOT|LEVEL|LVL|UNIT|SUITE|SHOP|FLOOR|FLR|BLOCK|BLK|JALAN|JLN|STREET|ST|ROAD|RD|AVENUE|AVE|DRIVE|DR"
    r"|LANE|LN|PLACE|PL|PARADE|PDE|CRESCENT|CRES|BOULEVARD|BLVD|HIGHWAY|HWY|TERRACE|TCE|COURT|CT|WAY|PO BOX"
    r"|GPO BOX|TAMAN|KAWASAN|BANDAR|PLAZA|CENTRE|CENTER|MALL)\b\.?|^\d+[A-Z]?[,\s]", re.IGNORECASE)
PHONE = re.compile(r"(?:\+?\d[\d\s()-]{7,}\d)")
POSTCODE = re.compile(r"(?<!\d)\d{4,5}(?!\d)")
STOP_LABEL = re.compile(
    r"DATE|CASHIER|INVOICE|RECEIPT|DOC(?:UMENT)?NO|BILLNO|TABLE|ORDER|MEMBER|CUSTOMER|BILLTO|SOLDTO|"
    r"TERMINAL|STAFF|SERVER|POS\b|TRANS|CASHBILL|SALESPERSON|ATTN", re.IGNORECASE)

GST_WORD = re.compile(r"GST|\bTAX\b|TAX(?:AMT|AMOUNT)|\bVAT\b|SST")
GST_ID = re.compile(r"GST(?:REG|ID|NO|N0|#)|TAXID|TAXNO|REGNO|\bID\b|ABN")
GST_INCLUDED = re.compile(
    r"INC(?:L|LUDES?|LUSIVE)?\.?(?:OF)?GST|GSTINC|INCLUSIVEOF(?:GST|TAX)|PRICESINCLUDE|INCLUDESGST|"
    r"INCL\.?TAX|TAXINCL")
GST_EXCLUDED = re.compile(r"GSTFREE|NOGST|EXCL(?:USIVE)?(?:OF)?GST|PLUSGST|\+GST")

PAYER_LABEL = re.compile(
    r"^(?:BILL(?:ED)?TO|INVOICETO|SOLDTO|CUSTOMER(?:NAME)?|CLIENT(?:NAME)?|ATTN|ATTENTION|SHIPTO|CHARGETO)\b"
    r"[:.\-]?", re.IGNORECASE)

TABLE_HEADER = re.compile(r"DESCRIPTION|\bQTY\b|QUANTITY|UNIT\s*PRICE|\bAMOUNT\b|\bITEMS?\b", re.IGNORECASE)
ITEM_HEADER_STOP = re.compile(_T + r"|SUBT|GST|TAX|ROUNDING|CASH|CHANGE|DISCOUNT|BALANCE")


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text.upper())


# ---------------------------------------------------------------------------------------------
# Amounts: the document's number style, and never a date or a time
# ---------------------------------------------------------------------------------------------

# Times and dates are masked out before amounts are read: '20.00Uhr' (opening hours), '12.17:26PM'
# and '06/01/18' must never become money.
_TIME = re.compile(
    r"(?<![\d.,])(?:[01]?\d|2[0-4])[:.][0-5]\d(?:[:.][0-5]\d)?\s?(?:[AaPp]\.?[Mm]\.?|[Uu][Hh][Rr]|[Hh](?:[Rr][Ss])?\b)"
    r"|(?<![\d.,])(?:[01]?\d|2[0-4]):[0-5]\d(?::[0-5]\d)?(?![\d,])"
    r"|(?<![\d.,])(?:[01]?\d|2[0-4])[.:][0-5]\d\s?[-–]\s?(?:[01]?\d|2[0-4])[.:][0-5]\d(?![\d,])")
_CUR_CODES = sorted((c for c in CURRENCY_CODES if c.isalpha()), key=len, reverse=True)
# A dollar's country prefix counts only as a word of its own: 'TOTAL$12.34' is a label glued to '$'.
_DOLLAR_PREFIXES = sorted((c[:-1] for c in CURRENCY_CODES if c.endswith("$") and len(c) > 1), key=len, reverse=True)
_CUR = (r"(?:(?<![A-Za-z])(?:" + "|".join(_CUR_CODES) + r")(?![A-Za-z])\.?"
        + r"|(?:(?<![A-Za-z])(?:" + "|".join(_DOLLAR_PREFIXES) + r"))?\$|["
        + CURRENCY_SYMBOLS.replace("$", "") + "])")
_CUR_RE = re.compile(_CUR, re.IGNORECASE)
# Evidence for the decimal separator: a comma or a dot followed by exactly two digits at a number's end,
# and numbers whose two separators settle it ('4.904,94' / '4,904.94').
_COMMA_DEC = re.compile(r"(?<![\d,])\d+(?:[.\u00a0\u202f']\d{3})*,\d{2}(?![\d,]|\.\d)")
_DOT_DEC = re.compile(r"(?<![\d.])\d+(?:[,\u00a0\u202f']\d{3})*\.\d{2}(?![\d.]|,\d)")
_BOTH_COMMA = re.compile(r"\d\.\d{3},\d{2}(?!\d)")
_BOTH_DOT = re.compile(r"\d,\d{3}\.\d{2}(?!\d)")
# Currencies that usually print a decimal comma: only a tie-breaker when the separators seen tie.
_COMMA_CURRENCIES = {"€", "EUR", "CHF", "SEK", "NOK", "DKK", "PLN", "CZK", "RP", "IDR", "KR"}


class NumberStyle:
    """How one document prints money: its decimal separator and its currency as printed.

    Decided from the whole document (separators seen on amounts, dates and times masked; the
    currency markers printed), so one odd token cannot flip it and the same rules read '15,69'
    on a German receipt and '15.69' on a Malaysian one."""

    def __init__(self, decimal: str = ".", currency: str = ""):
        self.decimal = decimal
        self.currency = currency
        d, g = (r",", r"[.\u00a0\u202f']") if decimal == "," else (r"\.", r"[,\u00a0\u202f']")
        sp = r"\s?" if decimal == "." else ""  # OCR spaces a decimal point ('12 . 50'), never a comma
        self.money = re.compile(
            rf"(?<![\d.,])(?<!\d{d}){_CUR}?\s?-?(\d{{1,3}}(?:{g}\d{{3}})+|\d+){sp}{d}{sp}(\d{{2}})(?!\d|[.,]\d)",
            re.IGNORECASE)
        # Amounts next to a currency: whole numbers ('Rs 1939', '12 EUR') and space-grouped ('1 234,56 €').
        num = rf"(\d{{1,3}}(?:(?:{g}| )\d{{3}})+|\d{{1,7}})(?:{d}(\d{{1,2}}))?"
        self.with_currency = re.compile(
            rf"{_CUR}\s?({num})(?!\d|[.,]\d)|(?<![\d.,])({num})\s?{_CUR}", re.IGNORECASE)
        self.whole = re.compile(rf"(?<![\d.,/\-])(\d{{1,3}}(?:{g}\d{{3}})+|\d{{1,7}})(?![\d%/]|[.,:]\d)")

    @classmethod
    def of(cls, texts: Iterable[str]) -> NumberStyle:
        comma = dot = 0
        currencies: dict[str, int] = {}
        for t in texts:
            t = mask_dates_times(t)
            comma += len(_COMMA_DEC.findall(t)) + 2 * len(_BOTH_COMMA.findall(t))
            dot += len(_DOT_DEC.findall(t)) + 2 * len(_BOTH_DOT.findall(t))
            for m in _CUR_RE.finditer(t):
                c = m.group().rstrip(".").upper()
                currencies[c] = currencies.get(c, 0) + 1
        currency = max(currencies, key=lambda c: (currencies[c], c == "$")) if currencies else ""
        if comma == dot and comma:
            decimal = "," if currency in _COMMA_CURRENCIES else "."
        else:
            decimal = "," if comma > dot else "."
        printed = {"RS": "Rs", "RP": "Rp", "KR": "kr"}.get(currency, currency)
        return cls(decimal, printed)

    def plain(self, number: str) -> Decimal | None:
        """A number in this style -> Decimal ('4.904,94' -> 4904.94)."""
        g = "." if self.decimal == "," else ","
        t = re.sub(r"[\s\u00a0\u202f']", "", number).replace(g, "")
        return parse_amount(t.replace(",", ".")) if t else None

    def amounts(self, text: str) -> list[Decimal]:
        """Every amount in the text, in order: two-decimal amounts, and any amount next to a currency."""
        text = mask_dates_times(text)
        found: list[tuple[int, int, Decimal]] = []
        for m in self.money.finditer(text):
            a = self.plain(f"{m.group(1)}{self.decimal}{m.group(2)}")
            if a is not None:
                found.append((m.start(), m.end(), a))
        for m in self.with_currency.finditer(text):
            a = self.plain(m.group(1) or m.group(4))
            if a is not None:
                found.append((m.start(), m.end(), a))
        # overlapping readings: the longer wins ('1 200,00 €' over its '200,00')
        found.sort(key=lambda f: (f[0], f[0] - f[1]))
        kept: list[tuple[int, int, Decimal]] = []
        for f in found:
            if kept and f[0] < kept[-1][1]:
                if f[1] - f[0] > kept[-1][1] - kept[-1][0]:
                    kept[-1] = f
                continue
            kept.append(f)
        return [a for *_, a in kept]

    def wholes(self, text: str) -> list[Decimal]:
        """Whole numbers (for a labelled total printed without decimals)."""
        out = []
        for m in self.whole.finditer(mask_dates_times(text)):
            a = self.plain(m.group(1))
            if a is not None:
                out.append(a)
        return out

    def format(self, amount: Decimal) -> str:
        return format_amount(amount, self.currency)


DOT = NumberStyle()


def mask_dates_times(text: str) -> str:
    """The text with every date and time blanked out (same length, so positions still hold)."""
    # dates first: a time glued to a date ('06/01/1812.17:26PM') only shows once the date is gone
    for pats in ((DATE_NUM, DATE_ISO, DATE_LAX), (_TIME,)):
        spans = [m.span() for pat in pats for m in pat.finditer(text)]
        if spans:
            chars = list(text)
            for a, b in spans:
                chars[a:b] = " " * (b - a)
            text = "".join(chars)
    return text


def money_in(text: str, style: NumberStyle = DOT) -> list[Decimal]:
    return style.amounts(text)


def _row_amounts(row: Sequence[OcrLine], style: NumberStyle = DOT) -> list[tuple[Decimal, OcrLine]]:
    return [(a, ln) for ln in row for a in style.amounts(ln.text)]


# ---------------------------------------------------------------------------------------------
# TOTAL_AMOUNT
# ---------------------------------------------------------------------------------------------

# Labels from harness/data/ocr_labels.yaml (every language), run on upper-cased, accent-free text.
def _lbl(*categories: str) -> re.Pattern[str]:
    return label_regex(*categories)


_INCL = re.compile(r"INCL|INKL|INCLUSIVE|TTC|INCLUIDO|INCLUS|COMPRES|INBEGREPEN|BRUTTO")


def _total_kind(text: str) -> int:
    """0: not a total row; 2: a plain total; 3: the amount payable (strong label). English keywords
    tolerate OCR confusions (code); every language's labels come from the labels file."""
    s, f = squash(text), fold_upper(text)
    if AMOUNT_DUE.search(s):
        return 3
    if GST_STATEMENT.search(s):
        return 0
    if (TOTAL_EXCLUDE.search(s) or _lbl("total_exclude").search(f)) and not _INCL.search(s):
        return 0
    if TOTAL_WORD.search(s):
        return 3 if TOTAL_STRONG.search(s) or _lbl("total_strong").search(f) else 2
    if _lbl("total_strong").search(f):
        return 3
    return 2 if _lbl("total").search(f) else 0


def _has_total_word(text: str) -> bool:
    return bool(TOTAL_WORD.search(squash(text)) or _lbl("total_strong", "total").search(fold_upper(text)))


def _label_end(text: str) -> int | None:
    """Where the (last) total label ends in the box's text, or None when the box has no total label."""
    f = fold_upper(text)
    ends = [m.end() for p in (_lbl("total_strong", "total"),) for m in p.finditer(f)]
    sq_words = re.compile(_T + r"|AMOUNTDUE|AMTDUE|BALANCEDUE|TOTALDUE|AMOUNTPAYABLE")
    # the legacy English words tolerate OCR confusions ('T0TAL'); map their end back onto the spaced text
    sq = squash(text)
    for m in sq_words.finditer(sq):
        k, seen = 0, 0
        while k < len(text) and seen < m.end():
            if not text[k].isspace():
                seen += 1
            k += 1
        ends.append(k)
    return max(ends) if ends else None


def _label_amount(rows: list[list[OcrLine]], i: int, style: NumberStyle = DOT,
                  wholes: bool = False) -> Decimal | None:
    """The amount printed after a total label on the same row, else just below it. With `wholes`,
    a whole number after the label counts too ('SUMME 12', 'Total Rs 1939' without decimals)."""
    row = rows[i]
    label_x = None

    def read(text: str) -> list[Decimal]:
        got = style.amounts(text)
        return got or (style.wholes(text) if wholes else [])

    for ln in row:
        end = _label_end(ln.text)
        if end is not None:
            label_x = ln.x0
            after = read(ln.text[end:])
            if after:
                return after[-1]
            break
    if label_x is None:
        return None
    right = [a for ln in row if ln.x0 > label_x for a in read(ln.text)]
    if right:
        # several amounts on a total row are columns (qty, excl, tax, incl): the last is the sum
        return right[-1]
    if i + 1 < len(rows):
        below = rows[i + 1]
        if below[0].y0 - row[0].y1 < 1.5 * row[0].height and not _has_total_word(row_text(below)):
            amts = [a for a, _ in _row_amounts(below, style)]
            if len(amts) == 1:
                return amts[0]
    return None


def _is_cash(s: str, f: str) -> bool:
    return bool(CASH_WORD.search(s) or _lbl("cash").search(f))


def _is_change(s: str, f: str) -> bool:
    return bool(CHANGE_WORD.search(s) or _lbl("change").search(f))


def find_total(rows: list[list[OcrLine]], style: NumberStyle = DOT) -> Decimal | None:
    cands: list[tuple[float, int, Decimal]] = []  # (priority, row index, amount)
    cash = change = None
    summary_row = None
    for i, row in enumerate(rows):
        t = row_text(row)
        s, f = squash(t), fold_upper(t)
        kind = _total_kind(t)
        if summary_row is None and re.search(r"(?:GST|TAX)SUMMARY|TAXCODE", s):
            summary_row = i
        if not kind:
            if _has_total_word(t):
                continue  # 'TOTAL CASH', 'SUMME NETTO': neither a total nor a tender
            if _is_change(s, f):
                amts = [a for a, _ in _row_amounts(row, style)]
                if amts and change is None:
                    change = amts[-1]
            elif _is_cash(s, f):
                amts = [a for a, _ in _row_amounts(row, style)]
                if amts and cash is None:
                    cash = amts[-1]
            continue
        prio: float = kind
        amt = _label_amount(rows, i, style)
        if amt is None:
            # a labelled total printed as a whole number: believed after every decimal total
            amt = _label_amount(rows, i, style, wholes=True)
            prio -= 1.5
        if amt is None or amt <= 0:
            continue
        if summary_row is not None and i > summary_row:
            prio = min(prio, 1)  # a TOTAL row inside a GST summary table sums the tax columns
        cands.append((prio, i, amt))
    if cands:
        paid = cash - change if cash is not None and change is not None and cash > change else None
        if paid is not None:
            agree = [c for c in cands if abs(c[2] - paid) <= Decimal("0.05")]
            if agree:
                return max(agree, key=lambda c: (c[0], c[1]))[2]
        best = max(c[0] for c in cands)
        top = [c for c in cands if c[0] == best]
        # Several equal-rank totals: the last one printed is the payable (after rounding).
        return top[-1][2]
    if cash is not None and change is not None and cash > change:
        return cash - change
    return _largest_amount(rows, style)


def _largest_amount(rows: list[list[OcrLine]], style: NumberStyle = DOT) -> Decimal | None:
    """Fallback: the largest amount that is not a tendered/change figure."""
    amts = []
    for row in rows:
        t = row_text(row)
        s, f = squash(t), fold_upper(t)
        if _is_cash(s, f) or _is_change(s, f):
            continue
        amts.extend(a for a, _ in _row_amounts(row, style) if 0 < a < Decimal(1000000))
    return max(amts) if amts else None


# ---------------------------------------------------------------------------------------------
# INVOICE_DATE
# ---------------------------------------------------------------------------------------------

# Date candidates are found with stricter patterns than the scorer's parser (same separator
# twice, not glued to letters or to more digits) because receipts are full of item codes and
# phone numbers that read as dates ("QI31-12/480", "05.22.95.66.66"). parse_date converts them.
# A 4-digit year directly followed by ':' is a 2-digit year glued to a time ('25.04.2009:37' is
# 25.04.20 09:37); a year-first date's day may be glued to a time ('2016/05/0114:11:20').
DATE_NUM = re.compile(r"(?<![A-Za-z0-9/.\-])(\d{1,2})([-/.])(\d{1,2})\2(\d{4}(?!:\d)|\d{2})(?![/.\-]\d)")
DATE_ISO = re.compile(
    r"(?<![A-Za-z0-9/.\-])(\d{4})([-/.])(\d{1,2})\2(\d{2}(?=\d{1,2}[:.]\d{2})|\d{1,2}(?![\d/.\-]))")
_W = r"[^\W\d_]"  # a letter of any alphabet ('März', 'févr')
DATE_MON = re.compile(
    rf"(?<![^\W_])(\d{{1,2}})(?:st|nd|rd|th|er)?[\s\-/.]{{0,3}}(?:de\s)?((?:{_W}|\d){{3}}{_W}{{0,7}})\.?[\s\-/.,]{{0,3}}"
    r"(?:de\s)?((?:19|20)\d{2}(?=\d{1,2}:)|\d{4}(?!\d)|\d{2}(?!\d))")  # a 4-digit year may be glued to a time
DATE_MON_FIRST = re.compile(
    rf"(?<!{_W})((?:{_W}|\d){{3}}{_W}{{0,7}})\.?\s{{0,3}}(\d{{1,2}})(?:st|nd|rd|th)?,?\s{{0,3}}(\d{{4}})(?!\d)")
# Lax: a 4-digit-year date glued to what precedes it ("No.100007017/04/2018", "le30/03/2018").
DATE_LAX = re.compile(r"(\d{2})([-/.])(\d{2})\2((?:19|20)\d{2})")
_OCR_LETTERS = str.maketrans("015862", "OISBGZ")


def _month_token(tok: str) -> str | None:
    """A month name as OCR printed it ('0CT' -> 'OCT'); None if it is not one."""
    fixed = tok.upper().translate(_OCR_LETTERS)
    if sum(c.isalpha() for c in tok) < 2 or not fixed.isalpha():
        return None
    return fixed if month_number(fixed) else None  # the scorer's own month table


_LABEL_GLUE = re.compile(r"(?<=[A-Za-z]{3})(?=\d)")


def date_candidates(text: str) -> list[tuple[tuple[int, int, int], bool]]:
    """Dates in one row of text, each with whether it came from the lax pattern."""
    # OCR glues a label to its value ("Issued5July2023"): split a word from a following digit.
    text = _LABEL_GLUE.sub(" ", text)
    out: list[tuple[tuple[int, int, int], bool]] = []
    for m in DATE_NUM.finditer(text):
        d = parse_date(m.group())
        if d:
            out.append((d, False))
    for m in DATE_ISO.finditer(text):
        d = parse_date(m.group())
        if d:
            out.append((d, False))
    for m in DATE_MON.finditer(text):
        mon = _month_token(m.group(2))
        if mon:
            d = parse_date(f"{m.group(1)} {mon} {m.group(3)}")
            if d:
                out.append((d, False))
    for m in DATE_MON_FIRST.finditer(text):
        mon = _month_token(m.group(1))
        if mon:
            d = parse_date(f"{mon} {m.group(2)}, {m.group(3)}")
            if d:
                out.append((d, False))
    if not out:
        for m in DATE_LAX.finditer(text):
            d = parse_date(m.group())
            if d:
                out.append((d, True))
    if not out and any(month_number(w) for w in re.findall(r"[^\W\d_]{3,}", text)):
        # a month-name date in a form the patterns above miss ('12 de marzo de 2019'): the scorer's
        # reader converts it, believed less (numeric-only forms stay with the strict patterns)
        out.extend((d, True) for d in parse_date_set(text))
    return out


def _date_contexts(row: list[OcrLine]) -> list[tuple[str, str]]:
    """(text to read dates from, text whose labels apply): each box alone, or with the box before it
    when it holds only the value ('Due:' | '17-10-24'); then the whole row, for dates split over boxes."""
    out = []
    for k, ln in enumerate(row):
        labelled = sum(c.isalpha() for c in ln.text) >= 3  # a box with its own words labels itself
        out.append((ln.text, ln.text if labelled or k == 0 else f"{row[k - 1].text} {ln.text}"))
    if len(row) > 1:
        out.append((row_text(row), row_text(row)))
    return out


def find_date(rows: list[list[OcrLine]], this_year: int | None = None) -> tuple[int, int, int] | None:
    this_year = this_year or _dt.date.today().year
    best: tuple[float, tuple[int, int, int]] | None = None
    n = max(1, len(rows))
    for i, row in enumerate(rows):
        seen: set[tuple[int, int, int]] = set()
        for text, context in _date_contexts(row):
            s = squash(context)
            for d, lax in date_candidates(text):
                if d in seen:
                    continue  # the row-wide reading only adds dates no single box holds
                seen.add(d)
                score = 0.0
                f = fold_upper(context)
                if _lbl("date_issue").search(f):
                    score += 4  # the invoice / issue date beats every other labelled date
                elif DATE_LABEL.search(s) or _lbl("date").search(f):
                    score += 2
                if DATE_PENALTY.search(s) or _lbl("date_other").search(f):
                    score -= 3
                if PHONE_LABEL.search(s):
                    score -= 3
                if lax:
                    score -= 1
                if not 2000 <= d[2] <= this_year + 1:
                    score -= 2  # a receipt from the future or the last century is a misread
                score -= i / n  # earlier wins among equals: the issue date is printed near the top
                if best is None or score > best[0]:
                    best = (score, d)
    return best[1] if best else None


# ---------------------------------------------------------------------------------------------
# SUPPLIER_NAME / BUSINESS_ADDRESS
# ---------------------------------------------------------------------------------------------

def _is_noise(text: str) -> bool:
    s = squash(text)
    letters = [c for c in text if c.isalpha()]
    if len(letters) < 3:
        return True
    if not any(c.isupper() for c in letters):
        return True  # printed headers are never all lower case; stamps and scanner marks are
    if NOISE.search(s) or ID_LINE.search(text) or REGNO.match(s):
        return True
    return bool(parse_date(text) is not None or money_in(text))


def _without_titles(row: list[OcrLine]) -> list[OcrLine]:
    """A letterhead often prints the name and the document title on one row ('ACME PTY LTD   TAX
    INVOICE'): drop the title boxes so the row reads as the name (keep a title-only row as it is)."""
    kept = [ln for ln in row if not NOISE.search(squash(ln.text))]
    return kept or row


def find_supplier(rows: list[list[OcrLine]]) -> tuple[str | None, int]:
    """(name, index of the last row of the name). The name is at the top; a company suffix wins."""
    rows = [_without_titles(r) for r in rows]
    head = [(i, row_text(r)) for i, r in enumerate(rows[:10])]
    head = [(i, t) for i, t in head if t]
    stop = next((k for k, (_, t) in enumerate(head) if parse_date(t) or money_in(t)), len(head))
    head = head[:stop] if stop > 0 else head[:1]
    pick = None
    for i, t in head[:6]:
        if COMPANY_SUFFIX.search(t) and not ID_LINE.search(t):
            pick = i
            break
    if pick is None:
        # No company suffix: the first plain row that is not the street line (a name never starts
        # with a house number); failing that, the first plain row.
        pick = next((i for i, t in head if not _is_noise(t)), None)
    if pick is None:
        return None, -1
    name = row_text(rows[pick])
    last = pick
    # A name printed over two lines: the first ends with '&'/'AND'/'-', or the second holds the suffix.
    if pick + 1 < len(rows):
        nxt = row_text(rows[pick + 1])
        if (re.search(r"(&|\bAND|-)$", name.strip(), re.IGNORECASE) and not _is_noise(nxt)) or (
                not COMPANY_SUFFIX.search(name) and COMPANY_SUFFIX.search(nxt) and not ID_LINE.search(nxt)
                and len(nxt) < 40):
            name, last = f"{name} {nxt}", pick + 1
    # the name above a suffix-only line: 'SYL ROASTED' / 'SDN BHD'
    m = COMPANY_SUFFIX.fullmatch(squash(name).strip(".()"))
    if m and pick > 0 and not _is_noise(row_text(rows[pick - 1])):
        name = f"{row_text(rows[pick - 1])} {name}"
    name = TRAILING_REGNO.sub("", name)
    return name.strip(" ,.:") or None, last


STREET_SQ = re.compile(
    r"^(?:N[O0]\.?\d|L[O0]T\.?\d|LEVE[L1I]|LVL|UNIT|SUITE|SHOP|FL[O0]{2}R|BL[O0]CK|BLK|P\.?O\.?BOX|GPO|\d)"
    r"|JALAN|JLN|STREET|ROAD|AVENUE|HIGHWAY")


def _looks_like_address(t: str) -> bool:
    return bool(STREET.search(t) or STREET_SQ.search(squash(t)) or (POSTCODE.search(t) and sum(c.isalpha() for c in t) >= 4))


def _space_after_commas(t: str) -> str:
    # OCR drops the space after punctuation ("NO.2&4,JALAN"); printed addresses have one
    return re.sub(r",(?=[^\s\d])|,(?=\d[A-Za-z\d]*[A-Za-z])", ", ", t)


def _ends_address(t: str) -> bool:
    s = squash(t)
    return bool(ID_LINE.search(t) or STOP_LABEL.search(s) or NOISE.search(s) or money_in(t)
                or date_candidates(t) or REGNO.match(s))


def _column(row: list[OcrLine], left: float, limit: float) -> list[OcrLine]:
    """The boxes of a row that belong to the column starting at `left`: a letterhead often prints
    the invoice number or date in a right-hand column on the same lines as the address."""
    return [ln for ln in row if ln.box[0] < left + limit]


def find_address(rows: list[list[OcrLine]], after: int) -> str | None:
    """Rows below the supplier name: skip registration numbers and slogans until a row looks
    like an address, then collect until a contact/ID/label/date/amount row (at most five rows).
    The postcode does not end it: outlet names and districts often follow on the next line."""
    parts: list[str] = []
    skipped = 0
    page_w = max((ln.box[2] for r in rows for ln in r), default=0.0) or 1.0
    left: float | None = None
    for row in rows[after + 1: after + 12]:
        if left is not None:
            row = _column(row, left, 0.4 * page_w)
        t = row_text(row)
        if not t:
            continue
        stop = _ends_address(t)
        if not parts:
            # The first address line may share its row with another column: read the left box.
            first = row_text(row[:1]) if len(row) > 1 and stop else t
            if not _ends_address(first) and _looks_like_address(first):
                parts.append(first)
                left = row[0].box[0]
                continue
            skipped += 1
            if skipped > 4:
                return None
            continue
        if stop:
            break
        parts.append(t)
        if len(parts) >= 5:
            break
    return _space_after_commas(" ".join(parts).strip()) or None


# ---------------------------------------------------------------------------------------------
# ABN, GST
# ---------------------------------------------------------------------------------------------

def find_abn(lines: Iterable[str]) -> str | None:
    fallback = None
    for t in lines:
        for m in re.finditer(r"(?<!\d)\d(?:[\s-]?\d){10}(?![\s-]?\d)", t):
            d = abn_digits(m.group())
            if abn_is_valid(d):
                if re.search(r"ABN|A\.B\.N", t, re.IGNORECASE):
                    return format_abn(d)
                fallback = fallback or format_abn(d)
    return fallback


def find_gst(rows: list[list[OcrLine]], total: Decimal | None, style: NumberStyle = DOT) -> Decimal | None:
    cands: list[tuple[int, Decimal]] = []
    for row in rows:
        t = row_text(row)
        s = squash(t)
        if not GST_WORD.search(t.upper()) and "GST" not in s and not _lbl("tax").search(fold_upper(t)):
            continue
        if GST_ID.search(s) and not style.amounts(t):
            continue
        amts = [a for a, _ in _row_amounts(row, style) if a >= 0]
        if not amts:
            continue
        amt = amts[-1]
        if total is not None and amt >= total:
            continue
        prio = 2 if re.search(r"TOTALGST|GSTAMOUNT|GST\(?\$|^GST|TOTALTAX|TAXAMOUNT|INCLUDESGST|^TAX", s) else 1
        if total is not None and amt > 0 and abs(total / 11 - amt) <= max(Decimal("0.02"), amt / 100):
            prio += 2  # Australian GST: exactly total/11
        cands.append((prio, amt))
    if not cands:
        return None
    return max(cands, key=lambda c: c[0])[1]


def gst_included(full_text: str, gst: Decimal | None) -> str | None:
    s = squash(full_text)
    if GST_INCLUDED.search(s):
        return "true"
    if GST_EXCLUDED.search(s):
        return "false"
    if gst is not None:
        return "true" if gst > 0 else "false"
    return None


# ---------------------------------------------------------------------------------------------
# Payer, line items
# ---------------------------------------------------------------------------------------------

def find_payer(rows: list[list[OcrLine]]) -> tuple[str | None, str | None]:
    for i, row in enumerate(rows):
        t = row_text(row)
        m = PAYER_LABEL.match(re.sub(r"\s+", "", t))
        if not m:
            continue
        # the label's own box; the value is the rest of that box or the boxes to its right
        label_ln = row[0]
        consumed = len(re.match(r"\s*", label_ln.text).group())
        k = 0
        rest = label_ln.text
        for ch in rest:  # walk the raw text until m.end() non-space characters are consumed
            if k >= m.end():
                break
            consumed += 1
            if not ch.isspace():
                k += 1
        value = (label_ln.text[consumed:] + " " + " ".join(ln.text for ln in row[1:])).strip(" :.-")
        below = []
        for nxt in rows[i + 1: i + 5]:
            nt = row_text(nxt)
            if not nt or STOP_LABEL.search(squash(nt)) or PAYER_LABEL.match(squash(nt)) or money_in(nt) \
                    or ID_LINE.search(nt) or parse_date(nt) or TABLE_HEADER.search(nt):
                break
            if nxt[0].x0 > label_ln.x1 + 3 * label_ln.height and not value:
                break
            below.append(nt)
        if not value and below:
            value, below = below[0], below[1:]
        address = " ".join(below).strip() or None
        return (value or None), address
    return None, None


_NUM = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])")


ITEM_COLUMNS = re.compile(r"DESCRIPTION|QTY|QUANTITY|UNITPRICE|RATE|AMOUNT|LINETOTAL|PRICE|ITEM")


def _item_numbers(cleaned: str) -> tuple[tuple[int, int], ...] | None:
    """Spans of (qty, unit price, line total) in a row where qty x price = total (1%): the total is
    the rightmost such amount with two decimals, the price left of it, the quantity left of that."""
    nums = [(m.start(), m.end(), Decimal(m.group())) for m in _NUM.finditer(cleaned)]
    for k in range(len(nums) - 1, 1, -1):
        tot = nums[k][2]
        if tot == 0 or tot.as_tuple().exponent != -2:
            continue
        for j in range(k - 1, 0, -1):
            for i in range(j - 1, -1, -1):
                q, p = nums[i][2], nums[j][2]
                if 0 < q <= 1000 and line_consistent(float(q), float(p), float(tot)):
                    return tuple((n[0], n[1]) for n in (nums[i], nums[j], nums[k]))
    return None


def find_line_items(rows: list[list[OcrLine]],
                    style: NumberStyle = DOT) -> list[tuple[str, Decimal, Decimal, Decimal]]:
    """Rows where some qty x unit price = line total (1%): (description, qty, price, total).
    The description is the row's text without those three numbers, wherever the columns put them
    (quantity first or last); a row with no words takes the text row above it."""
    items = []
    prev_text = ""
    for row in rows:
        t = row_text(row)
        s = squash(t)
        if ITEM_HEADER_STOP.search(s) and items:
            break
        cleaned = re.sub(r"(?i)(?:\bRM|\bAUD|\bA?\$|(?<!\w)\$)\s?", "", t)
        if style.decimal == ",":
            # '1.176,25' is one amount: drop the groups, then read the decimal comma as a point
            cleaned = re.sub(r"(?<=\d)\.(?=\d{3}(?!\d))", "", cleaned)
            cleaned = re.sub(r"(?<=\d),(?=\d)", ".", cleaned)
        else:
            cleaned = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", cleaned)  # 1,176.25 is one amount
        cleaned = re.sub(r"(?i)(\d)\s?[x@]\s?(?=\d)", r"\1 ", cleaned)
        spans = _item_numbers(cleaned)
        if spans:
            (qs, qe), (ps, pe), (ts, te) = spans
            q, p, tot = (Decimal(cleaned[a:b]) for a, b in spans)
            rest = cleaned[:qs] + " " + cleaned[qe:ps] + " " + cleaned[pe:ts] + " " + cleaned[te:]
            desc = " ".join(rest.split()).strip(" -:*#|")
            desc = re.sub(r"^\d{6,}\s*", "", desc)  # a leading barcode is not a description
            if not re.search(r"[A-Za-z]{2}", desc):
                desc = prev_text
            items.append((desc or NOT_FOUND, q, p, tot))
            prev_text = ""
        else:
            header = len(ITEM_COLUMNS.findall(s)) >= 2  # a table header is never a description
            prev_text = t if re.search(r"[A-Za-z]{2}", t) and not style.amounts(t) and not header else ""
    return items


def _num(d: Decimal) -> str:
    return f"{d.normalize():f}" if d == d.to_integral_value() else str(d)


# ---------------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------------

def extract(lines: Sequence[OcrLine], doc_type: str, schema: Schema | None = None) -> dict[str, str]:
    schema = schema or load_schema()
    names = schema.fields_for(doc_type)
    out = {f: NOT_FOUND for f in names}
    if "DOCUMENT_TYPE" in out:
        # the runner already knows the type (it chose the prompt/schema): report it in the label form
        out["DOCUMENT_TYPE"] = schema.document_types[doc_type].label
    rows = group_rows(lines)
    if not rows:
        return out
    if doc_type == "bank_statement":
        out.update({k: v for k, v in extract_statement(rows).items() if k in out and v})
        return out

    texts = [row_text(r) for r in rows]
    style = NumberStyle.of(texts)  # decimal separator and currency, from the whole document
    total = find_total(rows, style)
    date = find_date(rows)
    name, name_end = find_supplier(rows)
    address = find_address(rows, name_end) if name else None
    abn = find_abn(texts)
    gst = find_gst(rows, total, style)
    incl = gst_included("\n".join(texts), gst)
    payer, payer_addr = find_payer(rows)
    items = find_line_items(rows, style)

    found = {
        "SUPPLIER_NAME": name,
        "BUSINESS_ADDRESS": address,
        "INVOICE_DATE": format_date(date) if date else None,
        "TOTAL_AMOUNT": style.format(total) if total is not None else None,
        "BUSINESS_ABN": abn,
        "GST_AMOUNT": style.format(gst) if gst is not None else None,
        "IS_GST_INCLUDED": incl,
        "PAYER_NAME": payer,
        "PAYER_ADDRESS": payer_addr,
    }
    if items:
        sep = schema.list_separator
        found["LINE_ITEM_DESCRIPTIONS"] = sep.join(i[0] for i in items)
        found["LINE_ITEM_QUANTITIES"] = sep.join(_num(i[1]) for i in items)
        found["LINE_ITEM_PRICES"] = sep.join(style.format(i[2]) for i in items)
        found["LINE_ITEM_TOTAL_PRICES"] = sep.join(style.format(i[3]) for i in items)
    for k, v in found.items():
        if k in out and v:
            out[k] = v
    return out
