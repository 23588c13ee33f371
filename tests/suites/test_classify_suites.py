"""`pytest suites --classify --schema FILE`: the options reach the run the suites gate."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.suites.test_gating import LIMIT, suites, summary

pytestmark = pytest.mark.slow
INCUMBENT = Path(__file__).resolve().parents[1] / "data" / "incumbent_field_definitions.yaml"


def test_a_bad_schema_file_is_a_usage_error_before_anything_runs(tmp_path):
    bad = tmp_path / "fields.yaml"
    bad.write_text("columns: [a, b]\n")
    proc = suites(tmp_path / "r", "dry-run", "--schema", str(bad))
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "not a field schema" in proc.stderr
    assert not (tmp_path / "r" / "migbench.sqlite").exists()


def test_the_suites_gate_a_classified_run_under_the_incumbents_schema(tmp_path):
    pytest.importorskip("boto3")
    from migbench.datasets import load_dataset
    from migbench.emulator import GroundTruthResponder, run_emulator
    from migbench.fixtures import default_dataset
    from migbench.store import RunStore

    with run_emulator(responder=GroundTruthResponder(load_dataset(default_dataset()))) as emu:
        env = {"AWS_ENDPOINT_URL_BEDROCK_RUNTIME": emu.url, "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "MIGBENCH_ALLOW_LOOPBACK": "1"}
        proc = suites(tmp_path / "r", "dry-run", "--limit", LIMIT, "--classify", "--schema", str(INCUMBENT),
                      "-k", "overall or usage", backend="nova-pro", timeout=300, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    s = summary(tmp_path / "r", "nova-pro")
    run = RunStore(tmp_path / "r").run(s["run"]["run_id"])
    assert run.config["classified"] is True and run.config["schema"]["format"] == "incumbent"
    docs = RunStore(tmp_path / "r").documents(run.run_id)
    assert len(docs) == int(LIMIT)
    assert all(d.response.extra["classification"]["route"] == d.doc_type for d in docs)
    assert all("DOCUMENT_TYPE" in {x.field for x in d.scores} for d in docs)
