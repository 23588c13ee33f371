"""`migbench catalog refresh`: the model catalog as your account's API sees it today.

Reads, in each allowed region, ListFoundationModels (base ids and whether they run on demand),
ListInferenceProfiles and, for every profile a run could use, GetInferenceProfile (the regions of
the model ARNs in `models`: where a document may be processed). Writes a dated catalog in the
bedrock_models.yaml schema: entries the API confirmed carry facts whose source is the API call and
the date (verified), entries it did not list are marked `confirmed: false`, and usable profiles the
packaged catalog does not know are added. Backends and the report use the file through
`-o model_catalog=FILE` or `MIGBENCH_MODEL_CATALOG=FILE`.

Every request goes through the residency guard (an allowed region and host, or loopback when
allowed) and nothing but these read-only control-plane calls is made.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migbench.contracts import SetupError
from migbench.residency import (
    Fact,
    ModelCatalog,
    ModelEntry,
    Refreshed,
    ResidencyGuard,
    ResidencyPolicy,
    judge_inference_profile,
    load_model_catalog,
    load_policy,
    loopback_allowed_by_env,
    parse_arn,
    profile_prefix,
)

API_SOURCE = "bedrock:ListFoundationModels, ListInferenceProfiles, GetInferenceProfile"


@dataclass
class RegionView:
    """What one region's API listed."""

    region: str
    on_demand: dict[str, dict[str, Any]] = field(default_factory=dict)  # base id -> model summary
    listed: dict[str, dict[str, Any]] = field(default_factory=dict)  # every base id listed (any inference type)
    profiles: dict[str, list[str]] = field(default_factory=dict)  # profile id -> destination regions


@dataclass
class Refresh:
    catalog: ModelCatalog
    read: list[str]
    notes: list[str]
    confirmed: list[str]
    unconfirmed: list[str]
    added: list[str]
    outside_policy: list[str]


def _paginate(client: Any, op: str, key: str, **kwargs: Any) -> list[dict[str, Any]]:
    if client.can_paginate(op):
        return [item for page in client.get_paginator(op).paginate(**kwargs) for item in page.get(key) or []]
    return list(getattr(client, op)(**kwargs).get(key) or [])


def read_region(client: Any, region: str, policy: ResidencyPolicy, wanted: set[str]) -> RegionView:
    """One region's listing. GetInferenceProfile is asked for the profiles a run could use: an
    allowed prefix (au.) or an id the catalog names."""
    view = RegionView(region)
    for model in _paginate(client, "list_foundation_models", "modelSummaries"):
        mid = str(model.get("modelId") or "")
        view.listed[mid] = model
        if "ON_DEMAND" in (model.get("inferenceTypesSupported") or []):
            view.on_demand[mid] = model
    allowed = {p.lower() for p in policy.allowed_profile_prefixes}
    for summary in _paginate(client, "list_inference_profiles", "inferenceProfileSummaries", typeEquals="SYSTEM_DEFINED"):
        pid = str(summary.get("inferenceProfileId") or "")
        if profile_prefix(pid) not in allowed and pid not in wanted:
            continue
        detail = client.get_inference_profile(inferenceProfileIdentifier=pid)
        regions = [a.region for m in detail.get("models") or [] if (a := parse_arn(str(m.get("modelArn", ""))))]
        view.profiles[pid] = sorted(set(regions))
    return view


