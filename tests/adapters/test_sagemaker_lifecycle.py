"""SageMaker endpoint lifecycle (adapters/sagemaker_lifecycle.py) against moto's SageMaker control plane
and S3 over real HTTP (a moto server on loopback), through the real boto3 clients and residency guard.

moto's endpoints are InService at once and its instance list predates g5, so these tests deploy on
ml.g4dn.2xlarge and script slower endpoints with a botocore hook on DescribeEndpoint's parsed answer.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.request

import boto3
import pytest
from migbench.adapters import sagemaker_lifecycle as lc
from migbench.contracts import ResidencyError, SetupError, UsageError

from tests.adapters import test_sagemaker as runtime_tests

ROLE = "arn:aws:iam::123456789012:role/migbench-sagemaker"
REGION = "ap-southeast-2"
INSTANCE = "ml.g4dn.2xlarge"  # moto validates instance types against a list without g5


# A moto server on loopback, one per module (the runtime backend's tests start theirs the same way).
moto_url = runtime_tests.moto_url


@pytest.fixture
def moto(moto_url, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST"), timeout=10).read()
    return moto_url


@pytest.fixture
def life(moto):
    lifecycle = lc.SageMakerLifecycle(region=REGION, endpoint_url=moto, s3_endpoint_url=moto, allow_loopback=True)
    yield lifecycle
    lifecycle.close()


def raw(moto, service, region=REGION):
    return boto3.client(service, region_name=region, endpoint_url=moto)


def calls(client):
    """Every operation the client sends, in order (hooked before the residency guard decides)."""
    seen: list[str] = []
    client.meta.events.register("before-call.*.*", lambda model, **_: seen.append(model.name))
    return seen


def script_status(client, statuses, failure_reason=None):
    """DescribeEndpoint answers `statuses` in turn (then the service's own), as a slow endpoint would."""
    queue = list(statuses)

    def rewrite(http_response, parsed, model, **_):
        if model.name == "DescribeEndpoint" and queue and "EndpointStatus" in parsed:
            parsed["EndpointStatus"] = queue.pop(0)
            if failure_reason:
                parsed["FailureReason"] = failure_reason

    client.meta.events.register("after-call.sagemaker.DescribeEndpoint", rewrite)


class Clock:
    def __init__(self):
        self.t = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s


def spec_for(life, **kw):
    args = {"model": "qwen2.5-vl", "instance_type": INSTANCE, "role_arn": ROLE, "region": REGION,
            "endpoint_name": "mb-test"} | kw
    return lc.plan_deploy(life.catalog, **args)


def gone(moto, name="mb-test"):
    sm = raw(moto, "sagemaker")
    model, config = lc.resource_names(name)
    return (not sm.list_endpoints(NameContains=name)["Endpoints"]
            and not sm.list_endpoint_configs(NameContains=config)["EndpointConfigs"]
            and not sm.list_models(NameContains=model)["Models"])


# ---------------------------------------------------------------- deploy


def test_deploy_creates_model_config_and_endpoint_with_the_lmi_image_env_and_tags(life, moto, tmp_path):
    lines: list[str] = []
    out = lc.deploy(life, spec_for(life), results=tmp_path, keep=True, say=lines.append, install_signals=False)
    sm = raw(moto, "sagemaker")
    model = sm.describe_model(ModelName="mb-test-model")
    cat = lc.load_deploy_catalog()
    lmi = cat.containers["lmi"]
    assert model["PrimaryContainer"]["Image"] == (f"{lmi.registries[REGION]}.dkr.ecr.{REGION}.amazonaws.com/"
                                                 f"{lmi.repository}:{lmi.tag}")
    env = model["PrimaryContainer"]["Environment"]
    assert env["OPTION_ROLLING_BATCH"] == "vllm" and env["HF_MODEL_ID"] == cat.models["qwen2.5-vl"].hf_model_id
    assert env["OPTION_MAX_MODEL_LEN"] == cat.models["qwen2.5-vl"].env["OPTION_MAX_MODEL_LEN"]
    assert model["ExecutionRoleArn"] == ROLE
    [variant] = sm.describe_endpoint_config(EndpointConfigName="mb-test-config")["ProductionVariants"]
    assert (variant["ModelName"], variant["InstanceType"], variant["InitialInstanceCount"]) == (
        "mb-test-model", INSTANCE, 1)
    ep = sm.describe_endpoint(EndpointName="mb-test")
    assert ep["EndpointStatus"] == "InService" and ep["EndpointConfigName"] == "mb-test-config"
    tags = {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=ep["EndpointArn"])["Tags"]}
    assert tags["migbench:created"] == "true" and tags["migbench:model"] == "qwen2.5-vl"
    assert tags["migbench:instance-type"] == INSTANCE
    assert out.kept and out.deployment.status == "InService" and out.deployment.cold_start_s >= 0
    assert any("is up and billed" in line and "migbench sagemaker delete --endpoint-name mb-test" in line
               for line in lines)


