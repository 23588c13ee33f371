"""Bedrock batch inference through real boto3: the emulator's job APIs (create, get, list, stop) and
moto S3 for the input and output JSONL; documents stored through the same parser, scorer and store."""

from __future__ import annotations

import json

import pytest
from migbench.adapters.bedrock_batch import BatchSession, BatchSettings, load_batch_catalog, load_jobs
from migbench.contracts import ResidencyError, SetupError, UsageError
from migbench.registry import create_backend
from migbench.runner import RunOptions
from migbench.store import RunStore

DATA = "fixtures/synthetic_small"
NZ_PROFILE = "au.migbench.nz-routed-test-v1:0"  # emulator.yaml: destinations include ap-southeast-6
ROLE = "arn:aws:iam::123456789012:role/migbench-batch"


@pytest.fixture
def aws_env(monkeypatch):
    pytest.importorskip("boto3")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_BEDROCK",
                "AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "AWS_ENDPOINT_URL_S3", "MIGBENCH_ALLOW_LOOPBACK",
                "MIGBENCH_MODEL_CATALOG"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def dataset():
    from migbench.datasets import load_dataset

    return load_dataset(DATA)


@pytest.fixture(scope="module")
def moto_url():
    pytest.importorskip("moto")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="module")
def emulator(dataset, moto_url):
    from migbench.emulator import GroundTruthResponder, run_emulator
    from migbench.emulator.batch import state

    with run_emulator(responder=GroundTruthResponder(dataset)) as emu:
        state(emu.service).s3_endpoint_url = moto_url
        yield emu


def s3(url, region="ap-southeast-2"):
    import boto3

    return boto3.client("s3", region_name=region, endpoint_url=url)


def bucket(url, name, region="ap-southeast-2"):
    client = s3(url, region)
    if region == "us-east-1":
        client.create_bucket(Bucket=name)
    else:
        client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
    return name


def small_catalog(minimum=4):
    cat = load_batch_catalog()
    cat.min_records.default = minimum
    return cat


def session(emu, dataset, tmp_path, moto_url, bucket_name, *, model=None, name="au-nova-lite", minimum=4,
            **options):
    b = create_backend(name, model=model, options={
        "endpoint_url": emu.url, "control_endpoint_url": emu.url, "allow_loopback": True, "api": "invoke-nova",
        **options})
    settings = BatchSettings(bucket=bucket_name, role_arn=ROLE, s3_endpoint_url=moto_url, poll_initial_s=0.01,
                             poll_max_s=0.02)
    store = RunStore(tmp_path / "results")
    return BatchSession(b, dataset, store, settings, RunOptions(), catalog=small_catalog(minimum)), store


def objects(url, name):
    return [o["Key"] for o in s3(url).list_objects_v2(Bucket=name).get("Contents", [])]


def test_submit_status_collect_stores_scored_documents_and_a_failed_record(emulator, dataset, moto_url,
                                                                          aws_env, tmp_path):
    from migbench.emulator.batch import state

    name = bucket(moto_url, "syd-batch-ok")
    sess, store = session(emulator, dataset, tmp_path, moto_url, name)
    job = sess.submit()
    assert job.job_arn.startswith("arn:aws:bedrock:ap-southeast-2:") and len(job.record_ids) == 24
    lines = s3(moto_url).get_object(Bucket=name, Key=job.input_key)["Body"].read().decode().splitlines()
    first = json.loads(lines[0])
    assert first["modelInput"]["schemaVersion"] == "messages-v1"  # Nova's native body, as InvokeModel takes it
    assert {json.loads(line)["recordId"] for line in lines} == set(job.record_ids)
    bad = next(r for r, d in job.record_ids.items() if d == "synth_0003_invoice_light.jpg")
    state(emulator.service).fail_records.add(bad)
    try:
        _collect_and_retry(sess, store, job, emulator, dataset, tmp_path, moto_url, name)
    finally:
        state(emulator.service).fail_records.clear()


