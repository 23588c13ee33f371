"""The emulator's control plane through real botocore: bedrock (rest-json) GetInferenceProfile /
ListInferenceProfiles / ListFoundationModels and service-quotas (JSON 1.1) ListServiceQuotas, each
verified against its own SigV4 service scope."""

import boto3
import pytest
from botocore.exceptions import ClientError
from migbench.emulator.server import load_config, run_emulator


@pytest.fixture
def emu(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    with run_emulator() as e:
        yield e


def client(emu, service="bedrock", region="ap-southeast-2"):
    return boto3.client(service, endpoint_url=emu.url, region_name=region)


def test_get_inference_profile_lists_destinations_as_model_arns_by_id_or_arn(emu):
    bedrock = client(emu)
    by_id = bedrock.get_inference_profile(inferenceProfileIdentifier="au.amazon.nova-pro-v1:0")
    assert [m["modelArn"] for m in by_id["models"]] == [
        "arn:aws:bedrock:ap-southeast-2::foundation-model/amazon.nova-pro-v1:0",
        "arn:aws:bedrock:ap-southeast-4::foundation-model/amazon.nova-pro-v1:0"]
    assert by_id["type"] == "SYSTEM_DEFINED" and by_id["status"] == "ACTIVE"
    by_arn = bedrock.get_inference_profile(inferenceProfileIdentifier=by_id["inferenceProfileArn"])
    assert by_arn["models"] == by_id["models"]
    with pytest.raises(ClientError) as info:
        bedrock.get_inference_profile(inferenceProfileIdentifier="amazon.nova-pro-v1:0")  # a base id
    assert info.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_listings_page_and_filter_like_the_service(emu):
    bedrock = client(emu)
    pages = list(bedrock.get_paginator("list_inference_profiles").paginate(PaginationConfig={"PageSize": 2}))
    ids = [p["inferenceProfileId"] for page in pages for p in page["inferenceProfileSummaries"]]
    assert len(pages) > 1 and len(ids) == len(set(ids))
    assert {"au.amazon.nova-pro-v1:0", "apac.amazon.nova-pro-v1:0", "au.migbench.nz-routed-test-v1:0"} <= set(ids)
    assert bedrock.list_inference_profiles(typeEquals="APPLICATION")["inferenceProfileSummaries"] == []
    models = {m["modelId"]: m for m in bedrock.list_foundation_models()["modelSummaries"]}
    assert models["amazon.nova-pro-v1:0"]["inferenceTypesSupported"] == ["ON_DEMAND"]
    assert models["anthropic.claude-sonnet-4-5-20250929-v1:0"]["inferenceTypesSupported"] == ["INFERENCE_PROFILE"]
    assert models["amazon.nova-micro-v1:0"]["inputModalities"] == ["TEXT"]
    assert {m["modelId"] for m in bedrock.list_foundation_models(byProvider="anthropic")["modelSummaries"]} == {
        "anthropic.claude-sonnet-4-5-20250929-v1:0", "anthropic.claude-haiku-4-5-20251001-v1:0"}


def test_service_quotas_answers_one_tpm_quota_per_model_and_kind(emu):
    quotas = client(emu, "service-quotas").list_service_quotas(ServiceCode="bedrock")["Quotas"]
    names = [q["QuotaName"] for q in quotas]
    assert len(names) == len(set(names))  # au. and apac. Nova Pro share one cross-Region quota
    assert "Cross-Region InvokeModel tokens per minute for Amazon Nova Pro" in names
    assert "On-demand InvokeModel tokens per minute for Amazon Nova Pro" in names
    assert not any("Claude" in n and n.startswith("On-demand") for n in names)  # no on-demand Claude 4.x
    assert all(q["Value"] == 2_000_000.0 and q["ServiceCode"] == "bedrock" for q in quotas)


def test_each_api_is_verified_against_its_own_signing_scope_and_denials_carry_their_code(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    cfg = load_config()
    cfg.control.deny = ["ListServiceQuotas", "GetInferenceProfile"]
    with run_emulator(cfg) as emu:
        for call in (lambda: client(emu, "service-quotas").list_service_quotas(ServiceCode="bedrock"),
                     lambda: client(emu).get_inference_profile(inferenceProfileIdentifier="au.amazon.nova-pro-v1:0")):
            with pytest.raises(ClientError) as info:
                call()
            assert info.value.response["Error"]["Code"] == "AccessDeniedException"  # JSON 1.1 too (__type)
            assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        # Melbourne-scoped signatures are refused by a Sydney emulator, like any wrong scope.
        with pytest.raises(ClientError) as info:
            client(emu, region="ap-southeast-4").list_foundation_models()
        assert info.value.response["Error"]["Code"] == "InvalidSignatureException"
        assert client(emu).list_foundation_models()["modelSummaries"]  # other operations still answer
