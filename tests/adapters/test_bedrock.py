"""BedrockBackend over real botocore HTTP against the local emulator (SigV4 verified, ap-southeast-2)."""

import io
import json

import pytest
from migbench.adapters.bedrock import BedrockBackend
from migbench.contracts import (
    BackendConfig,
    BackendError,
    ErrorClass,
    GenParams,
    MemoryAudit,
    Request,
    Response,
    SetupError,
    UsageError,
)
from migbench.emulator.responders import ScriptedResponder
from migbench.emulator.server import load_config, run_emulator
from migbench.images import encoded
from migbench.registry import create_backend
from migbench.retry import RetryPolicy, call_with_retry
from PIL import Image

FAKE_KEY = "AKIAMIGBENCHLEAKTEST"
FAKE_SECRET = "migbench/Leak+Secret/DoNotPrint0123456789"
ANSWER = "SUPPLIER_NAME: ACME PTY LTD\nTOTAL_AMOUNT: $12.50"


@pytest.fixture
def aws_env(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
                "MIGBENCH_ALLOW_LOOPBACK"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def emu(aws_env):
    with run_emulator(responder=ScriptedResponder([ANSWER])) as e:
        yield e


def page(fmt="PNG", size=(320, 240), mode="RGB"):
    buf = io.BytesIO()
    Image.new(mode, size, "white" if mode != "CMYK" else (0, 0, 0, 0)).save(buf, format=fmt)
    return buf.getvalue()


def backend(name="nova-pro", **options):
    return create_backend(name, options=options)


def sent(outcome):
    """The audit facts one attempt reports (a Response, or the partial one of a BackendError)."""
    return outcome.sent if isinstance(outcome, Response) else outcome.response.sent


def request(doc_id="inv-001.png", images=None):
    """A request as the runner prepares it for a cloud backend: encoded pages."""
    return Request(doc_id, "invoice", "Extract the fields.", system="Answer as KEY: value lines.",
                   images=[encoded(p) for p in ([page()] if images is None else images)],
                   params=GenParams(max_tokens=256))


# ---------------------------------------------------------------- answered calls


@pytest.mark.parametrize("name,api", [("nova-pro", "converse"), ("nova-lite", "invoke-nova"),
                                      ("au-nova-pro", "converse"), ("au-claude-sonnet-4-5", "invoke-anthropic"),
                                      ("au-claude-haiku-4-5", "converse")])
def test_one_attempt_records_usage_latency_request_id_and_emulated_flag(emu, name, api):
    b = backend(name, endpoint_url=emu.url, allow_loopback=True, api=api)
    b.preflight()
    r = b.generate(request())
    assert r.text == ANSWER
    assert r.input_tokens and r.input_tokens > 0 and r.output_tokens and r.output_tokens > 0
    assert r.request_id and r.region == "ap-southeast-2" and r.endpoint == "127.0.0.1"
    assert r.latency_s is not None and r.latency_s > 0
    if api == "converse":
        assert r.server_latency_ms is not None
    assert r.extra["emulated"] is True and b.describe()["emulated"] is True
    assert emu.stats.requests == 1
    [entry] = sent(r)
    assert entry.allowed and entry.status == 200 and entry.request_id == r.request_id
    assert entry.bytes_sent > 0 and entry.model_id == b.model_id and entry.operation == (
        "Converse" if api == "converse" else "InvokeModel")


def test_the_emulator_sees_the_image_the_prompt_and_the_inference_config(emu):
    b = backend(endpoint_url=emu.url, allow_loopback=True)
    b.generate(request(images=[page("JPEG", (900, 450))]))
    seen = emu.stats.last
    assert seen["status"] == 200
    text = json.dumps(seen)
    assert "Extract the fields." in text and "256" in text


def test_pdf_goes_as_a_converse_document_block(emu):
    b = backend(endpoint_url=emu.url, allow_loopback=True)
    pdf = page("PDF")
    r = b.generate(Request("statement.pdf", "bank_statement", "Extract", pdf_bytes=pdf))
    assert r.extra["document_block"] is True and r.text == ANSWER


def test_standard_endpoint_variable_is_honoured_and_judged(emu, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", emu.url)
    refused = backend()
    with pytest.raises(SetupError, match="loopback"):
        refused.preflight()
    with pytest.raises(BackendError) as info:
        refused.generate(request())
    assert info.value.error_class is ErrorClass.RESIDENCY and emu.stats.requests == 0
    monkeypatch.setenv("MIGBENCH_ALLOW_LOOPBACK", "1")
    assert backend().generate(request()).text == ANSWER and emu.stats.requests == 1


# ---------------------------------------------------------------- errors, one attempt each


@pytest.mark.parametrize("fault,expected,status", [
    ("throttle", ErrorClass.THROTTLING, 429), ("unavailable", ErrorClass.TRANSIENT, 503),
    ("internal", ErrorClass.TRANSIENT, 500), ("model_not_ready", ErrorClass.TRANSIENT, 429),
    ("model_error", ErrorClass.TRANSIENT, 424), ("model_timeout", ErrorClass.TIMEOUT, 408),
    ("reset", ErrorClass.TRANSIENT, None)])
def test_faults_become_classified_backend_errors_after_exactly_one_request(emu, fault, expected, status):
    emu.set_faults(script=[fault])
    b = backend(endpoint_url=emu.url, allow_loopback=True)
    with pytest.raises(BackendError) as info:
        b.generate(request())
    assert info.value.error_class is expected
    assert emu.stats.requests == 1  # botocore did not retry behind the harness's back
    [entry] = sent(info.value)
    assert entry.allowed and entry.status == status and entry.reason == expected.value
    assert info.value.response is not None and info.value.response.error_class is expected


def test_the_retry_loop_records_each_attempt_with_its_document_and_number(emu):
    emu.set_faults(script=["throttle"])
    b = backend(endpoint_url=emu.url, allow_loopback=True)
    audit = MemoryAudit()
    r = call_with_retry(b, request(), RetryPolicy(base_s=0.001, cap_s=0.002), audit=audit)
    assert r.ok and r.attempts == 2 and r.sent == []
    assert [(e.doc_id, e.attempt, e.status) for e in audit.entries] == [("inv-001.png", 1, 429),
                                                                         ("inv-001.png", 2, 200)]


def test_validation_errors_are_permanent(emu):
    b = backend(endpoint_url=emu.url, allow_loopback=True, max_image_dim=None)
    tiny_text_model = backend("nova-pro", endpoint_url=emu.url, allow_loopback=True)
    # Bypass our own text-only check so the SERVICE answers ValidationException for an image to Nova Micro.
    tiny_text_model._model_id = "amazon.nova-micro-v1:0"
    with pytest.raises(BackendError) as info:
        tiny_text_model.generate(request())
    assert info.value.error_class is ErrorClass.PERMANENT and emu.stats.requests == 1
    assert b.generate(request()).text == ANSWER


# ---------------------------------------------------------------- residency: zero requests


@pytest.mark.parametrize("options,model", [
    ({"region": "us-east-1"}, None),
    ({"region": "ap-southeast-1"}, None),
    ({}, "apac.amazon.nova-pro-v1:0"),
    ({}, "global.anthropic.claude-sonnet-4-5-20250929-v1:0"),
    ({}, "us.amazon.nova-pro-v1:0"),
    ({}, "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-pro-v1:0"),
])
def test_non_au_region_or_profile_sends_zero_requests(emu, options, model):
    b = BedrockBackend(BackendConfig("nova-pro", model=model, options={
        "catalog_model": "nova-pro", "endpoint_url": emu.url, "allow_loopback": True, **options}))
    with pytest.raises(SetupError, match="residency"):
        b.preflight()
    with pytest.raises(BackendError) as info:
        b.generate(request())
    assert info.value.error_class is ErrorClass.RESIDENCY
    assert emu.stats.requests == 0
    [entry] = sent(info.value)
    assert not entry.allowed and entry.bytes_sent == 0 and entry.status is None and entry.reason


def test_non_au_endpoint_is_refused_without_connecting(aws_env):
    b = backend(endpoint_url="https://bedrock-runtime.us-west-2.amazonaws.com")
    with pytest.raises(SetupError):
        b.preflight()
    with pytest.raises(BackendError) as info:
        b.generate(request())
    assert info.value.error_class is ErrorClass.RESIDENCY
    assert sent(info.value)[0].host == "bedrock-runtime.us-west-2.amazonaws.com"


def test_profile_preflight_is_skipped_against_the_emulator_unless_required(emu, monkeypatch):
    b = backend("au-nova-pro", endpoint_url=emu.url, allow_loopback=True)
    b.preflight()
    assert b.describe()["profile_check"].startswith("not checked: endpoint is loopback")
    assert emu.stats.requests == 0
    # Asked for, the check reads the emulator's GetInferenceProfile through real botocore.
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK", emu.url)
    b = backend("au-nova-pro", endpoint_url=emu.url, allow_loopback=True, preflight_profile="always")
    b.preflight()
    assert b.describe()["profile_check"] == "verified: destinations ap-southeast-2, ap-southeast-4"
    assert emu.stats.by_operation == {"GetInferenceProfile": 1}


def test_region_env_does_not_move_the_backend(aws_env, monkeypatch):
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    b = backend()
    assert b.region == "ap-southeast-2" and b.describe()["region"] == "ap-southeast-2"


# ---------------------------------------------------------------- secrets never leak


def test_credentials_never_appear_in_audit_errors_or_describe(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    cfg = load_config()
    cfg.auth.credentials = {FAKE_KEY: FAKE_SECRET}
    texts = []
    with run_emulator(cfg, ScriptedResponder([ANSWER])) as e:
        ok = backend(endpoint_url=e.url, allow_loopback=True)
        r = ok.generate(request())
        texts += [repr(r)] + [json.dumps(x.to_dict()) for x in r.sent]
        e.set_faults(script=["throttle"])
        for b in (ok, backend(endpoint_url=e.url), backend(region="us-east-1", endpoint_url=e.url, allow_loopback=True)):
            try:
                b.generate(request())
            except BackendError as exc:
                texts += [str(exc), repr(exc.response)] + [json.dumps(x.to_dict()) for x in exc.response.sent]
            texts += [json.dumps(b.describe(), default=str)]
        assert e.stats.requests == 2
    # A wrong secret must also fail without echoing either value.
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET + "x")
    with run_emulator(cfg, ScriptedResponder([ANSWER])) as e:
        b = backend(endpoint_url=e.url, allow_loopback=True)
        with pytest.raises(BackendError) as info:
            b.generate(request())
        assert info.value.error_class is ErrorClass.PERMANENT
        texts += [str(info.value)] + [json.dumps(x.to_dict()) for x in sent(info.value)]
    blob = "\n".join(texts)
    assert FAKE_KEY not in blob and FAKE_SECRET not in blob and "DoNotPrint" not in blob


def test_unknown_catalog_key_and_bad_options_are_refused_at_load():
    with pytest.raises(UsageError, match="catalog_model"):
        BedrockBackend(BackendConfig("x", options={"catalog_model": "nope"}))
    with pytest.raises(SetupError, match="api"):
        BedrockBackend(BackendConfig("x", options={"catalog_model": "nova-pro", "api": "invoke-anthropic"}))
    with pytest.raises(SetupError, match="text-only"):
        BedrockBackend(BackendConfig("x", options={"catalog_model": "nova-micro", "endpoint_url": "http://127.0.0.1:1",
                                                   "allow_loopback": True})).preflight()


def test_missing_credentials_stop_the_run_at_start_in_one_line(monkeypatch, tmp_path):
    from migbench.cli import main

    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    assert main(["run", "--backend", "nova-pro", "--results", str(tmp_path / "r"), "--limit", "2"]) == 2
    from migbench.store import RunStore
    store = RunStore(tmp_path / "r")
    assert store.documents(store.resolve("latest")) == []  # nothing recorded as failed: fix and rerun
