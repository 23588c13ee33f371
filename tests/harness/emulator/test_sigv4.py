from datetime import datetime, timedelta, timezone

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from migbench.emulator.protocol import ApiError
from migbench.emulator.sigv4 import AuthPolicy, verify

URL = "http://127.0.0.1:9/model/au.amazon.nova-pro-v1%3A0/converse"
BODY = b'{"messages": []}'


def _signed(region="ap-southeast-2", service="bedrock", key="testing", secret="testing", body=BODY):
    req = AWSRequest(method="POST", url=URL, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(key, secret), service, region).add_auth(req)
    req.headers["Host"] = "127.0.0.1:9"  # added by the HTTP client after signing, as urllib3 does
    return req


def _verify(req, body=BODY, policy=None, now=None):
    return verify("POST", "/model/au.amazon.nova-pro-v1%3A0/converse", req.headers, body,
                  policy or AuthPolicy(), now=now)


def _code(fn):
    with pytest.raises(ApiError) as err:
        fn()
    return err.value.code, err.value.status, err.value.message


def test_a_request_botocore_signed_verifies():
    assert _verify(_signed()) == "testing"


def test_a_changed_body_or_wrong_secret_breaks_the_signature():
    assert _code(lambda: _verify(_signed(), body=b'{"messages": [1]}'))[0] == "InvalidSignatureException"
    assert _code(lambda: _verify(_signed(secret="wrong")))[:2] == ("InvalidSignatureException", 403)


def test_scope_region_and_service_are_checked_even_for_any_key():
    policy = AuthPolicy(any_key=True, credentials={})
    assert _verify(_signed(key="AKIAANY", secret="x"), policy=policy) == "AKIAANY"
    code, status, msg = _code(lambda: _verify(_signed(region="us-east-1"), policy=policy))
    assert (code, status, msg) == ("InvalidSignatureException", 403, "Credential should be scoped to a valid region.")
    assert "correct service: 'bedrock'" in _code(lambda: _verify(_signed(service="s3"), policy=policy))[2]


def test_unknown_key_missing_header_and_stale_signature_are_refused():
    assert _code(lambda: _verify(_signed(key="AKIAOTHER")))[0] == "UnrecognizedClientException"
    unsigned = AWSRequest(method="POST", url=URL, data=BODY)
    assert _code(lambda: _verify(unsigned))[:2] == ("MissingAuthenticationTokenException", 403)
    later = datetime.now(timezone.utc) + timedelta(minutes=20)
    assert _code(lambda: _verify(_signed(), now=later))[2].startswith("Signature expired")
