"""A 200 is an answer only when complete and in the API's shape; attempts and documents have deadlines;
server Retry-After hints are capped; credentials from any source never reach what is stored.

Everything drives the real boto3 client against the emulator (harness/emulator) with injected faults.
"""

import math
import random
import time

import pytest
from migbench.adapters.aws_common import parse_retry_after
from migbench.contracts import BackendError, ErrorClass, GenParams, MemoryAudit, Request
from migbench.emulator.responders import ScriptedResponder
from migbench.emulator.server import load_config, run_emulator
from migbench.images import encoded
from migbench.redact import scrub
from migbench.registry import create_backend
from migbench.retry import RetryPolicy, call_with_retry

from tests.adapters.test_bedrock import page

ANSWER = "SUPPLIER_NAME: ACME PTY LTD\nTOTAL_AMOUNT: $12.50"
FAST = RetryPolicy(max_attempts=3, base_s=0.001, cap_s=0.002)
APIS = [("nova-pro", "converse"), ("nova-lite", "invoke-nova"), ("au-claude-sonnet-4-5", "invoke-anthropic")]


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_BEDROCK_RUNTIME"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def emu(aws_env):
    with run_emulator(responder=ScriptedResponder([ANSWER])) as e:
        yield e


def request(doc_id="inv-001.png"):
    return Request(doc_id, "invoice", "Extract the fields.", images=[encoded(page())],
                   params=GenParams(max_tokens=256))


# ---------------------------------------------------------------- incomplete or malformed 200s


@pytest.mark.parametrize("name,api", APIS)
@pytest.mark.parametrize("fault,expected", [
    ("empty_body", ErrorClass.TRANSIENT), ("truncated_body", ErrorClass.TRANSIENT),
    ("html_body", ErrorClass.PERMANENT), ("no_output", ErrorClass.PERMANENT)])
def test_a_200_that_is_not_a_complete_answer_is_a_classified_failure(emu, name, api, fault, expected):
    emu.set_faults(script=[fault])
    b = create_backend(name, options={"endpoint_url": emu.url, "allow_loopback": True, "api": api})
    with pytest.raises(BackendError) as info:
        b.generate(request())
    assert info.value.error_class is expected, str(info.value)
    [entry] = info.value.response.sent  # the request went out and was answered: audited as such
    assert entry.allowed and entry.status == 200
    assert emu.stats.requests == 1


@pytest.mark.parametrize("name,api", APIS)
@pytest.mark.parametrize("fault", ["empty_body", "truncated_body"])
def test_an_incomplete_answer_is_retried_and_the_document_ends_with_the_full_answer(emu, name, api, fault):
    emu.set_faults(script=[fault])
    b = create_backend(name, options={"endpoint_url": emu.url, "allow_loopback": True, "api": api})
    audit = MemoryAudit()
    resp = call_with_retry(b, request(), FAST, audit=audit)
    assert resp.ok and resp.text == ANSWER and resp.attempts == 2
    assert [(e.attempt, e.status) for e in audit.entries] == [(1, 200), (2, 200)]


@pytest.mark.parametrize("fault", ["html_body", "no_output"])
def test_a_malformed_answer_ends_failed_never_ok_with_empty_text(emu, fault):
    emu.set_faults(script=[fault])
    b = create_backend("nova-pro", options={"endpoint_url": emu.url, "allow_loopback": True})
    resp = call_with_retry(b, request(), FAST, audit=MemoryAudit())
    assert not resp.ok and resp.error_class is ErrorClass.PERMANENT and resp.text == ""
    assert "MalformedAnswer" in resp.error and resp.attempts == 1
    # Stored as failed, the document is redone by a later --retry-failed run; this time it answers.
    again = call_with_retry(b, request(), FAST)
    assert again.ok and again.text == ANSWER


def test_a_failed_document_is_stored_failed_and_a_retry_failed_run_completes_it(aws_env, tmp_path):
    from migbench.datasets import load_dataset
    from migbench.fixtures import default_dataset
    from migbench.runner import Runner, RunOptions
    from migbench.store import RunStore

    dataset = load_dataset(default_dataset())
    with run_emulator(responder=ScriptedResponder([ANSWER])) as e:
        e.set_faults(script=["html_body"])
        store = RunStore(tmp_path / "r")
        opts = {"limit": 1, "retry": FAST}
        b = create_backend("nova-pro", options={"endpoint_url": e.url, "allow_loopback": True})
        first = Runner(b, dataset, store, RunOptions(**opts)).run()
        [doc] = store.documents(first.run_id)
        assert _get(doc, "status") == "failed" and _get(doc, "error_class") == "permanent"
        second = Runner(b, dataset, store, RunOptions(retry_failed=True, **opts)).run()
        [doc] = store.documents(second.run_id)
        assert second.run_id == first.run_id and _get(doc, "status") == "ok"
        attempts = [(_get(a, "doc_id"), _get(a, "attempt"), _get(a, "status")) for a in store.audit(first.run_id)]
        assert [a[1:] for a in attempts] == [(1, 200), (1, 200)]
        assert all(a[0] == _get(doc, "doc_id") for a in attempts)


