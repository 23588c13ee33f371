"""migbench's pytest plugin: wiring only (options, markers, fixtures, hooks) around
`migbench.suite_session.SuiteSession`, which holds the state, runs the backend and keeps the verdict.

`pytest suites --backend nova-lite` runs the backend over the dataset ONCE per session (resumable),
`migbench.analysis` computes every figure and gate once, and each suite test checks one gate.
Test ids are generated at collection time from the dataset's ground truth, per backend x document
type x field (`nova-lite/invoice/GST_AMOUNT`), so a CI failure names what missed its threshold.
At session end the verdict (naming its thresholds file) goes to the JSON summary, to JUnit
properties, to one console line and, for a complete gating, into the run store for the report.

Loaded by the root conftest.py for this checkout only (no pytest11 entry point): installing migbench
changes nothing in other projects' pytest runs. Module-level imports stay light.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import pytest
from migbench.suite_session import DEFAULT_BACKEND, SessionFailure, SuiteSession

PARAMS = ("migbench_backend", "migbench_doc_type", "migbench_field", "migbench_latency", "migbench_volume")
STATE = pytest.StashKey[SuiteSession]()


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("migbench", "migbench shared suites (pytest suites --backend NAME)")
    g.addoption("--backend", default=os.environ.get("MIGBENCH_BACKEND", DEFAULT_BACKEND),
                help=f"registry backend to gate (default: $MIGBENCH_BACKEND or {DEFAULT_BACKEND})")
    g.addoption("--dataset", default=os.environ.get("MIGBENCH_DATASET"),
                help="folder with documents + ground_truth.csv/.jsonl (default: the shipped synthetic set)")
    g.addoption("--thresholds", default=os.environ.get("MIGBENCH_THRESHOLDS"),
                help="thresholds YAML, or a packaged name: incumbent (default), offline-floor, dry-run")
    g.addoption("--results", default=os.environ.get("MIGBENCH_RESULTS", "results"),
                help="results directory holding the run store (default: ./results)")
    g.addoption("--baseline", default=None,
                help="incumbent run id or backend name in the same store: adds paired non-inferiority tests")
    g.addoption("--live", action="store_true", default=False,
                help="allow calls that cost money / need credentials (a cloud backend on a real AWS endpoint)")
    g.addoption("--limit", type=int, default=None, help="first N documents of the dataset only")
    g.addoption("--backend-option", action="append", default=[], metavar="KEY=VALUE",
                help="backend option, as the CLI's -o (repeatable; VALUE read as JSON when it parses)")
    g.addoption("--model", default=None, help="model / profile id or endpoint name (overrides the catalog)")
    g.addoption("--model-path", default=None, help="local model directory (local backends)")
    g.addoption("--scoring", default=None, choices=["incumbent", "exact"],
                help="scoring profile (ground_truth/scoring_profiles.yaml; default: incumbent); the stored run "
                     "is re-scored with it before the gates, without calling any model")
    g.addoption("--classify", action="store_true", default=False,
                help="the backend predicts each document's type first and extracts with that type's prompt "
                     "(the incumbent's pipeline; DOCUMENT_TYPE is then scored); default: the type is given")
    g.addoption("--schema", default=os.environ.get("MIGBENCH_SCHEMA"), metavar="FILE",
                help="field schema: migbench's fields.yaml format or the incumbent's field_definitions.yaml")
    g.addoption("--review-rules", default=os.environ.get("MIGBENCH_REVIEW_RULES"), metavar="FILE",
                help="rules routing documents to human review, and the price of a review (default: the "
                     "packaged review_rules.yaml); used by the gates' analysis and by --report")
    g.addoption("--report", default=None, metavar="PATH",
                help="render the HTML report to PATH after a complete gating (a session that gated nothing "
                     "leaves the last report as it was)")


def pytest_configure(config: pytest.Config) -> None:
    from migbench.contracts import UsageError

    for line in ("live: calls real cloud services; only with --live",
                 "gpu: needs a CUDA GPU; skipped with a reason otherwise",
                 "slow: long-running (OCR over real images, subprocess kills)",
                 "migbench: a shared conformance suite test (needs a backend run)"):
        config.addinivalue_line("markers", line)
    try:
        st = SuiteSession.from_options(config.option)
        # A bad file or folder given on the command line is a usage error now, in one line, not a
        # collection error (with tracebacks) later.
        if getattr(config.option, "schema", None):
            _ = st.schema
        if config.option.thresholds:
            _ = st.threshold_set
        if config.option.dataset:
            _ = st.dataset
        if getattr(config.option, "review_rules", None):
            _ = st.review_rules
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[STATE] = st


def state_of(config: pytest.Config) -> SuiteSession:
    return config.stash[STATE]


# collection: ids per backend x doc type x field ------------------------------------------
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    wanted = [p for p in PARAMS if p in metafunc.fixturenames]
    if not wanted:
        return
    from migbench.stats import PERCENTILES

    st = state_of(metafunc.config)
    b = st.backend
    if "migbench_backend" in wanted:
        metafunc.parametrize("migbench_backend", [b], ids=[b])
    if "migbench_doc_type" in wanted:
        metafunc.parametrize("migbench_doc_type", st.doc_types, ids=[f"{b}/{dt}" for dt in st.doc_types])
    if "migbench_field" in wanted:
        metafunc.parametrize("migbench_field", st.units, ids=[f"{b}/{dt}/{f}" for dt, f in st.units])
    if "migbench_latency" in wanted:
        pairs = [(dt, p) for dt in st.doc_types for p in PERCENTILES]
        metafunc.parametrize("migbench_latency", pairs, ids=[f"{b}/{dt}/{p}" for dt, p in pairs])
    if "migbench_volume" in wanted:
        vols = st.thresholds.cost.volumes_per_day
        metafunc.parametrize("migbench_volume", vols, ids=[f"{b}/{v}-per-day" for v in vols])


def pytest_collection_finish(session: pytest.Session) -> None:
    """Choices the session made for the user (e.g. dry-run thresholds for an emulator), one line each."""
    st = session.config.stash.get(STATE, None)
    reporter = session.config.pluginmanager.getplugin("terminalreporter")
    if st is not None and reporter is not None:
        for note in st.notes:
            reporter.write_line(f"migbench: {note}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("live"):
        skip = pytest.mark.skip(reason="calls real cloud services: pass --live")
        for item in items:
            if "live" in item.keywords:
                item.add_marker(skip)
    gpu_items = [i for i in items if "gpu" in i.keywords]
    if gpu_items and not _has_cuda():
        for item in gpu_items:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)"))


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


# fixtures ----------------------------------------------------------------------------------
def _or_fail(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except SessionFailure as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def migbench_state(request: pytest.FixtureRequest) -> SuiteSession:
    return state_of(request.config)


@contextmanager
def _on_terminal(config: pytest.Config) -> Iterator[Callable[[str], Any]]:
    """A progress factory that writes past pytest's output capture (the run takes minutes inside a
    fixture): the bar on a terminal, a plain line every 30 s in a CI log (migbench.progress)."""
    from migbench.progress import run_progress
    from rich.console import Console

    capman = config.pluginmanager.getplugin("capturemanager")
    reporter = config.pluginmanager.getplugin("terminalreporter")
    with capman.global_and_fixture_disabled() if capman is not None else nullcontext():
        if reporter is not None:
            reporter.ensure_newline()
        # sys.stdout here is pytest's own terminal again; the console is made inside the block.
        yield lambda label: run_progress(Console(file=sys.stdout, soft_wrap=True), label)


@pytest.fixture(scope="session")
def migbench_run(request: pytest.FixtureRequest, migbench_state: SuiteSession) -> tuple[Any, Any, list[Any]]:
    """(store, RunRecord, typed document rows) of the backend's run over the dataset, run once."""
    why = _or_fail(migbench_state.live_refusal)
    if why:
        migbench_state.failure = why
        pytest.exit(why, returncode=pytest.ExitCode.USAGE_ERROR)
    if migbench_state.has_run:  # no progress to show
        return _or_fail(migbench_state.ensure_run)
    with _on_terminal(request.config) as progress:
        return _or_fail(lambda: migbench_state.ensure_run(progress))


