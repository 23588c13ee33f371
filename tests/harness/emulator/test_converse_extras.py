"""The emulator's Converse tool use and prompt caching, through real boto3 over HTTP."""

import json

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from migbench.emulator import ScriptedResponder, run_emulator
from migbench.emulator.converse_extras import PromptCache, cache_prefix

NOVA = "amazon.nova-pro-v1:0"
SCHEMA = {"type": "object", "properties": {"TOTAL_AMOUNT": {"type": "string"},
                                           "LINE_ITEM_PRICES": {"type": "array", "items": {"type": "string"}}}}
TOOLS = {"tools": [{"toolSpec": {"name": "record_invoice", "inputSchema": {"json": SCHEMA}}}],
         "toolChoice": {"tool": {"name": "record_invoice"}}}
JSON_ANSWER = json.dumps({"TOTAL_AMOUNT": "$9.90", "LINE_ITEM_PRICES": "$1.00 | $8.90"})


@pytest.fixture
def client(monkeypatch):
    def make(url, validate=True):
        # validate=False: what botocore would refuse client-side reaches the server, as from other SDKs
        return boto3.client("bedrock-runtime", endpoint_url=url, region_name="ap-southeast-2",
                            aws_access_key_id="testing", aws_secret_access_key="testing",
                            config=Config(retries={"total_max_attempts": 1}, parameter_validation=validate))
    return make


def _converse(c, content, **kw):
    return c.converse(modelId=NOVA, messages=[{"role": "user", "content": content}],
                      inferenceConfig={"maxTokens": 200}, **kw)


def test_a_forced_tool_is_answered_with_a_tool_call_whose_lists_are_arrays(client):
    with run_emulator(responder=ScriptedResponder([JSON_ANSWER])) as emu:
        out = _converse(client(emu.url), [{"text": "Extract"}], toolConfig=TOOLS)
    assert out["stopReason"] == "tool_use"
    (block,) = out["output"]["message"]["content"]
    use = block["toolUse"]
    assert use["name"] == "record_invoice" and use["toolUseId"].startswith("tooluse_")
    assert use["input"] == {"TOTAL_AMOUNT": "$9.90", "LINE_ITEM_PRICES": ["$1.00", "$8.90"]}


def test_a_prose_answer_to_a_tool_request_stays_text(client):
    with run_emulator(responder=ScriptedResponder(["TOTAL_AMOUNT: $9.90"])) as emu:
        out = _converse(client(emu.url), [{"text": "Extract"}], toolConfig=TOOLS)
    assert out["stopReason"] == "end_turn"
    assert out["output"]["message"]["content"] == [{"text": "TOTAL_AMOUNT: $9.90"}]


@pytest.mark.parametrize("config,needle", [
    ({**TOOLS, "toolChoice": {"tool": {"name": "record_receipt"}}}, "record_receipt"),
    ({"tools": [], "toolChoice": {"auto": {}}}, "toolConfig.tools"),
    ({"tools": [{"toolSpec": {"name": "bad name!", "inputSchema": {"json": SCHEMA}}}]}, "toolSpec.name"),
    ({"tools": [{"toolSpec": {"name": "t", "inputSchema": {"json": {"type": "string"}}}}]}, "must be object"),
])
def test_a_bad_tool_config_is_a_400_validation_exception(client, config, needle):
    with run_emulator(responder=ScriptedResponder([JSON_ANSWER])) as emu:
        with pytest.raises(ClientError) as err:
            _converse(client(emu.url, validate=False), [{"text": "Extract"}], toolConfig=config)
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert needle in err.value.response["Error"]["Message"]


def test_the_first_request_writes_the_cached_prefix_and_later_ones_read_it(client):
    shared = [{"text": "Extract the fields " * 50}, {"cachePoint": {"type": "default"}}]
    with run_emulator(responder=ScriptedResponder(["TOTAL_AMOUNT: $1"])) as emu:
        c = client(emu.url)
        first = _converse(c, [*shared, {"text": "document one"}])["usage"]
        second = _converse(c, [*shared, {"text": "document two"}])["usage"]
        other = _converse(c, [{"text": "Other instructions " * 50}, {"cachePoint": {"type": "default"}},
                              {"text": "document one"}])["usage"]
        plain = _converse(c, [{"text": "no cache point"}])["usage"]
    assert first["cacheWriteInputTokens"] > 0 and first["cacheReadInputTokens"] == 0
    assert second["cacheReadInputTokens"] == first["cacheWriteInputTokens"] and second["cacheWriteInputTokens"] == 0
    assert other["cacheWriteInputTokens"] > 0 and other["cacheReadInputTokens"] == 0
    assert "cacheReadInputTokens" not in plain
    # inputTokens counts only what was neither read nor written; the total counts everything
    for u in (first, second):
        assert u["totalTokens"] == (u["inputTokens"] + u["outputTokens"] + u["cacheReadInputTokens"]
                                    + u["cacheWriteInputTokens"])
    assert second["inputTokens"] == first["inputTokens"]


def test_a_cached_prefix_expires_five_minutes_after_its_last_use():
    now = [0.0]
    cache = PromptCache(clock=lambda: now[0])
    assert cache.use("m", "k", 100) == (0, 100)
    now[0] = 299.0
    assert cache.use("m", "k", 100) == (100, 0)  # a read renews the TTL
    now[0] = 598.0
    assert cache.use("m", "k", 100) == (100, 0)
    now[0] = 898.5
    assert cache.use("m", "k", 100) == (0, 100)  # expired: written again
    assert cache.use("other-model", "k", 100) == (0, 100)


def test_the_prefix_covers_tools_and_system_before_the_cache_point():
    body = {"toolConfig": TOOLS, "system": [{"text": "Be exact"}],
            "messages": [{"role": "user", "content": [{"text": "Instr"}, {"cachePoint": {"type": "default"}},
                                                      {"text": "page"}]}]}
    digest, tokens = cache_prefix(body)
    changed_tool = json.loads(json.dumps(body))
    changed_tool["toolConfig"]["tools"][0]["toolSpec"]["name"] = "record_receipt"
    changed_page = json.loads(json.dumps(body))
    changed_page["messages"][0]["content"][2]["text"] = "another page"
    assert cache_prefix(changed_tool)[0] != digest
    assert cache_prefix(changed_page) == (digest, tokens)
    assert cache_prefix({"messages": [{"role": "user", "content": [{"text": "x"}]}]}) is None
