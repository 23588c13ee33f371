"""The OCR rule extractor on hand-written OCR line lists (no OCR engine needed)."""

from __future__ import annotations

import pytest
from migbench.adapters.ocr_layout import OcrLine, group_rows
from migbench.adapters.ocr_rules import NumberStyle, date_candidates, extract, find_total
from migbench.contracts import NOT_FOUND
from migbench.schema import load_schema
from migbench.scoring import score_document

SCHEMA = load_schema()
ROW_H = 20


def page(*rows: str | tuple[str, ...]) -> list[OcrLine]:
    """One OcrLine per box; a tuple is one printed row of separate boxes laid out left to right."""
    lines = []
    for r, row in enumerate(rows):
        boxes = (row,) if isinstance(row, str) else row
        x = 10.0
        for text in boxes:
            w = 9.0 * len(text)
            lines.append(OcrLine(text, (x, r * 30.0, x + w, r * 30.0 + ROW_H), 0.95))
            x += w + 60
    return lines


AU_INVOICE = page(
    "TAX INVOICE",
    "Acme Plumbing Pty Ltd",
    "12 George Street",
    "Sydney NSW 2000",
    "ABN: 51 824 753 556",
    "Phone: (02) 9123 4567",
    ("Invoice No:", "INV-1042"),
    ("Date:", "5 March 2024"),
    ("Due Date:", "19/03/2024"),
    "Bill To: Jane Citizen",
    "8 Smith Road",
    "Parramatta NSW 2150",
    ("Description", "Qty", "Unit Price", "Amount"),
    ("Copper pipe 15mm", "2", "$15.00", "$30.00"),
    ("Labour (hours)", "1.5", "$80.00", "$120.00"),
    ("Subtotal", "$150.00"),
    ("GST (10%)", "$15.00"),
    ("TOTAL INCL GST", "$165.00"),
    "Thank you for your business",
)


def test_australian_invoice_fields():
    out = extract(AU_INVOICE, "invoice", SCHEMA)
    assert set(out) == set(SCHEMA.fields_for("invoice"))
    assert out["DOCUMENT_TYPE"] == "INVOICE"
    assert out["SUPPLIER_NAME"] == "Acme Plumbing Pty Ltd"
    assert out["BUSINESS_ADDRESS"] == "12 George Street Sydney NSW 2000"
    assert out["BUSINESS_ABN"] == "51 824 753 556"
    assert out["INVOICE_DATE"] == "05/03/2024"  # the labelled issue date, not the due date
    assert out["TOTAL_AMOUNT"] == "$165.00"
    assert out["GST_AMOUNT"] == "$15.00"
    assert out["IS_GST_INCLUDED"] == "true"
    assert out["PAYER_NAME"] == "Jane Citizen"
    assert out["PAYER_ADDRESS"] == "8 Smith Road Parramatta NSW 2150"
    assert out["LINE_ITEM_DESCRIPTIONS"] == "Copper pipe 15mm | Labour (hours)"
    assert out["LINE_ITEM_QUANTITIES"] == "2 | 1.5"
    assert out["LINE_ITEM_PRICES"] == "$15.00 | $80.00"
    assert out["LINE_ITEM_TOTAL_PRICES"] == "$30.00 | $120.00"


def test_australian_invoice_scores_full_marks_under_the_incumbent_scorer():
    gt = {"BUSINESS_ABN": "51824753556", "TOTAL_AMOUNT": "$165.00", "GST_AMOUNT": "$15.00",
          "INVOICE_DATE": "05/03/2024", "IS_GST_INCLUDED": "true", "SUPPLIER_NAME": "ACME PLUMBING PTY LTD"}
    scores = score_document(gt, extract(AU_INVOICE, "invoice", SCHEMA), SCHEMA)
    assert {s.field: s.f1 for s in scores} == dict.fromkeys(gt, 1.0)


def test_gst_one_eleventh_of_total_is_preferred_over_other_tax_lines():
    lines = page("Corner Cafe Pty Ltd", "1 King St Melbourne VIC 3000", ("Date", "02/01/2025"),
                 ("Flat white", "1", "5.50", "5.50"), ("Muffin", "2", "4.40", "8.80"),
                 ("Service tax 0%", "0.00"), ("Total includes GST", "1.30"), ("TOTAL", "$14.30"))
    out = extract(lines, "receipt", SCHEMA)
    assert out["TOTAL_AMOUNT"] == "$14.30"
    assert out["GST_AMOUNT"] == "$1.30"
    assert out["IS_GST_INCLUDED"] == "true"