def test_cold_start_is_recorded_from_create_to_in_service_with_progress(life, moto, tmp_path):
    clock = Clock()
    script_status(life.sm, ["Creating", "Creating", "Creating"])
    lines: list[str] = []
    out = lc.deploy(life, spec_for(life), results=tmp_path, keep=True, say=lines.append, poll_s=30,
                    timeout_s=600, sleep=clock.sleep, clock=clock, install_signals=False)
    assert clock.sleeps == [30, 30, 30]
    assert [line for line in lines if "Creating" in line] == [
        "endpoint mb-test: Creating (0s elapsed, timeout 10m00s)",
        "endpoint mb-test: Creating (30s elapsed, timeout 10m00s)",
        "endpoint mb-test: Creating (1m00s elapsed, timeout 10m00s)"]
    assert out.deployment.cold_start_s == 90.0
    events = lc.read_records(tmp_path)
    assert [e["event"] for e in events] == ["created", "in_service"]
    assert events[1]["cold_start_s"] == 90.0 and events[1]["endpoint_name"] == "mb-test"
    assert events[0]["env"]["OPTION_ROLLING_BATCH"] == "vllm"


def test_model_data_in_a_sydney_bucket_replaces_the_hub_download(life, moto, tmp_path):
    raw(moto, "s3").create_bucket(Bucket="weights-syd", CreateBucketConfiguration={"LocationConstraint": REGION})
    spec = spec_for(life, model="internvl3", model_data="s3://weights-syd/internvl3/model.tar.gz")
    lc.deploy(life, spec, results=tmp_path, keep=True, say=lambda _: None, install_signals=False)
    container = raw(moto, "sagemaker").describe_model(ModelName="mb-test-model")["PrimaryContainer"]
    assert container["ModelDataUrl"] == "s3://weights-syd/internvl3/model.tar.gz"
    assert "HF_MODEL_ID" not in container["Environment"]
    assert container["Environment"]["OPTION_TRUST_REMOTE_CODE"] == "true"


# ---------------------------------------------------------------- the guard


def test_without_keep_the_endpoint_is_deleted_once_in_service(life, moto, tmp_path):
    out = lc.deploy(life, spec_for(life), results=tmp_path, keep=False, say=lambda _: None, install_signals=False)
    assert not out.kept and out.deployment.status == "InService"
    assert gone(moto)
    assert [e["event"] for e in lc.read_records(tmp_path)] == ["created", "in_service", "deleted"]


def test_guard_deletes_everything_when_the_command_fails(life, moto, tmp_path):
    def boom(dep):
        assert not gone(moto)  # up while the command runs
        raise RuntimeError("suite crashed")

    with pytest.raises(RuntimeError, match="suite crashed"):
        lc.deploy(life, spec_for(life), results=tmp_path, keep=False, say=lambda _: None, while_up=boom,
                  install_signals=False)
    assert gone(moto)


def test_keep_keeps_an_in_service_endpoint_even_when_the_command_fails_and_says_its_price(life, moto, tmp_path):
    lines: list[str] = []

    def boom(dep):
        raise RuntimeError("suite crashed")

    with pytest.raises(RuntimeError):
        lc.deploy(life, spec_for(life), results=tmp_path, keep=True, say=lines.append, while_up=boom,
                  install_signals=False)
    assert not gone(moto)
    assert any(line.startswith("failed with --keep: endpoint mb-test stays up and billed (1 x ml.g4dn.2xlarge")
               for line in lines)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_guard_deletes_everything_on_interrupt_and_restores_the_handlers(life, moto, tmp_path, sig):
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    lines: list[str] = []

    def interrupted(dep):
        os.kill(os.getpid(), sig)
        return 0

    with pytest.raises(KeyboardInterrupt):
        lc.deploy(life, spec_for(life), results=tmp_path, keep=False, say=lines.append, while_up=interrupted)
    assert gone(moto)
    assert any(line.startswith("interrupted: deleting endpoint mb-test") for line in lines)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_failed_create_deletes_what_was_created_before_it(life, moto, tmp_path):
    spec = spec_for(life, instance_type="ml.not-a-type")
    with pytest.raises(SetupError, match="CreateEndpointConfig: ValidationException"):
        lc.deploy(life, spec, results=tmp_path, keep=True, say=lambda _: None, install_signals=False)
    assert gone(moto)


