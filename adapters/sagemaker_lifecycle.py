"""SageMaker endpoint lifecycle: deploy a model on an LMI (vLLM) container, wait for InService, tear it down.

`migbench sagemaker deploy|delete|status` (migbench.cli_sagemaker) drive this module; the endpoint it
leaves up is the one the `sagemaker` backend (adapters/sagemaker.py) runs the suites against.

Order of a deploy, so nothing is created that residency or a typo would refuse:
  1. plan (pure): the image URI from the container catalog (harness/data/sagemaker_deploy.yaml) for
     the region, the model's LMI environment, names and tags;
  2. residency: the endpoint's region, the image's ECR region (from its host) and the model data
     bucket's region (GetBucketLocation) must be allowed by the policy and be the endpoint's region
     (SageMaker reads image and model data in its own region); anything unknown is refused;
  3. CreateModel, CreateEndpointConfig, CreateEndpoint, each recorded in the TeardownGuard as soon
     as it exists, then DescribeEndpoint until InService, Failed or the timeout;
  4. the cold start (CreateEndpoint to InService, as observed here and as the service's own
     CreationTime/LastModifiedTime say) is appended to <results>/sagemaker/deployments.jsonl.

The guard deletes whatever was created on an exception, SIGINT or SIGTERM, and on a normal exit;
`keep` keeps an endpoint once it is InService. What it cannot delete is printed with its hourly price
and the command that deletes it.

Why boto3's sagemaker client and not the `sagemaker` SDK: measured here on 2026-12-02 (pip into a fresh
Python 3.11 venv from the package index), `sagemaker` 3.27.0 took 3 min 7 s and 1.0 GB for 136 packages
(mlflow, pyarrow, pyiceberg, fastapi, databricks-sdk, ...), and its resource layer `sagemaker-core`
2.27.0 alone 52 s and 448 MB for 53 packages: too heavy for an optional extra and CI's budget, for
three Create/Delete pairs and a Describe. sagemaker-core also builds its own boto3 clients and
waits on its own clock, so the residency guard could not sit on every request and a test could not
drive the wait. boto3 is already the extra's dependency and is exactly what runs with credentials.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from migbench.adapters import aws_common as aws
from migbench.catalog import load_model, load_packaged
from migbench.contracts import ResidencyError, SetupError, UsageError
from migbench.cost import HourlyPrice, load_pricing
from migbench.residency import (
    ResidencyGuard,
    ResidencyPolicy,
    check_config,
    check_region,
    load_policy,
    loopback_allowed_by_env,
)
from pydantic import BaseModel, Field, StrictBool

CREATED_TAG = "migbench:created"
ENDPOINT_TAG = "migbench:endpoint"
MODEL_TAG = "migbench:model"
INSTANCE_TAG = "migbench:instance-type"
RECORDS = Path("sagemaker") / "deployments.jsonl"
# States in which SageMaker refuses DeleteEndpoint until the endpoint settles.
BUSY = ("Creating", "Updating", "SystemUpdating", "RollingBack")
# SageMaker resource names: 63 characters, alphanumerics and single hyphens.
_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_ECR_HOST = re.compile(r"^(\d{12})\.dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com/")
_ROLE = re.compile(r"^arn:aws:iam::\d{12}:role/[\w+=,.@/-]+$")
_S3_URI = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(/.*)?$")


# ---------------------------------------------------------------- catalog


class Container(BaseModel):
    description: str
    repository: str
    tag: str
    registries: dict[str, str] = Field(min_length=1)  # region -> ECR account
    source: str = Field(min_length=1)
    as_of: _dt.date
    verified: StrictBool


class ServedModel(BaseModel):
    hf_model_id: str
    prompt_family: str
    payload: str = "openai_chat"
    env: dict[str, str] = {}


class WaitSettings(BaseModel):
    timeout_s: float = Field(gt=0)
    poll_s: float = Field(gt=0)


class DeployCatalog(BaseModel):
    default_container: str
    containers: dict[str, Container] = Field(min_length=1)
    models: dict[str, ServedModel] = Field(min_length=1)
    wait: WaitSettings
    container_startup_health_check_timeout_s: int = Field(gt=0)
    model_data_download_timeout_s: int = Field(gt=0)
    tags: dict[str, str]


def load_deploy_catalog(path: str | None = None) -> DeployCatalog:
    return load_model(DeployCatalog, path) if path else load_packaged(DeployCatalog, "sagemaker_deploy.yaml")


# ---------------------------------------------------------------- pure planning


def image_uri(container: Container, region: str) -> str:
    account = container.registries.get(region)
    if account is None:
        raise SetupError(f"the {container.repository} container has no registry for {region} in "
                         f"sagemaker_deploy.yaml (listed: {', '.join(container.registries)}); pass --image")
    return f"{account}.dkr.ecr.{region}.amazonaws.com/{container.repository}:{container.tag}"


def image_region(uri: str) -> str | None:
    """The region of an ECR image URI; None for anything else (Docker Hub, another registry)."""
    m = _ECR_HOST.match(uri)
    return m.group(2) if m else None


def s3_bucket(uri: str) -> str:
    m = _S3_URI.match(uri)
    if not m:
        raise UsageError(f"--model-data {uri!r}: expected s3://BUCKET/KEY")
    return m.group(1)


def resource_names(endpoint_name: str) -> tuple[str, str]:
    """(model name, endpoint config name) of an endpoint: derived, so `delete` finds them even when
    the endpoint itself is already gone."""
    stem = endpoint_name[:56]
    return f"{stem}-model", f"{stem}-config"


def default_endpoint_name(model: str, now: _dt.datetime | None = None) -> str:
    stamp = (now or _dt.datetime.now(_dt.timezone.utc)).strftime("%Y%m%d-%H%M%S")
    slug = re.sub(r"[^a-zA-Z0-9]+", "-", model).strip("-")
    return f"migbench-{slug}-{stamp}"[:63].rstrip("-")


@dataclass
class DeploySpec:
    model: str  # key in the catalog's models
    instance_type: str
    role_arn: str
    region: str
    endpoint_name: str
    image: str
    env: dict[str, str]
    model_data: str | None = None
    instance_count: int = 1
    tags: dict[str, str] = field(default_factory=dict)
    prompt_family: str = "default"
    payload: str = "openai_chat"

    @property
    def model_name(self) -> str:
        return resource_names(self.endpoint_name)[0]

    @property
    def config_name(self) -> str:
        return resource_names(self.endpoint_name)[1]


def plan_deploy(catalog: DeployCatalog, *, model: str, instance_type: str, role_arn: str, region: str,
                endpoint_name: str | None = None, image: str | None = None, model_data: str | None = None,
                env: dict[str, str] | None = None, instance_count: int = 1,
                policy: ResidencyPolicy | None = None) -> DeploySpec:
    """Everything a deploy will create, checked for the user's mistakes; no AWS call. A region the
    policy refuses is refused first: no image is looked up for it."""
    if (why := check_region(region, policy or load_policy())) is not None:
        raise ResidencyError(f"residency: refused before creating anything: endpoint: {why}")
    problems = []
    served = catalog.models.get(model)
    if served is None:
        problems.append(f"--model {model!r}: not in sagemaker_deploy.yaml (known: {', '.join(catalog.models)})")
    if not _ROLE.match(role_arn or ""):
        problems.append(f"--role {role_arn!r}: expected an IAM role ARN, arn:aws:iam::ACCOUNT:role/NAME")
    if not instance_type.startswith("ml."):
        problems.append(f"--instance {instance_type!r}: SageMaker instance types start with 'ml.'")
    if instance_count < 1:
        problems.append(f"--instance-count {instance_count}: at least 1")
    name = endpoint_name or default_endpoint_name(model)
    if not _NAME.match(name):
        problems.append(f"--endpoint-name {name!r}: up to 63 letters, digits and single hyphens")
    if model_data is not None:
        try:
            s3_bucket(model_data)
        except UsageError as exc:
            problems.append(str(exc))
    if problems:
        raise UsageError("; ".join(problems))
    assert served is not None
    uri = image or image_uri(catalog.containers[catalog.default_container], region)
    full_env = dict(served.env)
    if model_data is None:
        full_env["HF_MODEL_ID"] = served.hf_model_id
    full_env.update(env or {})
    tags = {**catalog.tags, CREATED_TAG: "true", ENDPOINT_TAG: name, MODEL_TAG: model, INSTANCE_TAG: instance_type}
    return DeploySpec(model=model, instance_type=instance_type, role_arn=role_arn, region=region,
                      endpoint_name=name, image=uri, env=full_env, model_data=model_data,
                      instance_count=instance_count, tags=tags, prompt_family=served.prompt_family,
                      payload=served.payload)


def residency_problems(spec: DeploySpec, policy: ResidencyPolicy, bucket_region: str | None) -> list[str]:
    """Why the deploy would put the model, its image or its data outside the allowed regions.
    `bucket_region` is the model data bucket's region as S3 reported it (None: no model data)."""
    problems = []
    if (why := check_region(spec.region, policy)) is not None:
        problems.append(f"endpoint: {why}")
    img = image_region(spec.image)
    if img is None:
        problems.append(f"image {spec.image!r} is not an ECR image (ACCOUNT.dkr.ecr.REGION.amazonaws.com/...): "
                        "its region cannot be judged")
    elif (why := check_region(img, policy)) is not None:
        problems.append(f"image {spec.image!r}: {why}")
    elif img != spec.region:
        problems.append(f"image {spec.image!r} is in {img}; SageMaker pulls it in the endpoint's region {spec.region}")
    if spec.model_data is not None:
        if (why := check_region(bucket_region, policy)) is not None:
            problems.append(f"model data {spec.model_data!r}: bucket {why}")
        elif bucket_region != spec.region:
            problems.append(f"model data {spec.model_data!r} is in {bucket_region}; SageMaker reads it in "
                            f"the endpoint's region {spec.region}")
    return problems


