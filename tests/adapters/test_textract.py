"""textract-expense: the mapping from AnalyzeExpense answers to the schema (data), and the backend
through real boto3 against the emulator (sync), moto S3 + the emulator (async multi-page PDFs), and
the residency guard (Textract client and bucket region)."""

from __future__ import annotations

import io
import json

import pytest
from migbench.adapters.textract import (
    MODEL_ID,
    ExpenseCatalog,
    TextractBackend,
    bounded_raw,
    load_expense_catalog,
    map_expense,
)
from migbench.contracts import (
    NOT_FOUND,
    BackendConfig,
    BackendError,
    ErrorClass,
    Request,
    Response,
    SetupError,
)
from migbench.images import encoded
from migbench.parsing import parse_output
from migbench.schema import load_schema
from PIL import Image

SCHEMA = load_schema()
CATALOG = load_expense_catalog()
DATA = "fixtures/synthetic_small"


# ---------------------------------------------------------------- mapping (pure)


def sf(type_, value, conf=95.0, label=None, groups=None, page=1):
    f = {"Type": {"Text": type_, "Confidence": 99.0}, "ValueDetection": {"Text": value, "Confidence": conf},
         "PageNumber": page}
    if label:
        f["LabelDetection"] = {"Text": label, "Confidence": 99.0}
    if groups:
        f["GroupProperties"] = [{"Types": groups, "Id": "g1"}]
    return f


def row(**cells):
    fields = [sf(t, v, 90.0) for t, v in cells.items()]
    return {"LineItemExpenseFields": fields}


def answer(summary, rows=(), pages=1):
    return {"DocumentMetadata": {"Pages": pages}, "ExpenseDocuments": [
        {"ExpenseIndex": 1, "SummaryFields": list(summary),
         "LineItemGroups": [{"LineItemGroupIndex": 1, "LineItems": list(rows)}] if rows else []}]}


def mapped(*answers, doc_type="invoice"):
    return map_expense(list(answers), doc_type, CATALOG, SCHEMA)


def test_a_realistic_invoice_maps_every_field():
    a = answer([
        sf("VENDOR_NAME", "Jacaranda Building Services Pty Ltd"),
        sf("VENDOR_ADDRESS", "137 Elizabeth Lane Wollongong NSW 2500", groups=["VENDOR_SUPPLIER"]),
        sf("TAX_PAYER_ID", "68 030 664 705", label="ABN"),
        sf("RECEIVER_NAME", "Nguyen Murphy", label="Bill To", groups=["RECEIVER_BILL_TO"]),
        sf("RECEIVER_ADDRESS", "280 Park Parade Subiaco WA 6008", groups=["RECEIVER_BILL_TO"]),
        sf("INVOICE_RECEIPT_DATE", "03/10/2024", label="Date"),
        sf("SUBTOTAL", "$1136.50"),
        sf("TAX", "$113.65", label="GST 10%"),
        sf("TOTAL", "$1250.15", label="Total"),
    ], rows=[row(ITEM="Power Point Double", QUANTITY="10", UNIT_PRICE="$31.49", PRICE="$314.90",
                 EXPENSE_ROW="Power Point Double 10 $31.49 $314.90"),
             row(ITEM="Hot Water Valve", QUANTITY="4", UNIT_PRICE="$73.04", PRICE="$292.16")])
    out = mapped(a)
    assert out["SUPPLIER_NAME"] == "Jacaranda Building Services Pty Ltd"
    assert out["BUSINESS_ABN"] == "68 030 664 705"
    assert (out["PAYER_NAME"], out["PAYER_ADDRESS"]) == ("Nguyen Murphy", "280 Park Parade Subiaco WA 6008")
    assert (out["INVOICE_DATE"], out["GST_AMOUNT"], out["TOTAL_AMOUNT"]) == ("03/10/2024", "$113.65", "$1250.15")
    assert out["LINE_ITEM_DESCRIPTIONS"] == "Power Point Double | Hot Water Valve"
    assert out["LINE_ITEM_QUANTITIES"] == "10 | 4"
    assert out["LINE_ITEM_PRICES"] == "$31.49 | $73.04"
    assert out["LINE_ITEM_TOTAL_PRICES"] == "$314.90 | $292.16"
    assert out["IS_GST_INCLUDED"] == "true" and out["DOCUMENT_TYPE"] == "INVOICE"
    assert list(out) == SCHEMA.fields_for("invoice")  # every field of the type, in schema order


