"""`migbench emulator`, `migbench iam-policy` and `migbench catalog refresh`: AWS-side commands,
imported only when used."""

from __future__ import annotations

import argparse
import json
import sys


def cmd_emulator(argv: list[str]) -> int:
    from migbench.emulator import main

    return main(argv)


def cmd_catalog(argv: list[str]) -> int:
    from migbench.catalog_refresh import main

    return main(argv)


def cmd_iam_policy(argv: list[str]) -> int:
    from migbench.iam import policy_regions, write_policy

    ap = argparse.ArgumentParser(prog="migbench iam-policy",
                                 description="Least-privilege IAM policy for the configured models, "
                                             "restricted to the allowed Australian regions.")
    ap.add_argument("--backend", action="append", default=[], help="backend name (repeatable); default nova-pro, nova-lite")
    ap.add_argument("--sagemaker-endpoint", action="append", default=[], help="SageMaker endpoint name (repeatable)")
    ap.add_argument("--s3-bucket", action="append", default=[],
                    help="textract-expense: the bucket multi-page PDFs go through (repeatable)")
    ap.add_argument("--region", action="append", help="allowed region (repeatable; default from residency.yaml)")
    ap.add_argument("--catalog-refresh", action="store_true",
                    help="also allow the read-only listings of `migbench catalog refresh`")
    ap.add_argument("--account", default="*", help="AWS account id for ARNs (default *)")
    ap.add_argument("--out", metavar="FILE",
                    help="also write the policy to FILE (default: print it only; nothing is written)")
    args = ap.parse_args(argv)
    backends = args.backend or ["nova-pro", "nova-lite"]
    doc = write_policy(backends, args.out, account=args.account, sagemaker_endpoints=args.sagemaker_endpoint,
                       regions=args.region, s3_buckets=args.s3_bucket, catalog_refresh=args.catalog_refresh)
    print(json.dumps(doc, indent=2))
    wrote = f"wrote {args.out}; " if args.out else ""
    print(f"{wrote}regions reachable: {', '.join(sorted(policy_regions(doc)))}", file=sys.stderr)
    return 0
