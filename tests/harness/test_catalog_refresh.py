"""`migbench catalog refresh` through real botocore against the emulator's control plane: a dated
catalog whose facts cite the API calls, usable by backends (-o model_catalog / MIGBENCH_MODEL_CATALOG)."""

import datetime

import pytest
from migbench.catalog_refresh import merge, refresh, write_catalog
from migbench.cli import main
from migbench.contracts import SetupError
from migbench.emulator.server import load_config, run_emulator
from migbench.iam import least_privilege_policy, policy_regions
from migbench.registry import create_backend
from migbench.residency import load_model_catalog, load_policy

TODAY = datetime.date(2026, 12, 2)


@pytest.fixture
def aws_env(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_BEDROCK",
                "AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "MIGBENCH_ALLOW_LOOPBACK", "MIGBENCH_MODEL_CATALOG"):
        monkeypatch.delenv(var, raising=False)


def emulator_without(*model_ids):
    cfg = load_config()
    for mid in model_ids:
        cfg.models().pop(mid)
    return run_emulator(cfg)


def test_refresh_confirms_listed_entries_marks_missing_ones_and_adds_usable_profiles(aws_env):
    with emulator_without("au.anthropic.claude-haiku-4-5-20251001-v1:0") as emu:
        result = refresh(regions=["ap-southeast-2"], endpoint_url=emu.url, allow_loopback=True, today=TODAY)
        ops = emu.stats.by_operation
    assert ops["ListFoundationModels"] == 1 and ops["ListInferenceProfiles"] >= 1
    assert ops["GetInferenceProfile"] >= 5 and "Converse" not in ops
    cat = result.catalog
    assert cat.refreshed.date == TODAY and cat.refreshed.regions == ["ap-southeast-2"]
    sonnet = cat.models["au-claude-sonnet-4-5"]
    assert sonnet.confirmed is True
    [api] = [f for f in sonnet.facts if f.kind == "availability"]  # the second-hand claims are replaced
    assert api.verified and api.date == TODAY and api.source.startswith("bedrock:GetInferenceProfile in ap-southeast-2")
    assert "destinations ap-southeast-2, ap-southeast-4" in api.claim
    # Verified facts that are not about availability are kept as written.
    assert any(f.claim.startswith("Claude 4.x has no on-demand base id") for f in sonnet.facts)
    haiku = cat.models["au-claude-haiku-4-5"]
    assert haiku.confirmed is False and not haiku.verified and "au-claude-haiku-4-5" in result.unconfirmed
    nova2 = cat.models["au-nova-2-lite"]  # unverified in the packaged catalog, confirmed by the API
    assert nova2.confirmed is True and nova2.verified
    assert load_model_catalog().models["au-nova-2-lite"].verified is False
    # A usable (au.) profile the catalog did not know is added, with its destinations from the API,
    # and flagged when they leave the policy.
    [added] = result.added
    assert cat.models[added].model_id == "au.migbench.nz-routed-test-v1:0"
    assert cat.models[added].destinations == ["ap-southeast-2", "ap-southeast-4", "ap-southeast-6"]
    assert added in result.outside_policy and any("ap-southeast-6" in n for n in result.notes)
    assert not any(e.model_id.startswith("apac.") for e in cat.models.values())  # refused prefixes not added


def test_the_written_catalog_loads_and_a_backend_uses_it(aws_env, tmp_path, monkeypatch):
    with run_emulator() as emu:
        result = refresh(regions=["ap-southeast-2"], endpoint_url=emu.url, allow_loopback=True, today=TODAY)
    out = write_catalog(result, tmp_path / "catalog" / "bedrock_models.yaml")
    assert out.read_text().startswith("# Model catalog refreshed 2026-12-02 from bedrock:")
    b = create_backend("au-nova-2-lite", options={"model_catalog": str(out)})
    d = b.describe()
    assert d["catalog_verified"] is True
    assert d["unverified_facts"] == ["Nova 2 bills each image at a flat token count"]  # not about availability
    assert d["model_catalog"] == {"file": str(out), "refreshed": "2026-12-02",
                                  "source": "bedrock:ListFoundationModels, ListInferenceProfiles, GetInferenceProfile"}
    monkeypatch.setenv("MIGBENCH_MODEL_CATALOG", str(out))  # the report and IAM read the same file
    assert load_model_catalog().refreshed.date == TODAY
    # A catalog_model only the refreshed file knows is accepted with it, refused without it.
    assert create_backend("nova-pro", options={"catalog_model": "au-migbench-nz-routed-test-v1-0"}).model_id \
        == "au.migbench.nz-routed-test-v1:0"
    monkeypatch.delenv("MIGBENCH_MODEL_CATALOG")
    with pytest.raises(Exception, match="not in the model catalog"):
        create_backend("nova-pro", options={"catalog_model": "au-migbench-nz-routed-test-v1-0"})


def test_the_cli_writes_into_the_results_folder_and_notes_an_unreadable_region(aws_env, tmp_path, capsys,
                                                                               monkeypatch):
    with run_emulator() as emu:  # answers for ap-southeast-2 only: Melbourne's request fails its scope
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK", emu.url)
        rc = main(["catalog", "refresh", "--results", str(tmp_path), "--allow-loopback"])
    assert rc == 0
    out = tmp_path / "catalog" / "bedrock_models.yaml"
    assert load_model_catalog(str(out)).refreshed.regions == ["ap-southeast-2"]
    captured = capsys.readouterr()
    assert "ap-southeast-4: not read: InvalidSignatureException" in captured.err
    assert f"wrote {out}" in captured.out


def test_refresh_refuses_regions_outside_the_policy_and_a_host_outside_it(aws_env):
    with pytest.raises(SetupError, match="us-east-1 is not an allowed region"):
        refresh(regions=["us-east-1"])
    with pytest.raises(SetupError, match="no region could be read"):  # the guard refuses before sending
        refresh(regions=["ap-southeast-2"], endpoint_url="https://bedrock.us-east-1.amazonaws.com")


def test_refresh_needs_credentials(monkeypatch, tmp_path):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(SetupError, match="no AWS credentials"):
        refresh(regions=["ap-southeast-2"])


def test_merge_keeps_claims_for_regions_it_could_not_read():
    from migbench.catalog_refresh import RegionView

    view = RegionView("ap-southeast-2", profiles={"au.amazon.nova-pro-v1:0": ["ap-southeast-2", "ap-southeast-4"]})
    result = merge(load_model_catalog(), [view], load_policy(), TODAY, [])
    entry = result.catalog.models["au-nova-pro"]
    assert entry.regions == ["ap-southeast-2", "ap-southeast-4"]  # Melbourne not read: its claim stays
    assert result.catalog.models["nova-pro"].confirmed is False  # not listed on demand by the one view


def test_iam_grants_the_quota_read_and_optionally_the_refresh_listings_in_au_only():
    p = least_privilege_policy(["au-nova-pro"], account="111122223333")
    quota = next(s for s in p["Statement"] if s["Sid"] == "ReadModelQuotas")
    assert quota["Action"] == ["servicequotas:ListServiceQuotas"]
    assert quota["Condition"] == {"StringEquals": {"aws:RequestedRegion": ["ap-southeast-2", "ap-southeast-4"]}}
    assert not any(s["Sid"] == "RefreshModelCatalog" for s in p["Statement"])
    p = least_privilege_policy(["au-nova-pro"], account="111122223333", catalog_refresh=True)
    sids = {s["Sid"] for s in p["Statement"]}
    assert {"RefreshModelCatalog", "ReadAllInferenceProfileDestinations"} <= sids
    assert "servicequotas:ListServiceQuotas" in p["Statement"][-1]["Action"]  # denied elsewhere
    assert policy_regions(p) == {"ap-southeast-2", "ap-southeast-4"}
