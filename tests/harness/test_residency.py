"""The residency guard: regions, hosts (FIPS, VPC endpoints, loopback), profiles and ARNs, and
refusal before any byte is sent."""

import pytest
from migbench.contracts import ErrorClass, SetupError
from migbench.residency import (
    ResidencyError,
    ResidencyGuard,
    check_config,
    check_host,
    check_model_id,
    judge_inference_profile,
    judge_request,
    load_model_catalog,
    load_policy,
    model_id_from_path,
    signing_region,
)

POLICY = load_policy()
BASE = load_model_catalog().base_regions()


@pytest.mark.parametrize("host,service,ok", [
    ("bedrock-runtime.ap-southeast-2.amazonaws.com", "bedrock-runtime", True),
    ("bedrock-runtime.ap-southeast-4.amazonaws.com", "bedrock-runtime", True),
    ("bedrock-runtime-fips.ap-southeast-2.amazonaws.com", "bedrock-runtime", True),
    ("vpce-0a1b2c3d4e5f-abcdefgh.bedrock-runtime.ap-southeast-2.vpce.amazonaws.com", "bedrock-runtime", True),
    ("vpce-0a1b2c3d4e5f-abcdefgh-ap-southeast-2a.bedrock-runtime.ap-southeast-2.vpce.amazonaws.com",
     "bedrock-runtime", True),
    ("runtime.sagemaker.ap-southeast-2.amazonaws.com", "sagemaker-runtime", True),
    ("vpce-0abc-xyz.runtime.sagemaker.ap-southeast-2.vpce.amazonaws.com", "sagemaker-runtime", True),
    ("bedrock.ap-southeast-2.amazonaws.com", "bedrock", True),
    ("bedrock-runtime.us-east-1.amazonaws.com", "bedrock-runtime", False),
    ("bedrock-runtime.ap-southeast-1.amazonaws.com", "bedrock-runtime", False),
    ("bedrock-runtime-fips.us-east-1.amazonaws.com", "bedrock-runtime", False),
    ("vpce-0abc-xyz.bedrock-runtime.us-west-2.vpce.amazonaws.com", "bedrock-runtime", False),
    ("bedrock-runtime.ap-southeast-2.amazonaws.com.evil.example", "bedrock-runtime", False),
    ("evilbedrock-runtime.ap-southeast-2.amazonaws.com", "bedrock-runtime", False),
    ("runtime.sagemaker.ap-southeast-2.amazonaws.com", "bedrock-runtime", False),  # wrong service
    ("proxy.internal", "bedrock-runtime", False),
])
def test_hosts(host, service, ok):
    assert (check_host(host, service, POLICY, allow_loopback=False) is None) is ok


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"])
def test_loopback_only_when_allowed(host):
    assert "loopback" in check_host(host, "bedrock-runtime", POLICY, allow_loopback=False)
    assert check_host(host, "bedrock-runtime", POLICY, allow_loopback=True) is None


@pytest.mark.parametrize("model_id,region,ok", [
    ("amazon.nova-pro-v1:0", "ap-southeast-2", True),
    ("amazon.nova-lite-v1:0", "ap-southeast-2", True),
    ("amazon.nova-pro-v1:0", "ap-southeast-4", False),  # not catalogued as offered in Melbourne
    ("au.amazon.nova-pro-v1:0", "ap-southeast-2", True),
    ("au.anthropic.claude-sonnet-4-5-20250929-v1:0", "ap-southeast-4", True),
    ("apac.amazon.nova-pro-v1:0", "ap-southeast-2", False),
    ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "ap-southeast-2", False),
    ("us.amazon.nova-pro-v1:0", "ap-southeast-2", False),
    ("eu.amazon.nova-pro-v1:0", "ap-southeast-2", False),
    ("us-gov.anthropic.claude-3-haiku-20240307-v1:0", "ap-southeast-2", False),
    ("jp.anthropic.claude-sonnet-4-5-20250929-v1:0", "ap-southeast-2", False),
    ("anthropic.claude-3-5-sonnet-20241022-v2:0", "ap-southeast-2", False),  # uncatalogued base id
    ("arn:aws:bedrock:ap-southeast-2::foundation-model/amazon.nova-pro-v1:0", "ap-southeast-2", True),
    ("arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-pro-v1:0", "ap-southeast-2", False),
    ("arn:aws:bedrock:ap-southeast-2:111122223333:inference-profile/au.amazon.nova-pro-v1:0", "ap-southeast-2", True),
    ("arn:aws:bedrock:ap-southeast-2:111122223333:inference-profile/apac.amazon.nova-pro-v1:0",
     "ap-southeast-2", False),
    ("arn:aws:bedrock:ap-southeast-2:111122223333:application-inference-profile/abc123", "ap-southeast-2", False),
    ("arn:aws:bedrock:ap-southeast-2:111122223333:provisioned-model/xyz", "ap-southeast-2", True),
    ("arn:aws-cn:bedrock:ap-southeast-2::foundation-model/amazon.nova-pro-v1:0", "ap-southeast-2", False),
])
def test_model_ids_profiles_and_arns(model_id, region, ok):
    assert (check_model_id(model_id, region, POLICY, BASE) is None) is ok