def _collect_and_retry(sess, store, job, emulator, dataset, tmp_path, moto_url, name):
    from migbench.emulator.batch import state

    assert sess.status().status == "InProgress"  # Submitted -> InProgress on the first poll
    assert load_jobs(store, sess.run_id)[-1].status == "InProgress"
    counts = sess.collect()
    assert counts == {"stored": 23, "failed": 1, "skipped": 0}
    docs = {d.doc_id: d for d in store.documents(sess.run_id)}
    assert len(docs) == 24
    ok = docs["synth_0000_invoice_clean.png"]
    assert ok.status == "ok" and ok.doc_f1 is not None and ok.doc_f1 > 0.9  # ground-truth answers, parsed and scored
    on_demand = ok.response.extra["on_demand_cost_usd"]  # batch price: half of on-demand (pricing.yaml, unverified)
    assert on_demand > 0 and ok.response.cost_usd == pytest.approx(on_demand * 0.5)
    assert ok.response.extra["batch_price"]["verified"] is False
    failed = docs["synth_0003_invoice_light.jpg"]
    assert failed.status == "failed" and "ModelErrorException" in failed.error
    assert any(k.endswith("records.jsonl.out") for k in objects(moto_url, name))
    ctl = sess._control()
    listed = ctl.list_model_invocation_jobs()["invocationJobSummaries"]
    assert any(j["jobArn"] == job.job_arn and j["status"] == "Completed" for j in listed)

    run = store.run(sess.run_id)
    assert run.emulated and run.status == "complete" and run.describe["mode"] == "batch"
    assert run.describe["batch_jobs"][0]["job_arn"] == job.job_arn

    # Resumed in a new process: the job is read back, nothing new is stored.
    again, _ = session(emulator, dataset, tmp_path, moto_url, name)
    assert again.run_id == sess.run_id
    assert again.collect() == {"stored": 0, "failed": 0, "skipped": 0}
    assert again.status().collected and store.run(sess.run_id).status == "complete"  # looking reopens nothing

    # --retry-failed: only the failed record is resubmitted (a minimum of 1 for this test's catalog).
    state(emulator.service).fail_records.clear()
    retry, _ = session(emulator, dataset, tmp_path, moto_url, name, minimum=1)
    rjob = retry.submit(retry_failed=True)
    assert list(rjob.record_ids.values()) == ["synth_0003_invoice_light.jpg"] and rjob.retry_of == job.job_arn
    assert retry.collect() == {"stored": 1, "failed": 0, "skipped": 0}
    assert {d.status for d in store.documents(sess.run_id)} == {"ok"}


def test_interrupted_collect_resumes_polling(emulator, dataset, moto_url, aws_env, tmp_path):
    from migbench.emulator.batch import state

    name = bucket(moto_url, "syd-batch-resume")
    st = state(emulator.service)
    st.polls_in_progress = 3
    try:
        sess, store = session(emulator, dataset, tmp_path, moto_url, name)
        job = sess.submit()
        assert sess.collect(wait=False) == {"stored": 0, "failed": 0, "skipped": 0}  # still running: left to resume
        assert load_jobs(store, sess.run_id)[-1].collected is False
        resumed, _ = session(emulator, dataset, tmp_path, moto_url, name)
        assert resumed.collect()["stored"] == 24
        assert load_jobs(store, sess.run_id)[-1].job_arn == job.job_arn
        with pytest.raises(UsageError, match="0 document"):  # everything stored: nothing left to submit
            resumed.submit()
    finally:
        st.polls_in_progress = 1


def test_bucket_outside_the_policy_is_refused_before_upload(emulator, dataset, moto_url, aws_env, tmp_path):
    name = bucket(moto_url, "virginia-batch", "us-east-1")
    jobs_before = len(s3(moto_url).list_buckets()["Buckets"])
    sess, store = session(emulator, dataset, tmp_path, moto_url, name)
    with pytest.raises(ResidencyError, match="us-east-1.*nothing uploaded"):
        sess.submit()
    assert objects(moto_url, name) == [] and load_jobs(store, sess.run_id) == []
    assert len(s3(moto_url).list_buckets()["Buckets"]) == jobs_before


def test_profile_routing_outside_the_policy_is_refused_before_upload(emulator, dataset, moto_url, aws_env,
                                                                     tmp_path):
    name = bucket(moto_url, "syd-batch-nz")
    sess, store = session(emulator, dataset, tmp_path, moto_url, name, model=NZ_PROFILE)
    with pytest.raises(SetupError, match="ap-southeast-6.*nothing uploaded"):
        sess.submit()
    assert objects(moto_url, name) == [] and load_jobs(store, sess.run_id) == []


