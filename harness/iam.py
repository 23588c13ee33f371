"""Least-privilege IAM policy for the backends a run uses, restricted to the allowed (AU) regions.

What the AWS docs say (read 2026-11-24 with the search tool):
- Converse is authorised by `bedrock:InvokeModel` and ConverseStream by
  `bedrock:InvokeModelWithResponseStream` (API reference, "This operation requires permission for
  the bedrock:InvokeModel action"); there is no separate bedrock:Converse action to grant.
- A geographic cross-Region profile needs the profile ARN, the foundation model in the source Region
  and the foundation model in every destination Region. For `au.` profiles those are Sydney and
  Melbourne per the catalog (unverified: the preflight reads the real destinations).
Preflight also reads the model's tokens-per-minute quota (servicequotas:ListServiceQuotas), and
`catalog_refresh=True` adds the read-only listings `migbench catalog refresh` makes.
The policy also carries `aws:RequestedRegion` conditions and an explicit Deny outside the allowed
regions, so even a later edit that widens a resource cannot reach another region.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from migbench.residency import (
    ModelCatalog,
    ResidencyPolicy,
    check_model_id,
    load_model_catalog,
    load_policy,
    parse_arn,
    profile_prefix,
)

INVOKE_ACTIONS = ["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"]


def _resolve(model: str, catalog: ModelCatalog) -> tuple[str, str, list[str], list[str], str | None]:
    """-> (model_id, kind, source regions, destination regions, foundation model id)."""
    entry = catalog.models.get(model) or catalog.by_model_id(model)
    if entry is not None:
        return entry.model_id, entry.kind, entry.regions, entry.destinations, entry.foundation_model
    return model, "unknown", [], [], None


def least_privilege_policy(models: Iterable[str], regions: Iterable[str] | None = None, account: str = "*", *,
                           sagemaker_endpoints: Iterable[str] = (), include_preflight: bool = True,
                           catalog: ModelCatalog | None = None, policy: ResidencyPolicy | None = None,
                           textract: bool = False, s3_buckets: Iterable[str] = (),
                           s3_prefix: str = "migbench/", catalog_refresh: bool = False) -> dict[str, Any]:
    """IAM policy document for Bedrock models (catalog keys or ids) and SageMaker endpoint names.

    Raises ValueError for a region outside the residency policy or a model that would leave it.
    """
    catalog = catalog or load_model_catalog()
    policy = policy or load_policy()
    regions = list(regions) if regions is not None else list(policy.allowed_regions)
    outside = [r for r in regions if r not in policy.allowed_regions]
    if outside or not regions:
        raise ValueError(f"regions {outside or regions} are not within the allowed regions {policy.allowed_regions}")
    profile_arns: list[str] = []
    model_arns: list[str] = []
    base_regions = catalog.base_regions()

    def add(lst: list[str], arn: str) -> None:
        if arn not in lst:
            lst.append(arn)

    for model in models:
        model_id, kind, sources, destinations, foundation = _resolve(model, catalog)
        if kind == "unknown":
            prefix = profile_prefix(model_id)
            if prefix in policy.allowed_profile_prefixes:
                kind, sources, destinations = "profile", regions, regions
                foundation = model_id.split(".", 1)[1]
        if kind == "unknown" or parse_arn(model_id) is not None:
            raise ValueError(f"model {model!r} is not in the catalog: add it to bedrock_models.yaml first")
        for r in regions:
            if r in sources and (why := check_model_id(model_id, r, policy, base_regions)):
                raise ValueError(f"model {model!r}: {why}")
        if kind == "base":
            for r in sources:
                if r in regions:
                    add(model_arns, f"arn:aws:bedrock:{r}::foundation-model/{model_id}")
        else:
            for r in sources:
                if r in regions:
                    add(profile_arns, f"arn:aws:bedrock:{r}:{account}:inference-profile/{model_id}")
            for r in destinations:
                if r in regions:  # a destination outside the allowed regions is simply never granted
                    add(model_arns, f"arn:aws:bedrock:{r}::foundation-model/{foundation}")
    region_condition = {"StringEquals": {"aws:RequestedRegion": regions}}
    statements: list[dict[str, Any]] = []
    if profile_arns:
        statements.append({"Sid": "InvokeAustralianInferenceProfiles", "Effect": "Allow", "Action": INVOKE_ACTIONS,
                           "Resource": profile_arns, "Condition": region_condition})
    if model_arns:
        statements.append({"Sid": "InvokeFoundationModelsInAllowedRegions", "Effect": "Allow",
                           "Action": INVOKE_ACTIONS, "Resource": model_arns, "Condition": region_condition})
    if profile_arns and include_preflight:
        statements.append({"Sid": "ReadInferenceProfileDestinations", "Effect": "Allow",
                           "Action": ["bedrock:GetInferenceProfile"], "Resource": profile_arns,
                           "Condition": region_condition})
    if (profile_arns or model_arns) and include_preflight:
        # The model's tokens-per-minute quota, read at preflight to pace the run. List actions
        # take no resource ARN: the region condition is what pins them.
        statements.append({"Sid": "ReadModelQuotas", "Effect": "Allow", "Action": ["servicequotas:ListServiceQuotas"],
                           "Resource": "*", "Condition": region_condition})
    if catalog_refresh:  # `migbench catalog refresh`: read-only listings in the allowed regions
        statements.append({"Sid": "RefreshModelCatalog", "Effect": "Allow",
                           "Action": ["bedrock:ListFoundationModels", "bedrock:ListInferenceProfiles"],
                           "Resource": "*", "Condition": region_condition})
        statements.append({"Sid": "ReadAllInferenceProfileDestinations", "Effect": "Allow",
                           "Action": ["bedrock:GetInferenceProfile"],
                           "Resource": [f"arn:aws:bedrock:{r}:{account}:inference-profile/*" for r in regions],
                           "Condition": region_condition})
    endpoints = [f"arn:aws:sagemaker:{r}:{account}:endpoint/{name.lower()}"
                 for name in sagemaker_endpoints for r in regions]
    if endpoints:
        statements.append({"Sid": "InvokeSageMakerEndpointsInAllowedRegions", "Effect": "Allow",
                           "Action": ["sagemaker:InvokeEndpoint"], "Resource": endpoints,
                           "Condition": region_condition})
    if textract:
        statements += textract_statements(regions, list(s3_buckets), s3_prefix)
    if not statements:
        raise ValueError("no Bedrock model or SageMaker endpoint given: nothing to allow")
    statements.append({"Sid": "DenyEverythingOutsideAllowedRegions", "Effect": "Deny",
                       "Action": ["bedrock:*", "sagemaker:InvokeEndpoint*", "servicequotas:ListServiceQuotas"]
                       + (["textract:*"] if textract else []),
                       "Resource": "*",
                       "Condition": {"StringNotEquals": {"aws:RequestedRegion": regions}}})
    return {"Version": "2012-10-17", "Statement": statements}


def textract_statements(regions: list[str], buckets: list[str], prefix: str) -> list[dict[str, Any]]:
    """Textract expense analysis in the regions that offer it (textract_expense.yaml) and are allowed.
    Textract actions take no resource ARN (Resource "*"), so the region condition is what pins them;
    the S3 grants name only the upload prefix of each bucket (Textract reads the object with the
    caller's permission, hence GetObject) and GetBucketLocation for the residency check."""
    from migbench.catalog import data_path, read_yaml

    offered = (read_yaml(data_path("textract_expense.yaml")) or {}).get("regions") or []  # type: ignore[union-attr]
    in_region = [r for r in regions if r in offered]
    if not in_region:
        raise ValueError(f"Textract is offered in none of the regions {regions} (textract_expense.yaml: {offered})")
    condition = {"StringEquals": {"aws:RequestedRegion": in_region}}
    actions = ["textract:AnalyzeExpense"] + (["textract:StartExpenseAnalysis", "textract:GetExpenseAnalysis"]
                                             if buckets else [])
    out: list[dict[str, Any]] = [{"Sid": "TextractExpenseInAllowedRegions", "Effect": "Allow", "Action": actions,
                                  "Resource": "*", "Condition": condition}]
    if buckets:
        out.append({"Sid": "TextractUploadsInTheBucketPrefix", "Effect": "Allow",
                    "Action": ["s3:PutObject", "s3:GetObject", "s3:DeleteObject"],
                    "Resource": [f"arn:aws:s3:::{b}/{prefix}*" for b in buckets], "Condition": condition})
        out.append({"Sid": "TextractBucketRegionCheck", "Effect": "Allow", "Action": ["s3:GetBucketLocation"],
                    "Resource": [f"arn:aws:s3:::{b}" for b in buckets], "Condition": condition})
    return out


def batch_statements(regions: list[str], bucket: str, prefix: str, role_arn: str,
                     account: str = "*") -> dict[str, list[dict[str, Any]]]:
    """Bedrock batch inference (`migbench batch`): what the caller needs, and what the job's service
    role needs. The job APIs are pinned by region; the caller passes only the named role to Bedrock
    (iam:PassRole with iam:PassedToService), and both read and write only the batch prefix."""
    condition = {"StringEquals": {"aws:RequestedRegion": regions}}
    objects = f"arn:aws:s3:::{bucket}/{prefix}*"
    caller = [
        {"Sid": "BatchJobsInAllowedRegions", "Effect": "Allow",
         "Action": ["bedrock:CreateModelInvocationJob", "bedrock:GetModelInvocationJob",
                    "bedrock:ListModelInvocationJobs", "bedrock:StopModelInvocationJob"],
         "Resource": [f"arn:aws:bedrock:{r}:{account}:model-invocation-job/*" for r in regions]
         + [f"arn:aws:bedrock:{r}:{account}:inference-profile/*" for r in regions]
         + [f"arn:aws:bedrock:{r}::foundation-model/*" for r in regions], "Condition": condition},
        {"Sid": "BatchPassTheServiceRole", "Effect": "Allow", "Action": ["iam:PassRole"], "Resource": [role_arn],
         "Condition": {"StringEquals": {"iam:PassedToService": "bedrock.amazonaws.com"}}},
        {"Sid": "BatchInputAndOutput", "Effect": "Allow",
         "Action": ["s3:PutObject", "s3:GetObject", "s3:DeleteObject"], "Resource": [objects]},
        {"Sid": "BatchBucketRegionAndListing", "Effect": "Allow", "Action": ["s3:GetBucketLocation", "s3:ListBucket"],
         "Resource": [f"arn:aws:s3:::{bucket}"]},
    ]
    service_role = [
        {"Sid": "BedrockReadsInputWritesOutput", "Effect": "Allow",
         "Action": ["s3:GetObject", "s3:PutObject", "s3:ListBucket"],
         "Resource": [f"arn:aws:s3:::{bucket}", objects],
         "Condition": {"StringEquals": {"aws:ResourceAccount": account}} if account != "*" else {}},
    ]
    if not service_role[0]["Condition"]:
        del service_role[0]["Condition"]
    return {"caller": caller, "service_role": service_role}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def policy_regions(policy: dict[str, Any]) -> set[str]:
    """Regions an Allow statement can reach; '*' when some statement is not pinned to regions.

    A resource region is narrowed by an aws:RequestedRegion StringEquals condition on the same statement.
    """
    reachable: set[str] = set()
    for st in _as_list(policy.get("Statement", [])):
        if st.get("Effect") != "Allow":
            continue
        condition = (st.get("Condition") or {}).get("StringEquals", {}).get("aws:RequestedRegion")
        requested = set(_as_list(condition)) if condition else None
        for res in _as_list(st.get("Resource", [])):
            arn = parse_arn(res) if isinstance(res, str) else None
            region = arn.region if arn is not None else "*"
            if arn is not None and not region:
                region = "*"  # a region-less ARN (IAM, S3 bucket) is not pinned
            if "*" in region or "?" in region:
                reachable |= requested if requested is not None else {"*"}
            elif requested is None or region in requested:
                reachable.add(region)
    return reachable


def write_policy(backend_names: Iterable[str], out_path: str | Path | None, *, account: str = "*",
                 sagemaker_endpoints: Iterable[str] = (), regions: Iterable[str] | None = None,
                 s3_buckets: Iterable[str] = (), catalog_refresh: bool = False) -> dict[str, Any]:
    """Policy for registry backends (their catalog_model); returns it, and writes it as JSON to
    `out_path` when one is given (None: nothing is written).

    SageMaker backends carry no endpoint name in the registry: pass them as `sagemaker_endpoints`.
    """
    from migbench.contracts import SetupError
    from migbench.registry import entry

    models: list[str] = []
    textract = False
    for name in backend_names:
        e = entry(name)
        if e.target.startswith("migbench.adapters.textract:"):
            textract = True
        elif e.target.startswith("migbench.adapters.bedrock:"):
            key = e.defaults.get("catalog_model")
            if not key:
                raise SetupError(f"backend {name!r} has no catalog_model: cannot derive its resources")
            models.append(key)
        elif not e.target.startswith("migbench.adapters.sagemaker:"):
            raise SetupError(f"backend {name!r} does not call AWS: no IAM policy needed")
    try:
        doc = least_privilege_policy(models, regions, account, sagemaker_endpoints=sagemaker_endpoints,
                                     textract=textract, s3_buckets=s3_buckets, catalog_refresh=catalog_refresh)
    except ValueError as exc:
        raise SetupError(f"iam-policy: {exc}") from None
    if out_path is not None:
        Path(out_path).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return doc
