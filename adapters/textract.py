"""Amazon Textract AnalyzeExpense backend (`textract-expense`): invoices and receipts, no prompt.

Images and single-page documents go to AnalyzeExpense as `Document.Bytes`; a multi-page PDF is
uploaded to an S3 bucket in the Textract region (its region read with GetBucketLocation and judged
before anything is uploaded), analysed with StartExpenseAnalysis, polled with GetExpenseAnalysis
(backoff, bounded by the attempt deadline, every NextToken page read) and deleted afterwards.

Textract answers with normalised field types, not text. The mapping from those types and the
line-item columns to the field schema is data (harness/data/textract_expense.yaml); the mapped
fields are rendered as the same `FIELD: value` lines a model answers (migbench.parsing.render_kv),
so parsing, scoring and storing are the path every backend takes. The raw answer is kept, bounded,
in Response.extra["textract"] for audit.

Client setup, residency guard, the bounded attempt, classification and audit facts are the AWS
base's (migbench.adapters.aws_common). Two things differ from Bedrock: botocore >= 1.40 speaks
Smithy RPC v2 CBOR to Textract (older versions AWS JSON 1.1), so the base's JSON check of a 2xx
body is replaced by one that reads the protocol the client speaks; and S3 answers are XML or
empty, so the S3 client keeps botocore's own parsing.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from migbench.adapters import aws_common as aws
from migbench.adapters.bedrock_body import ParsedOutput
from migbench.catalog import load_model, load_packaged
from migbench.contracts import (
    NOT_FOUND,
    AuditEntry,
    BackendConfig,
    BackendError,
    ErrorClass,
    ImageBudget,
    Request,
    ResidencyError,
    SetupError,
)
from migbench.normalize import parse_amount
from migbench.parsing import render_kv
from migbench.residency import Decision, check_config, check_region
from migbench.schema import Schema, load_schema
from migbench.validation import abn_digits, abn_is_valid, format_abn
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MODEL_ID = "textract:AnalyzeExpense"  # what is billed (pricing.yaml `page`) and audited

# ---------------------------------------------------------------- the catalog (data)


class Fact(BaseModel):
    claim: str
    source: str
    date: _dt.date
    verified: bool


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    formats: list[Literal["jpeg", "png"]] = Field(min_length=1)
    document_formats: list[Literal["pdf", "tiff"]] = []
    sync_max_bytes: int = Field(gt=0)
    sync_max_pages: int = Field(ge=1)
    async_max_bytes: int = Field(gt=0)
    async_max_pages: int = Field(ge=1)
    max_side_px: int = Field(gt=0)
    source: str
    as_of: _dt.date


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str = Field(min_length=1)
    label: str | None = None
    group: str | None = None
    check: Literal["abn", "amount"] | None = None

    @field_validator("label")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"label {value!r} is not a regular expression: {exc}") from None
        return value


class Column(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str
    fallback: str | None = None


class GstIncluded(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    field: str
    from_: str = Field(alias="from")
    read_when: str


class ExpenseCatalog(BaseModel):
    model_config = ConfigDict(extra="forbid")
    regions: list[str] = Field(min_length=1)
    facts: list[Fact] = []
    limits: Limits
    unsupported_doc_types: dict[str, str] = {}
    summary: dict[str, list[Rule]]
    line_items: dict[str, Column]
    gst_included: GstIncluded | None = None
    raw_json_max_chars: int = Field(200_000, ge=1000)

    @model_validator(mode="after")
    def _fields_exist(self) -> ExpenseCatalog:
        schema = load_schema()
        named = [*self.summary, *self.line_items]
        if self.gst_included:
            named += [self.gst_included.field, self.gst_included.from_, self.gst_included.read_when]
        unknown = sorted({f for f in named if f not in schema.fields})
        if unknown:
            raise ValueError(f"fields not in the schema (ground_truth/fields.yaml): {', '.join(unknown)}")
        not_lists = [f for f in self.line_items if schema.field_type(f) != "list"]
        if not_lists:
            raise ValueError(f"line_items map to list fields only; not lists: {', '.join(not_lists)}")
        bad_types = sorted(set(self.unsupported_doc_types) - set(schema.document_types))
        if bad_types:
            raise ValueError(f"unsupported_doc_types not in the schema: {', '.join(bad_types)}")
        return self


def load_expense_catalog(path: str | None = None) -> ExpenseCatalog:
    return load_model(ExpenseCatalog, path) if path else load_packaged(ExpenseCatalog, "textract_expense.yaml")


# ---------------------------------------------------------------- mapping (pure)


@dataclass(frozen=True)
class Candidate:
    type: str
    value: str
    label: str
    groups: tuple[str, ...]
    confidence: float
    order: int  # position in the answer: the earlier wins a tie


def _text(detection: Any) -> str:
    return " ".join(str((detection or {}).get("Text") or "").split())


def _confidence(f: Mapping[str, Any]) -> float:
    value = (f.get("ValueDetection") or {}).get("Confidence")
    if value is None:
        value = (f.get("Type") or {}).get("Confidence")
    return float(value) if isinstance(value, (int, float)) else 0.0


def candidates(fields: Iterable[Mapping[str, Any]], start: int = 0) -> list[Candidate]:
    out = []
    for i, f in enumerate(fields, start):
        value = _text(f.get("ValueDetection"))
        if not value:
            continue
        groups = tuple(t for g in f.get("GroupProperties") or [] for t in g.get("Types") or [])
        out.append(Candidate(str((f.get("Type") or {}).get("Text") or "OTHER"), value,
                             _text(f.get("LabelDetection")), groups, _confidence(f), i))
    return out


def _matches(rule: Rule, c: Candidate) -> bool:
    if c.type != rule.type:
        return False
    if rule.group is not None and rule.group not in c.groups:
        return False
    return rule.label is None or re.search(rule.label, c.label, re.IGNORECASE) is not None


def _usable(rule: Rule, value: str) -> str | None:
    """The value as the schema wants it, or None when it cannot be this field."""
    if rule.check == "abn":
        return format_abn(abn_digits(value)) if abn_is_valid(value) else None
    if rule.check == "amount":
        return value if parse_amount(value) is not None else None
    return value


def best_value(rules: list[Rule], cands: list[Candidate]) -> str | None:
    """The first rule with a usable value; within it the most confident value (earliest on a tie)."""
    for rule in rules:
        found = [(c, v) for c in cands if _matches(rule, c) and (v := _usable(rule, c.value)) is not None]
        if found:
            return max(found, key=lambda cv: (cv[0].confidence, -cv[0].order))[1]
    return None


def _row_cells(row: Mapping[str, Any]) -> dict[str, str]:
    """One line item: column type -> its most confident value."""
    best: dict[str, tuple[float, str]] = {}
    for c in candidates(row.get("LineItemExpenseFields") or []):
        if c.type not in best or c.confidence > best[c.type][0]:
            best[c.type] = (c.confidence, c.value)
    return {k: v for k, (_, v) in best.items()}


def expense_parts(answers: Iterable[Mapping[str, Any]]) -> tuple[list[Candidate], list[dict[str, str]]]:
    """Every summary field and every line item of every ExpenseDocument across answers (pages of a
    GetExpenseAnalysis result, or one AnalyzeExpense per page), in document order."""
    summary: list[Candidate] = []
    rows: list[dict[str, str]] = []
    for answer in answers:
        for doc in answer.get("ExpenseDocuments") or []:
            summary.extend(candidates(doc.get("SummaryFields") or [], start=len(summary)))
            for group in doc.get("LineItemGroups") or []:
                rows.extend(_row_cells(item) for item in group.get("LineItems") or [])
    return summary, rows


def map_expense(answers: Iterable[Mapping[str, Any]], doc_type: str, catalog: ExpenseCatalog,
                schema: Schema) -> dict[str, str]:
    """AnalyzeExpense answers -> the schema's fields for `doc_type` (NOT_FOUND where nothing maps)."""
    summary, rows = expense_parts(answers)
    wanted = schema.fields_for(doc_type)
    out: dict[str, str] = {f: NOT_FOUND for f in wanted}
    if "DOCUMENT_TYPE" in out:
        out["DOCUMENT_TYPE"] = schema.document_types[doc_type].label
    for name, rules in catalog.summary.items():
        if name in out and (value := best_value(rules, summary)) is not None:
            out[name] = value
    for name, col in catalog.line_items.items():
        if name not in out:
            continue
        items = [r.get(col.type) or (r.get(col.fallback) if col.fallback else None) for r in rows]
        items = [i for i in items if i]
        if items:
            out[name] = schema.list_separator.join(items)
    g = catalog.gst_included
    if g is not None and g.field in out:
        amount = parse_amount(out.get(g.from_, NOT_FOUND)) if out.get(g.from_, NOT_FOUND) != NOT_FOUND else None
        if amount is not None and amount != Decimal(0):
            out[g.field] = "true"
        elif out.get(g.read_when, NOT_FOUND) != NOT_FOUND:
            out[g.field] = "false"
    return out


