"""Bedrock batch inference (CreateModelInvocationJob) over the same request builders, parser, scorer
and store as on-demand runs.

submit: each document is read and prepared once (migbench.runner.build_request, the backend's own
body builder: the Converse request for api=converse, else the model's native InvokeModel body),
written as a `{recordId, modelInput}` JSONL record, uploaded to an S3 bucket whose
region is checked first (GetBucketLocation), and a job is created. status: one GetModelInvocationJob.
collect: polls with backoff until the job ends, reads the output JSONL (`modelOutput` or `error` per
record) and stores every document through runner.finish_document; a failed record is a recorded
failure with its cause. The job (ARN, state, S3 keys, record ids) is kept beside the run's store
(`<results>/batch/<run id>.json`), so rerunning `status` or `collect` resumes, and `--retry-failed`
submits only the documents whose records failed.

Residency before anything is uploaded: the backend's config check (region, endpoint, model id), the
inference profile's destinations read live (GetInferenceProfile, always for batch: the job runs in AWS
whatever endpoint we talk to), regions where AWS offers a family's batch only through a profile
(bedrock_batch.yaml), and the bucket's region. Every client goes through the backend's residency guard.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from migbench.adapters import aws_common as aws
from migbench.adapters import bedrock_body as body
from migbench.adapters.bedrock import BedrockBackend
from migbench.catalog import load_packaged
from migbench.contracts import ErrorClass, InputError, Response, SetupError, UsageError
from migbench.cost import batch_discount, document_cost
from migbench.datasets import Dataset
from migbench.redact import scrub
from migbench.residency import ResidencyError, check_config, check_region
from migbench.runner import Runner, RunOptions, build_request, failed_input, finish_document
from migbench.store import RunStore
from pydantic import BaseModel

log = logging.getLogger("migbench.bedrock_batch")


class Sourced(BaseModel):
    source: str
    date: datetime.date | None = None
    verified: bool = False


class MinRecords(Sourced):
    default: int


class BatchCatalog(BaseModel):
    min_records: MinRecords
    profile_only: dict[str, list[str] | str]
    terminal_states: list[str]

    def profile_required(self, region: str, foundation_id: str) -> bool:
        families = self.profile_only.get(region) or []
        return isinstance(families, list) and any(foundation_id.startswith(f) for f in families)


def load_batch_catalog() -> BatchCatalog:
    return load_packaged(BatchCatalog, "bedrock_batch.yaml")


@dataclass
class BatchJob:
    """What is kept with the run so `status` and `collect` resume."""

    run_id: str
    job_arn: str
    job_name: str
    model_id: str
    bucket: str
    input_key: str
    output_prefix: str
    record_ids: dict[str, str]  # recordId -> doc id
    status: str = "Submitted"
    message: str | None = None
    collected: bool = False
    retry_of: str | None = None
    submitted_at: float = field(default_factory=time.time)


@dataclass
class BatchSettings:
    bucket: str
    role_arn: str
    prefix: str = "migbench-batch/"
    kms_key_id: str | None = None
    timeout_hours: int = 24
    s3_endpoint_url: str | None = None
    poll_initial_s: float = 30.0
    poll_max_s: float = 600.0
    max_wait_s: float | None = None


def jobs_dir(store: RunStore) -> Path:
    return Path(store.dir) / "batch"


def load_jobs(store: RunStore, run_id: str) -> list[BatchJob]:
    path = jobs_dir(store) / f"{run_id}.json"
    if not path.exists():
        return []
    return [BatchJob(**j) for j in json.loads(path.read_text(encoding="utf-8"))]


def save_jobs(store: RunStore, run_id: str, jobs: list[BatchJob]) -> None:
    path = jobs_dir(store) / f"{run_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([asdict(j) for j in jobs], indent=1), encoding="utf-8")
    tmp.replace(path)  # atomic: an interrupted write never loses the job ARN


def record_id(doc_id: str, n: int) -> str:
    """Bedrock record ids: letters and digits; the doc id stays readable and the index keeps it unique."""
    return f"{re.sub(r'[^A-Za-z0-9]', '', doc_id)[:40]}{n:06d}"


class BatchSession:
    """One backend, dataset and store: submit, status and collect for the run they identify."""

    def __init__(self, backend: BedrockBackend, dataset: Dataset, store: RunStore, settings: BatchSettings,
                 opts: RunOptions | None = None, catalog: BatchCatalog | None = None):
        if not isinstance(backend, BedrockBackend):
            raise UsageError(f"batch inference is for Bedrock backends; {backend.name} is not one")
        # The job's record shape follows the backend's api: the Converse request body, or the model's
        # native InvokeModel body (CreateModelInvocationJob modelInvocationType).
        self.invocation_type = "Converse" if backend.api == "converse" else "InvokeModel"
        self.backend, self.dataset, self.store, self.settings = backend, dataset, store, settings
        self.runner = Runner(backend, dataset, store, opts)
        self.catalog = catalog or load_batch_catalog()
        meta = self.runner.meta()
        prior = next((r for r in store.runs() if r.run_id == meta.identity()), None)
        self.run_id, _ = store.open_run(meta)
        if prior is not None and prior.status != "running":  # opening a run to look at it must not reopen it
            store.update_run(self.run_id, status=prior.status)
        backend.attach_audit(store.audit_sink(self.run_id))  # every job and S3 request is audited with the run

    # ------------------------------------------------------------ clients (all through the guard)

    def _client(self, service: str, endpoint_url: str | None) -> Any:
        b = self.backend
        return b.guard.attach(aws.make_client(service, region=b.region, endpoint_url=endpoint_url, read_timeout=60,
                                              connect_timeout=b.connect_timeout, session=b._session))

    def _control(self) -> Any:
        return self._client("bedrock", self.backend.opts.control_endpoint_url)  # type: ignore[attr-defined]

    def _s3(self) -> Any:
        return self._client("s3", self.settings.s3_endpoint_url)

    def _call(self, client: Any, operation: str, **kwargs: Any) -> Any:
        """One request outside any document's retry loop, audited as preflight requests are (what the
        guard judged, status, request id; never bodies)."""
        b = self.backend
        service = client.meta.service_model.service_name
        method = getattr(client, re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower())
        decisions: list = []
        try:
            with b.guard.recording(decisions):
                resp = method(**kwargs)
        except Exception as exc:
            b.record_outside_loop(b._facts(operation, decisions, status=aws.http_status(exc),
                                           request_id=aws.request_id(exc), error_class=aws.classify_aws_error(exc),
                                           service=service))
            if isinstance(exc, ResidencyError | UsageError | SetupError):
                raise
            raise SetupError(f"batch: {operation} failed: {aws.error_line(exc)}") from None
        b.record_outside_loop(b._facts(operation, decisions, status=aws.http_status(resp) or 200,
                                       request_id=aws.request_id(resp), service=service))
        if service == "bedrock":  # the job's answers come from whoever runs the job: the emulator says so
            b._note_emulated(aws.response_headers(resp))
        return resp

    # ------------------------------------------------------------ residency, before any upload

    def check_residency(self, s3: Any) -> None:
        b = self.backend
        client = b._get_client()
        check_config(b.region, client.meta.endpoint_url, b.model_id, policy=b.policy,
                     allow_loopback=b.allow_loopback, catalog=b.model_catalog)
        if b.entry is not None and not b.entry.vision:
            raise SetupError(f"{b.model_id} is text-only (catalog): it cannot read document images")
        aws.require_credentials(b._session, b.name)
        foundation = b.entry.foundation_model if b.entry and b.entry.foundation_model else b.model_id
        if not b._is_profile() and self.catalog.profile_required(b.region, foundation):
            raise SetupError(f"residency: batch for {b.model_id} in {b.region} runs only through an inference "
                             f"profile (bedrock_batch.yaml: {self.catalog.profile_only.get('source')}); pick a "
                             "profile whose destinations the policy allows; nothing uploaded")
        if b.preflight_profile != "never":  # the job runs in AWS whatever endpoint we talk to: read it live
            b.preflight_profile = "always"
        try:
            b._check_profile(client.meta.endpoint_url)
        except SetupError as exc:
            raise SetupError(f"{exc}; nothing uploaded") from None
        resp = self._call(s3, "GetBucketLocation", Bucket=self.settings.bucket)
        region = {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(resp.get("LocationConstraint"),
                                                                         resp.get("LocationConstraint"))
        why = check_region(region, b.policy)
        if why is None and region != b.region:
            why = f"a Bedrock batch job in {b.region} reads and writes S3 in {b.region}"
        if why:
            raise ResidencyError(f"residency: bucket {self.settings.bucket!r} is in {region}: {why}; nothing uploaded")

    # ------------------------------------------------------------ submit

    def open_job(self) -> BatchJob | None:
        """The run's job submitted but not collected yet, if any."""
        return next((j for j in reversed(load_jobs(self.store, self.run_id)) if not j.collected), None)

    def to_submit(self, *, retry_failed: bool = False) -> list:
        """The documents a new job would carry: not stored yet, or (retry_failed) stored as failed."""
        stored = {d.doc_id: d.status for d in self.store.documents(self.run_id)}
        if retry_failed:
            return [d for d in self.dataset.documents if stored.get(d.doc_id) == "failed"]
        return [d for d in self.dataset.documents if d.doc_id not in stored]

    def run(self, *, retry_failed: bool = False, wait: bool = True) -> tuple[str, dict[str, int]]:
        """Everything in one resumable command: collect the open job if there is one, else submit the
        pending documents and collect them. Fewer documents than a job takes run on demand through
        the same runner, in the same run. Returns (what was done, counts)."""
        if self.open_job() is not None:
            return "batch", self.collect(wait=wait)
        docs = self.to_submit(retry_failed=retry_failed)
        if not docs:
            return "nothing", {"stored": 0, "failed": 0, "skipped": 0}
        if len(docs) < self.catalog.min_records.default:
            self.runner.opts.retry_failed = retry_failed
            summary = self.runner.run()
            return "on-demand", {"stored": summary.ok, "failed": summary.failed, "skipped": summary.skipped}
        self.submit(retry_failed=retry_failed)
        return "batch", self.collect(wait=wait)

    def submit(self, *, retry_failed: bool = False) -> BatchJob:
        jobs = load_jobs(self.store, self.run_id)
        job = self.open_job()
        if job is not None:
            raise UsageError(f"run {self.run_id} has a job not collected yet ({job.job_arn}, "
                             f"{job.status}): run `migbench batch collect` first")
        if not (self.settings.bucket and self.settings.role_arn):
            raise UsageError("a batch job needs --bucket (S3, in the backend's region) and --role-arn (the "
                             "service role Bedrock assumes); `migbench batch policy` writes both policies")
        docs = self.to_submit(retry_failed=retry_failed)
        minimum = self.catalog.min_records.default
        if len(docs) < minimum:
            raise UsageError(f"{len(docs)} document(s) to submit; a Bedrock batch job takes at least {minimum} "
                             f"records ({self.catalog.min_records.source.split('(')[0].strip()}): run them on "
                             f"demand with `migbench run --backend {self.backend.name}`")
        s3 = self._s3()
        ctl = self._control()
        try:
            self.check_residency(s3)
            lines, ids = self._records(docs)
            if len(ids) < minimum:
                raise UsageError(f"only {len(ids)} document(s) could be prepared; a batch job takes at least "
                                 f"{minimum}: run them on demand")
            name = f"migbench-{self.run_id[-24:]}-{int(time.time())}"
            base = f"{self.settings.prefix.rstrip('/')}/{self.run_id}/{name}"
            input_key = f"{base}/input/records.jsonl"
            extra: dict[str, Any] = {}
            if self.settings.kms_key_id:
                extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.settings.kms_key_id}
            self._call(s3, "PutObject", Bucket=self.settings.bucket, Key=input_key,
                       Body="\n".join(lines).encode(), **extra)
            out_cfg: dict[str, Any] = {"s3Uri": f"s3://{self.settings.bucket}/{base}/output/"}
            if self.settings.kms_key_id:
                out_cfg["s3EncryptionKeyId"] = self.settings.kms_key_id
            try:
                resp = self._create(ctl, name, input_key, out_cfg)
            except Exception:
                s3.delete_object(Bucket=self.settings.bucket, Key=input_key)  # no job: leave no documents behind
                raise
        finally:
            s3.close()
            ctl.close()
        job = BatchJob(self.run_id, resp["jobArn"], name, self.backend.model_id, self.settings.bucket, input_key,
                       f"{base}/output/", ids, retry_of=jobs[-1].job_arn if retry_failed and jobs else None)
        save_jobs(self.store, self.run_id, [*jobs, job])
        self._record_run("running")
        return job

    def _record_run(self, status: str) -> None:
        """The run as the report reads it: the backend's description with the batch jobs, and the
        emulated flag (an emulated run is never shown as a real one)."""
        try:
            describe = self.backend.describe()
        except Exception as exc:  # noqa: BLE001 - a description failure must not lose the stored results
            describe = {"describe_error": scrub(str(exc))}
        describe["mode"] = "batch"
        describe["batch_jobs"] = [{"job_arn": j.job_arn, "status": j.status, "records": len(j.record_ids),
                                   "input": f"s3://{j.bucket}/{j.input_key}", "retry_of": j.retry_of}
                                  for j in load_jobs(self.store, self.run_id)]
        self.store.update_run(self.run_id, describe=describe, emulated=self.backend.emulated or None, status=status)

    def _create(self, ctl: Any, name: str, input_key: str, out_cfg: dict[str, Any]) -> Any:
        source = {"s3Uri": f"s3://{self.settings.bucket}/{input_key}", "s3InputFormat": "JSONL"}
        return self._call(ctl, "CreateModelInvocationJob", jobName=name, roleArn=self.settings.role_arn,
                          modelId=self.backend.model_id, inputDataConfig={"s3InputDataConfig": source},
                          outputDataConfig={"s3OutputDataConfig": out_cfg},
                          timeoutDurationInHours=self.settings.timeout_hours,
                          modelInvocationType=self.invocation_type)

    def _records(self, docs: list) -> tuple[list[str], dict[str, str]]:
        """One JSONL line per document; a document that cannot be read is stored as failed now."""
        lines: list[str] = []
        ids: dict[str, str] = {}
        for n, doc in enumerate(docs):
            try:
                request = build_request(doc, self.runner.prompts[doc.doc_type], self.runner.schema,
                                        self.runner.opts, self.backend)
                call = self.backend._prepare_call(request)
            except InputError as exc:
                self.store.save_result(self.run_id, failed_input(doc, str(exc)))
                continue
            except Exception as exc:  # noqa: BLE001 - an unforeseen reader failure is the document's, not the job's
                self.store.save_result(self.run_id, failed_input(
                    doc, scrub(f"{doc.doc_id}: cannot read ({type(exc).__name__}: {exc})")))
                continue
            rid = record_id(doc.doc_id, n)
            ids[rid] = doc.doc_id
            if self.invocation_type == "Converse":  # the request as Converse's JSON carries it: blobs in base64
                model_input = _jsonable({k: v for k, v in call.kwargs.items() if k != "modelId"})
            else:
                model_input = json.loads(call.kwargs["body"])
            lines.append(json.dumps({"recordId": rid, "modelInput": model_input}))
        return lines, ids

    # ------------------------------------------------------------ status and collect

    def _current(self) -> BatchJob:
        jobs = load_jobs(self.store, self.run_id)
        if not jobs:
            raise UsageError(f"run {self.run_id} has no batch job: run `migbench batch submit` first")
        return jobs[-1]

    def _update(self, job: BatchJob) -> None:
        jobs = load_jobs(self.store, self.run_id)
        save_jobs(self.store, self.run_id, [job if j.job_arn == job.job_arn else j for j in jobs])

    def status(self) -> BatchJob:
        job = self._current()
        if job.collected:
            return job
        ctl = self._control()
        try:
            resp = self._call(ctl, "GetModelInvocationJob", jobIdentifier=job.job_arn)
        finally:
            ctl.close()
        job.status, job.message = resp["status"], resp.get("message")
        self._update(job)
        return job

    def stop(self) -> BatchJob:
        """StopModelInvocationJob; `collect` then records its documents as failed with the job's state."""
        job = self._current()
        ctl = self._control()
        try:
            self._call(ctl, "StopModelInvocationJob", jobIdentifier=job.job_arn)
        finally:
            ctl.close()
        return self.status()

    def collect(self, *, wait: bool = True) -> dict[str, int]:
        """Store the job's records; {stored, failed, skipped}. Collected already: nothing new."""
        job = self._current()
        counts = {"stored": 0, "failed": 0, "skipped": 0}
        if job.collected:
            return counts
        delay = self.settings.poll_initial_s
        started = time.monotonic()
        while job.status not in self.catalog.terminal_states:
            job = self.status()
            if job.status in self.catalog.terminal_states:
                break
            if not wait or (self.settings.max_wait_s is not None
                            and time.monotonic() - started > self.settings.max_wait_s):
                return counts
            time.sleep(delay)
            delay = min(delay * 2, self.settings.poll_max_s)
        outputs = self._outputs(job) if job.status in ("Completed", "PartiallyCompleted") else {}
        done = self.store.done_ids(self.run_id, include_failed=False)
        docs = {d.doc_id: d for d in self.dataset.documents}
        for rid, doc_id in job.record_ids.items():
            doc = docs.get(doc_id)
            if doc is None or doc_id in done:
                counts["skipped"] += 1
                continue
            result = self._result(doc, outputs.get(rid), job)
            self.store.save_result(self.run_id, result)
            counts["stored" if result.status == "ok" else "failed"] += 1
        job.collected = True
        self._update(job)
        remaining = len({d.doc_id for d in self.dataset.documents} - self.store.done_ids(self.run_id))
        self._record_run("complete" if remaining == 0 else "partial")
        return counts

    def _outputs(self, job: BatchJob) -> dict[str, dict[str, Any]]:
        s3 = self._s3()
        try:
            listed = s3.list_objects_v2(Bucket=job.bucket, Prefix=job.output_prefix).get("Contents", [])
            out: dict[str, dict[str, Any]] = {}
            for obj in listed:
                if not obj["Key"].endswith(".jsonl.out"):
                    continue  # manifest.json.out and the like
                data = s3.get_object(Bucket=job.bucket, Key=obj["Key"])["Body"].read().decode("utf-8")
                for line in data.splitlines():
                    if line.strip():
                        rec = json.loads(line)
                        out[str(rec.get("recordId"))] = rec
            return out
        finally:
            s3.close()

    def _result(self, doc: Any, record: dict[str, Any] | None, job: BatchJob) -> Any:
        b = self.backend
        base = {"region": b.region, "model_id": b.model_id,
                "extra": {"batch_job": job.job_arn, "emulated": b.emulated}}
        if record is None:
            why = f"job {job.status}" + (f": {job.message}" if job.message else "") if job.status != "Completed" \
                else "no output record"
            resp = Response(attempts=1, error_class=ErrorClass.PERMANENT, error=f"batch: {why}", **base)
        elif "modelOutput" not in record:
            err = record.get("error") or {}
            cls = ErrorClass.TRANSIENT if str(err.get("errorCode", "")).startswith("5") else ErrorClass.PERMANENT
            resp = Response(attempts=1, error_class=cls, **base,
                            error=f"batch record {err.get('errorCode', '?')}: {err.get('errorMessage', err)}")
        else:
            try:
                parse = {"converse": body.parse_converse_response,
                         "invoke-anthropic": body.parse_anthropic_invoke_response}.get(
                    b.api, body.parse_nova_invoke_response)
                parsed = parse(record["modelOutput"])
            except aws.AnswerError as exc:
                resp = Response(attempts=1, error_class=ErrorClass.PERMANENT, error=str(exc), **base)
            else:
                resp = Response(text=parsed.text, input_tokens=parsed.input_tokens,
                                output_tokens=parsed.output_tokens, stop_reason=parsed.stop_reason, **base)
                # The batch price (pricing.yaml `batch`): unknown stays None, never the on-demand price.
                on_demand = document_cost(self.runner.pricing, b.model_id, resp)
                discount = batch_discount(self.runner.pricing, b.model_id)
                resp.extra["on_demand_cost_usd"] = on_demand
                if on_demand is not None and discount is not None:
                    resp.cost_usd = on_demand * discount.factor
                    resp.extra["batch_price"] = {"factor": discount.factor, "as_of": discount.as_of.isoformat(),
                                                 "verified": discount.verified}
        return finish_document(doc, resp, self.runner.schema)


def _jsonable(value: Any) -> Any:
    """Converse kwargs as JSON: bytes (images, PDF documents) in base64, as the Converse wire format has them."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