@pytest.fixture(scope="session")
def migbench_baseline(migbench_state: SuiteSession, migbench_run: Any) -> tuple[Any, list[Any]] | None:
    """(RunRecord, rows) of the --baseline run on the same documents, or None without --baseline."""
    return _or_fail(migbench_state.ensure_baseline)


@pytest.fixture(scope="session")
def migbench_analysis(migbench_state: SuiteSession, migbench_run: Any) -> Any:
    """The run's migbench.analysis.RunAnalysis: every figure and gate, computed once."""
    return _or_fail(migbench_state.ensure_analysis)


@pytest.fixture(scope="session")
def migbench_thresholds(migbench_state: SuiteSession) -> Any:
    return migbench_state.thresholds


@pytest.fixture(scope="session")
def migbench_schema(migbench_state: SuiteSession) -> Any:
    return migbench_state.schema


@pytest.fixture
def migbench_check(request: pytest.FixtureRequest, migbench_state: SuiteSession,
                   migbench_analysis: Any) -> Callable[[str, str], Any]:
    """check(kind, gate_id): the analysis' gate, recorded for the verdict; fails or skips as it says."""
    def check(kind: str, gate_id: str) -> Any:
        try:
            gate = migbench_state.check(kind, gate_id, request.node.nodeid)
        except LookupError as exc:
            pytest.fail(str(exc), pytrace=False)
        if gate.status == "fail":
            pytest.fail(gate.message, pytrace=False)
        if gate.status == "skip":
            pytest.skip(gate.message)
        return gate
    return check


