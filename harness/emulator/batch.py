"""The emulator's Bedrock batch inference jobs (control plane `bedrock`, rest-json, SigV4 `bedrock`):
CreateModelInvocationJob (POST /model-invocation-job; modelInvocationType InvokeModel or Converse), GetModelInvocationJob (GET
/model-invocation-job/{id}), ListModelInvocationJobs (GET /model-invocation-jobs) and
StopModelInvocationJob (POST /model-invocation-job/{id}/stop), shapes from botocore's bedrock model.

A job reads its input JSONL from S3 (moto in tests: `state(service).s3_endpoint_url`), answers each
record through the emulator's responder, and writes `{recordId, modelInput, modelOutput | error}` lines
to `<output uri>/<job id>/<input file>.out`, as Bedrock does. Jobs move Submitted -> InProgress ->
Completed on successive GetModelInvocationJob polls (`polls_in_progress` of them InProgress).
`fail_records`: record ids answered with an `error` object instead (a test's way to get a failed record).
SYNTHETIC data: account 123456789012.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from migbench.emulator import protocol as P
from migbench.emulator.control import json_reply, load_body
from migbench.emulator.sigv4 import verify

ACCOUNT = "123456789012"
CREATED = "2025-01-01T00:00:00Z"
_JOB = re.compile(r"^/model-invocation-job/(?P<id>[^/]+)(?P<stop>/stop)?$")


@dataclass
class BatchJob:
    arn: str
    name: str
    model_id: str
    role_arn: str
    input_uri: str
    output_uri: str
    timeout_h: int
    invocation_type: str = "InvokeModel"  # or Converse: the records carry Converse request bodies
    status: str = "Submitted"
    polls: int = 0
    message: str | None = None
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class BatchState:
    s3_endpoint_url: str | None = None
    polls_in_progress: int = 1
    fail_records: set[str] = field(default_factory=set)
    jobs: dict[str, BatchJob] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def state(service: Any) -> BatchState:
    """The server's batch state, created on first use."""
    st = getattr(service, "batch_state", None)
    if st is None:
        st = service.batch_state = BatchState()
    return st


def is_batch(method: str, raw_path: str) -> bool:
    path = raw_path.split("?", 1)[0]
    if method == "GET":
        return path == "/model-invocation-jobs" or bool(_JOB.match(path) and not _JOB.match(path).group("stop"))
    return method == "POST" and (path == "/model-invocation-job" or bool(_JOB.match(path) and _JOB.match(path).group("stop")))


