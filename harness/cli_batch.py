"""`migbench batch submit|status|collect|stop|policy`: Bedrock batch inference (migbench.adapters.bedrock_batch).

The same backend names, options, dataset and results folder as `migbench run`; the run is the one
`migbench run` would open for them, so a batch run and an on-demand run of the same set resume each
other's documents and report together."""

from __future__ import annotations

import argparse
import os
import sys

from migbench.cli import DEFAULT_RESULTS
from migbench.contracts import MigbenchError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="migbench batch", description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=("run", "submit", "status", "collect", "stop", "policy"),
                   help="run: submit (or resume the open job) and collect until done, in one resumable command; "
                        "fewer documents than a job takes run on demand in the same run")
    p.add_argument("--backend", "-b", required=True, help="a Bedrock backend (e.g. au-nova-lite)")
    p.add_argument("--model", help="model id or inference profile (default: the backend's)")
    p.add_argument("--dataset", help="folder with documents + ground truth (default: shipped synthetic set)")
    p.add_argument("--results", default=os.environ.get("MIGBENCH_RESULTS", DEFAULT_RESULTS))
    p.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                   help="backend option, as for `migbench run` (api= sets the record shape: Converse or native)")
    p.add_argument("--allow-loopback", action="store_true", help="allow a local endpoint (the emulator)")
    p.add_argument("--bucket", help="S3 bucket in the backend's region for input and output (submit)")
    p.add_argument("--role-arn", help="service role Bedrock assumes to read and write the bucket (submit)")
    p.add_argument("--prefix", default="migbench-batch/", help="key prefix in the bucket")
    p.add_argument("--kms-key-id", help="SSE-KMS key for the uploaded input and the job's output")
    p.add_argument("--timeout-hours", type=int, default=24, help="job timeout (CreateModelInvocationJob)")
    p.add_argument("--s3-endpoint-url", help="S3 endpoint (else botocore's AWS_ENDPOINT_URL_S3)")
    p.add_argument("--retry-failed", action="store_true", help="submit only the documents whose records failed")
    p.add_argument("--no-wait", action="store_true", help="collect: check once instead of polling until done")
    p.add_argument("--poll-s", type=float, default=30.0, help="first polling interval; doubles up to 10 min")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except MigbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


def _run(args: argparse.Namespace) -> int:
    from migbench.adapters.bedrock_batch import BatchSession, BatchSettings
    from migbench.contracts import UsageError
    from migbench.options import backend_options, resolve_dataset
    from migbench.registry import create_backend
    from migbench.residency import loopback_allowed_by_env
    from migbench.store import RunStore

    if args.action in ("submit", "policy") and not (args.bucket and args.role_arn):
        raise UsageError(f"batch {args.action} needs --bucket and --role-arn")
    if args.action == "policy":  # no AWS call: the IAM statements for this bucket, prefix and role
        import json

        from migbench.iam import batch_statements
        from migbench.residency import load_policy

        doc = batch_statements(list(load_policy().allowed_regions), args.bucket, args.prefix, args.role_arn)
        print(json.dumps({k: {"Version": "2012-10-17", "Statement": v} for k, v in doc.items()}, indent=2))
        return 0
    options = backend_options(args.option, "--option")
    if args.allow_loopback or loopback_allowed_by_env():
        options["allow_loopback"] = True
    backend = create_backend(args.backend, model=args.model, options=options)
    settings = BatchSettings(bucket=args.bucket or "", role_arn=args.role_arn or "", prefix=args.prefix,
                             kms_key_id=args.kms_key_id, timeout_hours=args.timeout_hours,
                             s3_endpoint_url=args.s3_endpoint_url, poll_initial_s=args.poll_s)
    try:
        session = BatchSession(backend, resolve_dataset(args.dataset), RunStore(args.results), settings)
        if args.action == "run":
            done, counts = session.run(retry_failed=args.retry_failed, wait=not args.no_wait)
            job = session.open_job()
            if job is not None:
                print(f"{job.job_arn}: {job.status}; rerun the same command to resume")
            elif done == "nothing":
                print(f"run {session.run_id}: nothing to submit (every document is stored; --retry-failed "
                      "resubmits the failed ones)")
            else:
                how = "on demand (fewer documents than a batch job takes)" if done == "on-demand" else "by batch"
                print(f"run {session.run_id}: {how}: stored {counts['stored']} ok, {counts['failed']} failed")
        elif args.action == "submit":
            job = session.submit(retry_failed=args.retry_failed)
            print(f"submitted {len(job.record_ids)} record(s) as {job.job_arn} (run {session.run_id}); "
                  f"`migbench batch collect --backend {args.backend}` stores the results")
        elif args.action in ("status", "stop"):
            job = session.stop() if args.action == "stop" else session.status()
            print(f"{job.job_arn}: {job.status}" + (f" ({job.message})" if job.message else "")
                  + (" - collected" if job.collected else ""))
        else:
            counts = session.collect(wait=not args.no_wait)
            job = session._current()
            if not job.collected:
                print(f"{job.job_arn}: {job.status}; rerun `migbench batch collect` to resume")
            else:
                print(f"run {session.run_id}: stored {counts['stored']} ok, {counts['failed']} failed, "
                      f"{counts['skipped']} already stored (job {job.status})")
    finally:
        backend.close()
    return 0