def test_a_failed_endpoint_is_deleted_and_its_reason_said(life, moto, tmp_path):
    script_status(life.sm, ["Creating", "Failed"], failure_reason="CUDA out of memory")
    clock = Clock()
    with pytest.raises(SetupError, match="Failed after 30s: CUDA out of memory"):
        lc.deploy(life, spec_for(life), results=tmp_path, keep=True, say=lambda _: None, poll_s=30,
                  sleep=clock.sleep, clock=clock, install_signals=False)
    assert gone(moto)


def test_timeout_waiting_for_in_service_deletes_the_endpoint(life, moto, tmp_path):
    script_status(life.sm, ["Creating"] * 10)
    clock = Clock()
    with pytest.raises(SetupError, match=r"still Creating after 1m30s \(--timeout 1m30s\)"):
        lc.deploy(life, spec_for(life), results=tmp_path, keep=False, say=lambda _: None, poll_s=40,
                  timeout_s=90, sleep=clock.sleep, clock=clock, install_signals=False)
    assert clock.sleeps == [40, 40, 10]  # the last wait stops at the timeout
    assert gone(moto)
    assert lc.read_records(tmp_path)[-1]["event"] == "deleted"


# ---------------------------------------------------------------- delete and status


def test_delete_tears_down_endpoint_config_and_models_and_is_idempotent(life, moto, tmp_path):
    lc.deploy(life, spec_for(life), results=tmp_path, keep=True, say=lambda _: None, install_signals=False)
    first: list[str] = []
    assert life.delete("mb-test", say=first.append) == []
    assert first == ["endpoint mb-test: deleted", "endpoint-config mb-test-config: deleted",
                     "model mb-test-model: deleted"]
    assert gone(moto)
    again: list[str] = []
    assert life.delete("mb-test", say=again.append) == []
    assert again == ["endpoint mb-test: already gone", "endpoint-config mb-test-config: already gone",
                     "model mb-test-model: already gone"]


def test_delete_follows_the_endpoint_to_a_config_and_model_of_other_names(life, moto):
    sm = raw(moto, "sagemaker")
    sm.create_model(ModelName="hand-made", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "x"})
    sm.create_endpoint_config(EndpointConfigName="hand-cfg", ProductionVariants=[{
        "VariantName": "v", "ModelName": "hand-made", "InstanceType": INSTANCE, "InitialInstanceCount": 1}])
    sm.create_endpoint(EndpointName="hand", EndpointConfigName="hand-cfg")
    lines: list[str] = []
    assert life.delete("hand", say=lines.append) == []
    assert {"endpoint hand: deleted", "endpoint-config hand-cfg: deleted", "model hand-made: deleted"} <= set(lines)
    assert not sm.list_models()["Models"] and not sm.list_endpoints()["Endpoints"]


def test_status_lists_only_endpoints_migbench_created_with_their_price(life, moto, tmp_path):
    lc.deploy(life, spec_for(life), results=tmp_path, keep=True, say=lambda _: None, install_signals=False)
    sm = raw(moto, "sagemaker")
    sm.create_model(ModelName="other", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "x"})
    sm.create_endpoint_config(EndpointConfigName="other-cfg", ProductionVariants=[{
        "VariantName": "v", "ModelName": "other", "InstanceType": INSTANCE, "InitialInstanceCount": 1}])
    sm.create_endpoint(EndpointName="not-ours", EndpointConfigName="other-cfg")
    [row] = life.created_endpoints()
    assert (row["endpoint_name"], row["status"], row["model"], row["instance_type"]) == (
        "mb-test", "InService", "qwen2.5-vl", INSTANCE)
    assert row["per_hour"] is None and "not in pricing.yaml" in row["price"]  # g4dn is not in the catalog