def test_invalid_abn_checksum_is_not_reported():
    lines = page("Some Shop Pty Ltd", "ABN 51 824 753 557", ("TOTAL", "10.00"))
    assert extract(lines, "receipt", SCHEMA)["BUSINESS_ABN"] == NOT_FOUND


@pytest.mark.parametrize("rows, expected", [
    # label and amount in separate boxes on one row; subtotal, cash and change ignored
    ([("SUBTOTAL", "20.00"), ("TOTAL", "RM", "21.20"), ("CASH", "50.00"), ("CHANGE", "28.80")], "21.20"),
    # glued OCR words and a rounded total after the plain one
    ([("Total:", "9.02"), ("RoundingAdj", "-0.02"), ("RoundedTotal(RM):", "9.00")], "9.00"),
    # the amount printed under its label
    (["Amount Due", "$1,234.50", "Thank you"], "1234.50"),
    # TOTAL QTY / TOTAL DISCOUNT are not totals; a GST summary TOTAL is not the payable
    ([("Total Qty:", "3"), ("Total Discount", "2.00"), ("TOTAL", "18.00"), "GST SUMMARY",
      ("TOTAL:", "16.98", "1.02")], "18.00"),
    # a line stating the GST included is not the total; "RM.34.80" is still an amount
    ([("Total Incl.GST@6%", "RM.34.80"), ("CASH", "RM100.00"), ("GST @6% included in total", "RM1.97")],
     "34.80"),
    # TAX TOTAL sums the tax column; tendered minus change gives the payable
    ([("SUB-TOTAL(GST)", "24.00"), ("CASH", "100.00"), ("CHANGE", "76.00"), ("TAX TOTAL", "1.36")], "24.00"),
    # no total keyword: tendered minus change
    ([("Item", "4.00"), ("Cash", "10.00"), ("Change", "5.50")], "4.50"),
])
def test_total_amount(rows, expected):
    from decimal import Decimal

    assert find_total(group_rows(page(*rows))) == Decimal(expected)


@pytest.mark.parametrize("text, expected", [
    ("Date: 25/12/20188:13:39PM", (25, 12, 2018)),   # glued to a time
    ("05Mar201818:24", (5, 3, 2018)),
    ("DATE : 10 0CT 2017 TUE", (10, 10, 2017)),        # OCR read O as 0 in the month
    ("2018-01-05 22:55:25", (5, 1, 2018)),
    ("March 5, 2024", (5, 3, 2024)),
    ("Order No. 100007017/04/2018 07:13 PM", (17, 4, 2018)),  # glued to a number: lax pattern
])
def test_date_forms(text, expected):
    assert date_candidates(text)[0][0] == expected


@pytest.mark.parametrize("text", ["QI31-12/480", "MG12/3-32/-36/360", "AMOUNT 12.50"])
def test_item_codes_and_amounts_are_not_dates(text):
    assert date_candidates(text) == []


def test_phone_number_does_not_beat_a_labelled_date():
    lines = page("ABC TRADING", "Tel.:05.22.95.66.66", ("Date:", "30/03/2018"), ("TOTAL", "5.00"))
    assert extract(lines, "receipt", SCHEMA)["INVOICE_DATE"] == "30/03/2018"


def test_supplier_skips_document_title_and_trailing_registration_number():
    lines = page("tan woon yann", "TAX INVOICE", "SYL ROASTED DELIGHTS SDN BHD (728515-M)", "(1227039)",
                 "75, JALAN SS 22/19, DAMANSARA JAYA,", "47400 PJ", "TEL:03-77318169",
                 ("Date:", "06/03/2018"), ("TOTAL", "54.50"))
    out = extract(lines, "receipt", SCHEMA)
    assert out["SUPPLIER_NAME"] == "SYL ROASTED DELIGHTS SDN BHD"
    assert out["BUSINESS_ADDRESS"] == "75, JALAN SS 22/19, DAMANSARA JAYA, 47400 PJ"


def test_name_wrapped_over_two_lines_is_joined():
    lines = page("HOME MASTER HARDWARE &", "ELECTRICAL", "NO.113G, JALAN SETIA", ("TOTAL", "15.90"))
    assert extract(lines, "receipt", SCHEMA)["SUPPLIER_NAME"] == "HOME MASTER HARDWARE & ELECTRICAL"


