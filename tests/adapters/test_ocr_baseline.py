"""The OCR baseline backend end to end: real RapidOCR on rendered and real receipt images."""

from __future__ import annotations

import csv
import io
import sys
import threading
from pathlib import Path

import pytest
from migbench.adapters.ocr_baseline import OCRBaseline, render_fields
from migbench.contracts import (
    NOT_FOUND,
    BackendConfig,
    BackendError,
    ErrorClass,
    InputError,
    Request,
    SetupError,
)
from migbench.images import prepare_input
from migbench.schema import load_schema
from migbench.scoring import score_document

from tests.conftest import SROIE

FONT_DIRS = [Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path.home() / ".fonts"]


def find_font() -> Path | None:
    for d in FONT_DIRS:
        for name in ("DejaVuSans.ttf", "LiberationSans-Regular.ttf", "FreeSans.ttf"):
            hits = sorted(d.rglob(name)) if d.exists() else []
            if hits:
                return hits[0]
    return None


def render_receipt(rows: list[str | tuple[str, str]], size: int = 26) -> bytes:
    """A receipt as PNG bytes: a string row is left aligned; (label, amount) puts the amount right."""
    from PIL import Image, ImageDraw, ImageFont

    font_path = find_font()
    if font_path is None:
        pytest.skip("no TrueType font on this system to render a test receipt")
    font = ImageFont.truetype(str(font_path), size)
    width, line_h = 760, int(size * 1.8)
    img = Image.new("RGB", (width, line_h * (len(rows) + 2)), "white")
    draw = ImageDraw.Draw(img)
    for i, row in enumerate(rows, 1):
        y = i * line_h
        if isinstance(row, tuple):
            draw.text((30, y), row[0], font=font, fill="black")
            w = draw.textlength(row[1], font=font)
            draw.text((width - 30 - w, y), row[1], font=font, fill="black")
        else:
            draw.text((30, y), row, font=font, fill="black")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


AU_RECEIPT = [
    "Harbour Hardware Pty Ltd",
    "45 Pitt Street",
    "Sydney NSW 2000",
    "ABN 51 824 753 556",
    "TAX INVOICE",
    ("Date:", "14/02/2024"),
    ("Hammer 1 x 24.95", "24.95"),
    ("Nails 2 x 5.50", "11.00"),
    ("TOTAL INCL GST", "$35.95"),
    ("GST included", "$3.27"),
    ("EFTPOS", "$35.95"),
]


@pytest.fixture(scope="module")
def backend():
    pytest.importorskip("rapidocr_onnxruntime", reason="pip install 'migbench[ocr]'")
    b = OCRBaseline(BackendConfig(name="ocr-baseline"))
    yield b
    b.close()


def ocr_request(backend: OCRBaseline, doc_id: str, data: bytes) -> Request:
    """The request the runner would build: the file's bytes decoded once, in the backend's form."""
    prepared = prepare_input(data, backend.input_form, backend.image_budget(), what=doc_id)
    return Request(doc_id=doc_id, doc_type="receipt", prompt="", pages=prepared.pages)


def parse_kv(text: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in text.splitlines())


def test_rendered_australian_receipt_end_to_end(backend):
    req = ocr_request(backend, "au.png", render_receipt(AU_RECEIPT))
    resp = backend.generate(req)
    fields = parse_kv(resp.text)
    schema = load_schema()
    assert list(fields) == schema.fields_for("receipt")  # one line per field, in schema order
    assert fields["SUPPLIER_NAME"] == "Harbour Hardware Pty Ltd"
    assert fields["BUSINESS_ABN"] == "51 824 753 556"
    assert fields["INVOICE_DATE"] == "14/02/2024"
    assert fields["TOTAL_AMOUNT"] == "$35.95"
    assert fields["GST_AMOUNT"] == "$3.27"
    assert fields["IS_GST_INCLUDED"] == "true"
    assert fields["PAYER_NAME"] == NOT_FOUND
    assert resp.input_tokens is None and resp.output_tokens is None
    assert resp.latency_s is not None and resp.latency_s > 0
    texts = [row[0] for row in resp.extra["ocr_lines"]]
    assert any("Harbour" in t for t in texts)
    assert all(len(row[1]) == 4 and 0 <= row[2] <= 1 for row in resp.extra["ocr_lines"])


