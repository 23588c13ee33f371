from migbench.consistency import check_fields, consistency_rates
from migbench.contracts import DocResult, Response


def test_valid_australian_invoice_output_passes_every_rule():
    fields = {"BUSINESS_ABN": "51 824 753 556", "IS_GST_INCLUDED": "true", "TOTAL_AMOUNT": "$110.00",
              "GST_AMOUNT": "$10.00", "LINE_ITEM_DESCRIPTIONS": "Bolts | Nuts", "LINE_ITEM_QUANTITIES": "2 | 4",
              "LINE_ITEM_PRICES": "$5.00 | $25.00", "LINE_ITEM_TOTAL_PRICES": "$10.00 | $100.00"}
    assert check_fields(fields) == {"abn_checksum": True, "gst_one_eleventh": True, "line_arithmetic": True,
                                    "lists_aligned": True}


def test_each_rule_catches_its_inconsistency():
    out = check_fields({"BUSINESS_ABN": "51 824 753 557", "IS_GST_INCLUDED": "yes", "TOTAL_AMOUNT": "$110.00",
                        "GST_AMOUNT": "$11.00", "LINE_ITEM_QUANTITIES": "2", "LINE_ITEM_PRICES": "$5.00",
                        "LINE_ITEM_TOTAL_PRICES": "$12.00", "LINE_ITEM_DESCRIPTIONS": "a | b"})
    assert out == {"abn_checksum": False, "gst_one_eleventh": False, "line_arithmetic": False, "lists_aligned": False}


def test_rules_that_do_not_apply_are_none():
    assert set(check_fields({"TOTAL_AMOUNT": "$5", "BUSINESS_ABN": "NOT_FOUND"}).values()) == {None}


def test_rates_count_only_completed_documents():
    rows = [DocResult(f"d{i}", "invoice", "clean", status, Response(), fields={"BUSINESS_ABN": abn})
            for i, (status, abn) in enumerate([("ok", "51 824 753 556"), ("ok", "12 345 678 901"),
                                                ("failed", "51 824 753 556")])]
    assert consistency_rates(rows)["abn_checksum"] == (1, 2)