def test_the_hourly_price_comes_from_the_pricing_catalog_with_its_caveats():
    from migbench.cost import load_pricing

    price = load_pricing().hourly["ml.g5.2xlarge"]
    quote = lc.hourly_quote("ml.g5.2xlarge", 2)
    assert quote.per_hour == pytest.approx(2 * price.per_hour)
    assert f"${2 * price.per_hour:.2f}/h" in quote.line() and str(price.as_of) in quote.line()
    assert ("unverified" in quote.line()) is (not price.verified)


# ---------------------------------------------------------------- residency, before any create


@pytest.mark.parametrize("override, why", [
    ({"region": "us-east-1"}, "endpoint: region 'us-east-1' is not an allowed region"),
    ({"image": "763104351884.dkr.ecr.us-west-2.amazonaws.com/djl-inference:0.36.0-lmi18.0.0-cu128"},
     "region 'us-west-2' is not an allowed region"),
    ({"image": "deepjavalibrary/djl-serving:0.36.0-lmi"}, "is not an ECR image"),
    ({"image": "457447274322.dkr.ecr.ap-southeast-4.amazonaws.com/djl-inference:0.36.0-lmi18.0.0-cu128"},
     "SageMaker pulls it in the endpoint's region ap-southeast-2"),
])
def test_an_image_or_region_outside_the_policy_is_refused_before_any_create(life, moto, tmp_path, override, why):
    seen = calls(life.sm)
    # A region is refused by the plan already; the deploy refuses it too when handed such a plan.
    spec = spec_for(life, **override) if "region" not in override else lc.DeploySpec(
        **{**spec_for(life).__dict__, **override})
    with pytest.raises(ResidencyError, match=why.replace("(", r"\(").replace(")", r"\)")):
        lc.deploy(life, spec, results=tmp_path, keep=False, say=lambda _: None, install_signals=False)
    assert seen == [] and gone(moto) and lc.read_records(tmp_path) == []


def test_model_data_in_a_bucket_outside_australia_is_refused_before_any_create(life, moto, tmp_path):
    raw(moto, "s3", "us-east-1").create_bucket(Bucket="weights-us")
    seen = calls(life.sm)
    spec = spec_for(life, model_data="s3://weights-us/m.tar.gz")
    with pytest.raises(ResidencyError, match="model data 's3://weights-us/m.tar.gz': bucket region 'us-east-1'"):
        lc.deploy(life, spec, results=tmp_path, keep=False, say=lambda _: None, install_signals=False)
    assert seen == [] and gone(moto)


def test_a_bucket_whose_region_cannot_be_read_is_refused(life, moto, tmp_path):
    seen = calls(life.sm)
    with pytest.raises(ResidencyError, match="cannot read the region of bucket 'no-such-bucket'"):
        lc.deploy(life, spec_for(life, model_data="s3://no-such-bucket/m.tar.gz"), results=tmp_path,
                  keep=False, say=lambda _: None, install_signals=False)
    assert seen == []


def test_a_loopback_control_plane_is_refused_without_allow_loopback(moto, monkeypatch):
    monkeypatch.delenv("MIGBENCH_ALLOW_LOOPBACK", raising=False)
    life = lc.SageMakerLifecycle(region=REGION, endpoint_url=moto)
    with pytest.raises(SetupError, match="loopback"):
        life.created_endpoints()


# ---------------------------------------------------------------- planning (no AWS)


def test_plan_refuses_a_region_outside_the_policy_before_looking_up_an_image():
    with pytest.raises(ResidencyError, match="endpoint: region 'eu-west-1' is not an allowed region"):
        lc.plan_deploy(lc.load_deploy_catalog(), model="qwen2.5-vl", instance_type=INSTANCE, role_arn=ROLE,
                       region="eu-west-1")


def test_plan_names_every_mistake_in_one_line():
    cat = lc.load_deploy_catalog()
    with pytest.raises(UsageError) as info:
        lc.plan_deploy(cat, model="llava", instance_type="g5.2xlarge", role_arn="my-role", region=REGION,
                       endpoint_name="bad_name", model_data="https://x/y")
    msg = str(info.value)
    for part in ("--model 'llava'", "--role 'my-role'", "--instance 'g5.2xlarge'", "--endpoint-name 'bad_name'",
                 "--model-data 'https://x/y'"):
        assert part in msg
    assert "\n" not in msg


def test_default_names_fit_sagemaker_limits_and_derive_config_and_model():
    import datetime as dt

    name = lc.default_endpoint_name("qwen2.5-vl", dt.datetime(2026, 12, 2, 23, 5, 9, tzinfo=dt.timezone.utc))
    assert name == "migbench-qwen2-5-vl-20261202-230509"
    long = "e" * 63
    assert all(len(n) <= 63 for n in lc.resource_names(long))