@pytest.mark.slow  # ~10 s of OCR on a loaded 2-core machine
@pytest.mark.skipif(not (SROIE / "images" / "140.jpg").exists(), reason="sroie_dev not on this machine")
def test_real_sroie_receipt_matches_its_ground_truth(backend):
    with open(SROIE / "ground_truth.csv", newline="", encoding="utf-8") as fh:
        gt = next(r for r in csv.DictReader(fh) if r["image_file"] == "140.jpg")
    gt.pop("image_file")
    req = ocr_request(backend, "140.jpg", (SROIE / "images" / "140.jpg").read_bytes())
    scores = {s.field: s.f1 for s in score_document(gt, parse_kv(backend.generate(req).text))}
    assert scores["TOTAL_AMOUNT"] == 1.0
    assert scores["INVOICE_DATE"] == 1.0
    assert scores["SUPPLIER_NAME"] >= 0.9
    assert scores["BUSINESS_ADDRESS"] >= 0.9


def test_concurrent_calls_give_the_same_answer(backend):
    img = render_receipt(["Tiny Shop Pty Ltd", ("TOTAL", "$7.20")])
    results: list[str] = []
    errors: list[BaseException] = []

    def call():
        try:
            results.append(backend.generate(ocr_request(backend, "t.png", img)).text)
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 2 and results[0] == results[1]
    assert "TOTAL_AMOUNT: $7.20" in results[0]


def test_unreadable_image_bytes_are_an_input_error(backend):
    # Decoding is the runner's pipeline's job (once per page); it refuses the bytes as the
    # document's fault, which the runner records as an INPUT failure (tests/harness/test_runner.py).
    with pytest.raises(InputError, match="not an image"):
        ocr_request(backend, "bad.png", b"not an image at all")
    with pytest.raises(BackendError) as info:
        backend.generate(Request("bad.png", "receipt", "", pages=[]))
    assert info.value.error_class is ErrorClass.INPUT
    assert backend.classify(info.value) is ErrorClass.INPUT


def test_request_without_pages_is_an_input_error(backend):
    with pytest.raises(BackendError) as info:
        backend.generate(Request("empty", "receipt", "", pages=[]))
    assert info.value.error_class is ErrorClass.INPUT


def test_missing_package_is_a_setup_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "rapidocr_onnxruntime", None)  # import now raises ImportError
    b = OCRBaseline(BackendConfig(name="ocr-baseline", options={"threads": 1}))
    with pytest.raises(SetupError, match=r"pip install 'migbench\[ocr\]'"):
        b.preflight()


def test_render_fields_fills_not_found_and_flattens_newlines():
    schema = load_schema()
    text = render_fields({"TOTAL_AMOUNT": "$5.00", "SUPPLIER_NAME": "A\nB", "GST_AMOUNT": ""},
                         "bank_statement", schema)
    assert text.splitlines()[0] == "DOCUMENT_TYPE: NOT_FOUND"
    assert "TOTAL_AMOUNT" not in text  # not a bank-statement field
    text = render_fields({"SUPPLIER_NAME": "A\nB", "GST_AMOUNT": ""}, "receipt", schema)
    assert "SUPPLIER_NAME: A B" in text and "GST_AMOUNT: NOT_FOUND" in text


def test_describe_and_backend_contract():
    b = OCRBaseline(BackendConfig(name="ocr-baseline", options={"threads": 3}))
    assert b.family == "ocr" and b.input_form == "pdf-text-or-pages"
    assert b.describe()["threads"] == 3


def test_a_text_layer_pdf_is_read_without_ocr(tmp_path):
    """A generated born-digital PDF: its text layer gives the fields, no page is OCR'd."""
    from migbench.fixtures.generate import generate_corpus

    generate_corpus(tmp_path, 1, seed=3, doc_types=["invoice"], tiers=["clean"], font_families=["DejaVu"], pdf="text")
    (pdf,) = tmp_path.glob("*.pdf")
    backend = OCRBaseline(BackendConfig(name="ocr-baseline"))
    backend.ocr_pages = lambda pages: pytest.fail("a text-layer page was OCR'd")  # type: ignore[method-assign]
    prepared = prepare_input(pdf.read_bytes(), backend.input_form, backend.image_budget(), what=pdf.name)
    assert prepared.pdf_bytes and not prepared.pages
    req = Request(doc_id=pdf.name, doc_type="invoice", prompt="", pages=prepared.pages,
                  pdf_bytes=prepared.pdf_bytes, pdf_page_sizes=prepared.pdf_page_sizes)
    resp = backend.generate(req)
    assert resp.extra["text_layer_pages"] == 1
    with open(tmp_path / "ground_truth.csv", newline="") as fh:
        gt = next(csv.DictReader(fh))
    got = dict(line.split(": ", 1) for line in resp.text.splitlines())
    assert got["TOTAL_AMOUNT"] == gt["TOTAL_AMOUNT"] and got["INVOICE_DATE"] == gt["INVOICE_DATE"]
