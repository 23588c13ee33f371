"""Residency that fails closed: inference-profile destinations read live (GetInferenceProfile through
real botocore against the emulator, or a Stubber for a real AWS host), NZ only when added, the
acceptance flag recorded, bda refused, and the Service Quotas tokens-per-minute hint."""

import contextlib
import logging

import pytest
from botocore.stub import Stubber
from migbench.contracts import MemoryAudit, SetupError
from migbench.datasets import load_dataset
from migbench.emulator.responders import ScriptedResponder
from migbench.emulator.server import load_config, run_emulator
from migbench.fixtures import default_dataset
from migbench.registry import create_backend, entry
from migbench.retry import RetryPolicy
from migbench.runner import Runner, RunOptions
from migbench.store import RunStore

NZ_PROFILE = "au.migbench.nz-routed-test-v1:0"  # emulator.yaml: destinations include ap-southeast-6
ANSWER = "SUPPLIER_NAME: ACME PTY LTD\nTOTAL_AMOUNT: $12.50"
RUNTIME_OPS = {"Converse", "InvokeModel"}


@pytest.fixture
def aws_env(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
                "AWS_ENDPOINT_URL_BEDROCK", "AWS_ENDPOINT_URL_SERVICE_QUOTAS", "MIGBENCH_ALLOW_LOOPBACK",
                "MIGBENCH_MODEL_CATALOG"):
        monkeypatch.delenv(var, raising=False)


def start(config=None):
    return run_emulator(config, responder=ScriptedResponder([ANSWER]))


@pytest.fixture
def emu(aws_env, monkeypatch):
    """The emulator answering both planes, reached the documented way (AWS_ENDPOINT_URL_*)."""
    with start() as e:
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK", e.url)
        monkeypatch.setenv("AWS_ENDPOINT_URL_SERVICE_QUOTAS", e.url)
        yield e


def backend(name="au-nova-lite", model=None, **options):
    return create_backend(name, model=model, options=options)


def local(emu, name="au-nova-lite", model=None, **options):
    return backend(name, model, endpoint_url=emu.url, allow_loopback=True, preflight_profile="always", **options)


def run_two_documents(b, tmp_path):
    store = RunStore(tmp_path / "results")
    runner = Runner(b, load_dataset(default_dataset()), store, RunOptions(limit=2, retry=RetryPolicy(base_s=0.001)))
    try:
        summary = runner.run()
    except SetupError as exc:
        [run] = store.runs()
        return store, run, exc
    return store, store.run(summary.run_id), None


# ---------------------------------------------------------------- destinations read live


def test_a_profile_routing_to_auckland_is_refused_before_any_document(emu, tmp_path):
    store, run, err = run_two_documents(local(emu, model=NZ_PROFILE), tmp_path)
    assert err is not None and "ap-southeast-6 (New Zealand (Auckland))" in str(err)
    assert "refused before any document" in str(err) and "\n" not in str(err)
    assert RUNTIME_OPS.isdisjoint(emu.stats.by_operation)  # nothing reached the model
    audit = store.audit(run.run_id)
    assert [a["operation"] for a in audit if a["service"] == "bedrock"] == ["GetInferenceProfile"]
    assert not [a for a in audit if a["service"] == "bedrock-runtime"]
    # The run records what was read and why it stopped.
    assert run.describe["profile_destinations"] == ["ap-southeast-2", "ap-southeast-4", "ap-southeast-6"]
    assert run.describe["profile_check"].startswith("refused: profile 'au.migbench.nz-routed-test-v1:0' routes")
    assert run.describe["residency"]["added_destinations"] == []


def test_with_auckland_added_the_profile_runs_and_the_run_records_it(emu, tmp_path):
    b = local(emu, model=NZ_PROFILE, allow_destinations="ap-southeast-6")
    _, run, err = run_two_documents(b, tmp_path)
    assert err is None
    assert emu.stats.by_operation["Converse"] == 2
    d = run.describe
    assert d["profile_destinations"] == ["ap-southeast-2", "ap-southeast-4", "ap-southeast-6"]
    assert d["profile_check"] == "verified: destinations ap-southeast-2, ap-southeast-4, ap-southeast-6"
    assert d["residency"]["added_destinations"] == ["ap-southeast-6"]
    assert d["residency"]["added_destination_names"] == ["New Zealand (Auckland)"]
    assert d["residency"]["outside_home"] is True
    assert d["profile_unverified_accepted"] is False