def _get(row, key):
    return row[key] if isinstance(row, dict) else getattr(row, key)


# ---------------------------------------------------------------- deadlines


def test_a_trickling_server_cannot_hold_an_attempt_past_its_deadline(aws_env):
    cfg = load_config()
    with run_emulator(cfg, ScriptedResponder([ANSWER])) as e:
        e.set_faults(script=["trickle"], trickle_s=0.5)
        b = create_backend("nova-pro", options={"endpoint_url": e.url, "allow_loopback": True,
                                                "read_timeout": 5, "attempt_timeout": 1.5})
        t0 = time.monotonic()
        with pytest.raises(BackendError) as info:
            b.generate(request())
        took = time.monotonic() - t0
    assert info.value.error_class is ErrorClass.TIMEOUT and "attempt_timeout=1.5s" in str(info.value)
    assert 1.4 < took < 3.0  # each byte came well within read_timeout=5; the attempt still ended
    [entry] = info.value.response.sent
    assert entry.allowed and entry.bytes_sent > 0


def test_the_attempt_deadline_defaults_from_the_socket_timeouts():
    b = create_backend("nova-pro", options={"read_timeout": 5, "connect_timeout": 2})
    assert b.attempt_timeout == 5 + 2 + 60


@pytest.mark.parametrize("value,expected", [
    ("3", 3.0), ("0", 0.0), ("-5", 0.0), ("inf", math.inf), ("1e10", 1e10), ("100000", 100000.0),
    ("nan", None), ("soon", None), ("", None), (None, None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)])
def test_retry_after_values_are_read_as_numbers_the_loop_can_cap(value, expected):
    assert parse_retry_after(value) == expected


@pytest.mark.parametrize("hint", ["100000", "inf", "1e10", "-5", "not-a-number"])
def test_server_retry_after_hints_are_capped(emu, hint):
    emu.set_faults(script=["throttle", "throttle"], retry_after=hint)
    b = create_backend("nova-pro", options={"endpoint_url": emu.url, "allow_loopback": True})
    policy = RetryPolicy(max_attempts=3, base_s=0.001, cap_s=0.002, max_retry_after_s=0.2)
    t0 = time.monotonic()
    resp = call_with_retry(b, request(), policy)
    assert resp.ok and resp.attempts == 3 and resp.throttled == 2
    assert resp.retry_wait_s <= 0.4 and time.monotonic() - t0 < 5


def test_the_cap_applies_to_any_hint_the_loop_is_given():
    policy = RetryPolicy(base_s=0.001, cap_s=0.002, max_retry_after_s=60)
    rng = random.Random(0)
    for hint in (math.inf, 1e10, 1e300, 100000.0):
        assert policy.wait_for(1, hint, rng) == 60
    assert policy.wait_for(1, -3.0, rng) <= 0.002 and policy.wait_for(1, math.nan, rng) <= 0.002
    with pytest.raises(ValueError):
        RetryPolicy(max_retry_after_s=math.inf)


def test_every_document_has_an_overall_deadline(scripted_backend):
    # Throttled on every attempt, with waits that would cross the deadline: ends failed, not stalled.
    b = scripted_backend({"d1": {}}, faults={"d1": [ErrorClass.THROTTLING] * 50})
    policy = RetryPolicy(max_attempts=50, base_s=0.2, cap_s=0.2, document_deadline_s=0.5)
    t0 = time.monotonic()
    resp = call_with_retry(b, Request("d1", "receipt", "p"), policy, rng=random.Random(1))
    assert resp.error_class is ErrorClass.THROTTLING and "document deadline" in resp.error
    assert time.monotonic() - t0 < 1.0 and resp.attempts < 50


# ---------------------------------------------------------------- credentials from any source


def test_a_session_token_from_a_shared_credentials_file_echoed_by_a_server_never_reaches_the_store(
        monkeypatch, tmp_path):
    key, secret = "AKIAFILEONLYKEY00001", "fileOnlySecret/Value+0123456789"
    token = "FwoGZXIvYXdzEFILEONLYTOKENvalue0123456789"
    creds = tmp_path / "credentials"
    creds.write_text(f"[default]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n"
                     f"aws_session_token = {token}\n")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    cfg = load_config()
    cfg.auth.credentials = {key: secret}
    with run_emulator(cfg, ScriptedResponder([ANSWER])) as e:
        e.set_faults(script=["echo_token", "echo_token"])
        b = create_backend("nova-pro", options={"endpoint_url": e.url, "allow_loopback": True})
        with pytest.raises(BackendError) as info:
            b.generate(request())
        resp = call_with_retry(b, request(), RetryPolicy(max_attempts=1))
    assert e.stats.last["error"] == "InternalServerException"  # the server did echo it
    texts = [str(info.value), info.value.response.error or "", resp.error or "",
             scrub(f"any later text with {token} or {secret}")]
    blob = "\n".join(texts)
    assert token not in blob and secret not in blob and "[REDACTED]" in blob