def test_base_nova_id_in_sydney_needs_a_profile(emulator, dataset, moto_url, aws_env, tmp_path):
    name = bucket(moto_url, "syd-batch-base")
    sess, _ = session(emulator, dataset, tmp_path, moto_url, name, name="nova-lite")
    with pytest.raises(SetupError, match="only through an inference profile"):
        sess.submit()
    assert objects(moto_url, name) == []


def test_too_few_records_says_so_and_points_to_on_demand(emulator, dataset, moto_url, aws_env, tmp_path):
    name = bucket(moto_url, "syd-batch-few")
    sess, _ = session(emulator, dataset, tmp_path, moto_url, name, minimum=load_batch_catalog().min_records.default)
    with pytest.raises(UsageError, match=r"24 document\(s\).*at least 100.*migbench run --backend au-nova-lite"):
        sess.submit()
    assert objects(moto_url, name) == []


def test_cli_submit_status_collect(emulator, dataset, moto_url, aws_env, tmp_path, monkeypatch, capsys):
    from migbench import cli
    from migbench.adapters import bedrock_batch

    monkeypatch.setattr(bedrock_batch, "load_batch_catalog", lambda: small_catalog(4))
    name = bucket(moto_url, "syd-batch-cli")
    common = ["--backend", "au-nova-lite", "--dataset", DATA, "--results", str(tmp_path / "r"), "--allow-loopback",
              "-o", f"endpoint_url={emulator.url}", "-o", f"control_endpoint_url={emulator.url}",
              "-o", "api=invoke-nova", "--s3-endpoint-url", moto_url]
    assert cli.main(["batch", "status", *common]) == UsageError.exit_code
    assert "no batch job" in capsys.readouterr().err
    assert cli.main(["batch", "submit", *common, "--bucket", name, "--role-arn", ROLE]) == 0
    assert "submitted 24 record(s)" in capsys.readouterr().out
    assert cli.main(["batch", "status", *common]) == 0
    assert "InProgress" in capsys.readouterr().out
    assert cli.main(["batch", "collect", *common, "--poll-s", "0.01"]) == 0
    assert "stored 24 ok, 0 failed" in capsys.readouterr().out
    store = RunStore(tmp_path / "r")
    [run] = store.runs()
    assert store.counts(run.run_id).get("ok") == 24


def test_batch_price_is_dated_per_model_and_never_assumed():
    from migbench.cost import batch_discount, load_pricing

    pricing = load_pricing()
    profile = batch_discount(pricing, "au.amazon.nova-lite-v1:0")  # a profile bills as its model
    assert profile is not None and profile.factor == 0.5 and profile.verified is False and profile.as_of
    assert batch_discount(pricing, "amazon.nova-lite-v1:0") == profile
    assert batch_discount(pricing, "some.unpriced-model-v1:0") is None


def test_stop_then_collect_records_each_document_as_failed_with_the_job_state(emulator, dataset, moto_url,
                                                                             aws_env, tmp_path):
    name = bucket(moto_url, "syd-batch-stop")
    sess, store = session(emulator, dataset, tmp_path, moto_url, name)
    job = sess.submit()
    assert sess.stop().status == "Stopped"
    assert sess.collect() == {"stored": 0, "failed": 24, "skipped": 0}
    docs = store.documents(sess.run_id)
    assert {d.status for d in docs} == {"failed"} and all("job Stopped" in d.error for d in docs)
    ops = [a["operation"] for a in store.audit(sess.run_id)]
    for op in ("GetBucketLocation", "PutObject", "CreateModelInvocationJob", "StopModelInvocationJob",
               "GetModelInvocationJob", "GetInferenceProfile"):
        assert op in ops, op
    assert job.job_arn == load_jobs(store, sess.run_id)[-1].job_arn


def test_policy_names_the_role_the_prefix_and_the_allowed_regions_only(capsys):
    from migbench import cli
    from migbench.iam import policy_regions

    assert cli.main(["batch", "policy", "--backend", "au-nova-lite", "--bucket", "syd-b", "--role-arn", ROLE,
                     "--prefix", "jobs/"]) == 0
    doc = json.loads(capsys.readouterr().out)
    caller = doc["caller"]
    assert policy_regions(caller) - {"*"} == {"ap-southeast-2", "ap-southeast-4"}
    passrole = next(st for st in caller["Statement"] if st["Action"] == ["iam:PassRole"])
    assert passrole["Resource"] == [ROLE]
    assert next(st for st in caller["Statement"] if "s3:PutObject" in st["Action"])["Resource"] == [
        "arn:aws:s3:::syd-b/jobs/*"]
    assert doc["service_role"]["Statement"][0]["Resource"] == ["arn:aws:s3:::syd-b", "arn:aws:s3:::syd-b/jobs/*"]


