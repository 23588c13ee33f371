"""Streaming (`stream=true`, `migbench run --stream`) through real boto3 against the emulator:
ConverseStream and InvokeModelWithResponseStream give the same answer as the one-shot call plus
time to first token; an exception inside the stream is classified by its lower-case code and
retried by the one retry loop; a stream that stops early is never a success."""

import pytest
from botocore import exceptions as bx
from migbench.adapters.aws_common import classify_aws_error
from migbench.cli import main
from migbench.contracts import BackendError, ErrorClass, MemoryAudit
from migbench.emulator.responders import ScriptedResponder
from migbench.emulator.server import load_config, run_emulator
from migbench.retry import RetryPolicy, call_with_retry
from migbench.store import RunStore

from tests.adapters import test_bedrock
from tests.adapters.test_bedrock import ANSWER, backend, request

FAST = RetryPolicy(base_s=0.001, cap_s=0.002)
aws_env = test_bedrock.aws_env  # the same fixture: credentials for the emulator, no endpoint variables


@pytest.fixture
def emu(aws_env):
    cfg = load_config()
    cfg.latency.fixed_s = 0.05  # the model's time before its first token
    cfg.latency.stream_delta_s = 0.02
    with run_emulator(cfg, responder=ScriptedResponder([ANSWER])) as e:
        yield e


@pytest.mark.parametrize("name,api", [("nova-pro", "converse"), ("nova-lite", "invoke-nova"),
                                      ("au-claude-sonnet-4-5", "invoke-anthropic")])
def test_a_streamed_answer_equals_the_one_shot_answer_and_has_a_first_token_time(emu, name, api):
    one_shot = backend(name, endpoint_url=emu.url, allow_loopback=True, api=api).generate(request())
    b = backend(name, endpoint_url=emu.url, allow_loopback=True, api=api, stream=True)
    streamed = b.generate(request())
    for key in ("text", "input_tokens", "output_tokens", "stop_reason", "model_id", "region"):
        assert getattr(streamed, key) == getattr(one_shot, key), key
    assert streamed.text == ANSWER and streamed.server_latency_ms and streamed.server_latency_ms >= 50
    assert one_shot.ttft_s is None
    # 6 deltas 20 ms apart after the first: the first token comes at least ~100 ms before the end
    assert 0.05 <= streamed.ttft_s < streamed.latency_s - 0.09
    assert streamed.extra["stream"] is True and streamed.extra["emulated"] is True
    assert [e.operation for e in streamed.sent] == [
        "ConverseStream" if api == "converse" else "InvokeModelWithResponseStream"]
    assert emu.stats.snapshot()["by_operation"].get(streamed.sent[0].operation) == 1


@pytest.mark.parametrize("code,expected", [
    ("throttlingException", ErrorClass.THROTTLING), ("modelStreamErrorException", ErrorClass.TRANSIENT),
    ("serviceUnavailableException", ErrorClass.TRANSIENT), ("internalServerException", ErrorClass.TRANSIENT),
    ("modelTimeoutException", ErrorClass.TIMEOUT), ("validationException", ErrorClass.PERMANENT)])
def test_every_exception_event_code_classifies_like_its_one_shot_error(code, expected):
    exc = bx.EventStreamError({"Error": {"Code": code, "Message": "m"}}, "ConverseStream")
    assert classify_aws_error(exc) is expected


def test_what_breaks_a_stream_inside_urllib3_is_classified_not_permanent():
    from urllib3 import exceptions as ux

    assert classify_aws_error(ux.ReadTimeoutError(None, "/model/m/converse-stream", "Read timed out.")) \
        is ErrorClass.TIMEOUT
    assert classify_aws_error(ux.ProtocolError("Connection broken: InvalidChunkLength")) is ErrorClass.TRANSIENT


@pytest.mark.parametrize("api", ["converse", "invoke-nova"])
def test_a_throttle_inside_the_stream_is_retried_and_the_document_ends_ok(emu, api):
    emu.set_faults(script=["stream_throttle"])
    audit = MemoryAudit()
    b = backend("nova-pro", endpoint_url=emu.url, allow_loopback=True, api=api, stream=True)
    r = call_with_retry(b, request(), FAST, audit=audit)
    assert r.ok and r.text == ANSWER and r.ttft_s is not None
    assert (r.attempts, r.throttled) == (2, 1)
    first, second = audit.entries
    # the throttled attempt was answered 200 with a request id; its class is in the audit
    assert first.status == 200 and first.request_id and first.reason == "throttling"
    assert second.status == 200 and second.reason is None
    assert emu.stats.snapshot()["faults"] == {"stream_throttle": 1}


def test_throttles_inside_the_stream_until_the_deadline_fail_the_document_with_the_cause(emu):
    emu.set_faults(rates={"stream_throttle": 1.0})
    b = backend("nova-pro", endpoint_url=emu.url, allow_loopback=True, stream=True)
    b._get_client()  # made before the clock starts: client setup is not part of the deadline
    r = call_with_retry(b, request(), RetryPolicy(base_s=0.05, cap_s=0.05, document_deadline_s=0.6))
    assert not r.ok and r.error_class is ErrorClass.THROTTLING and r.throttled == r.attempts >= 2, r.error
    assert "throttlingException" in r.error and "document deadline" in r.error
    assert r.text == ""  # the deltas before the exception are never kept as an answer


@pytest.mark.parametrize("fault,expected", [("stream_model_error", "modelStreamErrorException"),
                                            ("stream_cut", "stream ended without messageStop and metadata")])
