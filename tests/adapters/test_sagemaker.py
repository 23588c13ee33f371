"""SageMaker backend: payload schemas as data, and real HTTP InvokeEndpoint against a moto server."""

import base64
import io
import json
import urllib.request

import pytest
from migbench.adapters.sagemaker import (
    SageMakerBackend,
    build_payload,
    load_payload_catalog,
    parse_payload_response,
    resolve_path,
)
from migbench.contracts import (
    BackendConfig,
    BackendError,
    ErrorClass,
    GenParams,
    Request,
    SetupError,
    UsageError,
)
from migbench.images import encoded
from PIL import Image

SCHEMAS = load_payload_catalog().schemas
PNG = b"\x89PNG\r\n\x1a\nabc"


def test_openai_chat_payload_has_data_uri_images_then_text_and_mapped_params():
    p = build_payload(SCHEMAS["openai_chat"], "Extract", [(PNG, "png")], system="sys",
                      params=GenParams(max_tokens=256, temperature=0.0, stop=("</s>",)))
    system, user = p["messages"]
    assert system == {"role": "system", "content": "sys"}
    img, text = user["content"]
    assert img["type"] == "image_url"
    assert img["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert text == {"type": "text", "text": "Extract"}
    assert p["max_tokens"] == 256 and p["temperature"] == 0.0 and p["stop"] == ["</s>"] and "top_p" not in p


def test_guide_simple_payload_and_its_one_image_limit():
    p = build_payload(SCHEMAS["guide_simple"], "Extract", [(PNG, "jpeg")], params=GenParams(max_tokens=99))
    assert p == {"prompt": "Extract", "max_new_tokens": 99, "image": base64.b64encode(PNG).decode()}
    with pytest.raises(ValueError, match="one image"):
        build_payload(SCHEMAS["guide_simple"], "x", [(PNG, "png"), (PNG, "png")])


def test_parse_openai_chat_answer_with_usage():
    raw = json.dumps({"choices": [{"message": {"role": "assistant", "content": "TOTAL: $5"},
                                   "finish_reason": "stop"}],
                      "usage": {"prompt_tokens": 1500, "completion_tokens": 9}}).encode()
    p = parse_payload_response(SCHEMAS["openai_chat"], raw)
    assert (p.text, p.input_tokens, p.output_tokens, p.stop_reason) == ("TOTAL: $5", 1500, 9, "stop")


@pytest.mark.parametrize("raw", [b'[{"generated_text": "ABN: 1"}]', b'{"generated_text": "ABN: 1"}'])
def test_parse_guide_simple_list_or_object(raw):
    p = parse_payload_response(SCHEMAS["guide_simple"], raw)
    assert p.text == "ABN: 1" and p.input_tokens is None


def test_parse_rejects_an_answer_in_another_schema():
    with pytest.raises(ValueError, match="generated_text"):
        parse_payload_response(SCHEMAS["guide_simple"], b'{"choices": []}')
    with pytest.raises(ValueError, match="not JSON"):
        parse_payload_response(SCHEMAS["openai_chat"], b"<html>")


def test_resolve_path():
    assert resolve_path({"a": [{"b": 1}]}, "a.0.b") == 1
    assert resolve_path({"a": []}, "a.0.b") is None


def test_endpoint_name_is_required_and_payload_must_exist():
    with pytest.raises(SetupError, match="endpoint_name"):
        SageMakerBackend(BackendConfig("sagemaker"))
    with pytest.raises(UsageError, match="option payload='nope': not in sagemaker_payloads.yaml"):
        SageMakerBackend(BackendConfig("sagemaker", options={"endpoint_name": "e", "payload": "nope"}))


def test_non_au_region_is_refused_at_preflight():
    b = SageMakerBackend(BackendConfig("sagemaker", options={"endpoint_name": "e", "region": "us-east-1"}))
    with pytest.raises(SetupError, match="residency"):
        b.preflight()


# ---------------------------------------------------------------- moto server (real HTTP)


@pytest.fixture(scope="module")
def moto_url():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def queue_results(url, bodies, region="ap-southeast-2"):
    payload = {"region": region, "results": [{"Body": b, "ContentType": "application/json",
                                              "InvokedProductionVariant": "AllTraffic"} for b in bodies]}
    req = urllib.request.Request(f"{url}/moto-api/static/sagemaker/endpoint-results",
                                 data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).read()


def page(color):
    """A page as the runner prepares it for a cloud backend (encoded)."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(buf, format="PNG")
    return encoded(buf.getvalue())


def test_invoke_endpoint_through_moto_records_usage_and_audit(moto_url, aws_env):
    answer = {"choices": [{"message": {"content": "SUPPLIER_NAME: ACME"}, "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 321, "completion_tokens": 7}}
    queue_results(moto_url, [json.dumps(answer)])
    b = SageMakerBackend(BackendConfig("sagemaker", options={
        "endpoint_name": "qwen25vl-sydney", "endpoint_url": moto_url, "allow_loopback": True,
        "instance_type": "ml.g5.2xlarge"}))
    b.preflight()
    r = b.generate(Request("r1.png", "receipt", "Extract", images=[page("red")]))
    assert r.text == "SUPPLIER_NAME: ACME" and (r.input_tokens, r.output_tokens) == (321, 7)
    assert r.region == "ap-southeast-2" and r.endpoint == "127.0.0.1" and r.request_id
    assert b.describe()["instance_type"] == "ml.g5.2xlarge"
    [entry] = r.sent
    assert entry.allowed and entry.status == 200 and entry.model_id == "qwen25vl-sydney"
    assert entry.operation == "InvokeEndpoint" and entry.bytes_sent > 0 and entry.service == "sagemaker-runtime"


def test_answer_in_the_wrong_schema_is_a_permanent_error(moto_url, aws_env):
    queue_results(moto_url, [json.dumps({"unexpected": True})])
    b = SageMakerBackend(BackendConfig("sagemaker", options={
        "endpoint_name": "e2", "endpoint_url": moto_url, "allow_loopback": True, "payload": "guide_simple"}))
    with pytest.raises(BackendError) as info:
        b.generate(Request("r2.png", "receipt", "Extract", images=[page("blue")]))
    assert info.value.error_class is ErrorClass.PERMANENT


def test_loopback_moto_without_allow_is_refused_and_audited(moto_url, aws_env, monkeypatch):
    monkeypatch.delenv("MIGBENCH_ALLOW_LOOPBACK", raising=False)
    b = SageMakerBackend(BackendConfig("sagemaker", options={"endpoint_name": "e3", "endpoint_url": moto_url}))
    with pytest.raises(BackendError) as info:
        b.generate(Request("r3.png", "receipt", "Extract", images=[page("green")]))
    assert info.value.error_class is ErrorClass.RESIDENCY
    [entry] = info.value.response.sent
    assert not entry.allowed and entry.bytes_sent == 0 and entry.status is None and "loopback" in entry.reason


def test_cli_run_uses_the_standard_endpoint_variable_and_an_endpoint_name(moto_url, aws_env, monkeypatch, tmp_path):
    from migbench.cli import main
    from migbench.store import RunStore

    answer = {"choices": [{"message": {"content": "TOTAL_AMOUNT: $1.00"}}],
              "usage": {"prompt_tokens": 500, "completion_tokens": 9}}
    queue_results(moto_url, [json.dumps(answer)] * 3)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", moto_url)
    results = tmp_path / "results"
    assert main(["run", "--backend", "sagemaker", "--endpoint-name", "qwen25vl-sydney", "--allow-loopback",
                 "--instance-type", "ml.g5.2xlarge", "--limit", "3", "--results", str(results)]) == 0
    store = RunStore(results)
    run = store.run("latest")
    docs = store.documents(run.run_id)
    assert run.family == "sagemaker" and len(docs) == 3
    assert run.emulated  # moto on loopback is not AWS: never evidence of a model
    assert all(d.status == "ok" and d.response.input_tokens == 500 for d in docs)
    assert {a["model_id"] for a in store.audit(run.run_id)} == {"qwen25vl-sydney"}


# ---------------------------------------------------------------- answers that are not answers (tiny server)


class _Endpoint:
    """A minimal InvokeEndpoint server on loopback: each request gets the next scripted answer."""

    def __init__(self, answers):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        script = list(answers)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                kind, body = script.pop(0) if script else ("ok", OK_ANSWER)
                self.send_response(200)
                self.send_header("Content-Type", "text/html" if kind == "html" else "application/json")
                self.send_header("x-amzn-RequestId", "req-1")
                self.send_header("x-Amzn-Invoked-Production-Variant", "AllTraffic")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if kind == "truncated":
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                elif kind == "trickle":
                    import time
                    for i in range(len(body)):
                        time.sleep(0.3)
                        try:
                            self.wfile.write(body[i:i + 1])
                            self.wfile.flush()
                        except OSError:
                            return
                else:
                    self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


OK_ANSWER = json.dumps({"choices": [{"message": {"content": "TOTAL_AMOUNT: $3.00"}}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 4}}).encode()


def _backend(url, **options):
    return SageMakerBackend(BackendConfig("sagemaker", options={
        "endpoint_name": "e", "endpoint_url": url, "allow_loopback": True, **options}))


@pytest.mark.parametrize("kind,body,expected", [
    ("empty", b"", ErrorClass.TRANSIENT), ("truncated", OK_ANSWER, ErrorClass.TRANSIENT),
    ("html", b"<html><body>502 Bad Gateway</body></html>", ErrorClass.PERMANENT),
    ("json", b'{"generated": "other shape"}', ErrorClass.PERMANENT)])
def test_an_endpoint_200_that_is_not_a_complete_answer_fails_the_attempt(aws_env, kind, body, expected):
    from migbench.retry import RetryPolicy, call_with_retry

    server = _Endpoint([(kind, body)])
    try:
        b = _backend(server.url)
        with pytest.raises(BackendError) as info:
            b.generate(Request("r.png", "receipt", "Extract", images=[page("red")]))
        assert info.value.error_class is expected
        [entry] = info.value.response.sent
        assert entry.status == 200 and entry.request_id == "req-1"
        # Through the retry loop: an incomplete answer is retried and ends with the full one;
        # a malformed one ends failed, never ok with empty text.
        server2 = _Endpoint([(kind, body)])
        resp = call_with_retry(_backend(server2.url), Request("r.png", "receipt", "Extract", images=[page("red")]),
                               RetryPolicy(max_attempts=2, base_s=0.001, cap_s=0.002))
        server2.close()
        if expected is ErrorClass.TRANSIENT:
            assert resp.ok and resp.text == "TOTAL_AMOUNT: $3.00" and resp.attempts == 2
        else:
            assert not resp.ok and resp.error_class is ErrorClass.PERMANENT and resp.attempts == 1
    finally:
        server.close()


def test_a_trickling_endpoint_cannot_hold_an_attempt_past_its_deadline(aws_env):
    import time

    server = _Endpoint([("trickle", OK_ANSWER)])
    try:
        b = _backend(server.url, read_timeout=5, attempt_timeout=1)
        t0 = time.monotonic()
        with pytest.raises(BackendError) as info:
            b.generate(Request("r.png", "receipt", "Extract", images=[page("red")]))
        assert info.value.error_class is ErrorClass.TIMEOUT and time.monotonic() - t0 < 2.5
    finally:
        server.close()