# ---------------------------------------------------------------- prices


@dataclass(frozen=True)
class HourlyQuote:
    instance_type: str
    count: int
    price: HourlyPrice | None

    @property
    def per_hour(self) -> float | None:
        return self.price.per_hour * self.count if self.price and self.price.per_hour is not None else None

    def line(self) -> str:
        if self.per_hour is None:
            return (f"{self.count} x {self.instance_type}: hourly price not in pricing.yaml (not priced; "
                    "it is billed per instance-hour while the endpoint exists)")
        p = self.price
        assert p is not None
        caveat = "" if p.verified else ", unverified"
        return (f"{self.count} x {self.instance_type} = ${self.per_hour:.2f}/h ({p.region} price as of "
                f"{p.as_of}{caveat}; billed while the endpoint exists, idle or not)")


def hourly_quote(instance_type: str, count: int = 1) -> HourlyQuote:
    return HourlyQuote(instance_type, count, load_pricing().hourly.get(instance_type))


# ---------------------------------------------------------------- records


def append_record(results: str | Path, record: dict[str, Any]) -> Path:
    """One JSON line per lifecycle event under <results>/sagemaker/deployments.jsonl: beside the run
    store, not in it, because a deployment is not a run (several runs, or none, use one endpoint)."""
    path = Path(results) / RECORDS
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True, default=str) + "\n")
    return path


