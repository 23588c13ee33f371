import io
import json
import random
from decimal import Decimal

import boto3
import pytest
from botocore.config import Config
from migbench.contracts import NOT_FOUND, Document
from migbench.emulator import GroundTruthResponder, ScriptedResponder, run_emulator
from migbench.emulator.protocol import ParsedRequest
from migbench.emulator.responders import (
    NotFoundResponder,
    doc_type_from_prompt,
    perturb_amount,
    swap_day_month,
    typo,
)
from migbench.normalize import parse_amount
from migbench.schema import load_schema
from PIL import Image

from tests.conftest import SROIE

# Pages that a 16x16 hash could not tell apart (A4 scans of small receipts) plus a spread of others.
HARD = ["030.jpg", "035.jpg", "055.jpg", "285.jpg", "295.jpg", "425.jpg", "535.jpg", "520.jpg", "540.jpg",
        "470.jpg", "495.jpg", "000.jpg", "005.jpg", "010.jpg"]


def _req(prompt="", images=()):
    return ParsedRequest("Converse", "m", "converse", prompt, None, list(images))


@pytest.fixture(scope="module")
def sroie_docs():
    if not (SROIE / "ground_truth.csv").exists():
        pytest.skip("SROIE dev set not present")
    from migbench.datasets import load_dataset

    docs = {d.doc_id: d for d in load_dataset(SROIE).documents}
    return [docs[name] for name in HARD if name in docs]


def _variant(path, scale, fmt):
    img = Image.open(path)
    img.draft("RGB", (2000, 2000))
    img = img.convert("RGB")
    img = img.resize((max(1, int(img.width * scale)), max(1, int(img.height * scale))))
    buf = io.BytesIO()
    img.save(buf, fmt, quality=70) if fmt == "JPEG" else img.save(buf, fmt)
    return buf.getvalue()


def test_scripted_responder_cycles_or_calls():
    r = ScriptedResponder(["a", "b"])
    assert [r(_req()) for _ in range(3)] == ["a", "b", "a"]
    once = ScriptedResponder(["a"], cycle=False)
    once(_req())
    with pytest.raises(IndexError):
        once(_req())
    assert ScriptedResponder(lambda req: req.prompt.upper())(_req("hi")) == "HI"


def test_not_found_responder_answers_the_fields_of_the_prompted_type():
    text = NotFoundResponder()(_req("Extract STATEMENT_DATE_RANGE and TRANSACTION_DATES from this bank statement"))
    lines = text.splitlines()
    assert lines[0] == "DOCUMENT_TYPE: NOT_FOUND" and "TRANSACTION_AMOUNTS_PAID: NOT_FOUND" in lines
    assert doc_type_from_prompt("Extract the fields of this INVOICE", load_schema()) == "invoice"


def test_degradations_are_outside_the_scoring_tolerance():
    rng = random.Random(1)
    for _ in range(20):
        new = parse_amount(perturb_amount("$9.00", rng))
        assert abs(new - Decimal("9.00")) > Decimal("0.09")
    assert swap_day_month("05/12/2018") == "12/05/2018"
    assert swap_day_month("25/12/2018") != "25/12/2018"
    assert typo("TAMAN DAYA", rng) != "TAMAN DAYA"


def test_ground_truth_responder_matches_resized_and_reencoded_pages(sroie_docs):
    r = GroundTruthResponder(sroie_docs)
    for doc in sroie_docs:
        for scale, fmt in ((0.5, "JPEG"), (0.33, "PNG")):
            assert r.match_image(_variant(doc.path, scale, fmt)).doc.doc_id == doc.doc_id


def test_ground_truth_answers_over_http_match_the_sent_document(sroie_docs):
    r = GroundTruthResponder(sroie_docs, style="json")
    doc = next(d for d in sroie_docs if d.doc_id == "285.jpg")  # its 16x16 hash equals 055.jpg's
    with run_emulator(responder=r) as emu:
        client = boto3.client("bedrock-runtime", endpoint_url=emu.url, region_name="ap-southeast-2",
                              aws_access_key_id="testing", aws_secret_access_key="testing",
                              config=Config(retries={"total_max_attempts": 1}))
        out = client.converse(modelId="au.amazon.nova-lite-v1:0", messages=[{"role": "user", "content": [
            {"image": {"format": "jpeg", "source": {"bytes": _variant(doc.path, 0.25, "JPEG")}}},
            {"text": "Extract the RECEIPT fields"}]}])
    fields = json.loads(out["output"]["message"]["content"][0]["text"])
    assert r.last_match.doc.doc_id == "285.jpg"
    for name, value in doc.ground_truth.items():
        assert fields[name] == value
    assert fields["BUSINESS_ABN"] == NOT_FOUND  # not in the SROIE ground truth


def test_error_rate_degrades_fields_deterministically(tmp_path):
    img = tmp_path / "a.png"
    Image.new("RGB", (60, 90), "white").save(img)
    gt = {"DOCUMENT_TYPE": "INVOICE", "SUPPLIER_NAME": "Acme Pty Ltd", "INVOICE_DATE": "05/03/2024",
          "TOTAL_AMOUNT": "$110.00", "GST_AMOUNT": "$10.00", "BUSINESS_ABN": "51 824 753 556",
          "LINE_ITEM_DESCRIPTIONS": "Widget | Gadget"}
    doc = Document("a.png", img, "invoice", gt)
    exact = GroundTruthResponder([doc], error_rate=0.0).answer_fields(doc)
    assert all(exact[k] == v for k, v in gt.items()) and exact["PAYER_NAME"] == NOT_FOUND
    wrong = GroundTruthResponder([doc], error_rate=1.0, seed=5)
    fields = wrong.answer_fields(doc)
    assert all(fields[k] != v for k, v in gt.items())
    assert set(wrong.degradations["a.png"]) == set(gt)
    assert GroundTruthResponder([doc], error_rate=1.0, seed=5).answer_fields(doc) == fields
    half = GroundTruthResponder([doc], error_rate=0.5, seed=1)
    changed = sum(half.answer_fields(doc)[k] != v for k, v in gt.items())
    assert 0 < changed < len(gt)


def test_an_image_far_from_every_page_gets_not_found_answers(tmp_path):
    img = tmp_path / "a.png"
    page = Image.new("L", (64, 64), 255)
    page.paste(0, (0, 0, 32, 64))
    page.save(img)
    doc = Document("a.png", img, "receipt", {"TOTAL_AMOUNT": "9.00"})
    r = GroundTruthResponder([doc], max_distance=100)
    other = Image.new("L", (64, 64), 255)
    other.paste(0, (32, 0, 64, 64))
    buf = io.BytesIO()
    other.save(buf, "PNG")
    from migbench.emulator.protocol import ImageInfo

    text = r(_req("Extract the receipt", [ImageInfo("png", 64, 64, len(buf.getvalue()), buf.getvalue())]))
    assert "TOTAL_AMOUNT: NOT_FOUND" in text and r.last_match.distance > 100