def test_converse_batch_sends_converse_bodies_and_stores_scored_documents(emulator, dataset, moto_url, aws_env,
                                                                         tmp_path):
    name = bucket(moto_url, "syd-batch-converse")
    sess, store = session(emulator, dataset, tmp_path, moto_url, name, api="converse")
    job = sess.submit()
    line = json.loads(s3(moto_url).get_object(Bucket=name, Key=job.input_key)["Body"].read().decode().splitlines()[0])
    content = line["modelInput"]["messages"][0]["content"]
    assert "modelId" not in line["modelInput"] and isinstance(content[0]["image"]["source"]["bytes"], str)
    ctl = sess._control()
    assert ctl.get_model_invocation_job(jobIdentifier=job.job_arn)["modelInvocationType"] == "Converse"
    assert sess.collect() == {"stored": 24, "failed": 0, "skipped": 0}
    ok = {d.doc_id: d for d in store.documents(sess.run_id)}["synth_0001_receipt_clean.png"]
    assert ok.status == "ok" and ok.doc_f1 > 0.9 and ok.response.input_tokens > 0
    # The same documents priced both ways: the batch price is the catalog's factor of on demand.
    from migbench.cost import load_pricing, run_cost

    cost = run_cost(store.run(sess.run_id), store.documents(sess.run_id), load_pricing())
    b = cost.batch
    assert (b.documents, b.priced, b.factor, b.verified) == (24, 24, 0.5, False)
    assert b.batch_usd == pytest.approx(0.5 * b.on_demand_usd) and b.saving_usd == pytest.approx(b.batch_usd)
    # ... and the report's cost section shows both prices for the same documents.
    import re

    from migbench.report import main as report_main

    store.close()
    out = tmp_path / "report.html"
    assert report_main(["--results", str(tmp_path / "results"), "--out", str(out)]) == 0
    cost_section = re.search(r'<section id="cost">(.*?)</section>', out.read_text(encoding="utf-8"), re.DOTALL)[1]
    batch_part = cost_section.split("Batch inference vs on demand", 1)[1].split("<h3>", 1)[0]
    assert ">24<" in batch_part and "0.5 x on demand" in batch_part and "price unverified" in batch_part


def test_batch_run_submits_collects_and_a_rerun_has_nothing_left(emulator, dataset, moto_url, aws_env, tmp_path):
    name = bucket(moto_url, "syd-batch-run")
    sess, store = session(emulator, dataset, tmp_path, moto_url, name)
    assert sess.run() == ("batch", {"stored": 24, "failed": 0, "skipped": 0})
    assert sess.open_job() is None and len(load_jobs(store, sess.run_id)) == 1
    assert sess.run() == ("nothing", {"stored": 0, "failed": 0, "skipped": 0})


def test_batch_run_resumes_an_open_job_instead_of_submitting_another(emulator, dataset, moto_url, aws_env,
                                                                    tmp_path):
    name = bucket(moto_url, "syd-batch-run-resume")
    sess, store = session(emulator, dataset, tmp_path, moto_url, name)
    job = sess.submit()
    again, _ = session(emulator, dataset, tmp_path, moto_url, name)  # a new process, the same command
    assert again.run()[0] == "batch"
    (only,) = load_jobs(store, sess.run_id)
    assert only.job_arn == job.job_arn and only.collected


def test_a_set_smaller_than_a_batch_job_runs_on_demand_in_the_same_run(emulator, dataset, moto_url, aws_env,
                                                                      tmp_path):
    from migbench.emulator.batch import state

    name = bucket(moto_url, "syd-batch-small")
    sess, store = session(emulator, dataset, tmp_path, moto_url, name, minimum=100)
    jobs_before = len(state(emulator.service).jobs)
    done, counts = sess.run()
    assert done == "on-demand" and counts["stored"] == 24 and counts["failed"] == 0
    assert load_jobs(store, sess.run_id) == [] and len(state(emulator.service).jobs) == jobs_before
    ops = {a["operation"] for a in store.audit(sess.run_id)}
    assert "Converse" in ops or "InvokeModel" in ops
