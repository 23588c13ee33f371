"""The suites' session (migbench.suite_session) in-process: dry-run thresholds picked for an emulator,
the --scoring profile applied to the stored run before the gates, progress shown while the backend
runs, and a report written only after a complete gating."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from migbench.suite_session import SuiteSession, loopback_cloud


def session(tmp_path: Path, backend: str = "nova-pro", **over) -> SuiteSession:
    o = SimpleNamespace(backend=backend, dataset=None, thresholds=None, results=str(tmp_path / "r"), baseline=None,
                        live=False, limit=3, backend_option=[], model=None, model_path=None, scoring=None,
                        report=None, review_rules=None)
    for k, v in over.items():
        setattr(o, k, v)
    return SuiteSession.from_options(o)


@pytest.fixture
def aws_env(monkeypatch):
    for k in list(__import__("os").environ):
        if k.startswith(("AWS_", "MIGBENCH_")):
            monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return monkeypatch


def test_an_emulator_endpoint_picks_the_dry_run_thresholds_and_says_so(tmp_path, aws_env):
    aws_env.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "http://127.0.0.1:9")
    st = session(tmp_path)
    assert st.effective_thresholds_ref == "dry-run"
    assert st.threshold_set.name == "dry-run" and st.thresholds.dry_run
    (note,) = st.notes
    assert "loopback" in note and "dry-run thresholds" in note and "--thresholds" in note


def test_chosen_thresholds_and_real_endpoints_are_left_alone(tmp_path, aws_env):
    aws_env.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "http://127.0.0.1:9")
    explicit = session(tmp_path, thresholds="incumbent")
    assert explicit.effective_thresholds_ref == "incumbent" and not explicit.notes
    aws_env.delenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME")
    real = session(tmp_path)
    assert real.effective_thresholds_ref is None and real.threshold_set.name != "dry-run" and not real.notes
    offline = session(tmp_path, backend="ocr-baseline")
    assert offline.effective_thresholds_ref is None
    assert loopback_cloud("bedrock", {"endpoint_url": "http://localhost:1"}, {})
    assert not loopback_cloud("ocr", {"endpoint_url": "http://localhost:1"}, {})
    assert not loopback_cloud("bedrock", {}, {"AWS_ENDPOINT_URL_BEDROCK_RUNTIME": "https://bedrock.example.com"})


class Recorder:
    def __init__(self, label):
        self.label, self.started, self.results = label, None, []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def on_start(self, pending, skipped):
        self.started = (pending, skipped)

    def on_result(self, result):
        self.results.append(result.doc_id)


def test_the_session_shows_progress_and_scores_the_run_with_the_profile_asked_for(tmp_path, aws_env):
    pytest.importorskip("boto3")
    from migbench.datasets import load_dataset
    from migbench.emulator import GroundTruthResponder, run_emulator
    from migbench.fixtures import default_dataset
    from migbench.schema import load_schema
    from migbench.scoring import document_f1, score_document

    schema = load_schema()
    with run_emulator(responder=GroundTruthResponder(load_dataset(default_dataset()), error_rate=0.5)) as emu:
        aws_env.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", emu.url)
        aws_env.setenv("MIGBENCH_ALLOW_LOOPBACK", "1")
        made: list[Recorder] = []
        st = session(tmp_path, scoring="exact")
        store, run, rows = st.ensure_run(lambda label: made.append(Recorder(label)) or made[-1])
        (rec,) = made
        assert rec.label == "nova-pro" and rec.started == (3, 0) and len(rec.results) == 3
        assert store.scoring(run.run_id) == "exact" and st.extras["scoring"] == "exact"
        for r in rows:  # every stored score is the exact profile's, not the runner's default
            assert r.scores == score_document(r.ground_truth, r.fields, schema, "exact")
            assert r.doc_f1 == document_f1(r.scores)
        # the same run gated again without --scoring goes back to the default profile, resumed, not rerun
        again = session(tmp_path)
        store2, run2, rows2 = again.ensure_run()
        assert run2.run_id == run.run_id and again.extras["run_summary"]["done_now"] == 0
        assert store2.scoring(run.run_id) == "incumbent"
        assert all(r.scores == score_document(r.ground_truth, r.fields, schema, "incumbent") for r in rows2)
        again.summary = {"verdict": "pass", "scoring": "incumbent"}
        assert "incumbent scoring" in again.verdict_line()


def test_a_session_that_gated_nothing_leaves_the_last_report(tmp_path):
    report = tmp_path / "report.html"
    report.write_text("last good report")
    st = session(tmp_path, backend="ocr-baseline", report=str(report))
    line = st.write_report()
    assert report.read_text() == "last good report"
    assert "report not written" in line and "left as it was" in line
    assert session(tmp_path, backend="ocr-baseline").write_report() is None  # no --report: nothing said


def test_review_rules_from_the_command_line_reach_the_analysis_and_a_bad_file_is_a_usage_error(tmp_path):
    from migbench.contracts import UsageError
    from migbench.review import load_review_rules

    team = tmp_path / "team_rules.yaml"
    team.write_text(load_review_rules().model_dump_json().replace('"review_cost":1.5', '"review_cost":4.25'))
    st = session(tmp_path, backend="ocr-baseline", review_rules=str(team))
    assert st.review_rules.review_cost == 4.25
    assert session(tmp_path, backend="ocr-baseline").review_rules.review_cost == load_review_rules().review_cost
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: 1\nreview_cost: -3\n")
    with pytest.raises(UsageError, match="--review-rules"):
        _ = session(tmp_path, backend="ocr-baseline", review_rules=str(broken)).review_rules
