"""The emulator through real boto3 over real HTTP, as the Bedrock adapter will use it."""

import base64
import io
import json
import socket
from concurrent.futures import ThreadPoolExecutor

import boto3
import botocore
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError, ReadTimeoutError
from migbench.catalog import CatalogError
from migbench.emulator import FaultPlan, ScriptedResponder, load_config, run_emulator
from migbench.emulator.server import EMULATED_HEADER, EmulatorConfig, QuotaConfig
from PIL import Image

NOVA = "amazon.nova-pro-v1:0"


def _client(url, region="ap-southeast-2", key="testing", secret="testing", **cfg):
    return boto3.client("bedrock-runtime", endpoint_url=url, region_name=region, aws_access_key_id=key,
                        aws_secret_access_key=secret,
                        config=Config(retries={"total_max_attempts": 1}, **cfg))


def _png(w=900, h=450, color="white"):
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, "PNG")
    return buf.getvalue()


def _converse(client, model=NOVA, image=None, text="Extract the fields", fmt="png", max_tokens=100):
    content = [{"text": text}]
    if image is not None:
        content.insert(0, {"image": {"format": fmt, "source": {"bytes": image}}})
    return client.converse(modelId=model, messages=[{"role": "user", "content": content}],
                           inferenceConfig={"maxTokens": max_tokens, "temperature": 0.0})


def _error(fn):
    with pytest.raises(ClientError) as err:
        fn()
    e = err.value.response
    return e["Error"]["Code"], e["ResponseMetadata"]["HTTPStatusCode"], e["Error"]["Message"], err.value


@pytest.fixture
def emu():
    with run_emulator(responder=ScriptedResponder(["TOTAL_AMOUNT: $9.00\nGST_AMOUNT: $0.82"])) as e:
        yield e


def test_converse_round_trip_with_an_image(emu):
    out = _converse(_client(emu.url), model="au.amazon.nova-pro-v1:0", image=_png(900, 450))
    assert out["output"]["message"] == {"role": "assistant",
                                        "content": [{"text": "TOTAL_AMOUNT: $9.00\nGST_AMOUNT: $0.82"}]}
    assert out["stopReason"] == "end_turn"
    usage = out["usage"]
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]
    assert 700 < usage["inputTokens"] < 900  # ~800 image tokens for 900x450 plus a short prompt
    assert "latencyMs" in out["metrics"]
    headers = out["ResponseMetadata"]["HTTPHeaders"]
    assert headers[EMULATED_HEADER] == "1" and out["ResponseMetadata"]["RequestId"]
    rec = emu.stats.last["request"]
    assert rec["model_id"] == "au.amazon.nova-pro-v1:0" and rec["prompt"] == "Extract the fields"
    assert rec["images"][0]["format"] == "png" and (rec["images"][0]["width"], rec["images"][0]["height"]) == (900, 450)
    assert rec["inference"]["max_tokens"] == 100 and rec["inference"]["temperature"] == 0.0


def test_invoke_model_with_the_nova_native_body(emu):
    body = {"schemaVersion": "messages-v1", "system": [{"text": "You extract fields."}],
            "messages": [{"role": "user", "content": [
                {"image": {"format": "png", "source": {"bytes": base64.b64encode(_png(900, 900)).decode()}}},
                {"text": "Extract"}]}],
            "inferenceConfig": {"maxTokens": 200, "temperature": 0.0, "topP": 0.9, "topK": 20}}
    out = _client(emu.url).invoke_model(modelId="amazon.nova-lite-v1:0", body=json.dumps(body),
                                        contentType="application/json", accept="application/json")
    payload = json.loads(out["body"].read())
    assert payload["output"]["message"]["content"][0]["text"].startswith("TOTAL_AMOUNT")
    assert payload["output"]["message"]["role"] == "assistant" and payload["stopReason"] == "end_turn"
    headers = out["ResponseMetadata"]["HTTPHeaders"]
    assert int(headers["x-amzn-bedrock-input-token-count"]) == payload["usage"]["inputTokens"]
    assert int(headers["x-amzn-bedrock-output-token-count"]) == payload["usage"]["outputTokens"]
    assert emu.stats.last["request"]["system"] == "You extract fields."
    assert emu.stats.last["request"]["inference"]["top_k"] == 20


def test_invoke_model_with_the_anthropic_body_through_an_au_profile(emu):
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 300, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": base64.b64encode(_png(400, 300)).decode()}},
        {"type": "text", "text": "Extract"}]}]}
    out = _client(emu.url).invoke_model(modelId="au.anthropic.claude-sonnet-4-5-20250929-v1:0",
                                        body=json.dumps(body))
    payload = json.loads(out["body"].read())
    assert payload["type"] == "message" and payload["role"] == "assistant" and payload["id"]
    assert payload["content"] == [{"type": "text", "text": "TOTAL_AMOUNT: $9.00\nGST_AMOUNT: $0.82"}]
    assert payload["stop_reason"] == "end_turn"
    assert set(payload["usage"]) == {"input_tokens", "output_tokens"}