def test_duplicates_take_the_most_confident_value_and_preferred_types_first():
    out = mapped(answer([
        sf("TOTAL", "$12.00", conf=60.0), sf("TOTAL", "$120.00", conf=97.0), sf("AMOUNT_PAID", "$200.00", conf=99.9),
        sf("VENDOR_NAME", "Coastal Bean", conf=80.0), sf("VENDOR_NAME", "Coastal Bean Pty. Ltd.", conf=92.0),
    ]), doc_type="receipt")
    assert out["TOTAL_AMOUNT"] == "$120.00"  # TOTAL before AMOUNT_PAID, then confidence
    assert out["SUPPLIER_NAME"] == "Coastal Bean Pty. Ltd."


def test_missing_fields_are_not_found_and_gst_included_needs_a_read_document():
    assert set(mapped(answer([]), doc_type="receipt").values()) == {NOT_FOUND, "RECEIPT"}
    no_gst = mapped(answer([sf("TOTAL", "$50.00")]))
    assert no_gst["GST_AMOUNT"] == NOT_FOUND and no_gst["IS_GST_INCLUDED"] == "false"
    zero = mapped(answer([sf("TOTAL", "$50.00"), sf("TAX", "$0.00", label="GST")]))
    assert zero["IS_GST_INCLUDED"] == "false"


def test_abn_with_spaces_is_checked_and_the_receivers_abn_is_never_the_suppliers():
    out = mapped(answer([sf("RECEIVER_ABN_NUMBER", "51 824 753 556"), sf("OTHER", "51824753556", label="Customer ABN")]))
    # a receiver's ABN typed as such is never taken; an unnormalised field labelled ABN is (label rule)
    assert out["BUSINESS_ABN"] == "51 824 753 556"
    only_receiver = mapped(answer([sf("RECEIVER_ABN_NUMBER", "51 824 753 556")]))
    assert only_receiver["BUSINESS_ABN"] == NOT_FOUND
    bad_checksum = mapped(answer([sf("VENDOR_ABN_NUMBER", "51 824 753 557", conf=99.0),
                                  sf("TAX_PAYER_ID", "ABN: 68-030-664-705", conf=50.0)]))
    assert bad_checksum["BUSINESS_ABN"] == "68 030 664 705"  # the invalid one (OCR slip) is dropped
    assert mapped(answer([sf("VENDOR_ABN_NUMBER", "12 345 678 901")]))["BUSINESS_ABN"] == NOT_FOUND


def test_gst_label_wins_over_another_tax_and_a_gst_number_is_not_an_amount():
    out = mapped(answer([sf("TAX", "$4.00", conf=99.0, label="Wine Tax"), sf("TAX", "$9.10", conf=80.0, label="GST")]))
    assert out["GST_AMOUNT"] == "$9.10"
    other = mapped(answer([sf("OTHER", "123 456 789", label="GST Reg No"), sf("OTHER", "$3.30", label="GST")]))
    assert other["GST_AMOUNT"] == "$3.30"
    assert mapped(answer([sf("OTHER", "123456", label="GST Reg No")]))["GST_AMOUNT"] == NOT_FOUND


def test_payer_prefers_bill_to_over_ship_to():
    out = mapped(answer([sf("RECEIVER_NAME", "Dock 4 Receiving", conf=99.0, groups=["RECEIVER_SHIP_TO"]),
                         sf("NAME", "Koala Logistics Pty Ltd", conf=70.0, groups=["RECEIVER_BILL_TO"])]))
    assert out["PAYER_NAME"] == "Koala Logistics Pty Ltd"