def read_records(results: str | Path) -> list[dict[str, Any]]:
    path = Path(results) / RECORDS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ---------------------------------------------------------------- the guard


class TeardownGuard:
    """Deletes what a deploy created: on an exception, on SIGINT/SIGTERM (both become KeyboardInterrupt
    so one path handles them) and on a normal exit. `keep` keeps an endpoint that reached InService
    (`in_service`), whatever happens after; one that never did is deleted anyway, being of no use.
    While it deletes, a second Ctrl-C is ignored: stopping half way would leave a paid endpoint up."""

    def __init__(self, lifecycle: SageMakerLifecycle, endpoint_name: str, *, keep: bool,
                 say: Callable[[str], None], install_signals: bool = True, price_line: str = ""):
        self.lifecycle = lifecycle
        self.price_line = price_line
        self.in_service = False
        self.endpoint_name = endpoint_name
        self.keep = keep
        self.say = say
        self.install_signals = install_signals
        self.created: list[tuple[str, str]] = []  # (kind, name) in creation order
        self.torn_down = False
        self._saved: dict[int, Any] = {}

    def add(self, kind: str, name: str) -> None:
        self.created.append((kind, name))

    def _on_signal(self, signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    def __enter__(self) -> TeardownGuard:  # noqa: PYI034 (no typing_extensions import for 3.10)
        if self.install_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._saved[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, _tb: object) -> None:
        try:
            if not self.created:
                return
            why = "interrupted" if isinstance(exc, KeyboardInterrupt) else ("failed" if exc else "done")
            if self.keep and (exc is None or self.in_service):
                if exc is not None:
                    self.say(f"{why} with --keep: endpoint {self.endpoint_name} stays up and billed "
                             f"({self.price_line}); `migbench sagemaker delete --endpoint-name {self.endpoint_name} "
                             f"--region {self.lifecycle.region}` removes it")
                return
            if self.keep:
                self.say(f"{why} before InService: deleting what was created despite --keep")
            self.say(f"{why}: deleting endpoint {self.endpoint_name} and its config and model")
            if self._saved:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                left = self.lifecycle.delete_created(self.created, say=self.say,
                                                     wait_s=self.lifecycle.catalog.wait.timeout_s)
            except KeyboardInterrupt:  # SIGTERM while waiting for SageMaker to allow the delete
                self.say(f"stopped before the endpoint was deleted: run `migbench sagemaker delete --endpoint-name "
                         f"{self.endpoint_name} --region {self.lifecycle.region} --wait`")
                raise
            self.torn_down = not left
        finally:
            for sig, handler in self._saved.items():
                signal.signal(sig, handler)
            self._saved.clear()


# ---------------------------------------------------------------- control plane


@dataclass
class Deployment:
    endpoint_name: str
    model: str
    instance_type: str
    instance_count: int
    region: str
    image: str
    status: str
    cold_start_s: float | None  # CreateEndpoint sent -> InService seen here (within one poll interval)
    service_cold_start_s: float | None  # the endpoint's own LastModifiedTime - CreationTime
    endpoint_arn: str | None = None
    failure_reason: str | None = None


class SageMakerLifecycle:
    """The SageMaker control plane (and S3's GetBucketLocation) behind the residency guard."""

    def __init__(self, *, region: str, endpoint_url: str | None = None, s3_endpoint_url: str | None = None,
                 allow_loopback: bool = False, profile: str | None = None, policy: ResidencyPolicy | None = None,
                 catalog: DeployCatalog | None = None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.region = region
        self.sleep, self.clock = sleep, clock  # the waits' clock, replaceable so a test needs no real minutes
        self.policy = policy or load_policy()
        self.allow_loopback = allow_loopback or loopback_allowed_by_env()
        self.catalog = catalog or load_deploy_catalog()
        self._session = aws.make_session(profile)
        self.guard = ResidencyGuard(self.policy, allow_loopback=self.allow_loopback)
        self._endpoint_url = endpoint_url
        self._s3_endpoint_url = s3_endpoint_url
        self._sm: Any = None
        self._s3: Any = None

    # clients -------------------------------------------------------------

    def _client(self, service: str, endpoint_url: str | None) -> Any:
        client = aws.make_client(service, region=self.region, endpoint_url=endpoint_url, read_timeout=60.0,
                                 session=self._session)
        check_config(self.region, client.meta.endpoint_url, None, service=service, policy=self.policy,
                     allow_loopback=self.allow_loopback)
        return self.guard.attach(client)

    @property
    def sm(self) -> Any:
        if self._sm is None:
            aws.require_credentials(self._session, "migbench sagemaker")
            self._sm = self._client("sagemaker", self._endpoint_url)
        return self._sm

    @property
    def s3(self) -> Any:
        if self._s3 is None:
            aws.require_credentials(self._session, "migbench sagemaker")
            self._s3 = self._client("s3", self._s3_endpoint_url)
        return self._s3

    def close(self) -> None:
        for c in (self._sm, self._s3):
            if c is not None:
                c.close()
        self._sm = self._s3 = None

    # residency -----------------------------------------------------------

    def bucket_region(self, bucket: str) -> str:
        try:
            resp = self.s3.get_bucket_location(Bucket=bucket)
        except ResidencyError:
            raise
        except Exception as exc:  # noqa: BLE001 - unknown is refused (fail closed), in one line
            raise ResidencyError(f"residency: cannot read the region of bucket {bucket!r} "
                                 f"({aws.error_line(exc)}); nothing created") from None
        # S3 answers no LocationConstraint for us-east-1 and "EU" for the oldest eu-west-1 buckets.
        loc = resp.get("LocationConstraint")
        return {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(loc, loc)

    def check_residency(self, spec: DeploySpec) -> None:
        """Refuse before any create call: region, image region, model data bucket region."""
        if (why := check_region(spec.region, self.policy)) is not None:  # before any client exists
            raise ResidencyError(f"residency: refused before creating anything: endpoint: {why}")
        bucket_region = self.bucket_region(s3_bucket(spec.model_data)) if spec.model_data else None
        problems = residency_problems(spec, self.policy, bucket_region)
        if problems:
            raise ResidencyError("residency: refused before creating anything: " + "; ".join(problems),
                                 reasons=problems)

    # deploy --------------------------------------------------------------

    def _create(self, operation: str, **kwargs: Any) -> Any:
        """One Create call; a refusal by the service is a SetupError in one line (the guard then
        deletes what the earlier calls created)."""
        try:
            return getattr(self.sm, operation)(**kwargs)
        except ResidencyError:
            raise
        except Exception as exc:  # noqa: BLE001 - any service or connection error, said in one line
            name = "".join(w.title() for w in operation.split("_"))
            raise SetupError(f"{name}: {aws.error_line(exc)}") from None

    def _tags(self, spec: DeploySpec) -> list[dict[str, str]]:
        return [{"Key": k, "Value": v} for k, v in spec.tags.items()]

    def create(self, spec: DeploySpec, guard: TeardownGuard, clock: Callable[[], float] = time.monotonic) -> float:
        """CreateModel, CreateEndpointConfig, CreateEndpoint, each registered with the guard first.
        Returns the monotonic time CreateEndpoint was sent (the cold start's start)."""
        container: dict[str, Any] = {"Image": spec.image, "Environment": dict(spec.env)}
        if spec.model_data:
            container["ModelDataUrl"] = spec.model_data
        # Each resource is in the guard BEFORE its create call: a signal between the call's return
        # and the next line must not leave it behind (deleting one never made says "already gone").
        guard.add("model", spec.model_name)
        self._create("create_model", ModelName=spec.model_name, ExecutionRoleArn=spec.role_arn,
                     PrimaryContainer=container, Tags=self._tags(spec))
        variant = {"VariantName": "AllTraffic", "ModelName": spec.model_name, "InstanceType": spec.instance_type,
                   "InitialInstanceCount": spec.instance_count,
                   "ContainerStartupHealthCheckTimeoutInSeconds":
                       self.catalog.container_startup_health_check_timeout_s,
                   "ModelDataDownloadTimeoutInSeconds": self.catalog.model_data_download_timeout_s}
        guard.add("endpoint-config", spec.config_name)
        self._create("create_endpoint_config", EndpointConfigName=spec.config_name, Tags=self._tags(spec),
                     ProductionVariants=[variant])
        guard.add("endpoint", spec.endpoint_name)
        started = clock()
        self._create("create_endpoint", EndpointName=spec.endpoint_name, EndpointConfigName=spec.config_name,
                     Tags=self._tags(spec))
        return started

    def wait_in_service(self, spec: DeploySpec, started: float, *, timeout_s: float, poll_s: float,
                        say: Callable[[str], None], sleep: Callable[[float], None] = time.sleep,
                        clock: Callable[[], float] = time.monotonic) -> Deployment:
        """DescribeEndpoint until InService; a Failed endpoint or the timeout is a SetupError (the
        guard then deletes it). A throttled or transient Describe is just another poll."""
        last = None
        while True:
            try:
                desc = self.sm.describe_endpoint(EndpointName=spec.endpoint_name)
            except ResidencyError:
                raise
            except Exception as exc:  # noqa: BLE001 - classified: only a passing failure is polled through
                if aws.classify_aws_error(exc).value not in ("throttling", "transient", "timeout"):
                    raise SetupError(f"DescribeEndpoint {spec.endpoint_name}: {aws.error_line(exc)}") from None
                desc = {"EndpointStatus": last or "Creating"}
            status = str(desc.get("EndpointStatus"))
            elapsed = clock() - started
            if status == "InService":
                service = None
                created, modified = desc.get("CreationTime"), desc.get("LastModifiedTime")
                if isinstance(created, _dt.datetime) and isinstance(modified, _dt.datetime):
                    service = max(0.0, (modified - created).total_seconds())
                say(f"endpoint {spec.endpoint_name}: InService after {_fmt_s(elapsed)}")
                return Deployment(spec.endpoint_name, spec.model, spec.instance_type, spec.instance_count,
                                  spec.region, spec.image, status, round(elapsed, 3),
                                  round(service, 3) if service is not None else None, desc.get("EndpointArn"))
            if status in ("Failed", "OutOfService", "Deleting"):
                raise SetupError(f"endpoint {spec.endpoint_name} is {status} after {_fmt_s(elapsed)}: "
                                 f"{desc.get('FailureReason') or 'no reason given'} (CloudWatch log group "
                                 f"/aws/sagemaker/Endpoints/{spec.endpoint_name})")
            if elapsed >= timeout_s:
                raise SetupError(f"endpoint {spec.endpoint_name} still {status} after {_fmt_s(elapsed)} "
                                 f"(--timeout {_fmt_s(timeout_s)})")
            say(f"endpoint {spec.endpoint_name}: {status} ({_fmt_s(elapsed)} elapsed, "
                f"timeout {_fmt_s(timeout_s)})")
            last = status
            sleep(min(poll_s, max(0.0, timeout_s - elapsed)) or poll_s)

    # delete --------------------------------------------------------------

    def _delete_one(self, kind: str, name: str, say: Callable[[str], None]) -> bool:
        """True when it is gone (deleted now, or not there). Errors other than 'not found' are said
        and leave it for the caller to report."""
        op = {"endpoint": ("delete_endpoint", "EndpointName"),
              "endpoint-config": ("delete_endpoint_config", "EndpointConfigName"),
              "model": ("delete_model", "ModelName")}[kind]
        try:
            getattr(self.sm, op[0])(**{op[1]: name})
        except ResidencyError:
            raise
        except Exception as exc:  # noqa: BLE001 - 'not found' is success for an idempotent delete
            if _not_found(exc):
                say(f"{kind} {name}: already gone")
                return True
            say(f"{kind} {name}: NOT deleted: {aws.error_line(exc)}")
            return False
        say(f"{kind} {name}: deleted")
        return True

    def _status(self, endpoint_name: str) -> str | None:
        try:
            return str(self.sm.describe_endpoint(EndpointName=endpoint_name)["EndpointStatus"])
        except ResidencyError:
            raise
        except Exception:  # noqa: BLE001 - gone or unreadable: nothing to wait for
            return None

    def _delete_when_settled(self, endpoint_name: str, say: Callable[[str], None], wait_s: float) -> bool:
        """SageMaker refuses to delete an endpoint that is still Creating (or Updating) until it is
        InService or Failed: wait for that, at most `wait_s`, then delete it."""
        deadline = self.clock() + wait_s
        status = self._status(endpoint_name)
        if status not in BUSY:
            return False
        say(f"endpoint {endpoint_name} is {status}: SageMaker deletes it only once it is InService or Failed; "
            f"waiting up to {_fmt_s(wait_s)} to delete it")
        while status in BUSY:
            if self.clock() >= deadline:
                return False
            self.sleep(self.catalog.wait.poll_s)
            status = self._status(endpoint_name)
        return self._delete_one("endpoint", endpoint_name, say)

    def delete_created(self, created: list[tuple[str, str]], *, say: Callable[[str], None],
                       wait_s: float | None = None) -> list[tuple[str, str]]:
        """Delete in reverse creation order (endpoint first: it is what is billed; its config and model
        only after it, since an endpoint still starting needs them to reach a state it can be deleted
        in). An endpoint SageMaker will not delete yet is waited for up to `wait_s`. Returns what is left."""
        left: list[tuple[str, str]] = []
        for kind, name in reversed(created):
            if any(k == "endpoint" for k, _ in left):  # keep what a live endpoint still needs
                say(f"{kind} {name}: kept while its endpoint exists")
                left.append((kind, name))
                continue
            done = self._delete_one(kind, name, say)
            if not done and kind == "endpoint" and wait_s:
                done = self._delete_when_settled(name, say, wait_s)
            if not done:
                left.append((kind, name))
        if any(k == "endpoint" for k, _ in left):
            name = next(n for k, n in left if k == "endpoint")
            say(f"the endpoint may still be running and billed ({self.quote(name).line()}): run "
                f"`migbench sagemaker delete --endpoint-name {name} --region {self.region} --wait`")
        return left

    def delete(self, endpoint_name: str, *, say: Callable[[str], None],
               wait_s: float | None = None) -> list[tuple[str, str]]:
        """Tear down an endpoint, its config and its models; idempotent. Returns what could not be deleted."""
        model_name, config_name = resource_names(endpoint_name)
        configs, models = [config_name], [model_name]
        try:
            desc = self.sm.describe_endpoint(EndpointName=endpoint_name)
            configs.insert(0, desc["EndpointConfigName"])
        except ResidencyError:
            raise
        except Exception as exc:  # noqa: BLE001
            if not _not_found(exc):
                raise SetupError(f"DescribeEndpoint {endpoint_name}: {aws.error_line(exc)}") from None
        for cfg in list(dict.fromkeys(configs)):
            try:
                variants = self.sm.describe_endpoint_config(EndpointConfigName=cfg)["ProductionVariants"]
                models[:0] = [v["ModelName"] for v in variants]
            except ResidencyError:
                raise
            except Exception as exc:  # noqa: BLE001
                if not _not_found(exc):
                    raise SetupError(f"DescribeEndpointConfig {cfg}: {aws.error_line(exc)}") from None
        created = ([("model", m) for m in dict.fromkeys(models)]
                   + [("endpoint-config", c) for c in dict.fromkeys(configs)] + [("endpoint", endpoint_name)])
        return self.delete_created(created, say=say, wait_s=wait_s)

    # status --------------------------------------------------------------

    def created_endpoints(self) -> list[dict[str, Any]]:
        """Endpoints tagged migbench:created=true, with state, instance and hourly price."""
        rows = []
        for page in self.sm.get_paginator("list_endpoints").paginate():
            for ep in page.get("Endpoints", []):
                tags = {t["Key"]: t["Value"] for t in self.sm.list_tags(ResourceArn=ep["EndpointArn"]).get("Tags", [])}
                if tags.get(CREATED_TAG) != "true":
                    continue
                quote = self.quote(ep["EndpointName"], tags.get(INSTANCE_TAG))
                rows.append({"endpoint_name": ep["EndpointName"], "status": ep.get("EndpointStatus"),
                             "model": tags.get(MODEL_TAG), "instance_type": quote.instance_type,
                             "instance_count": quote.count, "created": ep.get("CreationTime"),
                             "per_hour": quote.per_hour, "price": quote.line()})
        return rows

    def quote(self, endpoint_name: str, instance_type: str | None = None) -> HourlyQuote:
        """The hourly price of an endpoint's instances, read from its config (else `instance_type`)."""
        count = 1
        with contextlib.suppress(Exception):  # the tag says enough when the config is gone
            variants = self.sm.describe_endpoint_config(
                EndpointConfigName=self.sm.describe_endpoint(EndpointName=endpoint_name)
                ["EndpointConfigName"])["ProductionVariants"]
            instance_type = variants[0].get("InstanceType") or instance_type
            count = sum(int(v.get("InitialInstanceCount") or 1) for v in variants)
        return hourly_quote(instance_type or "?", count)


def _not_found(exc: BaseException) -> bool:
    code = (aws.error_code(exc) or "").lower()
    text = str(exc).lower()
    return code in ("validationexception", "resourcenotfound", "resourcenotfoundexception") and (
        "could not find" in text or "not found" in text or "does not exist" in text)


def _fmt_s(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 60}m{whole % 60:02d}s" if whole >= 60 else f"{whole}s"


# ---------------------------------------------------------------- the deploy as one call


@dataclass
class DeployOutcome:
    deployment: Deployment | None
    kept: bool
    record_path: Path | None
    command_rc: int | None = None


def run_line(spec: DeploySpec) -> list[str]:
    """How to run the suites against the endpoint, as the sagemaker backend takes it today."""
    opts = (f"endpoint_name={spec.endpoint_name}", f"instance_type={spec.instance_type}",
            f"region={spec.region}", f"prompt_family={spec.prompt_family}", f"payload={spec.payload}")
    return ["tox -e sagemaker -- " + " ".join(f"--backend-option {o}" for o in opts),
            (f"migbench run --backend sagemaker --endpoint-name {spec.endpoint_name} --instance-type "
             f"{spec.instance_type} --region {spec.region} -o prompt_family={spec.prompt_family} "
             f"-o payload={spec.payload}")]


def deploy(lifecycle: SageMakerLifecycle, spec: DeploySpec, *, results: str | Path, keep: bool,
           say: Callable[[str], None], timeout_s: float | None = None, poll_s: float | None = None,
           while_up: Callable[[Deployment], int] | None = None, sleep: Callable[[float], None] = time.sleep,
           clock: Callable[[], float] = time.monotonic, install_signals: bool = True) -> DeployOutcome:
    """Residency, create, wait, record; `while_up` (a command) runs while the endpoint is InService.
    The guard tears down on any exception or signal, and at the end unless `keep`."""
    lifecycle.check_residency(spec)
    quote = hourly_quote(spec.instance_type, spec.instance_count)
    say(f"deploying {spec.model} as {spec.endpoint_name} in {spec.region}: {quote.line()}")
    say(f"image {spec.image}")
    timeout_s = timeout_s or lifecycle.catalog.wait.timeout_s
    poll_s = poll_s or lifecycle.catalog.wait.poll_s
    guard = TeardownGuard(lifecycle, spec.endpoint_name, keep=keep, say=say, install_signals=install_signals,
                          price_line=quote.line())
    rc = None
    try:
        with guard:
            started = lifecycle.create(spec, guard, clock)
            append_record(results, {"event": "created", "at": _now(), "endpoint_name": spec.endpoint_name,
                                    "model": spec.model, "instance_type": spec.instance_type,
                                    "instance_count": spec.instance_count, "region": spec.region, "image": spec.image,
                                    "env": spec.env, "model_data": spec.model_data})
            dep = lifecycle.wait_in_service(spec, started, timeout_s=timeout_s, poll_s=poll_s, say=say,
                                            sleep=sleep, clock=clock)
            guard.in_service = True
            path = append_record(results, {"event": "in_service", "at": _now(), **asdict(dep),
                                           "per_hour": quote.per_hour, "price": quote.line()})
            say(f"cold start {dep.cold_start_s:.0f} s (recorded in {path})")
            if while_up is not None:
                rc = while_up(dep)
    finally:
        if guard.torn_down:
            append_record(results, {"event": "deleted", "at": _now(), "endpoint_name": spec.endpoint_name})
    if not guard.torn_down:
        say(f"endpoint {spec.endpoint_name} is up and billed: {quote.line()}; "
            f"`migbench sagemaker delete --endpoint-name {spec.endpoint_name} --region {spec.region}` removes it")
    return DeployOutcome(dep, not guard.torn_down, path, rc)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@contextlib.contextmanager
def opened(**kwargs: Any) -> Iterator[SageMakerLifecycle]:
    lc = SageMakerLifecycle(**kwargs)
    try:
        yield lc
    finally:
        lc.close()
