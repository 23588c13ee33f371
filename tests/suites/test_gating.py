"""The shared suites gate CI: `pytest suites --backend X` exits non-zero exactly when a threshold
is missed, names what missed it, and re-uses the stored run on a second invocation.

Each case runs pytest in a subprocess from the repository root, as tox and CI do. The OCR run
(first 6 shipped synthetic documents, ~2-4 s a page on 2 cores) happens once per module: the
later invocations share its results directory and resume the same run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LIMIT = "6"
pytestmark = pytest.mark.slow

LENIENT = {
    "name": "lenient", "accuracy": {"overall": 0.0, "critical": 0.0, "field_default": 0.0},
    "hallucination": {"max_rate": 1.0}, "failures": {"max_rate": 1.0},
    "latency": {"default": {"p50_s": None, "p95_s": None, "p99_s": None}},
    "cost": {"per_doc_usd": None, "per_month_usd": None, "volumes_per_day": [1000]},
}
UNREACHABLE = {**LENIENT, "name": "unreachable", "accuracy": {"overall": 1.0, "critical": 1.0, "field_default": 1.0},
               "statistic": "ci_low"}


def suites(results: Path, thresholds: Path | str, *args: str, backend: str = "ocr-baseline",
           env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", "suites", "--backend", backend, "--results", str(results),
           "--thresholds", str(thresholds), "-q", "-rf", "-p", "no:cacheprovider", "--benchmark-disable",
           "-o", "console_output_style=classic", *args]
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MIGBENCH_"))}
    base.update(HF_HUB_OFFLINE="1", COLUMNS="400", **(env or {}))
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=base,
                          check=False)


def write(tmp: Path, name: str, data: dict) -> Path:
    p = tmp / f"{name}.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.fixture(scope="module")
def ocr(tmp_path_factory):
    """Results dir + the strict invocation that runs OCR (the only one that does)."""
    tmp = tmp_path_factory.mktemp("gating")
    results = tmp / "results"
    proc = suites(results, write(tmp, "unreachable", UNREACHABLE), "--limit", LIMIT,
                  "--junitxml", str(tmp / "junit-strict.xml"))
    return tmp, results, proc


def summary(results: Path, backend: str = "ocr-baseline") -> dict:
    return json.loads((results / f"migbench-summary-{backend}.json").read_text())


def test_missed_threshold_fails_and_names_backend_doctype_field_value_ci_threshold(ocr):
    tmp, results, proc = ocr
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert re.search(r"ocr-baseline/(invoice|receipt|bank_statement)/[A-Z_]+: F1 \d\.\d\d "
                     r"\(95% CI \d\.\d\d-\d\.\d\d\) \[ci low \d\.\d\d\] < 1\.00 \(n=\d+\)", out), out[-3000:]
    s = summary(results)
    assert s["verdict"] == "fail" and s["exit_status"] == 1 and s["run"]["family"] == "ocr"
    assert any(g["status"] == "fail" and g["kind"] == "field_f1" for g in s["gates"])
    suite = ET.parse(tmp / "junit-strict.xml").getroot().find("testsuite")
    assert int(suite.get("failures")) >= 1
    names = {c.get("name") for c in suite.iter("testcase")}
    assert {"test_overall_f1[ocr-baseline]", "test_doc_type_f1[ocr-baseline/invoice]",
            "test_field_f1[ocr-baseline/invoice/GST_AMOUNT]", "test_latency_percentile[ocr-baseline/receipt/p95]",
            "test_monthly_cost[ocr-baseline/1000-per-day]"} <= names
    classes = {c.get("classname").rsplit(".", 1)[-1] for c in suite.iter("testcase")}
    assert {"test_accuracy", "test_latency", "test_cost", "test_residency", "test_parser_robustness"} <= classes


def test_met_thresholds_pass_and_reuse_the_stored_run(ocr):
    tmp, results, _ = ocr
    proc = suites(results, write(tmp, "lenient", LENIENT), "--limit", LIMIT)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    s = summary(results)
    assert s["verdict"] == "pass" and s["tests"]["failed"] == 0 and s["tests"]["passed"] > 20
    assert s["extras"]["run_summary"]["resumed"] is True and s["extras"]["run_summary"]["done_now"] == 0
    assert s["metrics"]["documents"] == int(LIMIT)
    assert any(g["gate_id"] == "ocr-baseline/invoice/GST_AMOUNT" and g["status"] == "pass" for g in s["gates"])


def test_dry_run_thresholds_refuse_a_real_run(ocr):
    _, results, _ = ocr
    proc = suites(results, "dry-run", "--limit", LIMIT, "-k", "test_thresholds_fit_the_run")
    assert proc.returncode == 1
    assert "are dry-run gates but run ocr-baseline-" in proc.stdout


def test_cloud_backend_on_real_aws_needs_live(tmp_path):
    proc = suites(tmp_path / "r", "dry-run", "-k", "test_overall_f1", backend="nova-pro",
                  env={"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "pass --live" in proc.stdout + proc.stderr
    assert not (tmp_path / "r" / "migbench.sqlite").exists() or "nova-pro" not in (
        tmp_path / "r" / "migbench.sqlite").read_bytes().decode("latin-1")


def junit_outcomes(path: Path) -> dict[str, str]:
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        kinds = {child.tag for child in case}
        out[f"{case.get('classname')}::{case.get('name')}"] = (
            "failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed")
    return out


def test_same_suites_gate_bedrock_against_the_emulator(tmp_path):
    """nova-pro through the real botocore path to the local emulator answering from ground truth."""
    pytest.importorskip("boto3")
    from migbench.datasets import load_dataset
    from migbench.emulator import GroundTruthResponder, run_emulator
    from migbench.fixtures import default_dataset

    responder = GroundTruthResponder(load_dataset(default_dataset()))
    with run_emulator(responder=responder) as emu:
        env = {"AWS_ENDPOINT_URL_BEDROCK_RUNTIME": emu.url, "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "MIGBENCH_ALLOW_LOOPBACK": "1"}
        proc = suites(tmp_path / "r", "dry-run", "--limit", LIMIT, "--junitxml", str(tmp_path / "junit.xml"),
                      backend="nova-pro", timeout=300, env=env)
        # nova-lite against nova-pro as the incumbent, resolved by backend name in the same store
        paired = suites(tmp_path / "r", "dry-run", "--limit", LIMIT, "--baseline", "nova-pro", "-k",
                        "non_inferiority", backend="nova-lite", timeout=300, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    s = summary(tmp_path / "r", "nova-pro")
    assert s["run"]["emulated"] is True and s["run"]["family"] == "bedrock"
    assert s["extras"]["cost"]["basis"] == "token" and s["extras"]["cost"]["per_doc_usd"] > 0
    ran = {g["kind"] for g in s["gates"] if g["status"] == "pass"}
    assert {"overall_f1", "field_f1", "latency", "cost_per_doc", "failure_rate"} <= ran
    outcomes = junit_outcomes(tmp_path / "junit.xml")
    residency = {k.rsplit("::", 1)[1]: v for k, v in outcomes.items() if "test_residency" in k}
    assert residency == {
        "test_backend_family_is_known": "passed", "test_offline_backend_sent_nothing": "skipped",
        "test_audit_log_covers_every_document": "passed", "test_audit_entries_in_allowed_regions_and_hosts": "passed",
        "test_models_offered_in_region": "passed", "test_iam_policy_cannot_reach_other_regions": "passed"}
    assert outcomes["suites.test_cost::test_usage_recorded_for_every_document"] == "passed"
    assert paired.returncode == 0, (paired.stdout + paired.stderr)[-3000:]
    ni = [g for g in summary(tmp_path / "r", "nova-lite")["gates"] if g["kind"] == "non_inferiority"]
    assert sorted(g["gate_id"] for g in ni) == ["nova-lite/bank_statement", "nova-lite/invoice", "nova-lite/receipt"]
    assert all(g["detail"]["baseline"] == "nova-pro" and g["n"] == 2 and g["detail"]["verdict"] for g in ni)


def test_same_suites_gate_a_tiny_local_model(tmp_path):
    """qwen2.5-vl through transformers on CPU: a random-weight model built offline. Its answers are
    junk, so accuracy is gated at 0; what must hold is the plumbing: stored run, latency recorded,
    an empty audit log for an offline family, the parser checks over its raw outputs."""
    pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    from migbench.fixtures.tiny_models import build_tiny_model

    model = build_tiny_model("qwen2_5_vl", tmp_path / "models")
    budgets = {**LENIENT, "latency": {"default": {"p50_s": 3600, "p95_s": 3600, "p99_s": 3600}}}
    proc = suites(tmp_path / "r", write(tmp_path, "budgets", budgets), "--limit", "2", "--model-path", str(model),
                  "--backend-option", "max_image_dim=448", "--junitxml", str(tmp_path / "junit.xml"),
                  backend="qwen2.5-vl", timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    s = summary(tmp_path / "r", "qwen2.5-vl")
    assert s["run"]["family"] == "local" and s["metrics"]["documents"] == 2
    outcomes = junit_outcomes(tmp_path / "junit.xml")
    assert outcomes["suites.test_residency::test_offline_backend_sent_nothing"] == "passed"
    assert outcomes["suites.test_residency::test_audit_log_covers_every_document"] == "skipped"
    assert {v for k, v in outcomes.items() if "test_latency_percentile" in k} == {"passed"}


def test_the_same_floor_fails_once_the_ocr_backend_is_made_worse_on_purpose(ocr):
    """The offline floor passes the OCR baseline as shipped and fails it when its pages are
    shrunk to 320 px before OCR (a real option: faster, but small print is lost)."""
    _, results, _ = ocr
    good = suites(results, "offline-floor", "--limit", LIMIT)
    assert good.returncode == 0, (good.stdout + good.stderr)[-3000:]
    worse = suites(results, "offline-floor", "--limit", LIMIT, "--backend-option", "max_side=320")
    out = worse.stdout + worse.stderr
    assert worse.returncode == 1, out[-3000:]
    assert re.search(r"ocr-baseline(/\w+)?: F1 \d\.\d\d \(95% CI \d\.\d\d-\d\.\d\d\) < 0\.\d+ \(n=\d+\)", out), out[-3000:]


def _moto_sagemaker(monkeypatch, n: int):
    """A moto server with n queued InvokeEndpoint answers; yields its URL (env set for the CLI)."""
    import urllib.request

    from moto.server import ThreadedMotoServer

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    url = f"http://{host}:{port}"
    answer = json.dumps({"choices": [{"message": {"content": "TOTAL_AMOUNT: $1.00"}}],
                         "usage": {"prompt_tokens": 900, "completion_tokens": 20}})
    body = {"region": "ap-southeast-2", "results": [{"Body": answer, "ContentType": "application/json"}] * n}
    urllib.request.urlopen(urllib.request.Request(
        f"{url}/moto-api/static/sagemaker/endpoint-results", data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"}), timeout=10).read()
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": url}.items():
        monkeypatch.setenv(k, v)
    return moto, url


def test_same_suites_gate_a_sagemaker_endpoint_on_moto(tmp_path, monkeypatch):
    pytest.importorskip("moto")
    moto, url = _moto_sagemaker(monkeypatch, int(LIMIT))
    try:
        env = {"AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": url, "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "MIGBENCH_ALLOW_LOOPBACK": "1"}
        proc = suites(tmp_path / "r", "dry-run", "--limit", LIMIT, "--junitxml", str(tmp_path / "j.xml"),
                      "--backend-option", "endpoint_name=qwen25vl-sydney", "--backend-option",
                      "instance_type=ml.g5.2xlarge", backend="sagemaker", timeout=300, env=env)
    finally:
        moto.stop()
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    s = summary(tmp_path / "r", "sagemaker")
    assert s["run"]["family"] == "sagemaker" and s["run"]["emulated"] is True  # loopback is never AWS
    assert s["extras"]["cost"]["basis"] == "hourly"
    outcomes = junit_outcomes(tmp_path / "j.xml")
    assert outcomes["suites.test_residency::test_audit_log_covers_every_document"] == "passed"
    assert outcomes["suites.test_residency::test_audit_entries_in_allowed_regions_and_hosts"] == "passed"
    classes = {k.split("::")[0] for k, v in outcomes.items() if v == "passed"}
    assert {"suites.test_accuracy", "suites.test_latency", "suites.test_cost", "suites.test_residency",
            "suites.test_parser_robustness"} <= classes


def test_break_even_between_bedrock_tokens_and_a_sagemaker_instance(tmp_path, monkeypatch):
    """A SageMaker run (moto, priced per instance-hour) and a Bedrock run (emulator, priced per
    token) in one store: the cost suite computes the daily volume at which they cost the same."""
    pytest.importorskip("moto")
    from migbench.cli import main
    from migbench.datasets import load_dataset
    from migbench.emulator import GroundTruthResponder, run_emulator
    from migbench.fixtures import default_dataset

    results = tmp_path / "r"
    moto, _ = _moto_sagemaker(monkeypatch, 3)
    try:
        assert main(["run", "--backend", "sagemaker", "--endpoint-name", "qwen25vl-sydney", "--allow-loopback",
                     "--instance-type", "ml.g5.2xlarge", "--limit", "3", "--results", str(results)]) == 0
    finally:
        moto.stop()
    with run_emulator(responder=GroundTruthResponder(load_dataset(default_dataset()))) as emu:
        env = {"AWS_ENDPOINT_URL_BEDROCK_RUNTIME": emu.url, "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "MIGBENCH_ALLOW_LOOPBACK": "1"}
        proc = suites(results, "dry-run", "--limit", "3", "--baseline", "sagemaker", "-k", "break_even",
                      "--junitxml", str(tmp_path / "j.xml"), backend="nova-pro", timeout=300, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    outcomes = junit_outcomes(tmp_path / "j.xml")
    assert outcomes["suites.test_cost::test_break_even_against_hosting"] == "passed", outcomes
    assert "break_even_docs_per_day" in summary(results, "nova-pro")["extras"]


def test_a_bad_thresholds_file_is_a_usage_error_before_anything_runs(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\naccuracy: {overall: high}\n")
    proc = suites(tmp_path / "r", bad)
    assert proc.returncode == 4  # pytest's usage-error status
    assert "--thresholds" in proc.stderr and "overall" in proc.stderr
    assert not (tmp_path / "r" / "migbench.sqlite").exists()


def _junit_properties(path: Path) -> dict[str, str]:
    return {p.get("name"): p.get("value") for p in ET.parse(path).getroot().iter("property")}


@pytest.mark.parametrize("thresholds, verdict", [(UNREACHABLE, "fail"), (LENIENT, "pass")],
                         ids=["unreachable", "lenient"])
def test_one_verdict_in_console_json_junit_and_report(ocr, thresholds, verdict):
    """A run gated with a non-default thresholds file: the console line, the JSON summary, JUnit's
    properties and the HTML report give the same verdict and name the same file and hash."""
    from migbench.report import generate

    tmp, results, _ = ocr
    name = f"custom-{thresholds['name']}"
    path = write(tmp, name, {**thresholds, "name": name})
    junit = tmp / f"junit-{name}.xml"
    proc = suites(results, path, "--limit", LIMIT, "--junitxml", str(junit))
    out = proc.stdout + proc.stderr
    assert proc.returncode == (0 if verdict == "pass" else 1), out[-3000:]
    s = summary(results)
    sha = s["thresholds"]["sha256"]
    assert (s["verdict"], s["coverage"], s["thresholds"]["file"]) == (verdict, "complete", f"{name}.yaml")
    assert re.search(rf"migbench ocr-baseline: verdict {verdict.upper()}; {LIMIT} documents; \d+ gates, "
                     rf"{s['gate_counts']['fail']} failed, \d+ skipped; thresholds {name} \({name}\.yaml, "
                     rf"sha256 {sha[:12]}\)", out), out[-3000:]
    props = _junit_properties(junit)
    assert (props["migbench_verdict"], props["migbench_thresholds_file"], props["migbench_thresholds_sha256"]) == (
        verdict, f"{name}.yaml", sha)
    assert int(props["migbench_gates_failed"]) == s["gate_counts"]["fail"]
    model = generate(results, tmp / f"report-{name}.html", runs=[s["run"]["run_id"]])
    (v,) = model["runs"]
    assert (v["thresholds"]["file"], v["thresholds"]["sha256"]) == (f"{name}.yaml", sha)
    assert v["passes"] is (verdict == "pass")
    assert v["gate_map"]["shared suites"].value == verdict
    assert not [g for g in v["analysis"].gates if "DOCUMENT_TYPE" in g.gate_id]
    html = (tmp / f"report-{name}.html").read_text(encoding="utf-8")
    assert f"{name}.yaml" in html


# --- the main job a newcomer runs (issue 13 §4, §5, §7) ----------------------------------------------

def test_the_run_shows_progress_and_the_session_ends_on_one_verdict_line(ocr):
    """pytest captures output, yet the minutes the backend runs show progress (plain lines in a log,
    the bar on a terminal); the last line is the verdict with documents, thresholds and scoring."""
    _, _, proc = ocr
    assert re.search(rf"^ocr-baseline: {LIMIT} documents to run$", proc.stdout, re.MULTILINE), proc.stdout[-3000:]
    assert re.search(rf"^ocr-baseline: {LIMIT}/{LIMIT} documents, \d+\.\d docs/min, \d+ failed, ", proc.stdout,
                     re.MULTILINE), proc.stdout[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(rf"migbench ocr-baseline: verdict FAIL; {LIMIT} documents; \d+ gates, \d+ failed, \d+ "
                        r"skipped; thresholds unreachable \(unreachable\.yaml, sha256 [0-9a-f]{12}\); "
                        r"incumbent scoring", last), last


def test_the_report_is_written_after_a_gating_and_kept_when_the_next_session_fails(ocr):
    """tox -e offline renders the report from the suites (--report); a mistyped --dataset is one
    line and leaves the last good report as it was."""
    tmp, results, _ = ocr
    report = tmp / "report.html"
    good = suites(results, write(tmp, "lenient", LENIENT), "--limit", LIMIT, "--report", str(report))
    assert good.returncode == 0, (good.stdout + good.stderr)[-3000:]
    assert good.stdout.strip().splitlines()[-1].endswith(f"; report {report}")
    assert summary(results)["report"] == f"report {report}"
    before = report.read_bytes()
    assert b"ocr-baseline" in before
    bad = suites(results, "offline-floor", "--dataset", str(tmp / "no-such-folder"), "--report", str(report))
    assert bad.returncode == 4
    assert bad.stderr.strip() == f"ERROR: --dataset: {tmp / 'no-such-folder'}: dataset folder not found", bad.stderr
    assert "Traceback" not in bad.stdout + bad.stderr
    assert report.read_bytes() == before


def test_the_offline_job_renders_its_report_from_the_suites_only(tmp_path):
    """tox's commands_post runs even after a failed session, so the offline job must not render the
    report there; the suites do it after a complete gating, without pytest-benchmark's table."""
    import configparser

    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    offline = tox["testenv:offline"]
    assert "commands_post" not in offline
    assert "--report" in offline["commands"] and "--benchmark-disable" in offline["commands"]


