"""The emulator's control plane: what preflight and `migbench catalog refresh` ask before a run.

- `bedrock` (rest-json, SigV4 service `bedrock`): GetInferenceProfile (GET /inference-profiles/{id}),
  ListInferenceProfiles (GET /inference-profiles), ListFoundationModels (GET /foundation-models).
  Answers come from the emulator's model catalog (harness/data/emulator.yaml): a profile's
  `destinations` become the regions of the foundation-model ARNs in its `models` list, which is
  exactly what the residency check reads.
- `service-quotas` (AWS JSON 1.1, `X-Amz-Target: ServiceQuotasV20190624.ListServiceQuotas`, SigV4
  service `servicequotas`): one tokens-per-minute quota per model, named the way Bedrock names them
  (the names' templates and the models' quota names come from bedrock_models.yaml).

Shapes follow botocore's service models (bedrock 2023-04-20, service-quotas 2019-06-24). SYNTHETIC
data: ARNs use account 123456789012 and quota values are the emulator's own quota settings.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import replace
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from migbench.emulator import protocol as P
from migbench.emulator.sigv4 import AuthPolicy, verify
from pydantic import BaseModel

ACCOUNT = "123456789012"
SERVICE_QUOTAS_TARGET = "ServiceQuotasV20190624."
# X-Amz-Target prefix -> the SigV4 service name its requests are signed for (default: bedrock).
TARGET_SIGNING = {SERVICE_QUOTAS_TARGET: "servicequotas"}
_PROFILE = re.compile(r"^/inference-profiles/(?P<id>[^/]+)$")
CREATED = "2025-01-01T00:00:00Z"  # fixed: answers are reproducible


class ControlConfig(BaseModel):
    """Control-plane behaviour tests can switch: operations answered AccessDeniedException
    (a role without bedrock:GetInferenceProfile or servicequotas:ListServiceQuotas)."""

    deny: list[str] = []


class _Service(Protocol):  # the EmulatedBedrock the server passes in (no import: no cycle)
    config: Any
    policy: AuthPolicy

    def _quota_limits(self, model_id: str) -> tuple[int | None, int | None]: ...


def signing_service(headers: Any) -> str:
    """The SigV4 service a request must be signed for, from its X-Amz-Target."""
    target = headers.get("X-Amz-Target") or ""
    for prefix, service in TARGET_SIGNING.items():
        if target.startswith(prefix):
            return service
    return "bedrock"


def policy_for(policy: AuthPolicy, headers: Any) -> AuthPolicy:
    service = signing_service(headers)
    return policy if service == policy.service else replace(policy, service=service)


def is_control(method: str, raw_path: str, headers: Any) -> bool:
    path = raw_path.split("?", 1)[0]
    if method == "GET":
        return path in ("/inference-profiles", "/foundation-models") or bool(_PROFILE.match(path))
    return method == "POST" and path == "/" and (headers.get("X-Amz-Target") or "").startswith(SERVICE_QUOTAS_TARGET)


def handle(service: _Service, method: str, raw_path: str, headers: Any, body: bytes,
           entry_out: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    """Answer one control-plane request (the caller checked `is_control`). Raises ApiError, except
    for AWS JSON 1.1 requests, whose errors carry their code in the body (`__type`)."""
    if method == "POST":
        try:
            return _handle(service, method, raw_path, headers, body, entry_out)
        except P.ApiError as err:
            entry_out.update(error=err.code, message=err.message)
            return err.status, {"Content-Type": "application/x-amz-json-1.1", "x-amzn-ErrorType": err.code}, \
                json.dumps({"__type": err.code, "message": err.message}).encode()
    return _handle(service, method, raw_path, headers, body, entry_out)


def _handle(service: _Service, method: str, raw_path: str, headers: Any, body: bytes,
            entry_out: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    verify(method, raw_path, headers, body, policy_for(service.policy, headers))
    parts = urlsplit(raw_path)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    control: ControlConfig = getattr(service.config, "control", None) or ControlConfig()
    if method == "POST":
        op = (headers.get("X-Amz-Target") or "")[len(SERVICE_QUOTAS_TARGET):]
        entry_out["operation"] = op
        if op != "ListServiceQuotas":
            raise P.ApiError("UnknownOperationException", "", 400)
        _deny(op, control, json_protocol=True)
        return _json11(list_service_quotas(service, load_body(body)))
    path = parts.path
    if path == "/foundation-models":
        op = "ListFoundationModels"
        entry_out["operation"] = op
        _deny(op, control)
        return json_reply(list_foundation_models(service.config, query))
    if path == "/inference-profiles":
        op = "ListInferenceProfiles"
        entry_out["operation"] = op
        _deny(op, control)
        return json_reply(list_inference_profiles(service.config, query))
    op = "GetInferenceProfile"
    ident = unquote(_PROFILE.match(path).group("id"))  # type: ignore[union-attr]
    entry_out.update(operation=op, model_id=ident)
    _deny(op, control)
    return json_reply(get_inference_profile(service.config, ident))


def _deny(op: str, control: ControlConfig, *, json_protocol: bool = False) -> None:
    if op in control.deny:
        action = f"servicequotas:{op}" if json_protocol else f"bedrock:{op}"
        raise P.ApiError("AccessDeniedException", f"User: arn:aws:sts::{ACCOUNT}:assumed-role/migbench-test/emulated "
                         f"is not authorized to perform: {action} because no identity-based policy allows "
                         f"the {action} action")


def load_body(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        raise P.ApiError("SerializationException", "Request body is not JSON.", 400) from None
    return data if isinstance(data, dict) else {}


def json_reply(payload: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/json"}, json.dumps(payload).encode()


def _json11(payload: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps(payload).encode()


# --- answers ------------------------------------------------------------------------------------

def _foundation_id(profile_id: str) -> str:
    return profile_id.split(".", 1)[1] if "." in profile_id else profile_id


def _profile(config: Any, ident: str, entry: Any) -> dict[str, Any]:
    region = config.region
    foundation = entry.foundation_model or _foundation_id(ident)
    return {
        "inferenceProfileName": f"{ident.split('.', 1)[0].upper()} {foundation}",
        "description": f"Routes requests to {foundation} in {', '.join(entry.destinations)} (emulated).",
        "createdAt": CREATED, "updatedAt": CREATED,
        "inferenceProfileArn": f"arn:aws:bedrock:{region}:{ACCOUNT}:inference-profile/{ident}",
        "models": [{"modelArn": f"arn:aws:bedrock:{dest}::foundation-model/{foundation}"}
                   for dest in entry.destinations],
        "inferenceProfileId": ident, "status": "ACTIVE", "type": "SYSTEM_DEFINED",
    }


def _resolve_profile_id(config: Any, ident: str) -> str:
    if ident.startswith("arn:"):
        parts = ident.split(":", 5)
        if len(parts) < 6 or parts[3] != config.region or not parts[5].startswith("inference-profile/"):
            raise P.ApiError("ValidationException", P.MSG_INVALID_MODEL)
        return parts[5].split("/", 1)[1]
    return ident


def get_inference_profile(config: Any, ident: str) -> dict[str, Any]:
    pid = _resolve_profile_id(config, ident)
    entry = config.models().get(pid)
    if entry is None or entry.kind != "profile":
        raise P.ApiError("ResourceNotFoundException", "The specified inference profile couldn't be found.")
    if not entry.destinations:
        raise P.ApiError("InternalServerException", f"emulator.yaml gives profile {pid} no destinations.")
    return _profile(config, pid, entry)


def list_inference_profiles(config: Any, query: dict[str, str]) -> dict[str, Any]:
    wanted = query.get("type")
    summaries = [_profile(config, pid, e) for pid, e in config.models().items()
                 if e.kind == "profile" and e.destinations and wanted in (None, "SYSTEM_DEFINED")]
    return _page(summaries, "inferenceProfileSummaries", query)


def list_foundation_models(config: Any, query: dict[str, str]) -> dict[str, Any]:
    region = config.region
    out = []
    for mid, e in config.models().items():
        if e.kind != "base":
            continue
        provider = mid.split(".", 1)[0]
        if query.get("byProvider") and query["byProvider"].lower() != provider:
            continue
        out.append({
            "modelArn": f"arn:aws:bedrock:{region}::foundation-model/{mid}", "modelId": mid,
            "modelName": e.quota_model_name or mid, "providerName": provider.capitalize(),
            "inputModalities": [m.upper() for m in e.inputs], "outputModalities": ["TEXT"],
            "responseStreamingSupported": True, "customizationsSupported": [],
            "inferenceTypesSupported": ["ON_DEMAND"] if e.on_demand else ["INFERENCE_PROFILE"],
            "modelLifecycle": {"status": "ACTIVE"},
        })
    return {"modelSummaries": out}


def _page(items: list[dict[str, Any]], key: str, query: dict[str, str]) -> dict[str, Any]:
    """maxResults/nextToken paging, so a client that follows tokens is exercised."""
    start = int(query.get("nextToken") or 0)
    size = int(query.get("maxResults") or 1000)
    page: dict[str, Any] = {key: items[start:start + size]}
    if start + size < len(items):
        page["nextToken"] = str(start + size)
    return page


def list_service_quotas(service: _Service, request: dict[str, Any]) -> dict[str, Any]:
    """Bedrock's per-model tokens-per-minute quotas, named with bedrock_models.yaml's templates."""
    from migbench.residency import load_model_catalog

    if request.get("ServiceCode") != "bedrock":
        raise P.ApiError("NoSuchResourceException", f"Service {request.get('ServiceCode')!r} is not emulated.", 400)
    config = service.config
    names = load_model_catalog().quota_names
    quotas: dict[str, dict[str, Any]] = {}  # one quota per model and kind, however many profiles carry it
    for mid, e in config.models().items():
        if not e.quota_model_name:
            continue
        templates = names.profile if e.kind == "profile" else (names.base if e.on_demand else [])
        if not templates:
            continue
        tpm, _ = service._quota_limits(mid)
        if tpm is None:
            continue
        name = templates[0].format(model=e.quota_model_name)
        code = f"L-{zlib.crc32(name.encode()):08X}"  # stable across processes
        quotas.setdefault(name, {
            "ServiceCode": "bedrock", "ServiceName": "Amazon Bedrock",
            "QuotaArn": f"arn:aws:servicequotas:{config.region}:{ACCOUNT}:bedrock/{code}", "QuotaCode": code,
            "QuotaName": name, "Value": float(tpm), "Unit": "None",
            "Adjustable": True, "GlobalQuota": False,
        })
    start = int(request.get("NextToken") or 0)
    size = int(request.get("MaxResults") or 100)
    listed = list(quotas.values())
    page: dict[str, Any] = {"Quotas": listed[start:start + size]}
    if start + size < len(listed):
        page["NextToken"] = str(start + size)
    return page