def test_claude_base_id_in_sydney_needs_an_inference_profile(emu):
    code, status, msg, _exc = _error(lambda: _converse(_client(emu.url),
                                                      model="anthropic.claude-sonnet-4-5-20250929-v1:0"))
    assert (code, status) == ("ValidationException", 400)
    assert "with on-demand throughput isn\u2019t supported" in msg and "inference profile" in msg


@pytest.mark.parametrize("model,image,fmt,needle", [
    ("amazon.titan-nothing-v9:0", None, "png", "The provided model identifier is invalid."),
    ("amazon.nova-micro-v1:0", _png(20, 20), "png", "doesn't support the image content block"),
    (NOVA, _png(20, 20), "jpeg", "not a valid jpeg image"),
    (NOVA, _png(8001, 1), "png", "8000 pixels"),
    (NOVA, b"not an image", "png", "not a valid png image"),
])
def test_invalid_requests_get_validation_exception(emu, model, image, fmt, needle):
    code, status, msg, _ = _error(lambda: _converse(_client(emu.url), model=model, image=image, fmt=fmt))
    assert (code, status) == ("ValidationException", 400) and needle in msg
    assert emu.stats.last["error"] == "ValidationException"


def test_bad_image_format_and_missing_messages_are_refused_by_the_server(emu):
    client = _client(emu.url)
    bad_fmt = [{"role": "user", "content": [{"image": {"format": "bmp", "source": {"bytes": _png(4, 4)}}}]}]
    assert "enum value set" in _error(lambda: client.converse(modelId=NOVA, messages=bad_fmt))[2]
    assert "must start with a user message" in _error(lambda: client.converse(modelId=NOVA))[2]


def test_payload_over_the_limit_is_refused():
    cfg = load_config()
    cfg.limits.max_payload_bytes = 5000
    with run_emulator(cfg) as emu:
        code, _, msg, _ = _error(lambda: _converse(_client(emu.url), text="x" * 6000))
    assert code == "ValidationException" and "exceeds the maximum" in msg


def test_tokens_over_the_per_minute_quota_are_throttled():
    cfg = load_config(quota=QuotaConfig(tokens_per_minute=1500, requests_per_minute=None))
    with run_emulator(cfg, ScriptedResponder(["ok"])) as emu:
        client = _client(emu.url)
        _converse(client, image=_png(900, 450), max_tokens=100)  # ~800 + 100 reserved -> ~810 used
        code, status, msg, exc = _error(lambda: _converse(client, image=_png(900, 450), max_tokens=100))
        assert (code, status, msg) == ("ThrottlingException", 429, "Too many tokens, please wait before trying again.")
        assert isinstance(exc, client.exceptions.ThrottlingException)
        _converse(client, model="amazon.nova-lite-v1:0", max_tokens=100)  # quotas are per model
        assert emu.stats.throttled == 1


def test_requests_per_minute_quota_is_throttled():
    cfg = load_config(quota=QuotaConfig(tokens_per_minute=None, requests_per_minute=2))
    with run_emulator(cfg) as emu:
        client = _client(emu.url)
        _converse(client)
        _converse(client)
        assert _error(lambda: _converse(client))[2] == "Too many requests, please wait before trying again."


@pytest.mark.parametrize("fault,code,status", [
    ("throttle", "ThrottlingException", 429), ("unavailable", "ServiceUnavailableException", 503),
    ("internal", "InternalServerException", 500), ("model_error", "ModelErrorException", 424),
    ("model_not_ready", "ModelNotReadyException", 429), ("model_timeout", "ModelTimeoutException", 408),
])
def test_injected_faults_surface_as_the_right_client_error(emu, fault, code, status):
    emu.set_faults(FaultPlan(script=[fault, "ok"]))
    client = _client(emu.url)
    got_code, got_status, _, exc = _error(lambda: _converse(client))
    assert (got_code, got_status) == (code, status)
    assert isinstance(exc, getattr(client.exceptions, code))
    assert _converse(client)["stopReason"] == "end_turn"  # the script was one-shot
    assert emu.stats.faults[fault] == 1


def test_connection_reset_surfaces_as_a_connection_error(emu):
    emu.set_faults(script=["reset"])
    with pytest.raises((ConnectionClosedError, EndpointConnectionError)):
        _converse(_client(emu.url))
    assert _converse(_client(emu.url))["stopReason"] == "end_turn"


def test_slow_response_surfaces_as_read_timeout(emu):
    emu.set_faults(FaultPlan(script=["slow"], slow_s=2.0))
    with pytest.raises(ReadTimeoutError):
        _converse(_client(emu.url, read_timeout=0.3))


def test_fault_rates_apply_per_request(emu):
    emu.set_faults(FaultPlan(rates={"unavailable": 0.5}, seed=3))
    client = _client(emu.url)
    outcomes = []
    for _ in range(40):
        try:
            _converse(client)
            outcomes.append("ok")
        except ClientError as exc:
            outcomes.append(exc.response["Error"]["Code"])
    assert 8 <= outcomes.count("ServiceUnavailableException") <= 32 and "ok" in outcomes


