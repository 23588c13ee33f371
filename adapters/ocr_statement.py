"""Bank statement rules: statement period and debit transactions from a table's rows.

A transaction row starts with a date; each of its amounts belongs to the header column whose
centre is nearest (Debit / Withdrawal / Paid out, Credit / Deposit, Balance). Every transaction is
listed, in order, and a credit has NOT_FOUND in its TRANSACTION_AMOUNTS_PAID slot, so the three
lists stay aligned (the incumbent's ground-truth convention).
"""

from __future__ import annotations

import re
from decimal import Decimal

from migbench.adapters.ocr_layout import OcrLine, row_text
from migbench.contracts import NOT_FOUND
from migbench.normalize import format_amount, format_date, parse_amount, parse_date, parse_date_set

MONEY = re.compile(r"(?<![\d.])-?(?:\d{1,3}(?:,\d{3})+|\d+)\.\d{2}(?!\d)")
DEBIT_HEADER = re.compile(r"DEBIT|WITHDRAW|PAIDOUT|PAYMENTS?OUT|MONEYOUT|\bDR\b", re.IGNORECASE)
CREDIT_HEADER = re.compile(r"CREDIT|DEPOSIT|PAIDIN|MONEYIN|\bCR\b", re.IGNORECASE)
BALANCE_HEADER = re.compile(r"BALANCE|\bBAL\b", re.IGNORECASE)
# Rows that carry a balance, not a transaction.
BALANCE_ROW = re.compile(r"OPENINGBAL|CLOSINGBAL|BALANCEBROUGHT|BROUGHTFORWARD|CARRIEDFORWARD|BALANCEB/?F|BALANCEC/?F")
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
        out["STATEMENT_DATE_RANGE"] = f"{format_date(period[0])} to {format_date(period[1])}"
    year = period[1][2] if period else None

    columns: dict[str, float] = {}  # debit / credit / balance / amount -> header centre x
    start = 0
    for i, row in enumerate(rows):
        s = _squash(row_text(row))
        if "DATE" in s and (DEBIT_HEADER.search(s) or "AMOUNT" in s):
            for ln in row:
                h = _squash(ln.text)
                kind = ("debit" if DEBIT_HEADER.search(h) else "credit" if CREDIT_HEADER.search(h)
                        else "balance" if BALANCE_HEADER.search(h) else "amount" if "AMOUNT" in h else None)
                if kind and kind not in columns:
                    columns[kind] = (ln.x0 + ln.x1) / 2
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
        if BALANCE_ROW.search(_squash(row_text(row))):
            continue
        paid: Decimal | None = None
        if columns:
            kinds = [(a, min(columns, key=lambda k: abs(columns[k] - (ln.x0 + ln.x1) / 2))) for a, ln in money]
            if all(k == "balance" for _, k in kinds):
                continue  # only a balance on this row: not a transaction
            for a, kind in kinds:
                if kind == "debit" or (kind == "amount" and "debit" not in columns and a < 0):
                    paid = abs(a)
                    break
        elif len(money) >= 2:
            paid = abs(money[0][0])  # without a header: transaction amount first, balance last
        first_money_ln = money[0][1]
        desc = " ".join(ln.text for ln in row[1:] if ln.x1 <= first_money_ln.x0 and not MONEY.search(ln.text))
        rest = row[0].text
        dm = re.match(r"\s*\S+(?:\s+[A-Za-z]{3,9}(?:\s+\d{2,4})?)?", rest)
        lead = rest[dm.end():].strip() if dm and parse_date(rest) is None else ""
        dates.append(format_date(d))
        descs.append((lead + " " + desc).strip() or NOT_FOUND)
        amounts.append(format_amount(paid) if paid is not None else NOT_FOUND)  # a credit: nothing paid
    if dates:
        out["TRANSACTION_DATES"] = " | ".join(dates)
        out["LINE_ITEM_DESCRIPTIONS"] = " | ".join(descs)
        out["TRANSACTION_AMOUNTS_PAID"] = " | ".join(amounts)
    return out
