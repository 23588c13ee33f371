import pytest
from migbench.validation import (
    abn_check_digits,
    abn_digits,
    abn_is_valid,
    format_abn,
    gst_consistent,
    line_consistent,
    running_balance_consistent,
)


@pytest.mark.parametrize("abn", [
    "51 824 753 556",  # the ATO's published example: (4*10+1+24+10+28+63+55+39+75+85+114) = 534 = 6 * 89
    "51824753556",
    "ABN: 51-824-753-556",
    "33 051 775 556",
    "53 004 085 616",
])
def test_valid_abns_pass_the_mod89_checksum(abn):
    assert abn_is_valid(abn)


@pytest.mark.parametrize("abn", ["51 824 753 557", "15 824 753 556", "5182475355", "518247535560", "", "01 824 753 556"])
def test_invalid_abns_fail(abn):
    assert not abn_is_valid(abn)


def test_abn_helpers():
    assert abn_digits("ABN 51 824 753 556") == "51824753556"
    assert format_abn("51824753556") == "51 824 753 556"
    completed = abn_check_digits("824753556")
    assert completed is not None and abn_is_valid(completed) and completed.endswith("824753556")


def test_gst_is_one_eleventh_of_an_inclusive_total():
    assert gst_consistent(110.00, 10.00)
    assert gst_consistent(9.90, 0.90)
    assert not gst_consistent(110.00, 11.00)


def test_line_quantity_times_price():
    assert line_consistent(2, 3.50, 7.00)
    assert line_consistent(3, 0.333, 1.00)  # within 1%
    assert not line_consistent(2, 3.50, 7.50)


def test_running_balance():
    assert running_balance_consistent(100.0, [-20.0, 50.0, -5.5], [80.0, 130.0, 124.5])
    assert not running_balance_consistent(100.0, [-20.0, 50.0], [80.0, 131.0])
    assert not running_balance_consistent(100.0, [-20.0], [80.0, 60.0])
