"""migbench's pytest plugin: the options, fixtures, markers and hooks of the shared suites.

`pytest suites --backend nova-lite` runs the backend over the dataset ONCE per session through
the Runner and the run store (resumable: a rerun re-uses the stored run with the same identity),
then every suite asserts on the stored rows. Test ids are generated at collection time from the
dataset's ground truth, per backend x document type x field (`nova-lite/invoice/GST_AMOUNT`), so
a CI failure names what missed its threshold. At session end a JSON summary (gates, metrics,
verdicts) is written to the results directory beside pytest's own `--junitxml`.

Registered as the `pytest11` entry point and from the root conftest; both use the module name,
so pytest registers it once. Module-level imports stay light: the plugin loads in every pytest
run of the environment, including the harness's unit tests.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

DEFAULT_BACKEND = "ocr-baseline"
SUMMARY_NAME = "migbench-summary-{backend}.json"
PARAMS = ("migbench_backend", "migbench_doc_type", "migbench_field", "migbench_latency", "migbench_volume")


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("migbench", "migbench shared suites (pytest suites --backend NAME)")
    g.addoption("--backend", default=os.environ.get("MIGBENCH_BACKEND", DEFAULT_BACKEND),
                help=f"registry backend to gate (default: $MIGBENCH_BACKEND or {DEFAULT_BACKEND})")
    g.addoption("--dataset", default=os.environ.get("MIGBENCH_DATASET"),
                help="folder with documents + ground_truth.csv/.jsonl (default: the shipped synthetic set)")
    g.addoption("--thresholds", default=os.environ.get("MIGBENCH_THRESHOLDS"),
                help="thresholds YAML, or a packaged name: incumbent (default), dry-run")
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


def pytest_configure(config: pytest.Config) -> None:
    for line in ("live: calls real cloud services; only with --live",
                 "gpu: needs a CUDA GPU; skipped with a reason otherwise",
                 "slow: long-running (OCR over real images, subprocess kills)",
                 "migbench: a shared conformance suite test (needs a backend run)"):
        config.addinivalue_line("markers", line)
    config.stash[STATE] = State.from_config(config)
    if config.option.thresholds:
        _ = config.stash[STATE].thresholds  # a bad file is a usage error now, not a collection error later


def parse_backend_options(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise pytest.UsageError(f"--backend-option expects KEY=VALUE, got {pair!r}")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def cloud_endpoint(family: str, options: dict[str, Any], env: dict[str, str]) -> str | None:
    """Endpoint a cloud backend will call: its option, else botocore's AWS_ENDPOINT_URL_* variables."""
    if options.get("endpoint_url"):
        return str(options["endpoint_url"])
    service = {"bedrock": "BEDROCK_RUNTIME", "sagemaker": "SAGEMAKER_RUNTIME"}.get(family)
    return env.get(f"AWS_ENDPOINT_URL_{service}") or env.get("AWS_ENDPOINT_URL") if service else None


def live_refusal(backend: str, family: str, options: dict[str, Any], env: dict[str, str], live: bool) -> str | None:
    """Why this run needs --live (it would reach real AWS), or None."""
    from urllib.parse import urlsplit

    from migbench.gates import CLOUD_FAMILIES
    from migbench.residency import is_loopback, load_policy

    if live or family not in CLOUD_FAMILIES:
        return None
    endpoint = cloud_endpoint(family, options, env)
    if endpoint and is_loopback(urlsplit(endpoint).hostname, load_policy()):
        return None
    return (f"{backend} ({family}) would call real AWS at {endpoint or 'the default endpoint'}, which costs money "
            "and needs credentials: pass --live, or point AWS_ENDPOINT_URL_BEDROCK_RUNTIME at an emulator "
            "(with MIGBENCH_ALLOW_LOOPBACK=1)")