def test_line_items_across_pages_and_expense_row_fallback():
    p1 = answer([sf("VENDOR_NAME", "Outback Digital")], rows=[row(ITEM="Strategy Workshop", PRICE="$1946.39")])
    p2 = answer([], rows=[row(EXPENSE_ROW="Data Migration Services 4 $1554.88", PRICE="$6219.52")])
    out = mapped(p1, p2)
    assert out["LINE_ITEM_DESCRIPTIONS"] == "Strategy Workshop | Data Migration Services 4 $1554.88"
    assert out["LINE_ITEM_TOTAL_PRICES"] == "$1946.39 | $6219.52"
    assert out["LINE_ITEM_QUANTITIES"] == NOT_FOUND


def test_rendered_fields_read_back_identically_through_the_shared_parser():
    from migbench.parsing import render_kv

    out = mapped(answer([sf("VENDOR_NAME", "A: B & Co"), sf("TOTAL", "$1,250.15")],
                        rows=[row(ITEM="x | y", PRICE="$1.00")]))
    parsed = parse_output(render_kv(out), "invoice", SCHEMA)
    assert parsed["SUPPLIER_NAME"] == "A: B & Co" and parsed["TOTAL_AMOUNT"] == "$1,250.15"


def test_catalog_is_validated_at_load(tmp_path):
    import yaml
    from migbench.catalog import CatalogError, data_path, load_model

    raw = yaml.safe_load(data_path("textract_expense.yaml").read_text())
    raw["summary"]["SUPPLIER_NAMES"] = [{"type": "VENDOR_NAME"}]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(CatalogError, match="SUPPLIER_NAMES"):
        load_model(ExpenseCatalog, bad)
    raw = yaml.safe_load(data_path("textract_expense.yaml").read_text())
    raw["summary"]["GST_AMOUNT"][0]["label"] = "(unclosed"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(CatalogError, match="regular expression"):
        load_model(ExpenseCatalog, bad)


def test_raw_answer_for_audit_is_bounded_without_blocks():
    a = answer([sf("VENDOR_NAME", "x" * 5000)])
    a["ExpenseDocuments"][0]["Blocks"] = [{"Text": "w"}] * 100
    kept = bounded_raw([a], 200_000)
    assert not kept["truncated"] and "Blocks" not in kept["answers"][0]["ExpenseDocuments"][0]
    cut = bounded_raw([a], 1000)
    assert cut["truncated"] and len(cut["answers_json"]) == 1000 and cut["chars"] > 5000


def test_cost_is_pages_times_the_catalog_price():
    from migbench.cost import document_cost, load_pricing, page_price

    pricing = load_pricing()
    price = page_price(pricing, MODEL_ID)
    assert price is not None and not price.verified and "textract/pricing" in price.source
    r = Response(extra={"billed_pages": 3})
    assert document_cost(pricing, MODEL_ID, r) == pytest.approx(3 * price.per_page)
    assert document_cost(pricing, MODEL_ID, Response()) is None  # no billed pages: not guessed


def test_iam_policy_is_textract_in_sydney_and_the_bucket_prefix():
    from migbench.iam import policy_regions, write_policy

    doc = write_policy(["textract-expense"], None, s3_buckets=["syd-docs"])
    allow = {s["Sid"]: s for s in doc["Statement"] if s["Effect"] == "Allow"}
    tx = allow["TextractExpenseInAllowedRegions"]
    assert tx["Action"] == ["textract:AnalyzeExpense", "textract:StartExpenseAnalysis", "textract:GetExpenseAnalysis"]
    assert tx["Condition"]["StringEquals"]["aws:RequestedRegion"] == ["ap-southeast-2"]  # not Melbourne
    assert allow["TextractUploadsInTheBucketPrefix"]["Resource"] == ["arn:aws:s3:::syd-docs/migbench/*"]
    assert allow["TextractBucketRegionCheck"]["Action"] == ["s3:GetBucketLocation"]
    assert policy_regions(doc) == {"ap-southeast-2"}
    deny = next(s for s in doc["Statement"] if s["Effect"] == "Deny")
    assert "textract:*" in deny["Action"]
    sync_only = write_policy(["textract-expense"], None)
    assert [s["Action"] for s in sync_only["Statement"] if s["Effect"] == "Allow"] == [["textract:AnalyzeExpense"]]


# ---------------------------------------------------------------- through boto3 against the emulator