def test_nothing_readable_gives_not_found_everywhere_but_the_type():
    out = extract([], "receipt", SCHEMA)
    assert out["DOCUMENT_TYPE"] == "RECEIPT"
    assert all(v == NOT_FOUND for k, v in out.items() if k != "DOCUMENT_TYPE")


def test_no_gst_mention_leaves_gst_fields_not_found():
    out = extract(page("Plain Shop", ("TOTAL", "3.00")), "receipt", SCHEMA)
    assert out["GST_AMOUNT"] == NOT_FOUND and out["IS_GST_INCLUDED"] == NOT_FOUND


def cells(*rows: tuple[tuple[str, float], ...]) -> list[OcrLine]:
    """Boxes at explicit x positions, one tuple of (text, x) per printed row: a table's columns."""
    return [OcrLine(text, (x, r * 30.0, x + 8.0 * len(text), r * 30.0 + ROW_H), 0.95)
            for r, row in enumerate(rows) for text, x in row]


def test_bank_statement_lists_every_transaction_with_credits_not_found():
    lines = cells(
        (("Example Bank Australia", 10),),
        (("Statement period 01/03/2024 to 31/03/2024", 10),),
        (("Date", 10), ("Description", 120), ("Debit", 400), ("Credit", 500), ("Balance", 600)),
        (("01/03/2024", 10), ("OPENING BALANCE", 120), ("2,000.00", 600)),
        (("02/03/2024", 10), ("WOOLWORTHS SYDNEY", 120), ("45.20", 400), ("1,954.80", 600)),
        (("05/03/2024", 10), ("SALARY ACME PTY LTD", 120), ("2,000.00", 500), ("3,954.80", 600)),
        (("09/03/2024", 10), ("TELSTRA BILL", 120), ("89.00", 400), ("3,865.80", 600)),
    )
    out = extract(lines, "bank_statement", SCHEMA)
    assert set(out) == set(SCHEMA.fields_for("bank_statement"))
    assert out["DOCUMENT_TYPE"] == "BANK_STATEMENT"
    assert out["STATEMENT_DATE_RANGE"] == "01/03/2024 to 31/03/2024"
    # every transaction, in order; the salary credit paid nothing (lists stay aligned); the
    # opening balance is not a transaction
    assert out["TRANSACTION_DATES"] == "02/03/2024 | 05/03/2024 | 09/03/2024"
    assert out["TRANSACTION_AMOUNTS_PAID"] == "$45.20 | NOT_FOUND | $89.00"
    assert out["LINE_ITEM_DESCRIPTIONS"] == "WOOLWORTHS SYDNEY | SALARY ACME PTY LTD | TELSTRA BILL"


def test_signed_amount_column_negative_is_paid():
    lines = cells(
        (("Date", 10), ("Description", 120), ("Amount", 400), ("Balance", 600)),
        (("3 Jan 2024", 10), ("ONLINE PURCHASE", 120), ("-146.82", 400), ("6,483.93 CR", 600)),
        (("15 Jan 2024", 10), ("CENTRELINK PAYMENT", 120), ("636.44", 400), ("7,120.37 CR", 600)),
    )
    out = extract(lines, "bank_statement", SCHEMA)
    assert out["TRANSACTION_AMOUNTS_PAID"] == "$146.82 | NOT_FOUND"


def test_supplier_name_printed_beside_the_document_title_loses_the_title():
    from migbench.adapters.ocr_layout import OcrLine
    from migbench.adapters.ocr_rules import extract

    lines = [OcrLine("Jacaranda Digital", (40, 40, 420, 80)), OcrLine("TAX INVOICE", (900, 42, 1180, 82)),
             OcrLine("16 Church Highway", (40, 100, 380, 130)), OcrLine("Hobart TAS 7000", (40, 140, 330, 170)),
             OcrLine("TOTAL $110.00", (700, 900, 1000, 930))]
    out = extract(lines, "invoice")
    assert out["SUPPLIER_NAME"] == "Jacaranda Digital"
    assert out["BUSINESS_ADDRESS"].startswith("16 Church Highway")


def _l(text, x, y, w=300):
    from migbench.adapters.ocr_layout import OcrLine
    return OcrLine(text, (x, y, x + w, y + 30))


