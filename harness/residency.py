"""The residency guard: a request that could leave Australia is refused before a byte is sent.

Three layers, all driven by harness/data/residency.yaml and the model catalog:
- config time: `check_config(region, endpoint, model_id)` raises SetupError at preflight, so a run
  naming a non-AU region, host or profile sends nothing at all;
- per request: `ResidencyGuard.attach(client)` hooks botocore's `before-send` event, the last point
  before the socket, and judges the request AS PREPARED: the region in the SigV4 credential scope
  (what was actually signed for), the URL host, and the model id / ARN in the URL path;
- profile destinations: `judge_inference_profile(GetInferenceProfile response)` refuses a profile
  whose models run outside the allowed regions.

Pure functions do the judging; the guard only wires them to botocore. Nothing here reads headers
other than the Authorization credential scope's region, so no key or signature is ever kept.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from migbench.catalog import load_model, load_packaged
from migbench.contracts import ResidencyError, SetupError
from pydantic import BaseModel, Field

# ---------------------------------------------------------------- data files


class Fact(BaseModel):
    claim: str
    source: str
    date: datetime.date  # when the source was read
    verified: bool
    # "availability": a claim about where an id exists or routes; a catalog refresh replaces these
    # with what the API said.
    kind: Literal["availability", "other"] = "other"


class RefusedBackend(BaseModel):
    """A backend name users will ask for that cannot meet the policy: refused with its reason."""

    reason: str
    facts: list[Fact] = []


class ResidencyPolicy(BaseModel):
    allowed_regions: list[str] = Field(min_length=1)
    # Where inference may RUN (a profile's destinations). Default: the allowed regions. A region
    # added here (e.g. ap-southeast-6, Auckland) is reported on every run that allowed it.
    allowed_destinations: list[str] | None = None
    home_regions: list[str] = []  # the default, Australian set; anything else allowed is an addition
    region_names: dict[str, str] = {}
    refused_backends: dict[str, RefusedBackend] = {}
    allowed_profile_prefixes: list[str] = []
    refused_profile_prefixes: list[str] = []
    host_patterns: dict[str, list[str]]
    loopback_hosts: list[str] = ["127.0.0.1", "localhost", "::1"]
    allowed_application_profiles: list[str] = []
    require_catalogued_base_ids: bool = True

    @property
    def destinations(self) -> list[str]:
        return list(self.allowed_destinations) if self.allowed_destinations is not None else list(self.allowed_regions)

    def with_destinations(self, extra: Iterable[str]) -> ResidencyPolicy:
        """A copy that also allows `extra` as destinations (the user's explicit addition)."""
        added = [r for r in extra if r and r not in self.destinations]
        return self.model_copy(update={"allowed_destinations": self.destinations + added}) if added else self

    def added_destinations(self) -> list[str]:
        """Allowed destinations beyond the home (Australian) regions: what a report must call out."""
        home = set(self.home_regions or self.allowed_regions)
        return [r for r in self.destinations if r not in home]

    def describe(self, source: str | None = None) -> dict[str, Any]:
        """The residency facts recorded on a run (the report shows added destinations)."""
        added = self.added_destinations()
        return {"allowed_regions": list(self.allowed_regions), "allowed_destinations": self.destinations,
                "added_destinations": added,
                "added_destination_names": [self.region_names.get(r, r) for r in added],
                "outside_home": bool(added), "policy_file": source}


class ModelEntry(BaseModel):
    model_id: str
    # The model's name as Service Quotas spells it in "... tokens per minute for {name}".
    quota_model_name: str | None = None
    kind: Literal["base", "profile"]
    provider: str
    vision: bool
    documents: bool = False
    api_default: Literal["converse", "invoke-nova", "invoke-anthropic"]
    apis: list[Literal["converse", "invoke-nova", "invoke-anthropic"]]
    regions: list[str] = Field(min_length=1)
    destinations: list[str] = Field(min_length=1)
    foundation_model: str | None = None
    # Set by `migbench catalog refresh`: True when the API listed the id, False when it did not
    # (None: never refreshed; the dated facts are all there is).
    confirmed: bool | None = None
    facts: list[Fact] = []

    @property
    def verified(self) -> bool:
        """Whether the id's availability is established: confirmed by a catalog refresh, else every
        availability claim verified. Other unverified claims stay listed as such (describe())."""
        if self.confirmed is not None:
            return self.confirmed
        return all(f.verified for f in self.facts if f.kind == "availability")


class ImageLimits(BaseModel):
    formats: list[str]
    max_side_px: int
    max_request_bytes: int


class QuotaNames(BaseModel):
    """Service Quotas names of a model's tokens-per-minute quota; `{model}` is its quota_model_name."""

    profile: list[str] = []
    base: list[str] = []
    source: str = ""


class Refreshed(BaseModel):
    """Set by `migbench catalog refresh`: when, from which API calls, in which regions."""

    date: datetime.date
    source: str
    regions: list[str]


class ModelCatalog(BaseModel):
    models: dict[str, ModelEntry]
    image_limits: ImageLimits
    quota_names: QuotaNames = QuotaNames()
    refreshed: Refreshed | None = None

    def by_model_id(self, model_id: str) -> ModelEntry | None:
        for entry in self.models.values():
            if entry.model_id == model_id:
                return entry
        return None

    def base_regions(self) -> dict[str, list[str]]:
        """Base model id -> regions where it is offered on demand (profiles' foundation models excluded)."""
        return {e.model_id: e.regions for e in self.models.values() if e.kind == "base"}


CATALOG_ENV = "MIGBENCH_MODEL_CATALOG"


def load_policy(path: str | None = None) -> ResidencyPolicy:
    return load_model(ResidencyPolicy, path) if path else load_packaged(ResidencyPolicy, "residency.yaml")


def load_model_catalog(path: str | None = None) -> ModelCatalog:
    """The model catalog: `path`, else $MIGBENCH_MODEL_CATALOG (a `migbench catalog refresh` file),
    else the packaged, dated bedrock_models.yaml."""
    path = path or os.environ.get(CATALOG_ENV) or None
    return load_model(ModelCatalog, path) if path else load_packaged(ModelCatalog, "bedrock_models.yaml")


# ---------------------------------------------------------------- errors and decisions


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reasons: tuple[str, ...]
    service: str
    operation: str | None
    region: str | None  # signing region (credential scope), else the client's region
    host: str | None
    model_id: str | None
    bytes_sent: int = 0

    @property
    def reason(self) -> str | None:
        return "; ".join(self.reasons) if self.reasons else None


# ---------------------------------------------------------------- pure checks


def check_region(region: str | None, policy: ResidencyPolicy) -> str | None:
    if not region:
        return "no region: a request must be signed for an allowed region"
    if region not in policy.allowed_regions:
        return f"region {region!r} is not an allowed region ({', '.join(policy.allowed_regions)})"
    return None


LOOPBACK_ENV = "MIGBENCH_ALLOW_LOOPBACK"


def loopback_allowed_by_env(env: Mapping[str, str] | None = None) -> bool:
    """MIGBENCH_ALLOW_LOOPBACK read one way everywhere: 1/true/yes/on (any case) allows loopback."""
    value = (os.environ if env is None else env).get(LOOPBACK_ENV, "")
    return value.strip().lower() in {"1", "true", "yes", "on"}


def is_loopback(host: str | None, policy: ResidencyPolicy) -> bool:
    import ipaddress

    if not host:
        return False
    bare = host.strip("[]").lower()
    if bare in {h.lower() for h in policy.loopback_hosts}:
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False


@lru_cache(maxsize=64)
def _host_regexes(patterns: tuple[str, ...], regions: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile("^" + p.replace("{region}", re.escape(r)) + "$", re.IGNORECASE)
                 for p in patterns for r in regions)


def check_host(host: str | None, service: str, policy: ResidencyPolicy, *, allow_loopback: bool) -> str | None:
    if not host:
        return "no host in the request URL"
    if is_loopback(host, policy):
        return None if allow_loopback else (
            f"host {host!r} is loopback: allowed only with allow_loopback (or MIGBENCH_ALLOW_LOOPBACK=1)")
    patterns = policy.host_patterns.get(service)
    if not patterns:
        return f"no allowed hosts are configured for service {service!r}"
    regexes = _host_regexes(tuple(patterns), tuple(policy.allowed_regions))
    if any(rx.match(host) for rx in regexes):
        return None
    return f"host {host!r} is not an allowed {service} endpoint in {', '.join(policy.allowed_regions)}"


@dataclass(frozen=True)
class Arn:
    partition: str
    service: str
    region: str
    account: str
    resource_type: str
    resource_id: str


def parse_arn(value: str) -> Arn | None:
    if not value.startswith("arn:"):
        return None
    parts = value.split(":", 5)
    if len(parts) != 6:
        return None
    _, partition, service, region, account, resource = parts
    rtype, sep, rid = resource.partition("/")
    if not sep:
        return None
    return Arn(partition, service, region, account, rtype, rid)


def profile_prefix(model_id: str) -> str:
    return model_id.split(".", 1)[0].lower() if "." in model_id else ""


def check_model_id(model_id: str | None, region: str | None, policy: ResidencyPolicy,
                   base_regions: Mapping[str, Iterable[str]]) -> str | None:
    """Judge a model id, profile id or ARN as called from `region`."""
    if not model_id:
        return None  # operations without a model (SageMaker endpoints, control plane) are judged by host
    arn = parse_arn(model_id)
    if arn is not None:
        if arn.partition != "aws" or arn.service != "bedrock":
            return f"ARN {model_id!r} is not a Bedrock ARN in the aws partition"
        if arn.region not in policy.allowed_regions:
            return f"ARN {model_id!r} names region {arn.region!r}, not an allowed region"
        if arn.resource_type == "foundation-model":
            return check_model_id(arn.resource_id, arn.region, policy, base_regions)
        if arn.resource_type == "inference-profile":
            return check_model_id(arn.resource_id, arn.region, policy, base_regions)
        if arn.resource_type == "application-inference-profile":
            if model_id in policy.allowed_application_profiles:
                return None
            return (f"application inference profile {model_id!r} routes to unknown regions: list it in "
                    "residency.yaml allowed_application_profiles after checking its models")
        if arn.resource_type in {"provisioned-model", "custom-model-deployment", "imported-model"}:
            return None  # runs in the ARN's own (allowed) region
        return f"ARN resource type {arn.resource_type!r} is not allowed"
    prefix = profile_prefix(model_id)
    if prefix in {p.lower() for p in policy.refused_profile_prefixes}:
        return f"inference profile {model_id!r} ({prefix}.) routes outside the allowed regions"
    if prefix in {p.lower() for p in policy.allowed_profile_prefixes}:
        return None
    if policy.require_catalogued_base_ids:
        offered = list(base_regions.get(model_id, ()))
        if not offered:
            return (f"model id {model_id!r} is neither an allowed profile ({', '.join(policy.allowed_profile_prefixes)}.) "
                    "nor a base id in the model catalog (harness/data/bedrock_models.yaml)")
        if region not in offered:
            return f"base model {model_id!r} is not offered in {region!r} per the catalog (offered: {', '.join(offered)})"
    return None


_MODEL_PATH = re.compile(r"^/model/([^/]+)/")
_CRED_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/([^/,\s]+)/([^/,\s]+)/aws4_request")


def model_id_from_path(path: str) -> str | None:
    """The model id of a bedrock-runtime URL path (/model/{id}/converse|invoke...), percent-decoded."""
    m = _MODEL_PATH.match(path)
    return unquote(m.group(1)) if m else None


def signing_region(headers: Mapping[str, Any]) -> str | None:
    """Region of the SigV4 credential scope; only the region is extracted, never the key."""
    auth = headers.get("Authorization") or headers.get("authorization")
    if isinstance(auth, bytes):
        auth = auth.decode("latin-1")
    if auth:
        m = _CRED_SCOPE.search(auth)
        if m:
            return m.group(1)
    return None


def judge_request(*, service: str, operation: str | None, url: str, headers: Mapping[str, Any],
                  client_region: str | None, body_len: int, policy: ResidencyPolicy, allow_loopback: bool,
                  base_regions: Mapping[str, Iterable[str]]) -> Decision:
    parts = urlsplit(url)
    host = parts.hostname
    signed = signing_region(headers)
    region = signed or client_region
    reasons: list[str] = []
    if signed and client_region and signed != client_region:
        reasons.append(f"signed for {signed!r} but the client is configured for {client_region!r}")
    region_set = headers.get("X-Amz-Region-Set") or headers.get("x-amz-region-set")
    if region_set:  # SigV4a signs for a set of regions
        if isinstance(region_set, bytes):
            region_set = region_set.decode("latin-1")
        for r in str(region_set).split(","):
            if (why := check_region(r.strip(), policy)) is not None:
                reasons.append(f"SigV4a region set: {why}")
    for why in (check_region(region, policy), check_host(host, service, policy, allow_loopback=allow_loopback)):
        if why:
            reasons.append(why)
    model_id = model_id_from_path(parts.path) if service == "bedrock-runtime" else None
    if service == "bedrock-runtime" and model_id is None:
        reasons.append(f"no model id in the request path {parts.path!r}")
    elif (why := check_model_id(model_id, region, policy, base_regions)) is not None:
        reasons.append(why)
    if service == "sagemaker-runtime":
        m = re.match(r"^/endpoints/([^/]+)/", parts.path)
        model_id = unquote(m.group(1)) if m else None
    return Decision(not reasons, tuple(reasons), service, operation, region, host, model_id,
                    body_len if not reasons else 0)


def check_config(region: str | None, endpoint: str | None, model_id: str | None, *,
                 service: str = "bedrock-runtime", policy: ResidencyPolicy | None = None,
                 allow_loopback: bool = False, catalog: ModelCatalog | None = None) -> None:
    """Config-time refusal: raise SetupError naming every problem before any request exists.

    `endpoint` is the resolved endpoint URL (client.meta.endpoint_url), so an endpoint coming from
    AWS_ENDPOINT_URL_* is judged too.
    """
    policy = policy or load_policy()
    catalog = catalog or load_model_catalog()
    reasons = [r for r in (
        check_region(region, policy),
        check_host(urlsplit(endpoint).hostname if endpoint else None, service, policy,
                   allow_loopback=allow_loopback) if endpoint else None,
        check_model_id(model_id, region, policy, catalog.base_regions()) if service == "bedrock-runtime" else None,
    ) if r]
    if reasons:
        raise SetupError("residency: refused before sending anything: " + "; ".join(reasons))


@dataclass(frozen=True)
class ProfileVerdict:
    ok: bool
    destinations: tuple[str, ...]
    reason: str | None = None
    unknown: bool = False  # the destinations could not be read (no models, unreadable ARNs)


def judge_inference_profile(response: Mapping[str, Any], policy: ResidencyPolicy | None = None) -> ProfileVerdict:
    """Judge a bedrock GetInferenceProfile response: every model ARN must sit in an allowed
    destination region (`policy.destinations`)."""
    policy = policy or load_policy()
    allowed = policy.destinations
    regions: list[str] = []
    bad: list[str] = []
    for model in response.get("models") or []:
        arn = parse_arn(str(model.get("modelArn", "")))
        if arn is None or not arn.region:
            bad.append(f"unreadable model ARN {model.get('modelArn')!r}")
            continue
        if arn.region not in regions:
            regions.append(arn.region)
    if not regions and not bad:
        return ProfileVerdict(False, (), "the profile lists no models: destinations unknown", unknown=True)
    outside = [r for r in regions if r not in allowed]
    if outside:
        named = ", ".join(f"{r} ({policy.region_names[r]})" if r in policy.region_names else r for r in outside)
        bad.append(f"profile {response.get('inferenceProfileId') or response.get('inferenceProfileArn')!r} "
                   f"routes to {named} outside the allowed destinations {', '.join(allowed)}")
        return ProfileVerdict(False, tuple(sorted(regions)), "; ".join(bad))
    return ProfileVerdict(not bad, tuple(sorted(regions)), "; ".join(bad) or None, unknown=bool(bad))


def refused_backend(name: str, policy: ResidencyPolicy | None = None) -> str | None:
    """The reason a known backend name is refused by the residency policy, or None."""
    policy = policy or load_policy()
    entry = policy.refused_backends.get(name)
    if entry is None:
        return None
    sources = "; ".join(dict.fromkeys(f"{f.source} (read {f.date})" for f in entry.facts))
    return f"backend {name!r} is refused: {entry.reason}" + (f" [{sources}]" if sources else "")


# ---------------------------------------------------------------- the botocore hook


class ResidencyGuard:
    """Attach to any boto3 client; refuses a request in `before-send` by raising ResidencyError.

    Decisions are handed to whoever asked on the sending thread (`recording`), so the backend can
    audit the attempt it just made, refused or sent.
    """

    def __init__(self, policy: ResidencyPolicy | None = None, *, allow_loopback: bool = False,
                 catalog: ModelCatalog | None = None):
        self.policy = policy or load_policy()
        self.allow_loopback = allow_loopback
        self.base_regions = (catalog or load_model_catalog()).base_regions()
        self._local = threading.local()

    def attach(self, client: Any) -> Any:
        service = client.meta.service_model.service_name
        region = client.meta.region_name

        def before_send(request: Any, event_name: str = "", **_: Any) -> None:
            body = request.body
            body_len = len(body) if isinstance(body, (bytes, bytearray, str)) else 0
            decision = judge_request(
                service=service, operation=event_name.rsplit(".", 1)[-1] or None, url=request.url,
                headers=request.headers, client_region=region, body_len=body_len, policy=self.policy,
                allow_loopback=self.allow_loopback, base_regions=self.base_regions)
            self._local.last = decision
            into = getattr(self._local, "into", None)
            if into is not None:
                into.append(decision)
            if not decision.allowed:
                raise ResidencyError(f"residency: refused {service} request to {decision.host}: {decision.reason}",
                                     reasons=list(decision.reasons))

        # Registered first so no other handler can answer the request before the guard sees it.
        client.meta.events.register_first("before-send", before_send, unique_id="migbench-residency-guard")
        client._migbench_residency_guard = self
        return client

    def take_last(self) -> Decision | None:
        decision = getattr(self._local, "last", None)
        self._local.last = None
        return decision

    @contextlib.contextmanager
    def recording(self, into: list[Decision]) -> Iterator[list[Decision]]:
        """Append every decision made on this thread inside the block to `into` (a list the caller
        may read from another thread: an attempt abandoned at its deadline is still audited)."""
        self._local.into = into
        try:
            yield into
        finally:
            self._local.into = None