@pytest.fixture
def aws_env(monkeypatch):
    pytest.importorskip("boto3")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_TEXTRACT", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def dataset():
    from migbench.datasets import load_dataset

    return load_dataset(DATA)


@pytest.fixture(scope="module")
def emulator(dataset):
    pytest.importorskip("botocore")
    pytest.importorskip("cbor2")  # the emulator's Textract speaks CBOR like botocore >= 1.40
    from migbench.emulator import GroundTruthResponder, run_emulator

    with run_emulator(responder=GroundTruthResponder(dataset)) as emu:
        yield emu


@pytest.fixture(scope="module")
def moto_url():
    pytest.importorskip("moto")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def backend(emu_url, **options):
    return TextractBackend(BackendConfig("textract-expense", options={"endpoint_url": emu_url, "allow_loopback": True,
                                                                     **options}))


def s3(url, region="ap-southeast-2"):
    import boto3

    return boto3.client("s3", region_name=region, endpoint_url=url)


def bucket(url, name, region):
    client = s3(url, region)
    if region == "us-east-1":
        client.create_bucket(Bucket=name)
    else:
        client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
    return name


def test_sync_run_end_to_end_through_the_runner(emulator, dataset, aws_env, tmp_path, monkeypatch):
    """Every invoice and receipt answered by AnalyzeExpense (CBOR over real boto3), mapped, parsed and
    scored on the shared path: with a perfect emulated answer every field scores; bank statements
    are recorded failures; each document is priced per page and every request audited."""
    from migbench.registry import create_backend
    from migbench.retry import RetryPolicy
    from migbench.runner import Runner, RunOptions
    from migbench.store import RunStore

    monkeypatch.setenv("AWS_ENDPOINT_URL_TEXTRACT", emulator.url)  # how a dry run points at the emulator
    b = create_backend("textract-expense", options={"allow_loopback": True})
    store = RunStore(tmp_path / "results")
    summary = Runner(b, dataset, store, RunOptions(retry=RetryPolicy(max_attempts=2, base_s=0.001, cap_s=0.002))).run()
    docs = {d.doc_id: d for d in store.documents(summary.run_id)}
    expenses = [d for d in docs.values() if d.doc_type != "bank_statement"]
    statements = [d for d in docs.values() if d.doc_type == "bank_statement"]
    assert expenses and statements and len(docs) == len(dataset.documents)
    assert all(d.status == "ok" for d in expenses), [(d.doc_id, d.error) for d in expenses if d.status != "ok"]
    assert all(d.doc_f1 == pytest.approx(1.0) for d in expenses), [(d.doc_id, d.doc_f1) for d in expenses]
    assert all(d.response.cost_usd == pytest.approx(0.01) for d in expenses)
    assert all(d.response.extra["billed_pages"] == 1 and d.response.extra["textract"]["answers"] for d in expenses)
    assert all(d.status == "failed" and d.error_class == "permanent" and "not supported by textract-expense" in d.error
               for d in statements)
    audit = store.audit(summary.run_id)
    assert {(a["service"], a["operation"]) for a in audit} == {("textract", "AnalyzeExpense")}
    assert len(audit) == len(expenses) and all(a["allowed"] and a["status"] == 200 for a in audit)
    run = store.run(summary.run_id)
    assert run.emulated and run.family == "textract" and run.model == MODEL_ID
    from migbench.cost import load_pricing, run_cost

    cost = run_cost(run, list(docs.values()), load_pricing())
    assert cost.basis == "page" and cost.per_doc == pytest.approx(0.01)


def test_bank_statement_is_refused_before_sending(emulator, aws_env):
    before = emulator.stats.requests
    b = backend(emulator.url)
    with pytest.raises(BackendError, match="not supported by textract-expense") as info:
        b.generate(Request("s.png", "bank_statement", "", images=[encoded(_png("white"))]))
    assert info.value.error_class is ErrorClass.PERMANENT and emulator.stats.requests == before


