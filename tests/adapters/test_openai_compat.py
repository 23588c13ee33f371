"""The openai-compatible backend against a small chat completions server started by the tests.

The server answers with the ground truth of the shipped set (the emulator's GroundTruthResponder,
which matches each received image to its document), so a full run scores documents for real; it
can also be scripted to answer 429s, 5xx, empty or HTML 200s first.
"""

import base64
import io
import json
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from migbench.adapters.aws_common import IncompleteAnswer, MalformedAnswer
from migbench.adapters.openai_compat import (
    chat_request,
    classify_status,
    parse_chat_response,
    plain_http_warning,
)
from migbench.contracts import BackendError, EncodedImage, ErrorClass, GenParams, Request, UsageError
from migbench.datasets import load_dataset
from migbench.emulator.protocol import ImageInfo, ParsedRequest
from migbench.emulator.responders import GroundTruthResponder
from migbench.images import prepare_document
from migbench.registry import create_backend
from migbench.retry import RetryPolicy, call_with_retry
from migbench.runner import Runner, RunOptions
from migbench.store import DB_NAME, RunStore
from PIL import Image

from tests.conftest import SYNTH

FAST = RetryPolicy(max_attempts=3, base_s=0.001, cap_s=0.002)
KEY = "sk-migbench-test-key-0123456789abcdef"
MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
N_DOCS = 4


@pytest.fixture(scope="module")
def dataset():
    ds = load_dataset(SYNTH)
    ds.documents[:] = ds.documents[:N_DOCS]
    return ds


def png(color="red", size=(40, 30)) -> EncodedImage:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return EncodedImage(buf.getvalue(), "png", *size)


class ChatServer:
    """POST /v1/chat/completions on loopback. Scripted answers (status, headers, body) go first;
    then each request is answered from the ground truth of the document its image matches."""

    def __init__(self, docs=None, script=(), key=None):
        self.script = list(script)
        self.received: list[dict] = []
        self.auth: list[str | None] = []
        responder = GroundTruthResponder(docs) if docs else None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status, body, headers=()):
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != "/v1/chat/completions":
                    return self._send(404, b'{"error": {"message": "no such route"}}')
                req = json.loads(raw)
                outer.received.append(req)
                outer.auth.append(self.headers.get("Authorization"))
                if outer.script:
                    return self._send(*outer.script.pop(0))
                if key and self.headers.get("Authorization") != f"Bearer {key}":
                    return self._send(401, json.dumps({"error": {"message": "bad key"}}).encode())
                images, texts, system = [], [], None
                for m in req["messages"]:
                    if m["role"] == "system":
                        system = m["content"]
                        continue
                    for part in m["content"]:
                        if part["type"] == "text":
                            texts.append(part["text"])
                        else:
                            head, _, b64 = part["image_url"]["url"].partition(",")
                            data = base64.b64decode(b64)
                            images.append(ImageInfo(head.split(";")[0].split("/")[1], 0, 0, len(data), data))
                text = responder(ParsedRequest("ChatCompletions", req["model"], "openai", "\n".join(texts), system,
                                               images))
                answer = {"id": "chatcmpl-1", "object": "chat.completion", "model": req["model"],
                          "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                       "finish_reason": "stop"}],
                          "usage": {"prompt_tokens": 700 + len(images), "completion_tokens": 42,
                                    "total_tokens": 742 + len(images)}}
                self._send(200, json.dumps(answer).encode(),
                           [("Content-Type", "application/json"), ("x-request-id", f"r{len(outer.received)}")])

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server_factory():
    servers = []

    def make(**kwargs):
        s = ChatServer(**kwargs)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def _backend(url, model=MODEL, **options):
    return create_backend("openai-compatible", model=model, options={"base_url": url, **options})


# ---------------------------------------------------------------- pure functions