def test_address_ignores_the_right_hand_column_and_stops_at_the_phone_line():
    from migbench.adapters.ocr_rules import extract

    lines = [_l("Outback Office Supplies", 40, 40), _l("TAX INVOICE", 900, 40),
             _l("362 High Parade", 40, 90), _l("Box Hill VIC 3128", 40, 130), _l("Invoice No: INV-7561", 900, 130),
             _l("Ph (02) 3366 3786", 40, 170), _l("Date: 26 February 2024", 900, 170),
             _l("TOTAL $10.00", 800, 900)]
    out = extract(lines, "invoice")
    assert out["BUSINESS_ADDRESS"] == "362 High Parade Box Hill VIC 3128"


def test_the_issue_date_wins_over_the_due_date_printed_beside_other_labels():
    from migbench.adapters.ocr_rules import extract

    lines = [_l("ACME PTY LTD", 40, 40), _l("Phone (07) 6191 7974", 40, 90), _l("Date: 11-06-24", 800, 90),
             _l("ABN 51 824 753 556", 40, 130), _l("Due: 18-06-24", 800, 130), _l("TOTAL $10.00", 800, 900)]
    assert extract(lines, "invoice")["INVOICE_DATE"] == "11/06/2024"


def test_a_date_glued_to_its_label_is_read():
    from migbench.adapters.ocr_rules import date_candidates

    assert date_candidates("Issued5July2023") == [((5, 7, 2023), False)]


def test_line_items_with_the_quantity_first_and_thousands_separators():
    from migbench.adapters.ocr_rules import extract

    lines = [_l("ACME PTY LTD", 40, 40), _l("Qty", 40, 300, 60), _l("Description", 150, 300), _l("Rate", 700, 300, 80),
             _l("Line Total", 850, 300, 150),
             _l("4", 40, 340, 20), _l("Software Licence 12 months", 150, 340), _l("$1,176.25", 700, 340, 120),
             _l("$4,705.00", 850, 340, 120),
             _l("3", 40, 380, 20), _l("Strategy Workshop", 150, 380), _l("$1,698.51", 700, 380, 120),
             _l("$5,095.53", 850, 380, 120),
             _l("Subtotal", 700, 420, 100), _l("$9,800.53", 850, 420, 120)]
    out = extract(lines, "invoice")
    assert out["LINE_ITEM_DESCRIPTIONS"] == "Software Licence 12 months | Strategy Workshop"
    assert out["LINE_ITEM_QUANTITIES"] == "4 | 3"
    assert out["LINE_ITEM_PRICES"] == "$1176.25 | $1698.51"
    assert out["LINE_ITEM_TOTAL_PRICES"] == "$4705.00 | $5095.53"


@pytest.mark.parametrize("text, date", [("Date: 5 0CT 2023", (5, 10, 2023)), ("Issued5July2023", (5, 7, 2023)),
                                        ("SEPT 3, 2024", (3, 9, 2024)), ("12 Marc 2023", None)])
def test_ocr_month_names_are_the_scorers_month_table_with_ocr_confusions(text, date):
    """'0CT' is OCT misread; a word the scorer's table does not know is no month."""
    got = [d for d, _ in date_candidates(text)]
    assert (got[0] if got else None) == date


# ---- other locales, dates and times, labels in other languages (issue 16) ---------------------

@pytest.mark.parametrize("rows,total", [
    ((("SUMME", "EUR", "15,69"), ("Bar", "20,00"), ("Rückgeld", "4,31")), "15.69"),       # de receipt, comma decimal
    ((("Gesamtbetrag", "4.904,94 €"), ("MwSt 19%", "783,13")), "4904.94"),              # dot groups + comma decimal
    ((("Total HT", "1 000,00 €"), ("TVA 20%", "200,00 €"), ("Total TTC", "1 200,00 €")), "1200.00"),  # space groups
    ((("Subtotaal", "100,00"), ("BTW 21%", "21,00"), ("TOTAAL", "€ 121,00")), "121.00"),
    ((("IMPORTE TOTAL", "37,50"),), "37.50"),
    ((("TOTALE COMPLESSIVO", "8,90"),), "8.90"),
    ((("Item", "12.50"), ("Net Amount", "Rs 1939")), "1939.00"),                          # whole number by a code
    ((("ZU ZAHLEN", "12"),), "12.00"),                                                   # labelled whole number
    ((("Grand Total", "1,234.56"),), "1234.56"),                                         # dot decimal still read
])
def test_totals_in_other_locales(rows, total):
    lines = page("Some Shop GmbH", "Market Street 1", *rows)
    got = extract(lines, "receipt", SCHEMA)["TOTAL_AMOUNT"]
    assert got.split()[-1].lstrip("€$") == total, got