def test_path_and_signature_parsing_extracts_only_what_is_judged():
    assert model_id_from_path("/model/au.amazon.nova-pro-v1%3A0/converse") == "au.amazon.nova-pro-v1:0"
    assert model_id_from_path(
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A%3Afoundation-model%2Famazon.nova-pro-v1%3A0/invoke") == \
        "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-pro-v1:0"
    auth = ("AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20261124/us-west-2/bedrock/aws4_request, "
            "SignedHeaders=host;x-amz-date, Signature=abc")
    assert signing_region({"Authorization": auth}) == "us-west-2"


def _judge(url, auth_region="ap-southeast-2", client_region="ap-southeast-2", loopback=False, service="bedrock-runtime"):
    auth = f"AWS4-HMAC-SHA256 Credential=AKID/20261124/{auth_region}/bedrock/aws4_request, Signature=x"
    return judge_request(service=service, operation="Converse", url=url, headers={"Authorization": auth},
                         client_region=client_region, body_len=123, policy=POLICY, allow_loopback=loopback,
                         base_regions=BASE)


def test_judge_request_allows_sydney_and_counts_bytes():
    d = _judge("https://bedrock-runtime.ap-southeast-2.amazonaws.com/model/amazon.nova-pro-v1%3A0/converse")
    assert d.allowed and d.bytes_sent == 123 and d.model_id == "amazon.nova-pro-v1:0"


def test_judge_request_refuses_signature_for_another_region_even_on_an_au_host():
    d = _judge("https://bedrock-runtime.ap-southeast-2.amazonaws.com/model/amazon.nova-pro-v1%3A0/converse",
               auth_region="us-east-1")
    assert not d.allowed and d.bytes_sent == 0 and "us-east-1" in d.reason


def test_judge_request_refuses_a_global_profile_on_a_sydney_host():
    d = _judge("https://bedrock-runtime.ap-southeast-2.amazonaws.com/model/"
               "global.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse")
    assert not d.allowed and "global." in d.reason


def test_judge_request_sigv4a_region_set_must_be_allowed():
    d = judge_request(service="bedrock-runtime", operation="Converse",
                      url="https://bedrock-runtime.ap-southeast-2.amazonaws.com/model/amazon.nova-pro-v1%3A0/converse",
                      headers={"X-Amz-Region-Set": "*"}, client_region="ap-southeast-2", body_len=1,
                      policy=POLICY, allow_loopback=False, base_regions=BASE)
    assert not d.allowed


@pytest.mark.parametrize("region,endpoint,model_id", [
    ("us-east-1", None, "amazon.nova-pro-v1:0"),
    ("ap-southeast-2", "https://bedrock-runtime.us-west-2.amazonaws.com", "amazon.nova-pro-v1:0"),
    ("ap-southeast-2", None, "apac.amazon.nova-pro-v1:0"),
    ("ap-southeast-2", None, "global.amazon.nova-2-lite-v1:0"),
    ("ap-southeast-2", "http://127.0.0.1:8080", "amazon.nova-pro-v1:0"),
])
def test_check_config_refuses_with_setup_error(region, endpoint, model_id):
    with pytest.raises(SetupError, match="residency"):
        check_config(region, endpoint, model_id)


def test_check_config_accepts_au_settings_and_loopback_when_allowed():
    check_config("ap-southeast-2", "https://bedrock-runtime.ap-southeast-2.amazonaws.com", "au.amazon.nova-pro-v1:0")
    check_config("ap-southeast-2", "http://127.0.0.1:8080", "amazon.nova-lite-v1:0", allow_loopback=True)
    check_config("ap-southeast-2", "https://runtime.sagemaker.ap-southeast-2.amazonaws.com", None,
                 service="sagemaker-runtime")


# A GetInferenceProfile answer in the recorded shape (bedrock control plane, SYSTEM_DEFINED profile).
def _profile(regions):
    return {"inferenceProfileName": "AU Nova Pro", "inferenceProfileId": "au.amazon.nova-pro-v1:0",
            "inferenceProfileArn": "arn:aws:bedrock:ap-southeast-2:111122223333:inference-profile/au.amazon.nova-pro-v1:0",
            "models": [{"modelArn": f"arn:aws:bedrock:{r}::foundation-model/amazon.nova-pro-v1:0"} for r in regions],
            "status": "ACTIVE", "type": "SYSTEM_DEFINED"}


def test_profile_within_australia_is_accepted_with_its_destinations():
    v = judge_inference_profile(_profile(["ap-southeast-2", "ap-southeast-4"]))
    assert v.ok and v.destinations == ("ap-southeast-2", "ap-southeast-4")


def test_profile_reaching_auckland_or_singapore_is_refused():
    v = judge_inference_profile(_profile(["ap-southeast-2", "ap-southeast-4", "ap-southeast-6"]))
    assert not v.ok and "ap-southeast-6" in v.reason
    assert not judge_inference_profile(_profile(["ap-southeast-1"])).ok


def test_profile_without_models_is_refused():
    v = judge_inference_profile({"inferenceProfileId": "au.x", "models": []})
    assert not v.ok and v.unknown  # unknown destinations: a real run stops unless the user accepts


def test_auckland_is_allowed_only_as_an_added_destination_and_the_addition_is_described():
    nz = _profile(["ap-southeast-2", "ap-southeast-6"])
    assert "New Zealand (Auckland)" in judge_inference_profile(nz, POLICY).reason
    added = POLICY.with_destinations(["ap-southeast-6"])
    v = judge_inference_profile(nz, added)
    assert v.ok and v.destinations == ("ap-southeast-2", "ap-southeast-6") and not v.unknown
    assert added.allowed_regions == POLICY.allowed_regions  # requests are still signed for Australia only
    assert added.describe()["added_destinations"] == ["ap-southeast-6"]
    assert POLICY.describe()["outside_home"] is False and POLICY.with_destinations([]) is POLICY
    assert not judge_inference_profile(_profile(["ap-southeast-1"]), added).ok


def test_guard_refuses_inside_botocore_before_send(monkeypatch):
    import boto3

    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    client = boto3.client("bedrock-runtime", region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    sent = []
    # Registered after the guard: would run only if the guard let the request through.
    client.meta.events.register("before-send", lambda request, **_: sent.append(request.url))
    guard = ResidencyGuard(POLICY)
    guard.attach(client)
    with pytest.raises(ResidencyError) as info:
        client.converse(modelId="amazon.nova-pro-v1:0", messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert info.value.error_class is ErrorClass.RESIDENCY and sent == []
    decision = guard.take_last()
    assert decision is not None and not decision.allowed and decision.bytes_sent == 0


@pytest.mark.parametrize("value,allowed", [("1", True), ("true", True), ("YES", True), (" on ", True),
                                           ("0", False), ("", False), ("false", False), ("2", False)])
def test_the_loopback_variable_is_read_one_way(value, allowed):
    from migbench.residency import loopback_allowed_by_env

    assert loopback_allowed_by_env({"MIGBENCH_ALLOW_LOOPBACK": value}) is allowed
    assert loopback_allowed_by_env({}) is False


def test_the_guard_hands_its_decisions_to_a_recording_list():
    import boto3

    guard = ResidencyGuard(POLICY)
    client = guard.attach(boto3.client("bedrock-runtime", region_name="us-east-1", aws_access_key_id="testing",
                                       aws_secret_access_key="testing"))
    decisions = []
    with guard.recording(decisions), pytest.raises(ResidencyError):
        client.converse(modelId="amazon.nova-pro-v1:0", messages=[{"role": "user", "content": [{"text": "hi"}]}])
    [decision] = decisions
    assert not decision.allowed and decision.region == "us-east-1" and decision.bytes_sent == 0