def test_request_body_has_system_then_images_as_data_uris_then_text():
    img = png()
    body = chat_request("m", "Extract", [img, img], system="sys", params=GenParams(max_tokens=333),
                        image_detail="high")
    assert body["model"] == "m" and body["max_tokens"] == 333 and body["temperature"] == 0.0
    assert body["stream"] is False and "top_p" not in body
    system, user = body["messages"]
    assert system == {"role": "system", "content": "sys"}
    parts = user["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"] and parts[-1]["text"] == "Extract"
    url = parts[0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,") and base64.b64decode(url.split(",", 1)[1]) == img.data
    assert parts[0]["image_url"]["detail"] == "high"
    assert chat_request("m", "x", max_tokens=50)["max_tokens"] == 50  # the option overrides the prompt's


def test_answer_text_and_usage_are_read():
    raw = json.dumps({"choices": [{"message": {"content": "TOTAL: 1"}, "finish_reason": "length"}],
                      "usage": {"prompt_tokens": 12, "completion_tokens": 3}}).encode()
    out = parse_chat_response(raw, {"Content-Type": "application/json"})
    assert (out.text, out.input_tokens, out.output_tokens, out.stop_reason) == ("TOTAL: 1", 12, 3, "length")
    parts = json.dumps({"choices": [{"message": {"content": [{"type": "text", "text": "A"}, {"text": "B"}]}}]})
    assert parse_chat_response(parts.encode()).text == "AB"


@pytest.mark.parametrize("body,headers,error", [
    (b"", {}, IncompleteAnswer),
    (b'{"choices": []', {"Content-Length": "100"}, IncompleteAnswer),
    (b"<html><body>502 Bad Gateway</body></html>", {"Content-Type": "text/html"}, MalformedAnswer),
    (b'{"choices": []}', {}, MalformedAnswer),
    (b'{"choices": [{"message": {"content": null, "tool_calls": []}}]}', {}, MalformedAnswer),
    (b'{"object": "list", "data": []}', {}, MalformedAnswer),
])
def test_a_200_that_is_not_a_complete_chat_completion_is_refused(body, headers, error):
    with pytest.raises(error):
        parse_chat_response(body, headers)


def test_status_classes():
    assert classify_status(429) is ErrorClass.THROTTLING
    assert classify_status(408) is ErrorClass.TIMEOUT
    assert classify_status(503) is ErrorClass.TRANSIENT and classify_status(500) is ErrorClass.TRANSIENT
    assert classify_status(400) is ErrorClass.PERMANENT and classify_status(404) is ErrorClass.PERMANENT


# ---------------------------------------------------------------- setup, options, residency


def test_missing_model_is_one_line(capsys, tmp_path):
    with pytest.raises(UsageError, match="--model is required") as info:
        _backend("http://127.0.0.1:9/v1", model=None)
    assert "\n" not in str(info.value)
    from migbench.cli import main

    assert main(["run", "--backend", "openai-compatible", "-o", "base_url=http://127.0.0.1:9/v1",
                 "--results", str(tmp_path)]) == 2
    err = capsys.readouterr()
    lines = [ln for ln in (err.out + err.err).splitlines() if ln.strip()]
    assert len(lines) == 1 and "--model is required" in lines[0]


def test_server_from_the_option_or_openai_base_url(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(UsageError, match="base_url"):
        create_backend("openai-compatible", model=MODEL)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://localhost:8000/v1/")
    b = create_backend("openai-compatible", model=MODEL)
    assert b.url == "http://localhost:8000/v1/chat/completions" and b.max_concurrency() == 4
    with pytest.raises(UsageError, match="base_url"):
        _backend("ftp://host/v1")


def test_plain_http_to_a_remote_host_is_warned_and_recorded_never_the_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    remote = _backend("http://10.1.2.3:8000/v1")
    d = remote.describe()
    assert d["host"] == "10.1.2.3" and d["family"] == "openai" and d["model"] == MODEL
    assert len(d["warnings"]) == 1 and "unencrypted" in d["warnings"][0]
    assert KEY not in json.dumps(d) and d["api_key_set"] is True
    assert _backend("https://gpu.example.internal/v1").describe()["warnings"] == []
    assert _backend("http://127.0.0.1:8000/v1").describe()["warnings"] == []
    assert plain_http_warning("http://[::1]:8000/v1") is None


# ---------------------------------------------------------------- against the local server


def test_a_full_run_stores_scored_documents_with_usage_and_the_prepared_bytes(
        tmp_path, dataset, server_factory, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    server = server_factory(docs=dataset, key=KEY)
    backend = _backend(server.base_url, concurrency=2)
    store = RunStore(tmp_path)
    s = Runner(backend, dataset, store, RunOptions(retry=FAST)).run()
    backend.close()
    assert (s.ok, s.failed, s.remaining) == (N_DOCS, 0, 0)
    docs = store.documents(s.run_id)
    assert len(docs) == N_DOCS
    assert all(d.doc_f1 == pytest.approx(1.0) for d in docs)  # the server's ground truth, scored for real
    assert all(d.response.input_tokens == 701 and d.response.output_tokens == 42 for d in docs)
    assert all(d.response.latency_s and d.response.latency_s > 0 for d in docs)
    run = store.run(s.run_id)
    assert run.family == "openai" and run.model == MODEL and run.describe["host"] == "127.0.0.1"
    # Each page arrives as a data URI of exactly the bytes the image pipeline prepared.
    budget = backend.image_budget()
    sent = {}
    for req in server.received:
        [url] = [p["image_url"]["url"] for p in req["messages"][-1]["content"] if p["type"] == "image_url"]
        sent[base64.b64decode(url.split(",", 1)[1])] = url.split(";")[0]
        assert req["model"] == MODEL and req["temperature"] == 0
    for doc in dataset.documents:
        [img] = prepare_document(doc.path, "encoded", budget).images
        assert img.data in sent and sent[img.data] == f"data:image/{img.format}"
    assert set(server.auth) == {f"Bearer {KEY}"}
    audit = store.audit(s.run_id)
    assert len(audit) == N_DOCS and {a["host"] for a in audit} == {"127.0.0.1"}
    assert all(a["status"] == 200 and a["bytes_sent"] > 0 for a in audit)


def test_the_api_key_never_reaches_the_store_even_when_a_server_echoes_it(
        tmp_path, dataset, server_factory, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    echo = json.dumps({"error": {"message": f"Incorrect API key provided: {KEY}"}}).encode()
    server = server_factory(docs=dataset, key=KEY, script=[(400, echo, [("Content-Type", "application/json")])])
    backend = _backend(server.base_url, concurrency=1)
    store = RunStore(tmp_path)
    s = Runner(backend, dataset, store, RunOptions(retry=FAST)).run()
    backend.close()
    assert (s.ok, s.failed) == (N_DOCS - 1, 1)
    [failed] = [d for d in store.documents(s.run_id) if d.status == "failed"]
    assert failed.error_class == "permanent" and "Incorrect API key" in failed.error and "[REDACTED]" in failed.error
    for f in tmp_path.rglob("*"):  # the database, its WAL and anything else the store wrote
        if f.is_file():
            assert KEY.encode() not in f.read_bytes(), f
    con = sqlite3.connect(tmp_path / DB_NAME)
    try:
        assert KEY not in "\n".join(con.iterdump())
    finally:
        con.close()


def test_429_with_retry_after_is_retried_and_succeeds(server_factory, dataset):
    doc = dataset.documents[0]
    server = server_factory(docs=dataset, script=[
        (429, b'{"error": {"message": "rate limited"}}', [("Retry-After", "0.05")])])
    b = _backend(server.base_url)
    [img] = prepare_document(doc.path, "encoded", b.image_budget()).images
    req = Request(doc.doc_id, doc.doc_type, "Extract", images=[img])
    with pytest.raises(BackendError) as info:  # one attempt per generate: the 429 itself
        b.generate(req)
    assert info.value.error_class is ErrorClass.THROTTLING and info.value.retry_after_s == pytest.approx(0.05)
    [entry] = info.value.response.sent
    assert entry.status == 429 and info.value.response.throttled == 1
    server.script.append((429, b"{}", [("Retry-After", "0.05")]))
    resp = call_with_retry(b, req, FAST)
    assert resp.ok and resp.attempts == 2 and resp.throttled == 1 and resp.retry_wait_s >= 0.05
    assert resp.input_tokens == 701 and resp.text.strip()


@pytest.mark.parametrize("status,body,headers,expected", [
    (200, b"", [], ErrorClass.TRANSIENT),
    (200, b"<html><body>Bad gateway</body></html>", [("Content-Type", "text/html")], ErrorClass.PERMANENT),
    (200, b'{"choices": []}', [("Content-Type", "application/json")], ErrorClass.PERMANENT),
    (503, b"upstream down", [], ErrorClass.TRANSIENT),
    (404, b'{"object": "error", "message": "model not found"}', [], ErrorClass.PERMANENT),
])
def test_answers_that_are_not_answers_fail_the_attempt(server_factory, status, body, headers, expected):
    server = server_factory(docs=None, script=[(status, body, headers)])
    b = _backend(server.base_url)
    with pytest.raises(BackendError) as info:
        b.generate(Request("r.png", "receipt", "Extract", images=[png()]))
    assert info.value.error_class is expected
    [entry] = info.value.response.sent
    assert entry.status == status and entry.bytes_sent > 0
    if status == 404:
        assert "model not found" in str(info.value)
    # Through the retry loop: never ok with empty text.
    server.script.append((status, body, headers))
    resp = call_with_retry(b, Request("r.png", "receipt", "Extract", images=[png()]),
                           RetryPolicy(max_attempts=1, base_s=0.001, cap_s=0.002))
    assert not resp.ok and resp.error_class is expected and not resp.text


def test_a_refused_connection_is_transient_and_sends_nothing():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    b = _backend(f"http://127.0.0.1:{port}/v1", connect_timeout=2)
    with pytest.raises(BackendError) as info:
        b.generate(Request("r.png", "receipt", "Extract", images=[png()]))
    assert info.value.error_class is ErrorClass.TRANSIENT
    [entry] = info.value.response.sent
    assert entry.status is None and entry.bytes_sent == 0


def test_a_silent_server_is_a_timeout(server_factory):
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the connection, never answers
    try:
        b = _backend(f"http://127.0.0.1:{listener.getsockname()[1]}/v1", read_timeout=0.3)
        with pytest.raises(BackendError) as info:
            b.generate(Request("r.png", "receipt", "Extract", images=[png()]))
        assert info.value.error_class is ErrorClass.TIMEOUT
    finally:
        listener.close()


def test_cli_run_takes_the_server_from_openai_base_url(tmp_path, dataset, server_factory, monkeypatch):
    from migbench.cli import main

    server = server_factory(docs=dataset)
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    results = tmp_path / "results"
    assert main(["run", "--backend", "openai-compatible", "--model", MODEL, "--limit", "2",
                 "--results", str(results)]) == 0
    store = RunStore(results)
    run = store.run("latest")
    docs = store.documents(run.run_id)
    assert run.backend == "openai-compatible" and len(docs) == 2 and all(d.ok for d in docs)
    assert run.describe["api_key_set"] is False and set(server.auth) == {None}  # no key, no header
