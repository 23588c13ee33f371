"""Server-side SigV4 verification: recompute the client's signature with botocore's own signer.

The canonical request is rebuilt from exactly the headers the client says it signed and from the
raw (still percent-encoded) path, so a request botocore signed verifies bit for bit and any
mismatch (secret, region, service, body) fails like it does on AWS.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials
from migbench.emulator.protocol import (
    MSG_BAD_SIGNATURE,
    MSG_EXPIRED,
    MSG_MISSING_TOKEN,
    MSG_SCOPE_REGION,
    MSG_SCOPE_SERVICE,
    MSG_UNKNOWN_KEY,
    ApiError,
)

_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<cred>[^,\s]+),\s*SignedHeaders=(?P<signed>[^,\s]+),\s*"
    r"Signature=(?P<sig>[0-9a-f]{64})\s*$"
)
SIGV4_TIMESTAMP = "%Y%m%dT%H%M%SZ"


@dataclass
class AuthPolicy:
    """Who may call. `credentials` maps access key id -> secret; `any_key` skips the secret check
    (region, service and form are still checked)."""

    region: str = "ap-southeast-2"
    service: str = "bedrock"
    credentials: dict[str, str] = field(default_factory=lambda: {"testing": "testing"})
    any_key: bool = False
    max_skew_s: float | None = 300.0  # AWS rejects signatures more than 5 minutes off


def _values(headers: object, name: str) -> list[str]:
    if hasattr(headers, "get_all"):
        return list(headers.get_all(name) or [])  # type: ignore[attr-defined]
    value = headers.get(name)  # type: ignore[attr-defined]
    return [] if value is None else [value]


class _SignedHeadersOnly(SigV4Auth):
    """SigV4Auth restricted to the header names listed in the request's SignedHeaders."""

    def __init__(self, credentials: Credentials, service: str, region: str, signed: list[str]):
        super().__init__(credentials, service, region)
        self._signed = signed

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        out = HTTPHeaders()
        for name in self._signed:
            for value in request.headers.get_all(name) or []:
                out[name] = value
        return out


def verify(method: str, raw_path: str, headers: dict[str, str] | object, body: bytes, policy: AuthPolicy,
           now: datetime | None = None) -> str:
    """Check a request's SigV4 Authorization header. Returns the access key id or raises ApiError."""
    get = headers.get  # type: ignore[attr-defined]
    auth = get("Authorization")
    if not auth:
        raise ApiError("MissingAuthenticationTokenException", MSG_MISSING_TOKEN)
    m = _AUTH.match(auth.strip())
    if not m:
        raise ApiError("IncompleteSignatureException",
                       "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters "
                       "with the AWS4-HMAC-SHA256 algorithm.")
    cred = m.group("cred").split("/")
    if len(cred) != 5 or cred[4] != "aws4_request":
        raise ApiError("IncompleteSignatureException", "Credential scope must be key/date/region/service/aws4_request.")
    access_key, date, region, service, _ = cred
    if region != policy.region:
        raise ApiError("InvalidSignatureException", MSG_SCOPE_REGION)
    if service != policy.service:
        raise ApiError("InvalidSignatureException", MSG_SCOPE_SERVICE.format(service=policy.service))
    stamp = get("X-Amz-Date") or ""
    try:
        when = datetime.strptime(stamp, SIGV4_TIMESTAMP).replace(tzinfo=timezone.utc)
    except ValueError:
        raise ApiError("IncompleteSignatureException", "Date must be in ISO-8601 'basic format'. Got "
                       f"'{stamp}'.") from None
    if stamp[:8] != date:
        raise ApiError("InvalidSignatureException", "Date in Credential scope does not match YYYYMMDD from ISO-8601 "
                       "version of date from HTTP.")
    now = now or datetime.now(timezone.utc)
    if policy.max_skew_s is not None and abs((now - when).total_seconds()) > policy.max_skew_s:
        limit = datetime.fromtimestamp(now.timestamp() - policy.max_skew_s, timezone.utc).strftime(SIGV4_TIMESTAMP)
        raise ApiError("InvalidSignatureException", MSG_EXPIRED.format(stamp=stamp, limit=limit))
    secret = policy.credentials.get(access_key)
    if secret is None:
        if policy.any_key:
            return access_key
        raise ApiError("UnrecognizedClientException", MSG_UNKNOWN_KEY)
    signed = m.group("signed").split(";")
    if "host" not in signed:
        raise ApiError("InvalidSignatureException", "'Host' must be a signed header.")
    expected = signature(method, raw_path, headers, body, signed, access_key, secret, region, service, stamp)
    if not hmac.compare_digest(expected, m.group("sig")):
        raise ApiError("InvalidSignatureException", MSG_BAD_SIGNATURE)
    return access_key


def signature(method: str, raw_path: str, headers: object, body: bytes, signed: list[str], access_key: str,
              secret: str, region: str, service: str, stamp: str) -> str:
    """The signature botocore would have computed for this request."""
    hdrs = HTTPHeaders()
    for name in signed:
        for value in _values(headers, name):
            hdrs[name] = value
    host = hdrs.get("host", "localhost")
    req = AWSRequest(method=method, url=f"http://{host}{raw_path}", headers=hdrs, data=body)
    req.context["timestamp"] = stamp
    signer = _SignedHeadersOnly(Credentials(access_key, secret), service, region, signed)
    canonical = signer.canonical_request(req)
    return signer.signature(signer.string_to_sign(req, canonical), req)