def test_an_australian_profile_verifies_and_records_no_addition(emu):
    b = local(emu)
    b.preflight()
    d = b.describe()
    assert d["profile_check"] == "verified: destinations ap-southeast-2, ap-southeast-4"
    assert d["residency"] == {"allowed_regions": ["ap-southeast-2", "ap-southeast-4"],
                              "allowed_destinations": ["ap-southeast-2", "ap-southeast-4"],
                              "added_destinations": [], "added_destination_names": [], "outside_home": False,
                              "policy_file": None}


def test_a_policy_file_of_the_users_own_is_used_and_named(emu, tmp_path):
    import yaml
    from migbench.catalog import data_path

    policy = yaml.safe_load(data_path("residency.yaml").read_text())
    policy["allowed_destinations"].append("ap-southeast-6")
    path = tmp_path / "residency.yaml"
    path.write_text(yaml.safe_dump(policy))
    b = local(emu, model=NZ_PROFILE, residency_file=str(path))
    b.preflight()
    assert b.describe()["residency"]["policy_file"] == str(path)
    assert b.describe()["residency"]["added_destinations"] == ["ap-southeast-6"]


# ---------------------------------------------------------------- a check that fails


@contextlib.contextmanager
def denying_emulator(monkeypatch, *ops):
    """An emulator whose control plane answers AccessDeniedException to `ops` (a role without them)."""
    cfg = load_config()
    cfg.control.deny = list(ops)
    with start(cfg) as e:
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK", e.url)
        monkeypatch.setenv("AWS_ENDPOINT_URL_SERVICE_QUOTAS", e.url)
        yield e


def test_access_denied_stops_the_run_unless_accepted_and_acceptance_is_recorded(aws_env, monkeypatch, tmp_path):
    with denying_emulator(monkeypatch, "GetInferenceProfile") as emu:
        store, run, err = run_two_documents(local(emu), tmp_path / "refused")
        assert err is not None and "AccessDeniedException" in str(err)
        assert "accept_unverified_profile=true" in str(err)
        assert RUNTIME_OPS.isdisjoint(emu.stats.by_operation)
        refused = store.audit(run.run_id)
        assert [(a["operation"], a["status"]) for a in refused] == [("GetInferenceProfile", 403)]
        assert run.describe["profile_check"].startswith("refused: destinations could not be read: AccessDenied")

        store, run, err = run_two_documents(local(emu, accept_unverified_profile=True), tmp_path / "accepted")
        assert err is None and emu.stats.by_operation["Converse"] == 2
        assert run.describe["profile_unverified_accepted"] is True
        assert run.describe["profile_check"].startswith("UNVERIFIED, accepted by the user")
        assert run.describe["profile_destinations"] is None


def real_backend(**options):
    """A backend aimed at the real Sydney endpoints (no network is used: the control client is stubbed)."""
    return backend("au-nova-pro", **options)


def stub_control(b, monkeypatch, add):
    """Give the preflight a stubbed bedrock client (botocore Stubber: no request leaves)."""
    from migbench.adapters import aws_common as aws

    real_make = aws.make_client
    stubs = []

    def make(service, **kw):
        client = real_make(service, **kw)
        if service == "bedrock":
            stub = Stubber(client)
            add(stub)
            stub.activate()
            stubs.append(stub)
        return client

    monkeypatch.setattr(aws, "make_client", make)
    return stubs


def no_sends(client):
    """Fail if the runtime client ever prepares a request for the wire."""
    sent = []
    client.meta.events.register("before-send", lambda request, **_: sent.append(request.url))
    return sent


@pytest.mark.parametrize("code,status", [("AccessDeniedException", 403), ("ThrottlingException", 429)])
def test_a_failing_check_refuses_a_real_run(aws_env, monkeypatch, code, status):
    b = real_backend(quota_check="never")
    b.attach_audit(audit := MemoryAudit())
    stubs = stub_control(b, monkeypatch, lambda s: s.add_client_error(
        "get_inference_profile", service_error_code=code, http_status_code=status))
    sent = no_sends(b._get_client())
    with pytest.raises(SetupError, match=f"destinations could not be read: {code}"):
        b.preflight()
    stubs[0].assert_no_pending_responses()
    assert sent == []  # no document request was ever prepared
    assert [(e.operation, e.service) for e in audit.entries] == [("GetInferenceProfile", "bedrock")]


def test_an_unreachable_control_plane_refuses_a_real_run(aws_env):
    import socket

    with socket.socket() as s:  # a port nothing listens on: connection refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    b = real_backend(control_endpoint_url=f"http://127.0.0.1:{port}", allow_loopback=True, quota_check="never")
    sent = no_sends(b._get_client())
    with pytest.raises(SetupError, match="destinations could not be read"):
        b.preflight()
    assert sent == []


