"""The incumbent's validation rules, as pure functions usable by scorers, generators and reports."""

from __future__ import annotations

import re
from decimal import Decimal

ABN_WEIGHTS = (10, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19)


def abn_digits(text: str) -> str:
    """Strip labels, spaces and dashes: 'ABN: 51 824 753 556' -> '51824753556'."""
    return re.sub(r"\D", "", text or "")


def abn_is_valid(text: str) -> bool:
    """ATO mod-89 checksum: subtract 1 from the first digit, weight, sum, divisible by 89."""
    digits = abn_digits(text)
    if len(digits) != 11 or digits[0] == "0":
        return False
    nums = [int(c) for c in digits]
    nums[0] -= 1
    return sum(w * n for w, n in zip(ABN_WEIGHTS, nums)) % 89 == 0


def abn_check_digits(nine_digits: str) -> str | None:
    """Complete a 9-digit body to a valid ABN by choosing the two leading digits, if possible."""
    for lead in range(10, 100):
        cand = f"{lead}{nine_digits}"
        if abn_is_valid(cand):
            return cand
    return None


def format_abn(digits: str) -> str:
    d = abn_digits(digits)
    return f"{d[:2]} {d[2:5]} {d[5:8]} {d[8:]}" if len(d) == 11 else digits


def gst_consistent(total: Decimal | float, gst: Decimal | float, tol: float = 0.01) -> bool:
    """GST-inclusive total: GST = total / 11, within a cent (or 1% of GST for big totals)."""
    expected = Decimal(str(total)) / Decimal(11)
    diff = abs(expected - Decimal(str(gst)))
    return diff <= max(Decimal(str(tol)), expected.copy_abs() * Decimal("0.01"))


def line_consistent(qty: float, price: float, line_total: float, rel: float = 0.01) -> bool:
    expected = qty * price
    return abs(expected - line_total) <= max(0.005, abs(line_total) * rel)


def running_balance_consistent(opening: float, amounts: list[float], balances: list[float],
                               tol: float = 0.005) -> bool:
    """amounts are signed (credit +, debit -); balances are the printed balance after each row."""
    if len(amounts) != len(balances):
        return False
    bal = opening
    for amt, printed in zip(amounts, balances):
        bal = round(bal + amt, 2)
        if abs(bal - printed) > tol:
            return False
    return True
