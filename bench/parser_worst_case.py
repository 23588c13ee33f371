"""Parser worst cases: milliseconds per MB of model output, for the nastiest shapes found.

A model (or a server in front of it) can answer anything, so `parse_output` must stay linear in
its input whatever the shape: runs of quotes, fences, brackets, colons, long lines, deep or
truncated JSON. Each shape is parsed at two sizes; `ms/MB` should stay flat between them (a
growing figure means superlinear work) and under about 1,000 ms/MB. Times are this process's CPU
time (time.process_time), so other work on a shared machine does not inflate them.

    python bench/parser_worst_case.py [--mb 1 4] [--doc-type invoice] [--only quotes,fences]
Ends with:  parser_worst_case: worst_ms_per_mb=X shape=NAME
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from migbench.parsing import parse_output
from migbench.schema import load_schema


def _rep(unit: str) -> Callable[[int], str]:
    return lambda n: unit * (n // len(unit) + 1)


def _wrap(head: str, unit: str, tail: str = "") -> Callable[[int], str]:
    return lambda n: head + unit * (n // len(unit) + 1) + tail


# name -> builder(n_chars) -> text of about n characters
SHAPES: dict[str, Callable[[int], str]] = {
    "quotes": _rep('"'),
    "quoted_value": _wrap("TOTAL_AMOUNT: ", '"'),
    "quoted_json_value": lambda n: '{"TOTAL_AMOUNT": "' + '\\"' * (n // 2) + '"}',
    "quoted_list_items": _wrap("LINE_ITEM_DESCRIPTIONS: ", '"" | '),
    "emphasis": _wrap("TOTAL_AMOUNT: ", "*_`"),
    "quote_emphasis_layers": lambda n: "TOTAL_AMOUNT: " + '"*' * (n // 2) + '"',
    "quote_comma_layers": lambda n: "TOTAL_AMOUNT: " + '"' * (n // 4) + '",' * (n // 4),
    "backticks_no_newline": _rep("`"),
    "many_fences": _rep("```\n"),
    "fences_with_json": _rep('```json\n{"TOTAL_AMOUNT": \n```\n'),
    "open_braces": _rep("{"),
    "open_brackets": _rep("["),
    "braces_and_quotes": _rep('{"'),
    "deep_json": lambda n: '{"a":' * (n // 5) + "1" + "}" * (n // 5),
    "deep_json_truncated": lambda n: '{"a":' * (n // 5),
    "truncated_json_list": _wrap('{"LINE_ITEM_DESCRIPTIONS": [', '"item", '),
    "truncated_row_objects": _wrap('{"items": [', '{"DESCRIPTION": "x", "TOTAL": "$1.00"}, '),
    "json_unterminated_string": _wrap('{"SUPPLIER_NAME": "', "x"),
    "json_backslashes": _wrap('{"SUPPLIER_NAME": "', "\\"),
    "many_objects_prose": _rep('{"a" {"b" '),
    "colons": _rep(":"),
    "short_keys": _rep("A:\n"),
    "short_key_bullets": _rep("- A:\n"),
    "alias_keys": _rep("TOTAL:\n"),
    "distinct_keys": lambda n: "".join(f"K{i}:\n" for i in range(n // 8)),
    "short_table_rows": _rep("|A|\n"),
    "json_many_keys": lambda n: "{" + ", ".join(f'"k{i}": 1' for i in range(n // 9)) + "}",
    "json_many_rows": _wrap('{"items": [', '{"QTY": 1}, ', "{}]}"),
    "key_colons": _rep("TOTAL_AMOUNT:"),
    "kv_lines": _rep("TOTAL_AMOUNT: $1.00\n"),
    "open_ended_list": _wrap("LINE_ITEM_DESCRIPTIONS:\n", "- item\n"),
    "money_list_one_line": _wrap("LINE_ITEM_PRICES: ", "$1.00, "),
    "long_line": _rep("x"),
    "newlines": _rep("\n"),
    "pipes": _rep("|"),
    "table_rows": _rep("| TOTAL_AMOUNT | $1.00 |\n"),
    "bullets": _rep("- "),
    "think_tags": _rep("</think>"),
    "whitespace": _rep(" \t"),
    "unicode": _rep("é€😀"),
    "commas": _rep(","),
}


def time_shape(build: Callable[[int], str], n_chars: int, doc_type: str, schema) -> float:
    text = build(n_chars)
    t0 = time.process_time()
    parse_output(text, doc_type, schema)
    return time.process_time() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, nargs=2, default=[1.0, 4.0], metavar=("SMALL", "LARGE"),
                    help="the two input sizes in MB (default 1 and 4)")
    ap.add_argument("--doc-type", default="invoice", help="invoice has every list field")
    ap.add_argument("--only", help="comma-separated shape names")
    args = ap.parse_args(argv)
    schema = load_schema()
    shapes = {k: v for k, v in SHAPES.items() if not args.only or k in args.only.split(",")}
    small, large = (int(mb * 1_000_000) for mb in args.mb)
    print(f"{'shape':<26} {f'{args.mb[0]:g} MB ms/MB':>14} {f'{args.mb[1]:g} MB ms/MB':>14} {'growth':>7}")
    worst = (0.0, "")
    for name, build in shapes.items():
        a = time_shape(build, small, args.doc_type, schema) * 1000 / args.mb[0]
        b = time_shape(build, large, args.doc_type, schema) * 1000 / args.mb[1]
        worst = max(worst, (b, name), (a, name))
        print(f"{name:<26} {a:>14.1f} {b:>14.1f} {b / a if a else float('nan'):>6.2f}x", flush=True)
    print(f"parser_worst_case: worst_ms_per_mb={worst[0]:.0f} shape={worst[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