def test_every_catalog_region_is_allowed_and_every_model_runs_vllm():
    from migbench.residency import load_policy

    cat = lc.load_deploy_catalog()
    allowed = load_policy().allowed_regions
    for container in cat.containers.values():
        assert set(container.registries) <= set(allowed)
        for region in container.registries:
            assert lc.image_region(lc.image_uri(container, region)) == region
    for served in cat.models.values():
        assert served.env["OPTION_ROLLING_BATCH"] == "vllm" and "OPTION_MAX_MODEL_LEN" in served.env


def test_run_line_is_what_the_sagemaker_backend_takes(life):
    from migbench.adapters.sagemaker import SageMakerOptions

    spec = spec_for(life)
    tox, run = lc.run_line(spec)
    opts = dict(o.split("=", 1) for o in tox.split("--backend-option ")[1:] for o in [o.strip()])
    assert SageMakerOptions(**opts).endpoint_name == "mb-test"
    assert run.startswith("migbench run --backend sagemaker --endpoint-name mb-test ")
    assert json.dumps(opts)  # plain strings only


# ---------------------------------------------------------------- an endpoint SageMaker will not delete yet


def refuse_delete_once(client):
    """DeleteEndpoint answers 400 once, as SageMaker does for an endpoint that is still Creating."""
    from botocore.awsrequest import AWSResponse

    refused: list[str] = []

    def answer(model, **_):
        if refused:
            return None
        refused.append(model.name)
        return (AWSResponse("https://api.sagemaker", 400, {}, None),
                {"Error": {"Code": "ValidationException",
                           "Message": "Cannot delete an endpoint while it is in Creating status"},
                 "ResponseMetadata": {"HTTPStatusCode": 400}})

    client.meta.events.register("before-call.sagemaker.DeleteEndpoint", answer)
    return refused


@pytest.fixture
def slow_life(moto):
    clock = Clock()
    lifecycle = lc.SageMakerLifecycle(region=REGION, endpoint_url=moto, s3_endpoint_url=moto, allow_loopback=True,
                                      sleep=clock.sleep, clock=clock)
    yield lifecycle, clock
    lifecycle.close()


def test_an_endpoint_still_creating_is_deleted_once_sagemaker_allows_it(slow_life, moto, tmp_path):
    life, clock = slow_life
    lc.deploy(life, spec_for(life), results=tmp_path, keep=True, say=lambda _: None, install_signals=False)
    refused = refuse_delete_once(life.sm)
    script_status(life.sm, ["Creating"] * 3)  # delete's own Describe, then two polls
    lines: list[str] = []
    assert life.delete("mb-test", say=lines.append, wait_s=600) == []
    assert refused == ["DeleteEndpoint"] and clock.sleeps == [30, 30] and gone(moto)
    assert any("is Creating: SageMaker deletes it only once it is InService or Failed" in line for line in lines)


def test_without_wait_an_endpoint_not_deletable_yet_keeps_its_config_and_model(life, moto, tmp_path):
    lc.deploy(life, spec_for(life), results=tmp_path, keep=True, say=lambda _: None, install_signals=False)
    refuse_delete_once(life.sm)
    lines: list[str] = []
    left = life.delete("mb-test", say=lines.append)
    assert left == [("endpoint", "mb-test"), ("endpoint-config", "mb-test-config"), ("model", "mb-test-model")]
    assert lines[0].startswith("endpoint mb-test: NOT deleted: ValidationException")
    assert "migbench sagemaker delete --endpoint-name mb-test --region ap-southeast-2 --wait" in lines[-1]
    assert f"billed (1 x {INSTANCE}: hourly price not in pricing.yaml" in lines[-1]  # its price, as far as known
    assert life.delete("mb-test", say=lambda _: None) == [] and gone(moto)  # the rerun it suggests


def test_the_guard_waits_for_an_interrupted_creating_endpoint_then_deletes_it(slow_life, moto, tmp_path):
    life, clock = slow_life

    def interrupted(dep):
        refuse_delete_once(life.sm)
        script_status(life.sm, ["Creating"])
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        lc.deploy(life, spec_for(life), results=tmp_path, keep=False, say=lambda _: None, while_up=interrupted,
                  install_signals=False)
    assert clock.sleeps == [30] and gone(moto)