def test_an_emulated_bedrock_run_gates_with_dry_run_thresholds_without_being_told(tmp_path):
    """tox -e nova-pro against the emulator: no --thresholds given, the dry-run set is chosen and said."""
    pytest.importorskip("boto3")
    from migbench.datasets import load_dataset
    from migbench.emulator import GroundTruthResponder, run_emulator
    from migbench.fixtures import default_dataset

    with run_emulator(responder=GroundTruthResponder(load_dataset(default_dataset()))) as emu:
        env = {"AWS_ENDPOINT_URL_BEDROCK_RUNTIME": emu.url, "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "MIGBENCH_ALLOW_LOOPBACK": "1"}
        cmd = [sys.executable, "-m", "pytest", "suites", "--backend", "nova-pro", "--results", str(tmp_path / "r"),
               "--limit", "3", "-q", "-p", "no:cacheprovider", "--benchmark-disable"]
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MIGBENCH_"))}
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
                              env={**base, "HF_HUB_OFFLINE": "1", "COLUMNS": "400", **env})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "migbench: nova-pro points at a loopback endpoint (an emulator): gating with the dry-run thresholds" in out
    s = summary(tmp_path / "r", "nova-pro")
    assert s["thresholds"]["name"] == "dry-run" and s["run"]["emulated"] is True and s["verdict"] == "pass"
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("migbench nova-pro [EMULATED]: verdict PASS; 3 documents;") and "thresholds dry-run" in last