def bounded_raw(answers: list[dict[str, Any]], max_chars: int) -> dict[str, Any]:
    """The raw answers for the audit, without Blocks (the OCR words: most of the size) and cut to
    max_chars of JSON; the cut is said, never silent."""
    slim = [{k: v for k, v in a.items() if k != "ResponseMetadata"} for a in answers]
    for a in slim:
        a["ExpenseDocuments"] = [{k: v for k, v in d.items() if k != "Blocks"} for d in a.get("ExpenseDocuments") or []]
    text = json.dumps(slim, default=str, ensure_ascii=False)
    if len(text) <= max_chars:
        return {"answers": slim, "truncated": False}
    return {"answers_json": text[:max_chars], "truncated": True, "chars": len(text)}


# ---------------------------------------------------------------- backend


class TextractOptions(aws.AwsOptions):
    s3_bucket: str | None = Field(None, min_length=3, description=(
        "bucket in the Textract region for multi-page PDFs (StartExpenseAnalysis); its region is checked"))
    s3_prefix: str = Field("migbench/", description="key prefix of uploaded documents")
    keep_uploads: bool = Field(False, description="keep uploaded documents in the bucket (default: deleted)")
    s3_endpoint_url: str | None = Field(None, description="else botocore applies AWS_ENDPOINT_URL_S3")
    poll_initial_s: float = Field(1.0, gt=0, description="first wait before GetExpenseAnalysis")
    poll_max_s: float = Field(10.0, gt=0, description="longest wait between polls (doubling backoff)")
    max_results: int | None = Field(None, ge=1, le=1000, description="GetExpenseAnalysis MaxResults per page")
    catalog: str | None = Field(None, description="a textract_expense.yaml to use instead of the packaged one")