# results for CI ------------------------------------------------------------------------------
@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    """Outcome per test id for the JSON summary: a setup/teardown failure is an error."""
    report = yield
    st = item.config.stash.get(STATE, None)
    if (st is not None and (report.when == "call" or report.outcome != "passed")
            and st.outcomes.get(item.nodeid) in (None, "passed")):
        st.outcomes[item.nodeid] = "error" if report.when != "call" and report.failed else report.outcome
    return report


@pytest.hookimpl(tryfirst=True)  # before junitxml writes its file, so the properties are in it
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    st = session.config.stash.get(STATE, None)
    if st is None or not (st.used or st.failure):
        return
    if hasattr(session.config, "workerinput"):  # xdist workers: the controller writes it
        return
    summary = st.finish(exitstatus)
    summary["report"] = st.write_report()
    st.write_summary()
    from _pytest.junitxml import xml_key

    xml = session.config.stash.get(xml_key, None)
    if xml is not None:
        th = summary.get("thresholds") or {}
        for key, value in (("migbench_verdict", summary["verdict"]), ("migbench_backend", st.backend),
                           ("migbench_run_id", (summary.get("run") or {}).get("run_id")),
                           ("migbench_thresholds", th.get("name")), ("migbench_thresholds_file", th.get("file")),
                           ("migbench_thresholds_sha256", th.get("sha256")),
                           ("migbench_gates", len(summary.get("gates") or [])),
                           ("migbench_gates_failed", (summary.get("gate_counts") or {}).get("fail", 0))):
            if value is not None:
                xml.add_global_property(key, str(value))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    st = config.stash.get(STATE, None)
    if st is None or st.summary is None:
        return
    for g in st.summary.get("gates") or []:
        if g["status"] == "fail":
            terminalreporter.write_line(f"GATE FAILED {g['message']}")
    terminalreporter.write_line(f"migbench summary (JSON): {st.summary_path}")


def pytest_unconfigure(config: pytest.Config) -> None:
    """The verdict is the session's last line, after pytest's test counts: documents, verdict, gates,
    the thresholds that judged them, the scoring profile and where the report is."""
    st = config.stash.get(STATE, None)
    reporter = config.pluginmanager.getplugin("terminalreporter")
    if st is None or st.summary is None or reporter is None or hasattr(config, "workerinput"):
        return
    failed = st.summary.get("verdict") != "pass"
    reporter.write_line(st.verdict_line(), bold=True, red=failed, green=not failed)
