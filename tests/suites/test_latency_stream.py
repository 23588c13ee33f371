"""The latency suite's time to first token: a streamed Bedrock run (`--backend-option stream=true`)
through real botocore to the emulator reports TTFT p50/p95 and output tokens/s; a run that was not
streamed says the figure was not measured instead of passing on nothing."""

from __future__ import annotations

import pytest

from tests.suites.test_gating import junit_outcomes, suites, summary

pytestmark = pytest.mark.slow
TTFT = "suites.test_latency::test_time_to_first_token"


def test_the_latency_suite_reports_ttft_of_a_streamed_run_and_skips_an_unstreamed_one(tmp_path):
    pytest.importorskip("boto3")
    from migbench.datasets import load_dataset
    from migbench.emulator import GroundTruthResponder, load_config, run_emulator
    from migbench.fixtures import default_dataset

    cfg = load_config()
    cfg.latency.fixed_s = 0.03
    with run_emulator(cfg, responder=GroundTruthResponder(load_dataset(default_dataset()))) as emu:
        env = {"AWS_ENDPOINT_URL_BEDROCK_RUNTIME": emu.url, "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "MIGBENCH_ALLOW_LOOPBACK": "1"}
        common = ["--limit", "3", "-k", "time_to_first_token"]
        streamed = suites(tmp_path / "s", "dry-run", *common, "--backend-option", "stream=true",
                          "--junitxml", str(tmp_path / "s.xml"), backend="nova-pro", timeout=300, env=env)
        plain = suites(tmp_path / "p", "dry-run", *common, "-rs", "--junitxml", str(tmp_path / "p.xml"),
                       backend="nova-pro", timeout=300, env=env)
    assert streamed.returncode == 0, (streamed.stdout + streamed.stderr)[-3000:]
    assert junit_outcomes(tmp_path / "s.xml")[TTFT] == "passed"
    s = summary(tmp_path / "s", "nova-pro")
    ttft = s["extras"]["ttft"]
    assert ttft["n"] == 3 and 0.03 <= ttft["ttft_p50"] <= ttft["ttft_p95"] and ttft["tokens_per_s_p50"] > 0
    assert s["streaming"] == ttft  # the one figure of the analysis, in the summary too
    assert plain.returncode == 0, (plain.stdout + plain.stderr)[-3000:]
    assert junit_outcomes(tmp_path / "p.xml")[TTFT] == "skipped"
    assert "not measured (not streamed" in plain.stdout
    assert summary(tmp_path / "p", "nova-pro")["streaming"]["measured"] is False