@dataclass
class State:
    """Per-session settings and, once run, the stored run the suites assert on."""

    backend: str
    dataset_dir: Path | None
    thresholds_ref: str | None
    results: Path
    baseline_ref: str | None
    live: bool
    limit: int | None
    options: dict[str, Any]
    model: str | None
    gates: list[tuple[str, Any]] = field(default_factory=list)  # (nodeid, Gate)
    extras: dict[str, Any] = field(default_factory=dict)  # benchmarks, break-even, ... for the summary
    outcomes: dict[str, str] = field(default_factory=dict)
    failure: str | None = None
    used: bool = False
    _cache: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: pytest.Config) -> State:
        o = config.option
        if o.limit is not None and o.limit < 1:
            raise pytest.UsageError(f"--limit must be at least 1, got {o.limit}")
        return cls(backend=o.backend, dataset_dir=Path(o.dataset) if o.dataset else None,
                   thresholds_ref=o.thresholds, results=Path(o.results), baseline_ref=o.baseline, live=o.live,
                   limit=o.limit, options=parse_backend_options(o.backend_option),
                   model=o.model_path or o.model)

    # cheap, collection-time facts ------------------------------------------------
    def _memo(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def schema(self) -> Any:
        from migbench.schema import load_schema
        return self._memo("schema", load_schema)

    @property
    def dataset(self) -> Any:
        def load() -> Any:
            from migbench.datasets import DatasetError, load_dataset
            from migbench.fixtures import default_dataset
            try:
                return load_dataset(self.dataset_dir or default_dataset())
            except DatasetError as exc:
                raise pytest.UsageError(f"--dataset: {exc}") from None
        return self._memo("dataset", load)

    @property
    def thresholds(self) -> Any:
        def load() -> Any:
            from migbench.catalog import CatalogError
            from migbench.gates import load_thresholds
            try:
                return load_thresholds(self.thresholds_ref, self.schema)
            except CatalogError as exc:
                raise pytest.UsageError(f"--thresholds: {exc}") from None
        return self._memo("thresholds", load)

    @property
    def documents(self) -> list[Any]:
        """The documents this session gates: the runner's order, first --limit of them."""
        docs = self.dataset.documents
        return docs[: self.limit] if self.limit is not None else list(docs)

    @property
    def doc_ids(self) -> set[str]:
        return {d.doc_id for d in self.documents} | {p.doc_id for p in self.dataset.problems}

    @property
    def doc_types(self) -> list[str]:
        return sorted({d.doc_type for d in self.documents})

    @property
    def units(self) -> list[tuple[str, str]]:
        """(doc_type, field) pairs some selected document's ground truth has and the scorer scores."""
        return sorted({(d.doc_type, f) for d in self.documents for f in d.ground_truth if self.schema.is_scored(f)})

    # the run ----------------------------------------------------------------------
    def fail(self, message: str) -> None:
        self.failure = message
        pytest.fail(message, pytrace=False)

    def ensure_run(self) -> tuple[Any, dict[str, Any], list[dict[str, Any]]]:
        self.used = True
        if "run" in self._cache:
            return self._cache["run"]
        if self.failure:
            pytest.fail(self.failure, pytrace=False)
        from migbench.catalog import CatalogError
        from migbench.contracts import SetupError
        from migbench.registry import create_backend, load_backend_class
        from migbench.runner import Runner, RunOptions
        from migbench.store import RunStore

        try:
            family = load_backend_class(self.backend).family
        except SetupError as exc:
            self.fail(f"{self.backend}: {exc}")
        why = live_refusal(self.backend, family, self.options, dict(os.environ), self.live)
        if why:
            self.failure = why
            pytest.exit(why, returncode=pytest.ExitCode.USAGE_ERROR)
        store = RunStore(self.results)
        try:
            backend = create_backend(self.backend, model=self.model, options=self.options)
        except (SetupError, CatalogError) as exc:
            self.fail(f"{self.backend}: {exc}")
        try:
            summary = Runner(backend, self.dataset, store, RunOptions(limit=self.limit), schema=self.schema).run()
        except (SetupError, CatalogError) as exc:
            self.fail(f"{self.backend}: {exc}")
        finally:
            backend.close()
        if summary.interrupted or summary.remaining:
            self.fail(f"{self.backend}: run {summary.run_id} incomplete ({summary.remaining} documents left"
                      f"{', interrupted' if summary.interrupted else ''}); rerun to resume")
        run = store.run(summary.run_id)
        wanted = self.doc_ids
        rows = [d for d in store.documents(run["run_id"]) if d["doc_id"] in wanted]
        self._cache["run"] = (store, run, rows)
        self.extras["run_summary"] = {"resumed": summary.resumed, "skipped": summary.skipped,
                                      "done_now": summary.done_now, "wall_s": summary.wall_s}
        return self._cache["run"]

    def ensure_baseline(self) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        if self.baseline_ref is None:
            return None
        if "baseline" not in self._cache:
            from migbench.gates import resolve_run
            store, run, _ = self.ensure_run()
            try:
                base = dict(resolve_run(store.runs(), self.baseline_ref, run["dataset_hash"], exclude=run["run_id"]))
            except LookupError as exc:
                self.fail(f"--baseline: {exc}")
            wanted = self.doc_ids
            rows = [d for d in store.documents(base["run_id"]) if d["doc_id"] in wanted]
            self._cache["baseline"] = (base, rows)
        return self._cache["baseline"]


STATE = pytest.StashKey[State]()


def state_of(config: pytest.Config) -> State:
    return config.stash[STATE]


# collection: ids per backend x doc type x field ------------------------------------------
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    wanted = [p for p in PARAMS if p in metafunc.fixturenames]
    if not wanted:
        return
    st = state_of(metafunc.config)
    b = st.backend
    if "migbench_backend" in wanted:
        metafunc.parametrize("migbench_backend", [b], ids=[b])
    if "migbench_doc_type" in wanted:
        metafunc.parametrize("migbench_doc_type", st.doc_types, ids=[f"{b}/{dt}" for dt in st.doc_types])
    if "migbench_field" in wanted:
        metafunc.parametrize("migbench_field", st.units, ids=[f"{b}/{dt}/{f}" for dt, f in st.units])
    if "migbench_latency" in wanted:
        from migbench.gates import PERCENTILES
        pairs = [(dt, p) for dt in st.doc_types for p in PERCENTILES]
        metafunc.parametrize("migbench_latency", pairs, ids=[f"{b}/{dt}/{p}" for dt, p in pairs])
    if "migbench_volume" in wanted:
        vols = st.thresholds.cost.volumes_per_day
        metafunc.parametrize("migbench_volume", vols, ids=[f"{b}/{v}-per-day" for v in vols])


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
@pytest.fixture(scope="session")
def migbench_state(request: pytest.FixtureRequest) -> State:
    return state_of(request.config)


@pytest.fixture(scope="session")
def migbench_run(migbench_state: State) -> tuple[Any, dict[str, Any], list[dict[str, Any]]]:
    """(store, run dict, document rows) of the backend's run over the dataset, run once per session."""
    return migbench_state.ensure_run()


@pytest.fixture(scope="session")
def migbench_baseline(migbench_state: State, migbench_run: Any) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """(run dict, rows) of the --baseline run on the same documents, or None without --baseline."""
    return migbench_state.ensure_baseline()


@pytest.fixture(scope="session")
def migbench_thresholds(migbench_state: State) -> Any:
    return migbench_state.thresholds


@pytest.fixture(scope="session")
def migbench_schema(migbench_state: State) -> Any:
    return migbench_state.schema


@pytest.fixture
def migbench_check(request: pytest.FixtureRequest, migbench_state: State) -> Callable[[Any], Any]:
    """check(gate): record the gate for the JSON summary, then fail or skip the test as it says."""
    def check(gate: Any) -> Any:
        migbench_state.gates.append((request.node.nodeid, gate))
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


def build_summary(st: State, exitstatus: int) -> dict[str, Any]:
    from migbench.gates import verdict

    gates = [{**g.to_dict(), "nodeid": nodeid, "outcome": st.outcomes.get(nodeid)} for nodeid, g in st.gates]
    out: dict[str, Any] = {
        "backend": st.backend, "exit_status": int(exitstatus), "failure": st.failure,
        "thresholds": {"ref": st.thresholds_ref or "incumbent"}, "limit": st.limit,
        "verdict": "fail" if (st.failure or int(exitstatus) not in (0, 5)) else verdict(g for _, g in st.gates),
        "tests": {k: sum(1 for v in st.outcomes.values() if v == k) for k in ("passed", "failed", "skipped", "error")},
        "failed_tests": sorted(n for n, v in st.outcomes.items() if v in ("failed", "error")),
        "gates": gates, "extras": st.extras,
    }
    if "thresholds" in st._cache:
        th = st._cache["thresholds"]
        out["thresholds"].update(name=th.name, dry_run=th.dry_run, statistic=th.statistic)
    if "run" in st._cache:
        from migbench.gates import latency_percentiles
        from migbench.stats import aggregate

        _, run, rows = st._cache["run"]
        out["run"] = {k: run.get(k) for k in ("run_id", "backend", "family", "model", "emulated", "dataset_path",
                                              "dataset_hash", "status", "started_at", "finished_at", "wall_s")}
        out["metrics"] = aggregate(rows).to_dict()
        out["latency"] = {dt: latency_percentiles(rows, dt) for dt in sorted({r["doc_type"] for r in rows})}
        out["latency"]["all"] = latency_percentiles(rows)
    if "baseline" in st._cache:
        base, _ = st._cache["baseline"]
        out["baseline"] = {"run_id": base["run_id"], "backend": base["backend"]}
    return out


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    st = session.config.stash.get(STATE, None)
    if st is None or not (st.used or st.failure):
        return
    if hasattr(session.config, "workerinput"):  # xdist workers: the controller writes it
        return
    st.results.mkdir(parents=True, exist_ok=True)
    path = st.results / SUMMARY_NAME.format(backend=st.backend)
    path.write_text(json.dumps(build_summary(st, exitstatus), indent=2, default=str) + "\n", encoding="utf-8")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    st = config.stash.get(STATE, None)
    if st is None or not st.used:
        return
    failed = [g for _, g in st.gates if g.status == "fail"]
    terminalreporter.write_sep("-", f"migbench {st.backend}: {len(st.gates)} gates, {len(failed)} failed")
    for g in failed:
        terminalreporter.write_line(f"GATE FAILED {g.message}")
    terminalreporter.write_line(f"summary: {st.results / SUMMARY_NAME.format(backend=st.backend)}")
