"""--prompt-style tool and prompt caching through the Bedrock backend, real boto3 and the emulator."""

import json

import pytest
from migbench.cli import main
from migbench.contracts import UsageError
from migbench.cost import load_pricing, run_cost, token_price
from migbench.datasets import load_dataset
from migbench.emulator import GroundTruthResponder, ScriptedResponder, run_emulator
from migbench.fixtures import default_dataset
from migbench.registry import create_backend
from migbench.rescore import rescore_run
from migbench.retry import RetryPolicy
from migbench.runner import Runner, RunOptions
from migbench.store import RunStore

FAST = RetryPolicy(max_attempts=3, base_s=0.0, cap_s=0.0)


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(default_dataset())


@pytest.fixture
def aws_env(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_BEDROCK_RUNTIME"):
        monkeypatch.delenv(var, raising=False)


def _run(emu, tmp_path, dataset, style, limit=4, **options):
    backend = create_backend("nova-pro", options={"endpoint_url": emu.url, "allow_loopback": True, **options})
    store = RunStore(tmp_path)
    try:
        summary = Runner(backend, dataset, store, RunOptions(prompt_style=style, limit=limit, retry=FAST)).run()
    finally:
        backend.close()
    return store, summary


def test_a_tool_style_run_scores_the_fields_of_the_tool_call_and_rescores_from_its_stored_json(
        aws_env, tmp_path, dataset):
    with run_emulator(responder=GroundTruthResponder(dataset)) as emu:  # a kv responder: the tool wins
        store, summary = _run(emu, tmp_path, dataset, "tool")
    assert summary.ok == 4 and summary.failed == 0 and summary.mean_f1 == pytest.approx(1.0)
    run = store.run(summary.run_id)
    assert run.prompt_style == "tool"
    docs = store.documents(summary.run_id)
    for d in docs:
        assert d.response.extra["structured_output"] == "tool_use" and d.response.stop_reason == "tool_use"
        stored = json.loads(d.response.text)  # the tool input, as JSON: what rescoring reads
        assert set(stored) == set(d.fields)
    list_field = next(d for d in docs if d.doc_type != "bank_statement")
    assert isinstance(json.loads(list_field.response.text)["LINE_ITEM_DESCRIPTIONS"], list)
    assert rescore_run(store, summary.run_id, "incumbent")[0] == "incumbent"
    assert [d.doc_f1 for d in store.documents(summary.run_id)] == [d.doc_f1 for d in docs]


def test_a_text_answer_to_a_tool_request_is_a_recorded_parse_failure_with_its_text_tokens_and_cost(
        aws_env, tmp_path, dataset):
    prose = "The total is $9.90 and the supplier is ACME."
    with run_emulator(responder=ScriptedResponder([prose])) as emu:
        store, summary = _run(emu, tmp_path, dataset, "tool", limit=2)
        requests = emu.stats.snapshot()["requests"]
    assert summary.failed == 2 and summary.failures == {"parse": 2}
    assert requests == 2  # a parse failure is not retried
    for d in store.documents(summary.run_id):
        assert d.status == "failed" and d.error_class == "parse"
        assert "instead of calling the record_" in d.error
        assert d.response.text == prose and d.response.extra["structured_output"] == "text"
        assert d.response.input_tokens and d.response.cost_usd and d.response.cost_usd > 0  # billed all the same


def test_the_same_prose_answer_to_a_text_prompt_is_parsed_not_failed(aws_env, tmp_path, dataset):
    with run_emulator(responder=ScriptedResponder(["TOTAL_AMOUNT: $9.90"])) as emu:
        _, summary = _run(emu, tmp_path, dataset, "kv", limit=2)
    assert summary.failed == 0 and summary.ok == 2


def test_cache_tokens_are_recorded_priced_and_saved_over_a_run(aws_env, tmp_path, dataset):
    pricing = load_pricing()
    with run_emulator(responder=GroundTruthResponder(dataset)) as emu:
        store, summary = _run(emu, tmp_path, dataset, "kv", limit=6, prompt_cache=True, concurrency=1)
    docs = store.documents(summary.run_id)
    assert summary.ok == 6 and summary.mean_f1 == pytest.approx(1.0)
    types = {d.doc_type for d in docs}
    writes = [d for d in docs if d.response.cache_write_tokens]
    reads = [d for d in docs if d.response.cache_read_tokens]
    assert len(writes) == len(types)  # one write per document type's instructions, then reads
    assert len(reads) == 6 - len(types) and reads
    price = token_price(pricing, "amazon.nova-pro-v1:0")
    for d in docs:
        r = d.response
        expected = (r.input_tokens * price.input_per_1k + r.output_tokens * price.output_per_1k
                    + (r.cache_read_tokens or 0) * price.cache_read_per_1k
                    + (r.cache_write_tokens or 0) * price.cache_write_per_1k) / 1000
        assert r.cost_usd == pytest.approx(expected)
    rc = run_cost(store.run(summary.run_id), docs, pricing)
    read = sum(d.response.cache_read_tokens or 0 for d in docs)
    assert rc.cache.read_tokens == read
    assert rc.cache.saving_usd == pytest.approx(read / 1000 * (price.input_per_1k - price.cache_read_per_1k))


def test_a_cached_run_is_another_run_than_the_uncached_one(aws_env, tmp_path, dataset):
    with run_emulator(responder=GroundTruthResponder(dataset)) as emu:
        _, plain = _run(emu, tmp_path, dataset, "kv", limit=1)
        _, cached = _run(emu, tmp_path, dataset, "kv", limit=1, prompt_cache=True)
    assert plain.run_id != cached.run_id and not cached.resumed


@pytest.mark.parametrize("backend,options,needle", [
    ("nova-pro", {"api": "invoke-nova"}, "api invoke-nova sends no tool configuration"),
    ("ocr-baseline", {}, "it has no tool use"),
])
def test_backends_without_tool_use_refuse_the_tool_style_in_one_line(aws_env, tmp_path, dataset, backend,
                                                                       options, needle):
    b = create_backend(backend, options={**options, **({"allow_loopback": True} if backend != "ocr-baseline"
                                                       else {})})
    with pytest.raises(UsageError, match=needle) as err:
        Runner(b, dataset, RunStore(tmp_path), RunOptions(prompt_style="tool"))
    assert "\n" not in str(err.value) and "--prompt-style tool" in str(err.value)


def test_prompt_cache_on_an_invoke_api_is_a_usage_error():
    with pytest.raises(UsageError, match="prompt_cache=true needs api converse"):
        create_backend("nova-pro", options={"api": "invoke-nova", "prompt_cache": True})


def test_the_cli_runs_the_tool_style_against_the_emulator(aws_env, tmp_path, dataset, monkeypatch, capsys):
    with run_emulator(responder=GroundTruthResponder(dataset)) as emu:
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", emu.url)
        assert main(["run", "--backend", "nova-pro", "--results", str(tmp_path), "--allow-loopback",
                     "--limit", "2", "--prompt-style", "tool"]) == 0
    run_id = capsys.readouterr().out.strip()
    assert RunStore(tmp_path).run(run_id).prompt_style == "tool"


def test_a_classified_tool_run_asks_the_type_in_text_then_extracts_through_the_tool(aws_env, tmp_path, dataset):
    doc = dataset.documents[0]
    label = {"invoice": "INVOICE", "receipt": "RECEIPT", "bank_statement": "BANK_STATEMENT"}[doc.doc_type]

    def answer(request):
        if "What type of business document" in request.prompt:
            return label  # prose: a tool-less question is answered in text
        return json.dumps(doc.ground_truth)

    with run_emulator(responder=ScriptedResponder(answer)) as emu:
        backend = create_backend("nova-pro", options={"endpoint_url": emu.url, "allow_loopback": True})
        store = RunStore(tmp_path)
        summary = Runner(backend, dataset, store, RunOptions(prompt_style="tool", classify=True, limit=1,
                                                             retry=FAST)).run()
        backend.close()
    (d,) = store.documents(summary.run_id)
    assert d.status == "ok" and d.response.extra["structured_output"] == "tool_use"
    assert d.response.extra["classification"]["label"] == label
    assert d.doc_f1 == pytest.approx(1.0)