def test_bad_signature_is_rejected(emu):
    code, status, msg, _ = _error(lambda: _converse(_client(emu.url, secret="not-the-secret")))
    assert (code, status) == ("InvalidSignatureException", 403) and "signature we calculated" in msg


def test_credentials_scoped_to_another_region_are_rejected(emu):
    code, status, msg, _ = _error(lambda: _converse(_client(emu.url, region="us-east-1")))
    assert (code, status, msg) == ("InvalidSignatureException", 403, "Credential should be scoped to a valid region.")


def test_unsigned_requests_and_unknown_keys_are_rejected(emu):
    unsigned = _client(emu.url, signature_version=botocore.UNSIGNED)
    assert _error(lambda: _converse(unsigned))[:2] == ("MissingAuthenticationTokenException", 403)
    assert _error(lambda: _converse(_client(emu.url, key="AKIAEXAMPLE")))[0] == "UnrecognizedClientException"


def test_any_key_mode_accepts_other_keys_but_still_checks_the_region():
    cfg = load_config()
    cfg.auth.any_key = True
    with run_emulator(cfg) as emu:
        assert _converse(_client(emu.url, key="AKIAEXAMPLE", secret="whatever"))["stopReason"] == "end_turn"
        assert _error(lambda: _converse(_client(emu.url, key="AKIAEXAMPLE", region="ap-southeast-4")))[0] == (
            "InvalidSignatureException")


def test_error_responses_carry_request_id_and_emulated_marker(emu):
    *_, exc = _error(lambda: _converse(_client(emu.url), model="nope"))
    headers = exc.response["ResponseMetadata"]["HTTPHeaders"]
    assert headers[EMULATED_HEADER] == "1" and headers["x-amzn-requestid"]
    assert headers["x-amzn-errortype"].startswith("ValidationException:http://internal.amazon.com/coral/")


def test_model_arn_in_the_emulator_region_is_accepted(emu):
    arn = "arn:aws:bedrock:ap-southeast-2::foundation-model/amazon.nova-pro-v1:0"
    assert _converse(_client(emu.url), model=arn)["stopReason"] == "end_turn"


def test_connections_are_kept_alive_between_requests(emu):
    client = _client(emu.url)
    _converse(client)
    _converse(client)
    first, second = list(emu.stats.recent)[-2:]
    assert first["client_port"] == second["client_port"]


def test_concurrent_requests_through_a_pooled_client(emu):
    client = _client(emu.url, max_pool_connections=16)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: _converse(client)["stopReason"], range(64)))
    assert results == ["end_turn"] * 64 and emu.stats.requests == 64


def test_expect_100_continue_is_answered_before_the_body(emu):
    body = b'{"messages": []}'
    with socket.create_connection((emu.host, emu.port), timeout=5) as sock:
        sock.sendall(b"POST /model/amazon.nova-pro-v1%3A0/converse HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 403") and b"MissingAuthenticationTokenException" in reply


def test_packaged_config_loads_and_bad_configs_fail_at_load(tmp_path):
    cfg = load_config()
    assert cfg.region == "ap-southeast-2"
    models = cfg.models()
    assert models["amazon.nova-pro-v1:0"].verified and not models["au.amazon.nova-pro-v1:0"].verified
    assert models["amazon.nova-micro-v1:0"].inputs == ["text"]
    bad = tmp_path / "emu.yaml"
    bad.write_text("region: mars-1\nregions: {ap-southeast-2: {models: {}}}\n")
    with pytest.raises(CatalogError, match="mars-1"):
        load_config(bad)
    bad.write_text("regions: {ap-southeast-2: {models: {}}}\nfaults: {rates: {explode: 0.1}}\n")
    with pytest.raises(CatalogError, match="explode"):
        load_config(bad)
    assert isinstance(EmulatorConfig.model_validate({"regions": {"ap-southeast-2": {"models": {}}}}), EmulatorConfig)


def test_configured_latency_is_scaled_and_reported_in_metrics():
    cfg = load_config()
    cfg.latency = cfg.latency.model_copy(update={"distribution": "fixed", "fixed_s": 0.05, "time_scale": 2.0})
    with run_emulator(cfg) as emu:
        assert _converse(_client(emu.url))["metrics"]["latencyMs"] >= 100


def test_responder_specs_for_the_command_line(tmp_path):
    from migbench.emulator import responder_from_spec
    from migbench.emulator.responders import NotFoundResponder

    assert isinstance(responder_from_spec(None), NotFoundResponder)
    assert responder_from_spec("scripted:TOTAL_AMOUNT: 1\\nGST_AMOUNT: 2")(None) == "TOTAL_AMOUNT: 1\nGST_AMOUNT: 2"
    with pytest.raises(ValueError, match="unknown responder spec"):
        responder_from_spec("magic")
