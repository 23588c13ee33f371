"""`migbench sagemaker deploy|delete|status`: SageMaker endpoints (migbench.adapters.sagemaker_lifecycle).

deploy creates the model (LMI/vLLM container and weights in an allowed region), its endpoint config
and the endpoint, waits for InService and records the cold start under --results. Without --keep the
endpoint is deleted again when deploy ends: after the command given after `--` (which runs while the
endpoint is up; `{endpoint}` in it is replaced by the endpoint name), or right after InService when
no command is given (a cold-start measurement). Ctrl-C or SIGTERM deletes it too."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from migbench.cli import DEFAULT_RESULTS
from migbench.contracts import MigbenchError, UsageError, exit_code_for

DEFAULT_REGION = "ap-southeast-2"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="migbench sagemaker", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="action", required=True)

    def common(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--region", default=DEFAULT_REGION, help="an allowed region (residency.yaml)")
        sp.add_argument("--endpoint-url", help="SageMaker control plane endpoint (else AWS_ENDPOINT_URL_SAGEMAKER)")
        sp.add_argument("--profile", help="AWS named profile for the standard credential chain")
        sp.add_argument("--allow-loopback", action="store_true", help="allow a local endpoint (moto server)")
        return sp

    d = common(sub.add_parser("deploy", help="create model, endpoint config and endpoint; wait for InService"))
    d.add_argument("--model", required=True, help="a model in sagemaker_deploy.yaml: qwen2.5-vl, internvl3")
    d.add_argument("--instance", required=True, metavar="TYPE", help="instance type, e.g. ml.g5.2xlarge")
    d.add_argument("--instance-count", type=int, default=1)
    d.add_argument("--role", required=True, metavar="ARN", help="execution role SageMaker assumes")
    d.add_argument("--model-data", metavar="S3_URI", help="weights in S3 (else the container pulls HF_MODEL_ID)")
    d.add_argument("--image", metavar="URI", help="container image (default: the catalog's LMI image for --region)")
    d.add_argument("--endpoint-name", help="default: migbench-<model>-<UTC time>")
    d.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra container environment")
    d.add_argument("--keep", action="store_true", help="leave the endpoint running (billed per hour) once InService, whatever happens "
                   "after; one that never reached InService is deleted anyway")
    d.add_argument("--timeout", type=float, metavar="SECONDS", help="wait for InService at most this long")
    d.add_argument("--poll", type=float, metavar="SECONDS", help="seconds between DescribeEndpoint calls")
    d.add_argument("--s3-endpoint-url", help="S3 endpoint for the model data bucket's region check")
    d.add_argument("--results", default=os.environ.get("MIGBENCH_RESULTS", DEFAULT_RESULTS),
                   help="results folder; cold starts go to <results>/sagemaker/deployments.jsonl")

    x = common(sub.add_parser("delete", help="delete an endpoint, its config and its models (idempotent)"))
    x.add_argument("--endpoint-name", required=True)
    x.add_argument("--wait", action="store_true",
                   help="an endpoint still Creating cannot be deleted yet: wait until it can (up to the catalog's "
                        "wait timeout)")

    common(sub.add_parser("status", help="endpoints migbench created, their state and hourly price"))
    return p


def main(argv: list[str]) -> int:
    argv = list(argv)
    command: list[str] = []
    if "--" in argv:  # what runs while the endpoint is up
        i = argv.index("--")
        argv, command = argv[:i], argv[i + 1:]
    args = build_parser().parse_args(argv)
    if command and args.action != "deploy":
        print("error: a command after `--` runs only with deploy", file=sys.stderr)
        return UsageError.exit_code
    try:
        return _run(args, command)
    except (MigbenchError, KeyboardInterrupt) as exc:
        print("interrupted" if isinstance(exc, KeyboardInterrupt) else f"error: {exc}", file=sys.stderr)
        code = exit_code_for(exc)
        return code if code is not None else 1


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _env(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--env {pair!r}: expected KEY=VALUE")
        out[key] = value
    return out


def _run(args: argparse.Namespace, command: list[str]) -> int:
    import migbench.adapters.sagemaker_lifecycle as lc

    with lc.opened(region=args.region, endpoint_url=args.endpoint_url, profile=args.profile,
                   allow_loopback=args.allow_loopback,
                   s3_endpoint_url=getattr(args, "s3_endpoint_url", None)) as life:
        if args.action == "delete":
            left = life.delete(args.endpoint_name, say=_say,
                               wait_s=life.catalog.wait.timeout_s if args.wait else None)
            return 1 if left else 0
        if args.action == "status":
            rows = life.created_endpoints()
            if not rows:
                print(f"no endpoints created by migbench in {args.region}")
                return 0
            for r in rows:
                print(f"{r['endpoint_name']}  {r['status']}  {r['model'] or '?'}  {r['price']}")
            priced = [r["per_hour"] for r in rows if r["per_hour"] is not None]
            print(f"{len(rows)} endpoint(s) up" + (f", ${sum(priced):.2f}/h at catalog prices" if priced else ""))
            return 0
        spec = lc.plan_deploy(life.catalog, model=args.model, instance_type=args.instance, role_arn=args.role,
                              region=args.region, endpoint_name=args.endpoint_name, image=args.image,
                              model_data=args.model_data, env=_env(args.env), instance_count=args.instance_count)

        def while_up(dep: lc.Deployment) -> int:
            if not command:
                if args.keep:  # the endpoint stays: say how to run the suites against it
                    for line in lc.run_line(spec):
                        print(line)
                return 0
            argv = [a.replace("{endpoint}", dep.endpoint_name) for a in command]
            _say(f"running with the endpoint up: {' '.join(argv)}")
            env = {**os.environ, "MIGBENCH_SAGEMAKER_ENDPOINT": dep.endpoint_name}
            try:
                return subprocess.run(argv, env=env, check=False).returncode
            except OSError as exc:
                raise UsageError(f"command {argv[0]!r}: {exc.strerror}") from None

        if not args.keep and not command:
            _say("no --keep and no command after `--`: the endpoint is deleted once InService "
                 "(a cold-start measurement)")
        out = lc.deploy(life, spec, results=args.results, keep=args.keep, say=_say, timeout_s=args.timeout,
                        poll_s=args.poll, while_up=while_up)
        return out.command_rc or 0