def test_never_on_a_real_run_needs_the_acceptance_flag(aws_env, caplog):
    with pytest.raises(SetupError, match=r"not checked \(preflight_profile=never\)"):
        real_backend(preflight_profile="never", quota_check="never").preflight()
    b = real_backend(preflight_profile="never", quota_check="never", accept_unverified_profile=True)
    with caplog.at_level(logging.WARNING, logger="migbench.bedrock"):
        b.preflight()
    assert b.describe()["profile_unverified_accepted"] is True
    assert "accept_unverified_profile=true" in caplog.text


def test_a_real_profile_listing_auckland_is_refused_even_when_accepted(aws_env, monkeypatch):
    arns = [{"modelArn": f"arn:aws:bedrock:{r}::foundation-model/amazon.nova-pro-v1:0"}
            for r in ("ap-southeast-2", "ap-southeast-6")]
    stub_control(None, monkeypatch, lambda s: s.add_response(
        "get_inference_profile", {"inferenceProfileName": "AU Nova Pro", "inferenceProfileArn":
                                  "arn:aws:bedrock:ap-southeast-2:123456789012:inference-profile/au.amazon.nova-pro-v1:0",
                                  "models": arns, "inferenceProfileId": "au.amazon.nova-pro-v1:0",
                                  "status": "ACTIVE", "type": "SYSTEM_DEFINED"}))
    b = real_backend(accept_unverified_profile=True, quota_check="never")
    with pytest.raises(SetupError, match="routes to ap-southeast-6"):
        b.preflight()


def test_the_loopback_default_skips_the_check_and_says_so(emu):
    b = backend("au-nova-pro", endpoint_url=emu.url, allow_loopback=True)
    b.preflight()
    assert b.describe()["profile_check"] == "not checked: endpoint is loopback (emulator)"
    assert "GetInferenceProfile" not in emu.stats.by_operation


# ---------------------------------------------------------------- bda


def test_bda_is_a_known_name_refused_with_the_reason():
    with pytest.raises(SetupError) as info:
        entry("bda")
    text = str(info.value)
    assert "apac.data-automation-v1" in text and "Tokyo" in text and "bda-cris.html" in text
    assert "unknown backend" not in text


# ---------------------------------------------------------------- Service Quotas


def test_the_quota_is_read_at_preflight_and_paces_a_run_without_tpm(emu, tmp_path):
    b = local(emu)
    store, run, err = run_two_documents(b, tmp_path)
    assert err is None
    assert b.quota_hint() == 2_000_000.0  # emulator.yaml quota.tokens_per_minute
    assert run.describe["quota_tpm"] == 2_000_000.0
    assert run.describe["quota_note"].startswith("Cross-Region InvokeModel tokens per minute for Amazon Nova Lite")
    assert emu.stats.by_operation["ListServiceQuotas"] >= 1
    audit = store.audit(run.run_id)
    assert [a["operation"] for a in audit if a["service"] == "service-quotas"] == ["ListServiceQuotas"]


def test_the_runner_uses_the_hint_only_without_a_user_tpm():
    from tests.conftest import ScriptedBackend

    class Hinted(ScriptedBackend):
        def quota_hint(self):
            return 123_456.0

    ds = load_dataset(default_dataset())
    runner = Runner(Hinted({}), ds, None, RunOptions())  # type: ignore[arg-type]  # no store: nothing runs
    runner._apply_quota_hint()
    assert runner.limiter is not None and runner.limiter.tpm == 123_456.0
    runner = Runner(Hinted({}), ds, None, RunOptions(tokens_per_min=1000.0))  # type: ignore[arg-type]
    runner._apply_quota_hint()
    assert runner.limiter.tpm == 1000.0


def test_a_quota_read_failure_is_a_note_never_a_failure(aws_env, monkeypatch, caplog):
    with denying_emulator(monkeypatch, "ListServiceQuotas") as emu:
        b = local(emu)
        with caplog.at_level(logging.INFO, logger="migbench.aws"):
            b.preflight()
        assert b.quota_hint() is None
        assert b.describe()["quota_note"].startswith("not read: AccessDeniedException")
        assert "Service Quotas" in caplog.text


def test_a_dry_run_never_asks_aws_for_its_quota(aws_env, monkeypatch):
    with start() as emu:  # runtime on loopback, Service Quotas left at its AWS default
        b = backend("nova-pro", endpoint_url=emu.url, allow_loopback=True)
        sent = []
        from migbench.adapters import aws_common as aws

        real_make = aws.make_client

        def make(service, **kw):
            client = real_make(service, **kw)
            client.meta.events.register("before-send", lambda request, **_: sent.append(request.url))
            return client

        monkeypatch.setattr(aws, "make_client", make)
        b.preflight()
        assert sent == [] and b.quota_hint() is None
        assert "differ" in b.describe()["quota_note"]