def _key(model_id: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", model_id.lower()).strip("-")
    key, n = base, 2
    while key in taken:
        key, n = f"{base}-{n}", n + 1
    return key


def merge(base: ModelCatalog, views: list[RegionView], policy: ResidencyPolicy, today: datetime.date,
          notes: list[str]) -> Refresh:
    """The packaged (or given) catalog updated with what the API listed."""
    read = [v.region for v in views]
    where = ", ".join(read)
    catalog = base.model_copy(deep=True)
    confirmed: list[str] = []
    unconfirmed: list[str] = []
    outside: list[str] = []

    def api_fact(claim: str, op: str) -> Fact:
        return Fact(claim=claim, source=f"bedrock:{op} in {where} (this account's API)", date=today, verified=True,
                    kind="availability")

    def keep(entry: ModelEntry) -> list[Fact]:
        return [f for f in entry.facts if f.kind != "availability"]

    for key, entry in catalog.models.items():
        if entry.kind == "base":
            seen = [v.region for v in views if entry.model_id in v.on_demand]
            if seen:
                untouched = [r for r in entry.regions if r not in read]  # regions not read keep their claim
                entry.regions = entry.destinations = seen + untouched
                entry.facts = keep(entry) + [api_fact(f"listed on demand in {', '.join(seen)}", "ListFoundationModels")]
                entry.confirmed = True
                confirmed.append(key)
            else:
                entry.facts = keep(entry) + [api_fact("not listed as on-demand", "ListFoundationModels")]
                entry.confirmed = False
                unconfirmed.append(key)
            continue
        seen = [v.region for v in views if entry.model_id in v.profiles]
        if not seen:
            entry.facts = keep(entry) + [api_fact("not listed by ListInferenceProfiles", "ListInferenceProfiles")]
            entry.confirmed = False
            unconfirmed.append(key)
            continue
        dests = sorted({r for v in views for r in v.profiles.get(entry.model_id, [])})
        entry.regions = seen + [r for r in entry.regions if r not in read]
        entry.destinations = dests or entry.destinations
        entry.facts = keep(entry) + [api_fact(f"profile listed in {', '.join(seen)}; GetInferenceProfile "
                                              f"destinations {', '.join(dests) or 'none'}", "GetInferenceProfile")]
        entry.confirmed = True
        confirmed.append(key)
        if (why := _outside(entry.model_id, dests, policy)) is not None:
            outside.append(key)
            notes.append(why)

    added: list[str] = []
    known = {e.model_id for e in catalog.models.values()}
    for pid in sorted({p for v in views for p in v.profiles} - known):
        seen = [v.region for v in views if pid in v.profiles]
        dests = sorted({r for v in views for r in v.profiles.get(pid, [])})
        foundation = pid.split(".", 1)[1] if "." in pid else pid
        summary = next((v.listed[foundation] for v in views if foundation in v.listed), {})
        inputs = [str(m).upper() for m in summary.get("inputModalities") or []]
        key = _key(pid, set(catalog.models))
        catalog.models[key] = ModelEntry(
            model_id=pid, kind="profile", provider=pid.split(".")[1] if pid.count(".") >= 2 else "unknown",
            vision="IMAGE" in inputs, documents=False, api_default="converse", apis=["converse"],
            regions=seen, destinations=dests or seen, foundation_model=foundation, confirmed=True,
            quota_model_name=summary.get("modelName") or None,
            facts=[api_fact(f"profile listed in {', '.join(seen)}; GetInferenceProfile destinations "
                            f"{', '.join(dests) or 'none'}", "GetInferenceProfile"),
                   Fact(claim="vision from the foundation model's inputModalities" if summary else
                        "vision unknown: the foundation model was not listed", source=f"bedrock:ListFoundationModels in {where}",
                        date=today, verified=bool(summary)),
                   Fact(claim="quota_model_name taken from modelName (Service Quotas may spell it otherwise)",
                        source=f"bedrock:ListFoundationModels in {where}", date=today, verified=False)])
        added.append(key)
        if (why := _outside(pid, dests, policy)) is not None:
            outside.append(key)
            notes.append(why)
    catalog.refreshed = Refreshed(date=today, source=API_SOURCE, regions=read)
    return Refresh(catalog, read, notes, confirmed, unconfirmed, added, outside)


def _outside(model_id: str, destinations: list[str], policy: ResidencyPolicy) -> str | None:
    verdict = judge_inference_profile(
        {"inferenceProfileId": model_id,
         "models": [{"modelArn": f"arn:aws:bedrock:{r}::foundation-model/x"} for r in destinations]}, policy)
    return None if verdict.ok else f"{model_id}: {verdict.reason} (a run will refuse it)"


def _session(profile: str | None) -> Any:
    import boto3

    return boto3.session.Session(profile_name=profile) if profile else boto3.session.Session()


def _client(session: Any, region: str, endpoint_url: str | None) -> Any:
    """A read-only control-plane client; credentials are registered with the scrubber, never kept."""
    from botocore.config import Config
    from migbench.redact import install_log_scrubber, register_credentials

    install_log_scrubber()
    register_credentials(session.get_credentials())
    return session.client("bedrock", region_name=region, endpoint_url=endpoint_url or None, config=Config(
        region_name=region, connect_timeout=10, read_timeout=30, user_agent_extra="migbench",
        retries={"total_max_attempts": 3, "mode": "standard"}))


def _error_line(exc: BaseException) -> str:
    from migbench.redact import scrub

    error = (getattr(exc, "response", None) or {}).get("Error") or {}
    code, message = error.get("Code"), error.get("Message")
    text = f"{code}: {message}" if code and message else code or (str(exc).splitlines() or [type(exc).__name__])[0]
    return scrub(str(text)) or type(exc).__name__


def refresh(*, regions: list[str] | None = None, endpoint_url: str | None = None, profile: str | None = None,
            allow_loopback: bool = False, policy: ResidencyPolicy | None = None, base: ModelCatalog | None = None,
            today: datetime.date | None = None) -> Refresh:
    """Read the allowed regions' listings and merge them into `base` (default: the current catalog)."""
    policy = policy or load_policy()
    base = base or load_model_catalog()
    regions = regions or list(policy.allowed_regions)
    outside = [r for r in regions if r not in policy.allowed_regions]
    if outside:
        raise SetupError(f"catalog refresh: {', '.join(outside)} is not an allowed region "
                         f"({', '.join(policy.allowed_regions)})")
    session = _session(profile)
    if session.get_credentials() is None:
        raise SetupError("catalog refresh: no AWS credentials found (environment, AWS_PROFILE, SSO or a role)")
    guard = ResidencyGuard(policy, allow_loopback=allow_loopback or loopback_allowed_by_env(), catalog=base)
    wanted = {e.model_id for e in base.models.values() if e.kind == "profile"}
    views: list[RegionView] = []
    notes: list[str] = []
    for region in regions:
        client = guard.attach(_client(session, region, endpoint_url))
        try:
            views.append(read_region(client, region, policy, wanted))
        except Exception as exc:  # noqa: BLE001 - one region's failure is reported; the others still count
            notes.append(f"{region}: not read: {_error_line(exc)}")
        finally:
            client.close()
    if not views:
        raise SetupError("catalog refresh: no region could be read: " + "; ".join(notes))
    return merge(base, views, policy, today or datetime.date.today(), notes)


def write_catalog(result: Refresh, out: Path) -> Path:
    import yaml

    out.parent.mkdir(parents=True, exist_ok=True)
    data = result.catalog.model_dump(mode="json", exclude_none=True)
    header = (f"# Model catalog refreshed {result.catalog.refreshed.date} from {API_SOURCE}\n"  # type: ignore[union-attr]
              f"# in {', '.join(result.read)} (written by `migbench catalog refresh`). Use it with\n"
              f"# MIGBENCH_MODEL_CATALOG={out} or -o model_catalog={out}.\n")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    os.replace(tmp, out)
    load_model_catalog(str(out))  # what was written loads under the schema
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="migbench catalog", description=(
        "refresh: read ListFoundationModels, ListInferenceProfiles and GetInferenceProfile in the allowed "
        "regions (needs AWS credentials) and write a dated model catalog that backends and the report use."))
    ap.add_argument("action", choices=["refresh"])
    ap.add_argument("--results", default=os.environ.get("MIGBENCH_RESULTS", "results"),
                    help="results folder; the catalog goes to RESULTS/catalog/bedrock_models.yaml unless --catalog")
    ap.add_argument("--catalog", metavar="FILE", help="where to write the refreshed catalog")
    ap.add_argument("--region", action="append", help="region to read (repeatable; default: the allowed regions)")
    ap.add_argument("--endpoint-url", help="bedrock control-plane endpoint (else AWS_ENDPOINT_URL_BEDROCK or AWS)")
    ap.add_argument("--profile", help="AWS named profile")
    ap.add_argument("--allow-loopback", action="store_true", help="allow a local endpoint (the emulator)")
    args = ap.parse_args(argv)
    out = Path(args.catalog) if args.catalog else Path(args.results) / "catalog" / "bedrock_models.yaml"
    result = refresh(regions=args.region, endpoint_url=args.endpoint_url, profile=args.profile,
                     allow_loopback=args.allow_loopback)
    write_catalog(result, out)
    print(f"read {', '.join(result.read)}: confirmed {len(result.confirmed)}, not listed {len(result.unconfirmed)}"
          f"{' (' + ', '.join(result.unconfirmed) + ')' if result.unconfirmed else ''}, added {len(result.added)}"
          f"{' (' + ', '.join(result.added) + ')' if result.added else ''}")
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {out}; use it with MIGBENCH_MODEL_CATALOG={out} or -o model_catalog={out}")
    return 0
