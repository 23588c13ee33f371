"""The incumbent's validation rules applied to EXTRACTED fields, with no ground truth needed.

A model can be right on every field the ground truth has and still return an ABN that fails its
checksum or a GST that is not 1/11 of the total; in production these rules are what flags a
document for review, so the report shows how often each backend's output passes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from migbench.normalize import is_not_found, parse_amount, parse_bool
from migbench.validation import abn_digits, abn_is_valid, gst_consistent, line_consistent

RULES = ("abn_checksum", "gst_one_eleventh", "line_arithmetic", "lists_aligned")


def _items(value: str | None) -> list[str]:
    if not value or is_not_found(value):
        return []
    return [v.strip() for v in value.split("|")]


def check_fields(fields: Mapping[str, str]) -> dict[str, bool | None]:
    """rule -> True (passes) / False (fails) / None (not applicable to this output)."""
    out: dict[str, bool | None] = dict.fromkeys(RULES)
    abn = fields.get("BUSINESS_ABN")
    if abn and not is_not_found(abn):
        out["abn_checksum"] = len(abn_digits(abn)) == 11 and abn_is_valid(abn)
    total, gst = parse_amount(fields.get("TOTAL_AMOUNT") or ""), parse_amount(fields.get("GST_AMOUNT") or "")
    if parse_bool(fields.get("IS_GST_INCLUDED") or "") and total is not None and gst is not None:
        out["gst_one_eleventh"] = gst_consistent(total, gst)
    qty, price, tot = (_items(fields.get(k)) for k in
                       ("LINE_ITEM_QUANTITIES", "LINE_ITEM_PRICES", "LINE_ITEM_TOTAL_PRICES"))
    triples = [(parse_amount(q), parse_amount(p), parse_amount(t)) for q, p, t in zip(qty, price, tot)]
    triples = [t for t in triples if None not in t]
    if triples:
        out["line_arithmetic"] = all(line_consistent(float(q), float(p), float(t)) for q, p, t in triples)
    lists = [k for k in ("LINE_ITEM_DESCRIPTIONS", "TRANSACTION_DATES", "TRANSACTION_AMOUNTS_PAID",
                         "LINE_ITEM_QUANTITIES", "LINE_ITEM_PRICES", "LINE_ITEM_TOTAL_PRICES") if _items(fields.get(k))]
    if len(lists) >= 2:
        out["lists_aligned"] = len({len(_items(fields.get(k))) for k in lists}) == 1
    return out


def consistency_rates(rows: Any) -> dict[str, tuple[int, int]]:
    """rule -> (passed, checked) over the documents that completed (typed rows or a DocTable)."""
    from migbench.doctable import DocTable

    t = DocTable.of(rows)
    return {r: (int((t.checks[r] == 1).sum()), int((t.checks[r] >= 0).sum())) for r in RULES}