def test_a_broken_stream_is_never_a_success(emu, fault, expected):
    emu.set_faults(rates={fault: 1.0})
    b = backend("nova-pro", endpoint_url=emu.url, allow_loopback=True, stream=True)
    with pytest.raises(BackendError, match=expected) as err:
        b.generate(request())
    assert err.value.error_class is ErrorClass.TRANSIENT and err.value.response.text == ""
    r = call_with_retry(b, request(), RetryPolicy(max_attempts=2, base_s=0.001, cap_s=0.002))
    assert not r.ok and r.error_class is ErrorClass.TRANSIENT and r.attempts == 2 and r.text == ""


def test_an_incomplete_invoke_stream_is_retried_to_a_complete_answer(emu):
    emu.set_faults(script=["stream_cut"])
    b = backend("au-claude-sonnet-4-5", endpoint_url=emu.url, allow_loopback=True, api="invoke-anthropic",
                stream=True)
    r = call_with_retry(b, request(), FAST)
    assert r.ok and r.text == ANSWER and r.attempts == 2 and r.throttled == 0


def test_run_stream_stores_ttft_and_the_same_fields_as_a_one_shot_run(tmp_path, monkeypatch, capsys):
    from migbench.datasets import load_dataset
    from migbench.emulator import GroundTruthResponder

    from tests.conftest import SYNTH

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with run_emulator(responder=GroundTruthResponder(load_dataset(SYNTH))) as e:
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", e.url)
        base = ["run", "--backend", "nova-pro", "--results", str(tmp_path), "--allow-loopback", "--limit", "3"]
        assert main(base) == 0
        plain_id = capsys.readouterr().out.strip()
        assert main([*base, "--stream"]) == 0
        stream_id = capsys.readouterr().out.strip()
    assert plain_id != stream_id  # streaming is part of the run's identity: never resumed as the other
    store = RunStore(tmp_path)
    plain, streamed = store.documents(plain_id), store.documents(stream_id)
    assert [d.status for d in streamed] == ["ok"] * 3
    for a, b in zip(plain, streamed):
        assert (a.doc_id, a.fields, a.doc_f1, a.response.text, a.response.input_tokens, a.response.output_tokens,
                a.response.stop_reason, a.response.cost_usd) == (
            b.doc_id, b.fields, b.doc_f1, b.response.text, b.response.input_tokens, b.response.output_tokens,
            b.response.stop_reason, b.response.cost_usd)
        assert b.response.cost_usd and b.response.server_latency_ms
        assert a.response.ttft_s is None
        assert 0 < b.response.ttft_s < b.response.latency_s
    assert [x["operation"] for x in store.audit(stream_id)] == ["ConverseStream"] * 3


def test_stream_is_refused_in_one_line_by_a_backend_that_cannot_stream(tmp_path, capsys):
    assert main(["run", "--backend", "ocr-baseline", "--results", str(tmp_path), "--stream", "--limit", "1"]) == 2
    err = capsys.readouterr().err
    assert "stream" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_a_streamed_tool_call_with_prompt_caching_stores_what_the_one_shot_run_stores(aws_env, tmp_path):
    """Tool use (contentBlockStart + toolUse input deltas) and the cache counts in the stream's
    metadata come through the stream as they come through the one-shot Converse answer."""
    from migbench.datasets import load_dataset
    from migbench.emulator import GroundTruthResponder
    from migbench.fixtures import default_dataset
    from migbench.registry import create_backend
    from migbench.runner import Runner, RunOptions

    dataset = load_dataset(default_dataset())
    results = {}
    for stream in (False, True):
        with run_emulator(responder=GroundTruthResponder(dataset)) as e:  # each run starts with a cold cache
            b = create_backend("nova-pro", options={"endpoint_url": e.url, "allow_loopback": True,
                                                    "prompt_cache": True, "stream": stream})
            store = RunStore(tmp_path / str(stream))
            try:
                summary = Runner(b, dataset, store, RunOptions(prompt_style="tool", limit=3, retry=FAST)).run()
            finally:
                b.close()
            results[stream] = store.documents(summary.run_id)
    for a, b in zip(results[False], results[True]):
        assert b.status == "ok" and b.response.extra["structured_output"] == "tool_use"
        assert (a.response.text, a.fields, a.response.stop_reason, a.response.output_tokens) == (
            b.response.text, b.fields, b.response.stop_reason, b.response.output_tokens)
        assert b.response.ttft_s is not None and a.response.ttft_s is None
    # caching: the first document of a type writes the shared prefix, later ones read it, streamed or not
    for key in ("cache_write_tokens", "cache_read_tokens", "input_tokens"):
        assert [getattr(d.response, key) for d in results[True]] == [getattr(d.response, key) for d in results[False]]
    assert any(d.response.cache_write_tokens for d in results[True])


def test_a_stream_that_falls_silent_mid_answer_is_a_timeout(aws_env):
    cfg = load_config()
    cfg.latency.stream_delta_s = 0.6  # longer than the read timeout, after the first delta arrived
    with run_emulator(cfg, responder=ScriptedResponder([ANSWER])) as e:
        b = backend("nova-pro", endpoint_url=e.url, allow_loopback=True, stream=True, read_timeout=0.2)
        with pytest.raises(BackendError, match="Read timed out") as err:
            b.generate(request())
    assert err.value.error_class is ErrorClass.TIMEOUT and err.value.response.text == ""
