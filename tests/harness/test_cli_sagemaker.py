"""`migbench sagemaker deploy|delete|status` end to end: the CLI, moto's SageMaker and S3 over HTTP, and
the sagemaker backend running against the endpoint the CLI deployed (moto's runtime)."""

from __future__ import annotations

import json
import sys

import boto3
from migbench.cli import main

from tests.adapters import test_sagemaker_lifecycle as lifecycle_tests
from tests.adapters.test_sagemaker_lifecycle import INSTANCE, REGION, ROLE, gone

# The same moto server fixtures as the lifecycle's own tests (one server per module, reset per test).
moto_url = lifecycle_tests.moto_url
moto = lifecycle_tests.moto


def cli(moto, action, *args):
    return main(["sagemaker", action, "--endpoint-url", moto, "--allow-loopback", *args])


def deploy_args(tmp_path, *extra):
    return ["deploy", "--model", "qwen2.5-vl", "--instance", INSTANCE, "--role", ROLE, "--endpoint-name", "mb-test",
            "--results", str(tmp_path), "--s3-endpoint-url", "http://127.0.0.1:1", *extra]


def test_deploy_keep_prints_how_to_run_then_status_and_delete(moto, tmp_path, capsys):
    assert cli(moto, *deploy_args(tmp_path, "--keep")) == 0
    out, err = capsys.readouterr()
    assert "tox -e sagemaker -- --backend-option endpoint_name=mb-test" in out
    assert "migbench run --backend sagemaker --endpoint-name mb-test --instance-type ml.g4dn.2xlarge" in out
    assert "InService after" in err and "is up and billed" in err
    assert cli(moto, "status") == 0
    out, _ = capsys.readouterr()
    assert out.startswith("mb-test  InService  qwen2.5-vl  1 x ml.g4dn.2xlarge") and "1 endpoint(s) up" in out
    assert cli(moto, "delete", "--endpoint-name", "mb-test") == 0
    assert gone(moto)
    assert cli(moto, "delete", "--endpoint-name", "mb-test") == 0  # idempotent
    assert "endpoint mb-test: already gone" in capsys.readouterr().err
    assert cli(moto, "status") == 0
    assert "no endpoints created by migbench" in capsys.readouterr().out


def test_deploy_runs_the_command_with_the_endpoint_up_then_deletes_it(moto, tmp_path, capsys):
    seen = tmp_path / "seen.txt"
    code = ("import os, sys; open(sys.argv[1], 'w').write(os.environ['MIGBENCH_SAGEMAKER_ENDPOINT'] + ' ' "
            "+ sys.argv[2]); sys.exit(3)")
    rc = cli(moto, *deploy_args(tmp_path), "--", sys.executable, "-c", code, str(seen), "{endpoint}")
    assert rc == 3  # the command's exit status
    assert seen.read_text() == "mb-test mb-test"
    assert gone(moto)
    events = [json.loads(line)["event"] for line in (tmp_path / "sagemaker" / "deployments.jsonl").read_text().splitlines()]
    assert events == ["created", "in_service", "deleted"]


def test_a_region_outside_australia_is_one_error_line_and_creates_nothing(moto, tmp_path, capsys):
    assert cli(moto, *deploy_args(tmp_path, "--region", "us-west-2")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [("error: residency: refused before creating anything: endpoint: region 'us-west-2' is not an "
                    "allowed region (ap-southeast-2, ap-southeast-4)")]
    assert not boto3.client("sagemaker", region_name="us-west-2", endpoint_url=moto).list_models()["Models"]


def test_a_command_after_the_separator_is_refused_for_delete(moto, capsys):
    assert cli(moto, "delete", "--endpoint-name", "x", "--", "true") == 2


def test_the_suites_backend_runs_against_the_deployed_endpoint(moto, tmp_path, monkeypatch):
    """deploy --keep, then `migbench run --backend sagemaker` as deploy printed it (moto answers InvokeEndpoint)."""
    import urllib.request

    from migbench.store import RunStore

    assert cli(moto, *deploy_args(tmp_path, "--keep")) == 0
    answer = {"choices": [{"message": {"content": "TOTAL_AMOUNT: $1.00"}}],
              "usage": {"prompt_tokens": 400, "completion_tokens": 8}}
    payload = {"region": REGION, "results": [{"Body": json.dumps(answer), "ContentType": "application/json"}] * 2}
    urllib.request.urlopen(urllib.request.Request(f"{moto}/moto-api/static/sagemaker/endpoint-results",
                                                  data=json.dumps(payload).encode(), method="POST",
                                                  headers={"Content-Type": "application/json"}), timeout=10).read()
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", moto)
    results = tmp_path / "results"
    assert main(["run", "--backend", "sagemaker", "--endpoint-name", "mb-test", "--instance-type", INSTANCE,
                 "-o", "prompt_family=qwen", "--allow-loopback", "--limit", "2", "--results", str(results)]) == 0
    store = RunStore(results)
    run = store.run("latest")
    assert run.model == "mb-test" and all(d.response.input_tokens == 400 for d in store.documents(run.run_id))
    assert cli(moto, "delete", "--endpoint-name", "mb-test") == 0
