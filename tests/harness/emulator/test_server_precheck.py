"""The emulator refuses from the headers alone (auth, declared size) without reading the body."""

import socket
import time

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from migbench.emulator import ScriptedResponder, run_emulator

PATH = "/model/amazon.nova-pro-v1%3A0/converse"
HUGE = 10**12  # bytes: a server that buffers the body dies of MemoryError (or waits for hours)


def _signed_headers(emu, key="testing"):
    req = AWSRequest(method="POST", url=emu.url + PATH, data=b"{}", headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(key, "testing"), "bedrock", emu.region).add_auth(req)
    return {k: v for k, v in req.headers.items() if k.lower() != "content-length"}


def _raw(emu, headers, length):
    """Send only the request head with the given Content-Length; return (status line, body, seconds)."""
    head = f"POST {PATH} HTTP/1.1\r\nHost: {emu.host}:{emu.port}\r\nContent-Length: {length}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items() if k.lower() != "host") + "\r\n"
    t0 = time.monotonic()
    with socket.create_connection((emu.host, emu.port), timeout=10) as s:
        s.sendall(head.encode())
        data = b""
        while chunk := s.recv(65536):  # the server closes after answering an unread body
            data += chunk
    status, _, rest = data.partition(b"\r\n")
    return status.decode(), rest.split(b"\r\n\r\n", 1)[-1], time.monotonic() - t0


@pytest.fixture
def emu():
    with run_emulator(responder=ScriptedResponder(["TOTAL_AMOUNT: $1"])) as e:
        yield e


def test_a_huge_body_without_credentials_is_refused_403_unread(emu):
    status, body, took = _raw(emu, {"Content-Type": "application/json"}, HUGE)
    assert status.split()[1] == "403" and b"message" in body.lower()
    assert took < 5
    assert emu.stats.last["error"] == "MissingAuthenticationTokenException"


def test_an_unknown_key_is_refused_before_the_body(emu):
    status, _, took = _raw(emu, _signed_headers(emu, key="nobody"), HUGE)
    assert status.split()[1] == "403" and took < 5
    assert emu.stats.last["error"] == "UnrecognizedClientException"


def test_a_declared_size_over_the_limit_is_refused_413_unread(emu):
    status, body, took = _raw(emu, _signed_headers(emu), HUGE)
    assert status.split()[1] == "413" and b"exceeds the maximum" in body and took < 5


@pytest.mark.parametrize("length", ["abc", "-5"])
def test_a_content_length_that_is_not_a_size_is_refused(emu, length):
    status, _, _ = _raw(emu, _signed_headers(emu), length)
    assert status.split()[1] == "400"


def test_the_emulator_still_serves_after_refusals(emu):
    for _ in range(3):
        _raw(emu, {}, HUGE)
    client = boto3.client("bedrock-runtime", endpoint_url=emu.url, region_name=emu.region,
                          aws_access_key_id="testing", aws_secret_access_key="testing",
                          config=Config(retries={"total_max_attempts": 1}))
    out = client.converse(modelId="amazon.nova-pro-v1:0",
                          messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert out["output"]["message"]["content"][0]["text"] == "TOTAL_AMOUNT: $1"
