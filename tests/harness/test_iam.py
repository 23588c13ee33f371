"""The generated IAM policy grants invoke on AU resources only and cannot reach other regions."""

import json

import pytest
from migbench.iam import least_privilege_policy, policy_regions, write_policy

AU = {"ap-southeast-2", "ap-southeast-4"}


def _resources(policy, sid):
    return next(s for s in policy["Statement"] if s["Sid"] == sid)["Resource"]


def test_base_models_get_foundation_model_arns_in_sydney_only():
    p = least_privilege_policy(["nova-pro", "nova-lite"], account="111122223333")
    fm = _resources(p, "InvokeFoundationModelsInAllowedRegions")
    assert fm == ["arn:aws:bedrock:ap-southeast-2::foundation-model/amazon.nova-pro-v1:0",
                  "arn:aws:bedrock:ap-southeast-2::foundation-model/amazon.nova-lite-v1:0"]
    actions = next(s for s in p["Statement"] if s["Effect"] == "Allow")["Action"]
    assert actions == ["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"]  # Converse = InvokeModel
    assert policy_regions(p) <= AU


def test_au_profiles_grant_profile_arns_and_destination_models_in_au_regions():
    p = least_privilege_policy(["au-claude-sonnet-4-5"], account="111122223333")
    profiles = _resources(p, "InvokeAustralianInferenceProfiles")
    assert profiles == [
        "arn:aws:bedrock:ap-southeast-2:111122223333:inference-profile/au.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "arn:aws:bedrock:ap-southeast-4:111122223333:inference-profile/au.anthropic.claude-sonnet-4-5-20250929-v1:0"]
    fm = _resources(p, "InvokeFoundationModelsInAllowedRegions")
    assert {a.split(":")[3] for a in fm} == AU
    assert all("anthropic.claude-sonnet-4-5-20250929-v1:0" in a for a in fm)
    assert _resources(p, "ReadInferenceProfileDestinations") == profiles
    assert policy_regions(p) == AU


def test_every_allow_is_conditioned_on_requested_region_and_a_deny_covers_the_rest():
    p = least_privilege_policy(["au-nova-pro", "nova-pro"], regions=["ap-southeast-2"])
    for st in p["Statement"]:
        if st["Effect"] == "Allow":
            assert st["Condition"] == {"StringEquals": {"aws:RequestedRegion": ["ap-southeast-2"]}}
    deny = p["Statement"][-1]
    assert deny["Effect"] == "Deny" and deny["Condition"]["StringNotEquals"]["aws:RequestedRegion"] == ["ap-southeast-2"]
    assert policy_regions(p) == {"ap-southeast-2"}


@pytest.mark.parametrize("models,regions", [
    (["apac.amazon.nova-pro-v1:0"], None),
    (["global.anthropic.claude-sonnet-4-5-20250929-v1:0"], None),
    (["nova-pro"], ["us-east-1"]),
    (["anthropic.claude-3-5-sonnet-20241022-v2:0"], None),
])
def test_refuses_models_or_regions_that_leave_australia(models, regions):
    with pytest.raises(ValueError):
        least_privilege_policy(models, regions)


def test_policy_regions_detects_a_policy_that_can_reach_elsewhere():
    wide = {"Statement": [{"Effect": "Allow", "Action": "bedrock:InvokeModel",
                           "Resource": "arn:aws:bedrock:*::foundation-model/*"}]}
    assert "*" in policy_regions(wide)
    us = {"Statement": [{"Effect": "Allow", "Action": "bedrock:InvokeModel",
                         "Resource": ["arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-pro-v1:0"]}]}
    assert policy_regions(us) == {"us-east-1"}
    pinned = {"Statement": [{"Effect": "Allow", "Action": "bedrock:InvokeModel", "Resource": "*",
                             "Condition": {"StringEquals": {"aws:RequestedRegion": "ap-southeast-2"}}}]}
    assert policy_regions(pinned) == {"ap-southeast-2"}


def test_write_policy_for_registry_backends_and_a_sagemaker_endpoint(tmp_path):
    out = tmp_path / "policy.json"
    doc = write_policy(["au-nova-pro", "nova-lite", "sagemaker"], out, account="111122223333",
                       sagemaker_endpoints=["Qwen25VL-Sydney"])
    assert json.loads(out.read_text()) == doc
    sm = _resources(doc, "InvokeSageMakerEndpointsInAllowedRegions")
    assert "arn:aws:sagemaker:ap-southeast-2:111122223333:endpoint/qwen25vl-sydney" in sm
    assert policy_regions(doc) == AU