def test_faults_are_classified_and_a_non_answer_is_never_a_success(emulator, dataset, aws_env):
    doc = next(d for d in dataset.documents if d.doc_type == "receipt")
    req = Request(doc.doc_id, "receipt", "", images=[encoded(doc.path.read_bytes())])
    b = backend(emulator.url)
    try:
        emulator.set_faults(script=["throttle", "html_body", "truncated_body"])
        for expected in (ErrorClass.THROTTLING, ErrorClass.PERMANENT, ErrorClass.TRANSIENT):
            with pytest.raises(BackendError) as info:
                b.generate(req)
            assert info.value.error_class is expected, info.value
        r = b.generate(req)  # the script is used up: a real answer
        fields = parse_output(r.text, "receipt", SCHEMA)
        assert fields["TOTAL_AMOUNT"] == doc.ground_truth["TOTAL_AMOUNT"]
    finally:
        emulator.set_faults()


def test_emulator_also_speaks_aws_json_1_1(emulator, dataset):
    """Older botocore sends X-Amz-Target JSON 1.1: the emulator answers it in JSON (signed for textract)."""
    import base64
    import urllib.request

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    doc = next(d for d in dataset.documents if d.doc_type == "invoice")
    body = json.dumps({"Document": {"Bytes": base64.b64encode(doc.path.read_bytes()).decode()}}).encode()
    req = AWSRequest("POST", emulator.url + "/", data=body, headers={
        "X-Amz-Target": "Textract.AnalyzeExpense", "Content-Type": "application/x-amz-json-1.1"})
    SigV4Auth(Credentials("testing", "testing"), "textract", "ap-southeast-2").add_auth(req)
    prepared = req.prepare()
    out = urllib.request.urlopen(urllib.request.Request(prepared.url, data=body, headers=dict(prepared.headers),
                                                        method="POST"), timeout=30)
    payload = json.loads(out.read())
    types = {f["Type"]["Text"]: f["ValueDetection"]["Text"] for f in payload["ExpenseDocuments"][0]["SummaryFields"]}
    assert types["TOTAL"] == doc.ground_truth["TOTAL_AMOUNT"] and out.headers["x-migbench-emulated"] == "1"
    bad = AWSRequest("POST", emulator.url + "/", data=body, headers={"X-Amz-Target": "Textract.AnalyzeExpense"})
    SigV4Auth(Credentials("testing", "testing"), "bedrock", "ap-southeast-2").add_auth(bad)  # wrong scope
    p = bad.prepare()
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(urllib.request.Request(p.url, data=body, headers=dict(p.headers), method="POST"))
    assert info.value.code == 403 and json.loads(info.value.read())["__type"] == "InvalidSignatureException"


# ---------------------------------------------------------------- async: multi-page PDF through S3


def _png(color, size=(64, 48)):
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def _two_page_pdf(first_page_path) -> bytes:
    first = Image.open(first_page_path).convert("RGB")
    buf = io.BytesIO()
    first.save(buf, format="PDF", save_all=True, append_images=[Image.new("RGB", first.size, "white")])
    return buf.getvalue()


def _pdf_request(doc, pdf):
    return Request(doc.doc_id.rsplit(".", 1)[0] + ".pdf", doc.doc_type, "", pdf_bytes=pdf,
                   pdf_page_sizes=[(800, 1100), (800, 1100)])


def test_multi_page_pdf_goes_through_s3_paginates_and_deletes_the_upload(emulator, dataset, moto_url, aws_env):
    from migbench.emulator.textract import state

    state(emulator.service).s3_endpoint_url = moto_url
    name = bucket(moto_url, "syd-expense-docs", "ap-southeast-2")
    doc = next(d for d in dataset.documents if d.doc_type == "invoice")
    b = backend(emulator.url, s3_bucket=name, s3_endpoint_url=moto_url, poll_initial_s=0.01, poll_max_s=0.02,
                max_results=1)
    b.preflight()  # reads the bucket's region: Sydney
    gets_before = emulator.stats.by_operation.get("GetExpenseAnalysis", 0)
    r = b.generate(_pdf_request(doc, _two_page_pdf(doc.path)))
    fields = parse_output(r.text, "invoice", SCHEMA)
    for f in ("SUPPLIER_NAME", "BUSINESS_ABN", "TOTAL_AMOUNT", "GST_AMOUNT", "LINE_ITEM_DESCRIPTIONS"):
        assert fields[f] == doc.ground_truth[f], f
    assert r.extra["input"] == "pdf-async" and r.extra["billed_pages"] == 2 and r.extra["s3_deleted"]
    # one IN_PROGRESS poll, then two result pages (MaxResults=1, one page part each): NextToken followed
    assert emulator.stats.by_operation["GetExpenseAnalysis"] - gets_before == 3
    assert s3(moto_url).list_objects_v2(Bucket=name).get("KeyCount") == 0
    ops = [(e.service, e.operation) for e in r.sent]
    assert ops[0] == ("s3", "PutObject") and ops[1] == ("textract", "StartExpenseAnalysis")
    assert ops[-1] == ("s3", "DeleteObject") and ops.count(("textract", "GetExpenseAnalysis")) == 3
    assert all(e.allowed for e in r.sent)
    kept = backend(emulator.url, s3_bucket=name, s3_endpoint_url=moto_url, poll_initial_s=0.01, keep_uploads=True)
    kept.generate(_pdf_request(doc, _two_page_pdf(doc.path)))
    assert s3(moto_url).list_objects_v2(Bucket=name)["KeyCount"] == 1


