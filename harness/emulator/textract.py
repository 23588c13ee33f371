"""Emulated Amazon Textract expense analysis (SYNTHETIC answers) behind the emulator's server.

AnalyzeExpense, StartExpenseAnalysis and GetExpenseAnalysis, in both wire protocols botocore uses
for Textract: Smithy RPC v2 CBOR (`POST /service/Textract/operation/<Op>`, botocore >= 1.40) and
AWS JSON 1.1 (`X-Amz-Target: Textract.<Op>`, older botocore). Requests are SigV4-verified with the
`textract` scope. Answers come from the server's GroundTruthResponder: the best-matching dataset
document's fields (degraded at its error rate), written the way Textract writes them (normalised
types VENDOR_NAME, VENDOR_ABN_NUMBER, TAX labelled GST, RECEIVER_* in the bill-to group, line items
ITEM/QUANTITY/UNIT_PRICE/PRICE with the EXPENSE_ROW), so the adapter's mapping is tested against
Textract's vocabulary, not against itself. The vocabulary here is deliberately independent of
harness/data/textract_expense.yaml.

StartExpenseAnalysis reads the document from S3 (moto in tests) through boto3, at
`s3_endpoint_url` (else AWS_ENDPOINT_URL_S3). A job stays IN_PROGRESS for `polls_in_progress`
polls, then answers one page of results per `MaxResults` document pages with NextToken.
"""

from __future__ import annotations

import dataclasses
import io
import json
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from migbench.contracts import NOT_FOUND, InputError
from migbench.emulator import protocol as P
from migbench.emulator.faults import ERROR_FAULTS
from migbench.emulator.sigv4 import verify

CBOR_PATH = "/service/Textract/operation/"
TARGET_PREFIX = "Textract."
OPERATIONS = ("AnalyzeExpense", "StartExpenseAnalysis", "GetExpenseAnalysis")
SYNC_MAX_BYTES = 10 * 1024 * 1024  # botocore ImageBlob max; Textract's synchronous limit
ERROR_STATUS = {"InvalidParameterException": 400, "UnsupportedDocumentException": 400, "BadDocumentException": 400,
                "DocumentTooLargeException": 400, "InvalidS3ObjectException": 400, "InvalidJobIdException": 400,
                "AccessDeniedException": 400, "ThrottlingException": 400, "InternalServerError": 500,
                "ProvisionedThroughputExceededException": 400}
# Injected error faults in Textract's own codes (it has no ServiceUnavailable or model errors).
FAULT_CODES = {"throttle": "ThrottlingException"}


def is_textract(raw_path: str, headers: Any) -> bool:
    target = headers.get("X-Amz-Target") or ""
    return raw_path.startswith(CBOR_PATH) or target.startswith(TARGET_PREFIX)


class TextractError(P.ApiError):
    """An error answer in the protocol the request came in."""

    def __init__(self, code: str, message: str, cbor: bool, status: int | None = None):
        super().__init__(code, message, status if status is not None else ERROR_STATUS.get(code, 400))
        self.cbor = cbor

    def reply(self) -> tuple[dict[str, str], bytes]:
        if self.cbor:
            import cbor2

            return ({"Content-Type": "application/cbor", "smithy-protocol": "rpc-v2-cbor"},
                    cbor2.dumps({"__type": f"com.amazonaws.textract#{self.code}", "message": self.message}))
        return ({"Content-Type": "application/x-amz-json-1.1"},
                json.dumps({"__type": self.code, "message": self.message}).encode())


def _as(err: P.ApiError, cbor: bool) -> TextractError:
    return err if isinstance(err, TextractError) else TextractError(err.code, err.message, cbor, err.status)


@dataclass
class Job:
    fields: list[dict[str, Any]]  # one ExpenseDocument part per page
    pages: int
    polls_left: int
    failed: str | None = None


@dataclass
class TextractState:
    s3_endpoint_url: str | None = None
    polls_in_progress: int = 1
    jobs: dict[str, Job] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def state(service: Any) -> TextractState:
    """The server's Textract state, created on first use."""
    st = getattr(service, "textract_state", None)
    if st is None:
        st = service.textract_state = TextractState()
    return st


def _policy(service: Any) -> Any:
    return dataclasses.replace(service.policy, service="textract")