@dataclass
class ExpenseAnswer(aws.Answer):
    answers: list[dict[str, Any]] = field(default_factory=list)
    pages: int = 0


class TextractBackend(aws.AwsBackend):
    service = "textract"
    family = "textract"
    Options = TextractOptions
    input_form = "pdf-or-encoded"  # page images, or the PDF itself (sync when one page, else via S3)

    def __init__(self, config: BackendConfig):
        super().__init__(config)
        opts: TextractOptions = self.opts  # type: ignore[assignment]
        self.catalog = load_expense_catalog(opts.catalog)
        self.schema = load_schema()
        self.bucket = opts.s3_bucket
        self._s3: Any = None
        self._bucket_region: str | None = None

    @property
    def model_id(self) -> str:
        return self.config.model or MODEL_ID

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update({"region": self.region, "emulated": self.emulated, "s3_bucket": self.bucket,
                  "residency": self.residency_facts(),
                  "bucket_region": self._bucket_region, "limits_source": self.catalog.limits.source,
                  "unverified_facts": [f.claim for f in self.catalog.facts if not f.verified],
                  "endpoint": self._client.meta.endpoint_url if self._client is not None else self.endpoint_url})
        return d

    def image_budget(self) -> ImageBudget:
        lim = self.catalog.limits
        side = min(lim.max_side_px, self.max_image_dim) if self.max_image_dim else lim.max_side_px
        # The pipeline shares max_request_bytes as base64 (x4/3); this keeps each page within the sync limit.
        return ImageBudget(formats=tuple(lim.formats), max_side_px=side,
                           max_request_bytes=lim.sync_max_bytes * 4 // 3, takes_pdf="pdf" in lim.document_formats,
                           max_document_bytes=lim.async_max_bytes)

    # ------------------------------------------------------------ clients

    def _s3_client(self) -> Any:
        with self._lock:
            if self._s3 is None:
                self._s3 = self.guard.attach(aws.make_client(
                    "s3", region=self.region, endpoint_url=self.opts.s3_endpoint_url,  # type: ignore[attr-defined]
                    read_timeout=self.read_timeout, connect_timeout=self.connect_timeout,
                    concurrency=self.max_concurrency(), session=self._session))
            return self._s3

    def close(self) -> None:
        super().close()
        with self._lock:
            if self._s3 is not None:
                self._s3.close()
                self._s3 = None

    # ------------------------------------------------------------ setup

    def _check_region(self) -> None:
        if self.region not in self.catalog.regions:
            raise SetupError(f"{self.name}: Textract is not offered in {self.region} (textract_expense.yaml "
                             f"regions: {', '.join(self.catalog.regions)})")

    def preflight(self) -> None:
        """Residency of the Textract endpoint and of the bucket (GetBucketLocation), before any document."""
        self._check_region()
        client = self._get_client()
        check_config(self.region, client.meta.endpoint_url, None, service="textract", policy=self.policy,
                     allow_loopback=self.allow_loopback)
        aws.require_credentials(self._session, self.name)
        if self.bucket:
            try:
                self._check_bucket(record=self.record_outside_loop)
            except ResidencyError as exc:
                raise SetupError(str(exc)) from None
            except BackendError as exc:
                raise SetupError(f"{self.name}: cannot read the region of bucket {self.bucket!r}: {exc}") from None

    def _check_bucket(self, record: Any = None) -> str:
        """The bucket's region (GetBucketLocation); ResidencyError unless it is this Textract region
        (Textract reads S3 only in its own region) and allowed by the policy. `record` (preflight)
        audits the request outside the retry loop; without it the caller's recording does."""
        if self._bucket_region is not None:
            return self._bucket_region
        s3 = self._s3_client()
        decisions: list[Decision] = []
        try:
            if record is None:  # inside an attempt: the attempt's own recording audits the request
                resp = s3.get_bucket_location(Bucket=self.bucket)
            else:
                with self.guard.recording(decisions):
                    resp = s3.get_bucket_location(Bucket=self.bucket)
        except Exception as exc:
            if record is not None:
                record(self._facts("GetBucketLocation", decisions, status=aws.http_status(exc),
                                   request_id=aws.request_id(exc), error_class=aws.classify_aws_error(exc)))
            if isinstance(exc, BackendError):
                raise
            raise BackendError(aws.safe_message(exc), aws.classify_aws_error(exc)) from exc
        if record is not None:
            record(self._facts("GetBucketLocation", decisions, status=aws.http_status(resp) or 200,
                               request_id=aws.request_id(resp)))
        # S3 answers no LocationConstraint for us-east-1 and "EU" for the oldest eu-west-1 buckets.
        region = {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(resp.get("LocationConstraint"),
                                                                         resp.get("LocationConstraint"))
        why = check_region(region, self.policy)
        if why is None and region != self.region:
            why = f"Textract in {self.region} reads S3 objects only from buckets in {self.region}"
        if why:
            raise ResidencyError(f"residency: bucket {self.bucket!r} is in {region}: {why}; nothing uploaded")
        self._bucket_region = region
        return region

    # ------------------------------------------------------------ one attempt

    def _prepare_call(self, request: Request) -> aws.Call:
        why = self.catalog.unsupported_doc_types.get(request.doc_type)
        if why:
            raise BackendError(why, ErrorClass.PERMANENT)
        if request.doc_type not in self.schema.document_types:  # e.g. a classification question
            raise BackendError(f"textract-expense reads no prompt: it cannot answer a {request.doc_type!r} request "
                               "(run it without --classify)", ErrorClass.PERMANENT)
        self._check_region()
        lim = self.catalog.limits
        if request.pdf_bytes is not None:
            data = request.pdf_bytes
            pages = len(request.pdf_page_sizes) or 1
            if pages <= lim.sync_max_pages and len(data) <= lim.sync_max_bytes:
                return aws.Call("AnalyzeExpense", {"documents": [data]},
                                extra={"input": "pdf", "pages_sent": pages, "doc_type": request.doc_type})
            if pages > lim.async_max_pages or len(data) > lim.async_max_bytes:
                raise BackendError(f"{request.doc_id}: {pages} pages / {len(data)} bytes is over Textract's "
                                   f"asynchronous limits ({lim.async_max_pages} pages, {lim.async_max_bytes} bytes)",
                                   ErrorClass.INPUT)
            if not self.bucket:
                raise BackendError(f"{request.doc_id}: a {pages}-page PDF needs StartExpenseAnalysis from S3: set "
                                   "the s3_bucket option (a bucket in ap-southeast-2)", ErrorClass.PERMANENT)
            return aws.Call("StartExpenseAnalysis", {"pdf": data, "doc_id": request.doc_id},
                            extra={"input": "pdf-async", "pages_sent": pages, "doc_type": request.doc_type})
        if not request.images:
            raise BackendError(f"{request.doc_id}: nothing to send (no page image or PDF)", ErrorClass.INPUT)
        big = [i for i, p in enumerate(request.images) if len(p.data) > lim.sync_max_bytes]
        if big:
            raise BackendError(f"{request.doc_id}: page {big[0] + 1} is over the {lim.sync_max_bytes}-byte "
                               "synchronous limit", ErrorClass.INPUT)
        return aws.Call("AnalyzeExpense", {"documents": [p.data for p in request.images]},
                        extra={"input": "images", "pages_sent": len(request.images), "doc_type": request.doc_type,
                               "images": [{"w": p.width, "h": p.height, "format": p.format, "converted": p.converted}
                                          for p in request.images]})

    def _send(self, client: Any, call: aws.Call) -> ExpenseAnswer:
        if call.operation == "AnalyzeExpense":
            # One call per page (sync takes one page); the pages are one document's answer.
            answers = [client.analyze_expense(Document={"Bytes": data}) for data in call.kwargs["documents"]]
            return ExpenseAnswer(answers[-1], answers=answers, pages=sum(_pages(a) for a in answers))
        return self._send_async(client, call)

    def _send_async(self, client: Any, call: aws.Call) -> ExpenseAnswer:
        deadline = time.monotonic() + self.attempt_timeout
        self._check_bucket()
        s3 = self._s3_client()
        key = f"{self.opts.s3_prefix}{uuid.uuid4().hex}/{_safe_key(call.kwargs['doc_id'])}"  # type: ignore[attr-defined]
        s3.put_object(Bucket=self.bucket, Key=key, Body=call.kwargs["pdf"], ContentType="application/pdf")
        call.extra["s3_key"] = key
        try:
            job = client.start_expense_analysis(DocumentLocation={"S3Object": {"Bucket": self.bucket, "Name": key}},
                                                ClientRequestToken=uuid.uuid4().hex)
            job_id = job["JobId"]
            call.extra["job_id"] = job_id
            answers = self._poll(client, job_id, deadline)
        finally:
            if not self.opts.keep_uploads:  # type: ignore[attr-defined]
                s3.delete_object(Bucket=self.bucket, Key=key)
                call.extra["s3_deleted"] = True
        return ExpenseAnswer(answers[-1], answers=answers, pages=_pages(answers[0]))

    def _poll(self, client: Any, job_id: str, deadline: float) -> list[dict[str, Any]]:
        """Wait for the job (doubling waits up to poll_max_s, never past the attempt's deadline), then
        read every page of its result."""
        opts: TextractOptions = self.opts  # type: ignore[assignment]
        wait, polls = opts.poll_initial_s, 0
        page_args: dict[str, Any] = {"MaxResults": opts.max_results} if opts.max_results else {}
        while True:
            time.sleep(min(wait, max(0.0, deadline - time.monotonic())))
            first = client.get_expense_analysis(JobId=job_id, **page_args)
            polls += 1
            status = first.get("JobStatus")
            if status in ("SUCCEEDED", "PARTIAL_SUCCESS"):
                break
            if status == "FAILED":
                raise BackendError(f"expense analysis job failed: {first.get('StatusMessage') or 'no message'}",
                                   ErrorClass.PERMANENT)
            if status != "IN_PROGRESS":
                raise aws.MalformedAnswer(f"GetExpenseAnalysis: unknown JobStatus {status!r}")
            if time.monotonic() >= deadline:
                raise BackendError(f"expense analysis job still IN_PROGRESS after {polls} polls: "
                                   f"attempt_timeout={self.attempt_timeout:g}s reached", ErrorClass.TIMEOUT)
            wait = min(wait * 2, opts.poll_max_s)
        answers = [first]
        token = first.get("NextToken")
        while token:
            page = client.get_expense_analysis(JobId=job_id, NextToken=token, **page_args)
            answers.append(page)
            token = page.get("NextToken")
        return answers

    def _parse(self, call: aws.Call, answer: aws.Answer) -> ParsedOutput:
        answers = answer.answers if isinstance(answer, ExpenseAnswer) else [answer.raw]
        missing = [i for i, a in enumerate(answers) if "ExpenseDocuments" not in a]
        if missing:
            raise aws.MalformedAnswer(f"{call.operation}: answer {missing[0] + 1} has no ExpenseDocuments")
        doc_type = call.extra["doc_type"]
        fields = map_expense(answers, doc_type, self.catalog, self.schema)
        pages = answer.pages if isinstance(answer, ExpenseAnswer) and answer.pages else call.extra["pages_sent"]
        call.extra.update(billed_pages=pages, textract=bounded_raw(answers, self.catalog.raw_json_max_chars),
                          warnings=[w for a in answers for w in a.get("Warnings") or []] or None)
        return ParsedOutput(text=render_kv(fields), input_tokens=None, output_tokens=None,
                            stop_reason=answers[0].get("JobStatus") or "complete")

    def _facts(self, operation: str, decisions: list[Decision], *, status: int | None, request_id: str | None,
               error_class: ErrorClass | None = None, service: str | None = None) -> list[AuditEntry]:
        """One entry per request with ITS service and operation (an async attempt is S3 PutObject,
        StartExpenseAnalysis, GetExpenseAnalysis polls, DeleteObject): the decisions know them."""
        entries = super()._facts(operation, decisions, status=status, request_id=request_id,
                                 error_class=error_class, service=service)
        for entry, d in zip(entries, decisions):
            if d is not None:
                entry.service = d.service
                entry.operation = d.operation or operation  # botocore's before-send event names it
        return entries


def _pages(answer: Mapping[str, Any]) -> int:
    pages = (answer.get("DocumentMetadata") or {}).get("Pages")
    return int(pages) if isinstance(pages, int) and pages > 0 else 1


def _safe_key(doc_id: str) -> str:
    """An S3 key part from a document id: no path, nothing but safe characters."""
    name = doc_id.replace("\\", "/").rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:200] or "document.pdf"