def test_multi_page_pdf_without_a_bucket_is_a_clear_failure(emulator, dataset, aws_env):
    doc = next(d for d in dataset.documents if d.doc_type == "invoice")
    with pytest.raises(BackendError, match="set the s3_bucket option") as info:
        backend(emulator.url).generate(_pdf_request(doc, _two_page_pdf(doc.path)))
    assert info.value.error_class is ErrorClass.PERMANENT


# ---------------------------------------------------------------- residency


def test_a_bucket_in_us_east_1_is_refused_before_upload(emulator, dataset, moto_url, aws_env):
    name = bucket(moto_url, "virginia-docs", "us-east-1")
    b = backend(emulator.url, s3_bucket=name, s3_endpoint_url=moto_url, poll_initial_s=0.01)
    with pytest.raises(SetupError, match="virginia-docs' is in us-east-1"):
        b.preflight()
    doc = next(d for d in dataset.documents if d.doc_type == "invoice")
    fresh = backend(emulator.url, s3_bucket=name, s3_endpoint_url=moto_url)
    with pytest.raises(BackendError, match="nothing uploaded") as info:
        fresh.generate(_pdf_request(doc, _two_page_pdf(doc.path)))
    assert info.value.error_class is ErrorClass.RESIDENCY
    assert s3(moto_url, "us-east-1").list_objects_v2(Bucket=name)["KeyCount"] == 0
    assert [e.operation for e in info.value.response.sent] == ["GetBucketLocation"]  # only the region was read


def test_a_textract_client_outside_the_policy_is_refused_and_melbourne_has_no_textract(aws_env, monkeypatch):
    monkeypatch.delenv("MIGBENCH_ALLOW_LOOPBACK", raising=False)
    us = TextractBackend(BackendConfig("textract-expense", options={"region": "us-east-1"}))
    with pytest.raises(SetupError, match="not offered in us-east-1"):
        us.preflight()
    # past the catalog check, the guard itself refuses the prepared request: nothing is sent
    us.catalog.regions.append("us-east-1")
    with pytest.raises(BackendError) as info:
        us.generate(Request("r.png", "receipt", "", images=[encoded(_png("red"))]))
    assert info.value.error_class is ErrorClass.RESIDENCY
    [entry] = info.value.response.sent
    assert not entry.allowed and entry.bytes_sent == 0 and entry.service == "textract" and "us-east-1" in entry.reason
    melbourne = TextractBackend(BackendConfig("textract-expense", options={"region": "ap-southeast-4"}))
    with pytest.raises(SetupError, match="not offered in ap-southeast-4"):
        melbourne.preflight()


def test_suites_treat_textract_as_cloud_and_refuse_real_aws_without_live():
    from migbench.suite_session import live_refusal, loopback_cloud

    assert "would call real AWS" in live_refusal("textract-expense", "textract", {}, {}, live=False)
    env = {"AWS_ENDPOINT_URL_TEXTRACT": "http://127.0.0.1:8787"}
    assert live_refusal("textract-expense", "textract", {}, env, live=False) is None
    assert loopback_cloud("textract", {}, env)