def _operation(raw_path: str, headers: Any) -> tuple[str, bool]:
    if raw_path.startswith(CBOR_PATH):
        return raw_path[len(CBOR_PATH):].split("?", 1)[0], True
    return (headers.get("X-Amz-Target") or "")[len(TARGET_PREFIX):], False


def precheck(service: Any, method: str, raw_path: str, headers: Any) -> int:
    """What the headers alone refuse (signature form, scope, size), answered in the request's protocol."""
    _, cbor = _operation(raw_path, headers)
    try:
        if method == "POST":
            try:
                verify(method, raw_path, headers, b"", _policy(service))
            except P.ApiError as err:
                if err.message != P.MSG_BAD_SIGNATURE:
                    raise
        raw = headers.get("Content-Length")
        n = int(raw) if raw is not None and raw.isdigit() else 0
        if n > service.limits.max_payload_bytes:
            raise P.ApiError("DocumentTooLargeException",
                             P.MSG_PAYLOAD_TOO_BIG.format(n=n, limit=service.limits.max_payload_bytes), 413)
        return n
    except P.ApiError as err:
        raise _as(err, cbor) from None


def handle(service: Any, method: str, raw_path: str, headers: Any, body: bytes,
           entry_out: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    op, cbor = _operation(raw_path, headers)
    entry_out.update(operation=op, model_id="textract")
    try:
        if method != "POST":
            raise P.ApiError("UnknownOperationException", "", 404)
        verify(method, raw_path, headers, body, _policy(service))
        if op not in OPERATIONS:
            raise P.ApiError("UnknownOperationException", f"Textract operation {op!r} is not emulated", 400)
        params = _decode(body, cbor)
        fault = service.faults.next_fault()
        entry_out["fault"] = fault
        if fault in ERROR_FAULTS:
            code = FAULT_CODES.get(fault, "InternalServerError")
            raise P.ApiError(code, ERROR_FAULTS.get(fault, ("", "The service failed."))[1], ERROR_STATUS[code])
        if fault == "reset":
            from migbench.emulator.server import _Reset

            raise _Reset()
        if fault == "slow":
            service.stopping.wait(service.faults.plan.slow_s)
        answer = {"AnalyzeExpense": _analyze, "StartExpenseAnalysis": _start,
                  "GetExpenseAnalysis": _get}[op](service, params, cbor)
    except P.ApiError as err:
        raise _as(err, cbor) from None
    entry_out["reply"] = json.dumps(answer, default=str)[:2000]
    if cbor:
        import cbor2

        return 200, {"Content-Type": "application/cbor", "smithy-protocol": "rpc-v2-cbor"}, cbor2.dumps(answer)
    return 200, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps(answer).encode()


def _decode(body: bytes, cbor: bool) -> dict[str, Any]:
    try:
        if cbor:
            import cbor2

            value = cbor2.loads(body) if body else {}
        else:
            value = json.loads(body) if body else {}
    except Exception:  # noqa: BLE001 - any decoder failure is the client's malformed request
        raise P.ApiError("InvalidParameterException", "Request body could not be decoded.") from None
    if not isinstance(value, dict):
        raise P.ApiError("InvalidParameterException", "Request body must be an object.")
    return value


def _bytes_param(document: dict[str, Any], cbor: bool) -> bytes:
    blob = document.get("Bytes")
    if cbor:
        if not isinstance(blob, (bytes, bytearray)):
            raise P.ApiError("InvalidParameterException", "Document.Bytes must be a blob.")
        return bytes(blob)
    import base64
    import binascii

    try:
        return base64.b64decode(str(blob), validate=True)
    except (binascii.Error, ValueError):
        raise P.ApiError("InvalidParameterException", "Document.Bytes is not valid base64.") from None


# ---------------------------------------------------------------- documents -> answers


def _page_images(data: bytes) -> list[bytes]:
    """The document's pages as PNG bytes (what the responder's image matcher reads)."""
    from migbench.images import load_pages_from_bytes, sniff

    kind = sniff(data)
    if kind not in ("jpeg", "png", "pdf", "tiff"):
        raise P.ApiError("UnsupportedDocumentException", "Request has unsupported document format")
    if kind in ("jpeg", "png"):
        return [data]
    try:
        pages = load_pages_from_bytes(data, "document")
    except InputError:
        raise P.ApiError("BadDocumentException", "Unable to process the document.") from None
    out = []
    for img in pages:
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def _truth_fields(service: Any, page_png: bytes) -> dict[str, str] | None:
    """The responder's fields for the document this page shows; None when it cannot say."""
    responder = service.responder
    if not hasattr(responder, "match_image") or not hasattr(responder, "answer_fields"):
        return None
    match = responder.match_image(page_png)
    if match.distance > getattr(responder, "max_distance", 200):
        return None
    return responder.answer_fields(match.doc)


def _detection(text: str, confidence: float = 99.0) -> dict[str, Any]:
    return {"Text": text, "Confidence": confidence}


def _field(type_: str, value: str, page: int, label: str | None = None, groups: list[str] | None = None,
           confidence: float = 98.5) -> dict[str, Any]:
    f: dict[str, Any] = {"Type": {"Text": type_, "Confidence": 99.0},
                         "ValueDetection": _detection(value, confidence), "PageNumber": page}
    if label:
        f["LabelDetection"] = _detection(label)
    if groups:
        f["GroupProperties"] = [{"Types": groups, "Id": f"{groups[0].lower()}-1"}]
    return f


def _split(value: str) -> list[str]:
    return [] if value in ("", NOT_FOUND) else [v.strip() for v in value.split(" | ")]


def expense_parts(fields: dict[str, str], pages: int) -> list[dict[str, Any]]:
    """Ground-truth fields as Textract would return them, one ExpenseDocument part per page: header
    fields on page 1, the line items shared out over the pages in order."""
    def has(name: str) -> bool:
        return fields.get(name, NOT_FOUND) not in ("", NOT_FOUND)

    summary: list[dict[str, Any]] = []
    if has("SUPPLIER_NAME"):
        summary.append(_field("VENDOR_NAME", fields["SUPPLIER_NAME"], 1))
    if has("BUSINESS_ADDRESS"):
        summary.append(_field("VENDOR_ADDRESS", fields["BUSINESS_ADDRESS"], 1, groups=["VENDOR_SUPPLIER"]))
    if has("BUSINESS_ABN"):
        summary.append(_field("VENDOR_ABN_NUMBER", fields["BUSINESS_ABN"], 1, label="ABN"))
    if has("PAYER_NAME"):
        summary.append(_field("RECEIVER_NAME", fields["PAYER_NAME"], 1, label="Bill To", groups=["RECEIVER_BILL_TO"]))
    if has("PAYER_ADDRESS"):
        summary.append(_field("RECEIVER_ADDRESS", fields["PAYER_ADDRESS"], 1, groups=["RECEIVER_BILL_TO"]))
    if has("INVOICE_DATE"):
        summary.append(_field("INVOICE_RECEIPT_DATE", fields["INVOICE_DATE"], 1, label="Date"))
    if has("GST_AMOUNT"):
        summary.append(_field("TAX", fields["GST_AMOUNT"], 1, label="GST"))
    if has("TOTAL_AMOUNT"):
        summary.append(_field("TOTAL", fields["TOTAL_AMOUNT"], 1, label="Total"))
    cols = [("ITEM", _split(fields.get("LINE_ITEM_DESCRIPTIONS", ""))),
            ("QUANTITY", _split(fields.get("LINE_ITEM_QUANTITIES", ""))),
            ("UNIT_PRICE", _split(fields.get("LINE_ITEM_PRICES", ""))),
            ("PRICE", _split(fields.get("LINE_ITEM_TOTAL_PRICES", "")))]
    n_rows = max((len(v) for _, v in cols), default=0)
    rows = []
    for i in range(n_rows):
        cells = [(t, v[i]) for t, v in cols if i < len(v)]
        row_fields = [{"Type": {"Text": t, "Confidence": 99.0}, "ValueDetection": _detection(val, 97.0)}
                      for t, val in cells]
        row_fields.append({"Type": {"Text": "EXPENSE_ROW", "Confidence": 99.0},
                           "ValueDetection": _detection(" ".join(val for _, val in cells), 97.0)})
        rows.append({"LineItemExpenseFields": row_fields})
    per_page = -(-len(rows) // pages) if rows else 0
    parts = []
    for p in range(1, pages + 1):
        page_rows = rows[(p - 1) * per_page: p * per_page]
        for row in page_rows:
            for f in row["LineItemExpenseFields"]:
                f["PageNumber"] = p
        parts.append({"ExpenseIndex": 1, "SummaryFields": summary if p == 1 else [],
                      "LineItemGroups": [{"LineItemGroupIndex": 1, "LineItems": page_rows}] if page_rows else []})
    return parts


def _expense(service: Any, data: bytes) -> tuple[list[dict[str, Any]], int]:
    pages = _page_images(data)
    fields = _truth_fields(service, pages[0])
    if fields is None:  # nothing recognisable: Textract returns an expense with no fields
        return [{"ExpenseIndex": 1, "SummaryFields": [], "LineItemGroups": []}], len(pages)
    return expense_parts(fields, len(pages)), len(pages)


def _analyze(service: Any, params: dict[str, Any], cbor: bool) -> dict[str, Any]:
    document = params.get("Document")
    if not isinstance(document, dict) or "Bytes" not in document:
        raise P.ApiError("InvalidParameterException", "Document.Bytes is required (S3Object is not emulated).")
    data = _bytes_param(document, cbor)
    if not data or len(data) > SYNC_MAX_BYTES:
        raise P.ApiError("DocumentTooLargeException", "Document size is over the synchronous limit of 10 MB."
                         if data else "Document is empty.")
    parts, pages = _expense(service, data)
    if pages > 1:
        raise P.ApiError("UnsupportedDocumentException", "Request has unsupported document format: synchronous "
                         "operations take single-page documents; use StartExpenseAnalysis.")
    return {"DocumentMetadata": {"Pages": 1}, "ExpenseDocuments": parts}


def _read_s3(service: Any, bucket: str, key: str) -> bytes:
    import boto3
    from botocore.config import Config

    st = state(service)
    s3 = boto3.client("s3", region_name=service.config.region, endpoint_url=st.s3_endpoint_url,
                      aws_access_key_id="testing", aws_secret_access_key="testing",
                      config=Config(retries={"total_max_attempts": 1}))
    try:
        location = s3.get_bucket_location(Bucket=bucket).get("LocationConstraint") or "us-east-1"
        if location != service.config.region:
            raise P.ApiError("InvalidS3ObjectException", f"Unable to get object metadata from S3. Check object key, "
                             f"region and/or access permissions. (bucket region {location})")
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except P.ApiError:
        raise
    except Exception:  # noqa: BLE001 - whatever S3 said, Textract answers this
        raise P.ApiError("InvalidS3ObjectException", "Unable to get object metadata from S3. Check object key, "
                         "region and/or access permissions.") from None
    finally:
        s3.close()


def _start(service: Any, params: dict[str, Any], cbor: bool) -> dict[str, Any]:
    obj = ((params.get("DocumentLocation") or {}).get("S3Object") or {})
    if not obj.get("Bucket") or not obj.get("Name"):
        raise P.ApiError("InvalidParameterException", "DocumentLocation.S3Object needs Bucket and Name.")
    data = _read_s3(service, str(obj["Bucket"]), str(obj["Name"]))
    st = state(service)
    try:
        parts, pages = _expense(service, data)
        job = Job(parts, pages, st.polls_in_progress)
    except P.ApiError as err:  # a bad document fails the job, as Textract does, not the start call
        job = Job([], 0, st.polls_in_progress, failed=err.message)
    job_id = uuid.uuid4().hex
    with st.lock:
        st.jobs[job_id] = job
    return {"JobId": job_id}


def _get(service: Any, params: dict[str, Any], cbor: bool) -> dict[str, Any]:
    st = state(service)
    job_id = str(params.get("JobId") or "")
    with st.lock:
        job = st.jobs.get(job_id)
        if job is None:
            raise P.ApiError("InvalidJobIdException", "An invalid job identifier was passed.")
        if job.polls_left > 0:
            job.polls_left -= 1
            return {"JobStatus": "IN_PROGRESS"}
    if job.failed:
        return {"JobStatus": "FAILED", "StatusMessage": job.failed}
    size = int(params.get("MaxResults") or 1000)
    start = 0
    token = params.get("NextToken")
    if token:
        try:
            start = int(str(token).rsplit("-", 1)[1])
        except (IndexError, ValueError):
            raise P.ApiError("InvalidParameterException", "Invalid NextToken.") from None
    chunk = job.fields[start:start + size]
    answer: dict[str, Any] = {"JobStatus": "SUCCEEDED", "DocumentMetadata": {"Pages": job.pages},
                              "ExpenseDocuments": chunk, "AnalyzeExpenseModelVersion": "emulated"}
    if start + size < len(job.fields):
        answer["NextToken"] = f"{job_id}-{start + size}"
    return answer