def handle(service: Any, method: str, raw_path: str, headers: Any, body: bytes,
           entry_out: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    verify(method, raw_path, headers, body, service.policy)
    parts = urlsplit(raw_path)
    st = state(service)
    if method == "POST" and parts.path == "/model-invocation-job":
        entry_out["operation"] = "CreateModelInvocationJob"
        return json_reply(_create(service, st, load_body(body)))
    if parts.path == "/model-invocation-jobs":
        entry_out["operation"] = "ListModelInvocationJobs"
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        with st.lock:
            jobs = [_summary(j) for j in st.jobs.values()
                    if query.get("statusEquals") in (None, j.status)
                    and query.get("nameContains", "") in j.name]
        return json_reply({"invocationJobSummaries": jobs})
    match = _JOB.match(parts.path)
    job = _find(st, unquote(match.group("id")))  # type: ignore[union-attr]
    if match.group("stop"):  # type: ignore[union-attr]
        entry_out["operation"] = "StopModelInvocationJob"
        with st.lock:
            if job.status in ("Completed", "Failed", "Stopped", "Expired", "PartiallyCompleted"):
                raise P.ApiError("ValidationException", f"The job is {job.status} and cannot be stopped.")
            job.status = "Stopped"
        return json_reply({})
    entry_out["operation"] = "GetModelInvocationJob"
    _advance(service, st, job)
    return json_reply(_summary(job))


def _find(st: BatchState, ident: str) -> BatchJob:
    with st.lock:
        for job in st.jobs.values():
            if ident in (job.arn, job.arn.rsplit("/", 1)[1]):
                return job
    raise P.ApiError("ResourceNotFoundException", "The specified model invocation job couldn't be found.")


def _create(service: Any, st: BatchState, req: dict[str, Any]) -> dict[str, Any]:
    for key in ("jobName", "roleArn", "modelId", "inputDataConfig", "outputDataConfig"):
        if not req.get(key):
            raise P.ApiError("ValidationException", f"{key} is required.")
    service.resolve_model(req["modelId"])  # an unknown or non-Sydney model is refused at create, as Bedrock does
    in_uri = req["inputDataConfig"].get("s3InputDataConfig", {}).get("s3Uri", "")
    out_uri = req["outputDataConfig"].get("s3OutputDataConfig", {}).get("s3Uri", "")
    if not in_uri.startswith("s3://") or not out_uri.startswith("s3://"):
        raise P.ApiError("ValidationException", "inputDataConfig and outputDataConfig need s3:// URIs.")
    job_id = uuid.uuid4().hex[:12]
    arn = f"arn:aws:bedrock:{service.config.region}:{ACCOUNT}:model-invocation-job/{job_id}"
    job = BatchJob(arn, req["jobName"], req["modelId"], req["roleArn"], in_uri, out_uri,
                   int(req.get("timeoutDurationInHours") or 24), req.get("modelInvocationType") or "InvokeModel")
    if job.invocation_type not in ("InvokeModel", "Converse"):
        raise P.ApiError("ValidationException", f"modelInvocationType {job.invocation_type!r} is not one of "
                         "InvokeModel, Converse.")
    with st.lock:
        st.jobs[job_id] = job
    return {"jobArn": arn}


def _summary(job: BatchJob) -> dict[str, Any]:
    out: dict[str, Any] = {
        "jobArn": job.arn, "jobName": job.name, "modelId": job.model_id, "roleArn": job.role_arn,
        "status": job.status, "submitTime": CREATED, "lastModifiedTime": CREATED,
        "inputDataConfig": {"s3InputDataConfig": {"s3Uri": job.input_uri, "s3InputFormat": "JSONL"}},
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": job.output_uri}},
        "timeoutDurationInHours": job.timeout_h, "modelInvocationType": job.invocation_type,
    }
    if job.message:
        out["message"] = job.message
    if job.counts:
        out.update({f"{k}RecordCount": v for k, v in job.counts.items()})
    return out


def _advance(service: Any, st: BatchState, job: BatchJob) -> None:
    """One poll moves the job on: Submitted -> InProgress (for polls_in_progress polls) -> done."""
    with st.lock:
        if job.status == "Submitted":
            job.status = "InProgress"
            return
        if job.status != "InProgress":
            return
        job.polls += 1
        if job.polls < st.polls_in_progress:
            return
    try:
        _run(service, st, job)
    except P.ApiError as err:
        job.status, job.message = "Failed", err.message


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key


def _s3(service: Any, st: BatchState) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("s3", region_name=service.config.region, endpoint_url=st.s3_endpoint_url,
                        aws_access_key_id="testing", aws_secret_access_key="testing",
                        config=Config(retries={"total_max_attempts": 1}))


def _run(service: Any, st: BatchState, job: BatchJob) -> None:
    s3 = _s3(service, st)
    try:
        bucket, key = _split(job.input_uri)
        try:
            if key.endswith(".jsonl"):
                keys = [key]
            else:
                listed = s3.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])
                keys = [o["Key"] for o in listed if o["Key"].endswith(".jsonl")]
            inputs = {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}
        except Exception:  # noqa: BLE001 - whatever S3 said, the job fails with Bedrock's wording
            raise P.ApiError("ValidationException", "Unable to read the input data from S3; check the "
                             "S3 URI and the service role's permissions.") from None
        if not inputs:
            raise P.ApiError("ValidationException", f"No .jsonl input found at {job.input_uri}.")
        out_bucket, out_prefix = _split(job.output_uri.rstrip("/") + "/")
        job_id = job.arn.rsplit("/", 1)[1]
        ok = failed = 0
        for k, data in inputs.items():
            lines = []
            for raw in data.decode("utf-8").splitlines():
                if not raw.strip():
                    continue
                record = json.loads(raw)
                answer = _answer(service, st, job, record)
                ok, failed = (ok + 1, failed) if "modelOutput" in answer else (ok, failed + 1)
                lines.append(json.dumps(answer))
            name = k.rsplit("/", 1)[-1]
            s3.put_object(Bucket=out_bucket, Key=f"{out_prefix}{job_id}/{name}.out",
                          Body=("\n".join(lines) + "\n").encode())
        job.counts = {"total": ok + failed, "processed": ok + failed, "success": ok, "error": failed}
        job.status = "Completed"  # failed records are in the output with their error, as Bedrock writes them
    finally:
        s3.close()


def _answer(service: Any, st: BatchState, job: BatchJob, record: dict[str, Any]) -> dict[str, Any]:
    rid, body = record.get("recordId"), record.get("modelInput")
    out: dict[str, Any] = {"recordId": rid, "modelInput": body}
    try:
        if rid in st.fail_records:
            raise P.ApiError("ModelErrorException", "The model could not process this record (emulated).")
        model = service.resolve_model(job.model_id)
        req = P.parse_request(job.invocation_type, job.model_id, model.family, json.dumps(body).encode(),
                              service.limits)
        text, stop = P.truncate_to_max_tokens(service.responder(req), req.max_tokens)
        usage = P.Usage(P.estimate_input_tokens(req), max(P.estimate_text_tokens(text), 1))
        if job.invocation_type == "Converse":
            out["modelOutput"] = P.converse_response(text, usage, 0, stop)
        elif req.body_kind == "anthropic":
            out["modelOutput"] = P.anthropic_invoke_response(text, usage, job.model_id, uuid.uuid4().hex, stop)
        else:
            out["modelOutput"] = P.nova_invoke_response(text, usage, stop)
    except P.ApiError as err:
        out["error"] = {"errorCode": err.status, "errorMessage": f"{err.code}: {err.message}"}
    return out