@pytest.mark.parametrize("text", ["Mo-Sa 8.00 - 20.00Uhr", "06/01/1812.17:26PM", "25.04.20 09:37", "12:45",
                                  "Opening 09.30h", "2016/05/0114:11:20"])
def test_dates_and_times_are_never_money(text):
    from migbench.adapters.ocr_rules import NumberStyle, money_in

    assert money_in(text) == []
    assert NumberStyle(",").amounts(text) == []


def test_a_time_is_not_the_total_even_on_a_total_row_s_page():
    lines = page("Backhaus Meier", "Öffnungszeiten 7.00 - 20.00Uhr", ("Brot", "3,10"), ("SUMME", "3,10"),
                 "Geöffnet bis 20.00Uhr")
    assert extract(lines, "receipt", SCHEMA)["TOTAL_AMOUNT"].endswith("3.10")


@pytest.mark.parametrize("text,date", [
    ("25.04.20 09:37", (25, 4, 2020)),          # two-digit year before a time
    ("25.04.2009:37", (25, 4, 2020)),           # ... glued to it
    ("2016/05/0114:11:20", (1, 5, 2016)),       # year first, day glued to a time
    ("06/01/1812.17:26PM", (6, 1, 2018)),
    ("29 maart 2014", (29, 3, 2014)),
    ("1. März 2020", (1, 3, 2020)),
    ("3 févr. 2021", (3, 2, 2021)),
    ("12 de marzo de 2019", (12, 3, 2019)),
    ("5 Ogos 2022", (5, 8, 2022)),
])
def test_dates_glued_to_times_and_month_names_of_other_languages(text, date):
    assert date in [d for d, _ in date_candidates(text)]


@pytest.mark.parametrize("order_label,issue_label", [
    ("Order Date:", "Invoice Date:"), ("Bestelldatum:", "Rechnungsdatum:"), ("Besteldatum", "Factuurdatum"),
    ("Date de commande", "Date de facture"), ("Fecha de pedido", "Fecha de factura"),
])
def test_an_order_date_loses_to_the_invoice_date_printed_below_it(order_label, issue_label):
    lines = page("Firma Beispiel", "Weg 2", (order_label, "01.03.2021"), (issue_label, "03.03.2021"),
                 ("Due:", "17.03.2021"))
    assert extract(lines, "invoice", SCHEMA)["INVOICE_DATE"] == "03/03/2021"


def test_a_labelled_date_beats_an_unlabelled_one_above_it():
    lines = page("Shop", "Printed 01/01/2021", ("Datum:", "15/02/2021"), ("TOTAL", "5.00"))
    assert extract(lines, "receipt", SCHEMA)["INVOICE_DATE"] == "15/02/2021"


@pytest.mark.parametrize("rows,printed", [
    ((("Total", "EUR 12,50"),), "EUR 12.50"),
    ((("TOTAL", "RM 9.00"),), "RM 9.00"),
    ((("Total", "€ 12,50"),), "€12.50"),
    ((("Total", "$12.50"),), "$12.50"),
    ((("Total", "12.50"),), "12.50"),  # no currency printed: none invented
])
def test_the_total_keeps_the_printed_currency(rows, printed):
    assert extract(page("Shop", *rows), "receipt", SCHEMA)["TOTAL_AMOUNT"] == printed


def test_the_number_style_follows_the_document_not_one_token():
    from migbench.adapters.ocr_rules import NumberStyle

    assert NumberStyle.of(["1,29", "2,49", "SUMME 3,78", "Tel 12.34"]).decimal == ","
    assert NumberStyle.of(["1.29", "2.49", "TOTAL 3.78", "Ref 12,34"]).decimal == "."
    assert NumberStyle.of(["4.904,94"]).decimal == ","
    assert NumberStyle.of(["25.04.20 09:37", "20.00Uhr", "TOTAL 3,78"]).decimal == ","  # dates/times are no evidence


@pytest.mark.parametrize("text, printed", [
    ("TOTAL$12.34", "$12.34"),  # a label glued to the symbol is not a currency prefix
    ("SUBTOTAL$ 7.50", "$7.50"),
    ("GRANDTOTALS$3.00", "$3.00"),
    ("Total US$12.34", "US$12.34"),  # a prefix that stands as a word of its own is kept
    ("Total NZ$ 8.10", "NZ$8.10"),
])
def test_a_dollar_prefix_is_a_currency_only_as_a_word_of_its_own(text, printed):
    style = NumberStyle.of([text])
    assert [style.format(a) for a in style.amounts(text)] == [printed]
