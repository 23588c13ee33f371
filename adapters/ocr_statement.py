"""Bank statement rules: statement period and debit transactions from a table's rows.

A transaction row starts with a date; its debit is the amount under the header's debit column
(Debit / Withdrawal / Paid out). Rows without a debit (credits) are not listed, matching the
schema's TRANSACTION_AMOUNTS_PAID.
"""

from __future__ import annotations

import re
from decimal import Decimal

from adapters.ocr_layout import OcrLine, row_text
from harness.normalize import format_amount, format_date, parse_amount, parse_date, parse_date_set

MONEY = re.compile(r"(?<![\d.])-?(?:\d{1,3}(?:,\d{3})+|\d+)\.\d{2}(?!\d)")
DEBIT_HEADER = re.compile(r"DEBIT|WITHDRAW|PAIDOUT|PAYMENTS?OUT|MONEYOUT|\bDR\b", re.IGNORECASE)
CREDIT_HEADER = re.compile(r"CREDIT|DEPOSIT|PAIDIN|MONEYIN|\bCR\b", re.IGNORECASE)
PERIOD_LABEL = re.compile(r"PERIOD|STATEMENTFROM|FROM|OPENING|CLOSING|TO", re.IGNORECASE)
DAY_MON = re.compile(r"^\s*(\d{1,2})[\s\-/.]{0,2}([A-Za-z]{3,9})\b")


def _squash(t: str) -> str:
    return re.sub(r"\s+", "", t.upper())


def find_period(rows: list[list[OcrLine]]) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
    fallback = None
    for row in rows[:15]:
        t = row_text(row)
        dates = parse_date_set(t)
        if len(dates) >= 2:
            pair = (dates[0], dates[1])
            if PERIOD_LABEL.search(_squash(t)):
                return pair
            fallback = fallback or pair
    return fallback


def _row_date(ln: OcrLine, year: int | None) -> tuple[int, int, int] | None:
    d = parse_date(ln.text)
    if d is not None:
        return d
    m = DAY_MON.match(ln.text)
    if m and year:
        return parse_date(f"{m.group(1)} {m.group(2)} {year}")  # '03 Mar' takes the statement's year
    return None


def extract_statement(rows: list[list[OcrLine]]) -> dict[str, str]:
    out: dict[str, str] = {}
    period = find_period(rows)
    if period:
        out["STATEMENT_DATE_RANGE"] = f"{format_date(period[0])} - {format_date(period[1])}"
    year = period[1][2] if period else None

    debit_x: tuple[float, float] | None = None
    credit_x: tuple[float, float] | None = None
    start = 0
    for i, row in enumerate(rows):
        s = _squash(row_text(row))
        if "DATE" in s and (DEBIT_HEADER.search(s) or "AMOUNT" in s):
            for ln in row:
                if DEBIT_HEADER.search(_squash(ln.text)) or (debit_x is None and "AMOUNT" in _squash(ln.text)):
                    debit_x = (ln.x0, ln.x1)
                elif CREDIT_HEADER.search(_squash(ln.text)):
                    credit_x = (ln.x0, ln.x1)
            start = i + 1
            break

    dates, descs, amounts = [], [], []
    for row in rows[start:]:
        d = _row_date(row[0], year)
        if d is None:
            continue
        money = [(parse_amount(m.group()), ln) for ln in row[1:] for m in MONEY.finditer(ln.text)]
        money = [(a, ln) for a, ln in money if a is not None]
        if not money:
            continue
        paid: Decimal | None = None
        if debit_x is not None:
            width = max(debit_x[1] - debit_x[0], 1.0)
            for a, ln in money:
                cx = (ln.x0 + ln.x1) / 2
                if debit_x[0] - width <= cx <= debit_x[1] + width and not (
                        credit_x and credit_x[0] - width / 2 <= cx <= credit_x[1] + width / 2):
                    paid = abs(a)
                    break
        elif len(money) >= 2:
            paid = abs(money[0][0])  # without a header: transaction amount first, balance last
        if paid is None:
            continue
        first_money_ln = money[0][1]
        desc = " ".join(ln.text for ln in row[1:] if ln.x1 <= first_money_ln.x0 and not MONEY.search(ln.text))
        rest = row[0].text
        dm = re.match(r"\s*\S+(?:\s+[A-Za-z]{3,9}(?:\s+\d{2,4})?)?", rest)
        lead = rest[dm.end():].strip() if dm and parse_date(rest) is None else ""
        dates.append(format_date(d))
        descs.append((lead + " " + desc).strip() or "NOT_FOUND")
        amounts.append(format_amount(paid))
    if dates:
        out["TRANSACTION_DATES"] = " | ".join(dates)
        out["LINE_ITEM_DESCRIPTIONS"] = " | ".join(descs)
        out["TRANSACTION_AMOUNTS_PAID"] = " | ".join(amounts)
    return out
