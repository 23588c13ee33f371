"""The state of one `pytest suites` session: settings, the backend's stored run, its analysis and
the verdict (what pytest-benchmark keeps in its session.py; migbench.pytest_plugin is the wiring).

The backend runs ONCE per session through the Runner and the run store (resumable), then
`migbench.analysis.analyse` computes every figure and gate with one threshold set; each suite test
checks one of those gates. At the end the verdict is written once and read everywhere: the JSON
summary, JUnit properties, the console line and, stored with the run, the HTML report.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migbench.contracts import MigbenchError, utc_now

DEFAULT_BACKEND = "ocr-baseline"
SUMMARY_NAME = "migbench-summary-{backend}.json"


class SessionFailure(Exception):
    """The run could not be made or found; the message is one line. pytest fails the test with it."""


def cloud_endpoint(family: str, options: dict[str, Any], env: dict[str, str]) -> str | None:
    """Endpoint a cloud backend will call: its option, else botocore's AWS_ENDPOINT_URL_* variables."""
    if options.get("endpoint_url"):
        return str(options["endpoint_url"])
    service = {"bedrock": "BEDROCK_RUNTIME", "sagemaker": "SAGEMAKER_RUNTIME", "textract": "TEXTRACT"}.get(family)
    return env.get(f"AWS_ENDPOINT_URL_{service}") or env.get("AWS_ENDPOINT_URL") if service else None


def loopback_cloud(family: str, options: dict[str, Any], env: dict[str, str]) -> bool:
    """A cloud backend pointed at a loopback endpoint: an emulator (or moto), never AWS."""
    from urllib.parse import urlsplit

    from migbench.gates import CLOUD_FAMILIES
    from migbench.residency import is_loopback, load_policy

    endpoint = cloud_endpoint(family, options, env) if family in CLOUD_FAMILIES else None
    return bool(endpoint and is_loopback(urlsplit(endpoint).hostname, load_policy()))


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
class SuiteSession:
    """Per-session settings and, once run, the stored run and its analysis the suites assert on."""

    backend: str
    dataset_dir: Path | None
    thresholds_ref: str | None
    results: Path
    baseline_ref: str | None
    live: bool
    limit: int | None
    options: dict[str, Any]
    model: str | None
    scoring: str | None = None  # --scoring; None: the default profile (incumbent)
    classify: bool = False  # --classify: the backend predicts each type first (DOCUMENT_TYPE then scored)
    schema_path: Path | None = None  # --schema FILE: migbench's format or the incumbent's field_definitions.yaml
    report_path: Path | None = None  # --report: rendered after a complete gating only
    review_rules_path: Path | None = None  # --review-rules FILE: routing to human review and its price
    checked: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, gate id) -> test node id
    extras: dict[str, Any] = field(default_factory=dict)  # benchmarks, break-even, ... for the summary
    outcomes: dict[str, str] = field(default_factory=dict)
    failure: str | None = None
    used: bool = False
    summary: dict[str, Any] | None = None  # the verdict, once the session finished
    gated: bool = False  # the verdict was stored with the run (complete gating, run made)
    notes: list[str] = field(default_factory=list)  # one-line facts the console shows before the tests
    report: str | None = None  # what became of --report, for the closing line
    _cache: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_options(cls, o: Any) -> SuiteSession:
        """From pytest's parsed options (the names `pytest_plugin.pytest_addoption` declares)."""
        from migbench.options import check_limit, parse_backend_options

        return cls(backend=o.backend, dataset_dir=Path(o.dataset) if o.dataset else None,
                   thresholds_ref=o.thresholds, results=Path(o.results), baseline_ref=o.baseline, live=o.live,
                   limit=check_limit(o.limit), options=parse_backend_options(o.backend_option, "--backend-option"),
                   model=o.model_path or o.model, scoring=getattr(o, "scoring", None),
                   classify=bool(getattr(o, "classify", False)),
                   schema_path=Path(o.schema) if getattr(o, "schema", None) else None,
                   report_path=Path(o.report) if getattr(o, "report", None) else None,
                   review_rules_path=Path(o.review_rules) if getattr(o, "review_rules", None) else None)

    # cheap, collection-time facts ------------------------------------------------
    def _memo(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def schema(self) -> Any:
        from migbench.options import resolve_schema
        return self._memo("schema", lambda: resolve_schema(self.schema_path, warn=self.notes.append))

    @property
    def dataset(self) -> Any:
        from migbench.options import resolve_dataset
        return self._memo("dataset", lambda: resolve_dataset(self.dataset_dir, schema=self.schema))

    @property
    def threshold_set(self) -> Any:
        from migbench.options import resolve_thresholds
        return self._memo("thresholds", lambda: resolve_thresholds(self.effective_thresholds_ref, self.schema))

    @property
    def effective_thresholds_ref(self) -> str | None:
        """--thresholds, else dry-run for a cloud backend on a loopback endpoint (an emulated run can only
        prove the plumbing, and real thresholds would refuse it), else the default (incumbent)."""
        if self.thresholds_ref is not None:
            return self.thresholds_ref
        if "auto_thresholds" not in self._cache:
            from migbench.registry import load_backend_class

            try:
                emulated = loopback_cloud(load_backend_class(self.backend).family, self.options, dict(os.environ))
            except MigbenchError:  # the backend cannot load: the run's test fails with why
                emulated = False
            self._cache["auto_thresholds"] = "dry-run" if emulated else None
            if emulated:
                self.notes.append(f"{self.backend} points at a loopback endpoint (an emulator): gating with the "
                                  "dry-run thresholds (plumbing, not accuracy); pass --thresholds to choose")
        return self._cache["auto_thresholds"]

    @property
    def thresholds(self) -> Any:
        return self.threshold_set.thresholds

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
    def _fail(self, message: str) -> SessionFailure:
        self.failure = message
        return SessionFailure(message)

    @property
    def has_run(self) -> bool:
        """The run was made (or failed) this session: nothing left to show progress for."""
        return "run" in self._cache or self.failure is not None

    def ensure_run(self, progress: Callable[[str], Any] | None = None) -> tuple[Any, Any, list[Any]]:
        """(store, RunRecord, typed rows of the selected documents); runs the backend once, then
        scores the stored run with --scoring. `progress(label)`: a context manager with the runner's
        on_start/on_result callbacks (migbench.progress), or None for a silent run."""
        self.used = True
        if "run" in self._cache:
            return self._cache["run"]
        if self.failure:
            raise SessionFailure(self.failure)
        from migbench.registry import create_backend
        from migbench.runner import Runner, RunOptions
        from migbench.store import RunStore

        store = RunStore(self.results)
        try:
            backend = create_backend(self.backend, model=self.model, options=self.options)
        except MigbenchError as exc:
            raise self._fail(f"{self.backend}: {exc}") from None
        from contextlib import nullcontext

        from migbench.options import apply_scoring

        try:
            with progress(self.backend) if progress is not None else nullcontext() as prog:
                callbacks = {"on_start": prog.on_start, "on_result": prog.on_result} if prog is not None else {}
                summary = Runner(backend, self.dataset, store, RunOptions(limit=self.limit, classify=self.classify),
                                 schema=self.schema,
                                 **callbacks).run()
        except MigbenchError as exc:
            raise self._fail(f"{self.backend}: {exc}") from None
        finally:
            backend.close()
        if summary.interrupted or summary.remaining:
            raise self._fail(f"{self.backend}: run {summary.run_id} incomplete ({summary.remaining} documents left"
                             f"{', interrupted' if summary.interrupted else ''}); rerun to resume")
        # After the run, before any analysis: every figure the suites gate is in this profile.
        self.extras["scoring"] = apply_scoring(store, summary.run_id, self.scoring, redone=summary.done_now,
                                               schema=self.schema)
        run = store.run(summary.run_id)
        wanted = self.doc_ids
        rows = [d for d in store.documents(run.run_id) if d.doc_id in wanted]
        self._cache["run"] = (store, run, rows)
        self.extras["run_summary"] = {"resumed": summary.resumed, "skipped": summary.skipped,
                                      "done_now": summary.done_now, "wall_s": summary.wall_s}
        return self._cache["run"]

    def family(self) -> str:
        from migbench.registry import load_backend_class

        try:
            return load_backend_class(self.backend).family
        except MigbenchError as exc:
            raise self._fail(f"{self.backend}: {exc}") from None

    def live_refusal(self) -> str | None:
        return live_refusal(self.backend, self.family(), self.options, dict(os.environ), self.live)

    def ensure_baseline(self) -> tuple[Any, list[Any]] | None:
        if self.baseline_ref is None:
            return None
        if "baseline" not in self._cache:
            from migbench.gates import resolve_run
            store, run, _ = self.ensure_run()
            try:
                base = resolve_run(store.runs(), self.baseline_ref, run.dataset_hash, exclude=run.run_id)
            except LookupError as exc:
                raise self._fail(f"--baseline: {exc}") from None
            wanted = self.doc_ids
            rows = [d for d in store.documents(base.run_id) if d.doc_id in wanted]
            self._cache["baseline"] = (base, rows)
        return self._cache["baseline"]

    def ensure_analysis(self) -> Any:
        """Every figure and gate of the run, computed once with this session's thresholds."""
        if "analysis" not in self._cache:
            from migbench.analysis import analyse

            _, run, rows = self.ensure_run()
            self._cache["analysis"] = analyse(run, rows, self.threshold_set, self.schema,
                                              baseline=self.ensure_baseline(), review_rules=self.review_rules)
        return self._cache["analysis"]

    @property
    def review_rules(self) -> Any:
        """The review routing rules (--review-rules, else the packaged ones), loaded once."""
        from migbench.review import load_review_rules

        path = str(self.review_rules_path) if self.review_rules_path else None
        return self._memo("review_rules", lambda: load_review_rules(path, self.schema))

    def check(self, kind: str, gate_id: str, nodeid: str) -> Any:
        """The analysis' gate for one test, marked as checked by it."""
        gate = self.ensure_analysis().gate(kind, gate_id)
        self.checked[(kind, gate_id)] = nodeid
        return gate

    # the verdict --------------------------------------------------------------------
    def finish(self, exitstatus: int) -> dict[str, Any]:
        """The session's verdict, written to the JSON summary and stored with the run when complete."""
        tests = {k: sum(1 for v in self.outcomes.values() if v == k) for k in ("passed", "failed", "skipped", "error")}
        failed_tests = sorted(n for n, v in self.outcomes.items() if v in ("failed", "error"))
        out: dict[str, Any] = {"backend": self.backend, "exit_status": int(exitstatus), "failure": self.failure,
                               "limit": self.limit, "tests": tests, "failed_tests": failed_tests,
                               "scoring": self.extras.get("scoring"), "extras": self.extras}
        analysis = self._cache.get("analysis")
        if "thresholds" in self._cache:
            out["thresholds"] = self.threshold_set.record()
        bad_exit = self.failure is not None or int(exitstatus) not in (0, 5)
        if analysis is None:
            out.update(verdict="fail" if bad_exit else "not gated", gates=[], coverage="no gate checked")
        else:
            body = analysis.to_dict()
            keys = [(x.kind, x.gate_id) for x in analysis.gates]
            unchecked = [k for k in keys if k not in self.checked]
            for gd, key in zip(body["gates"], keys):
                gd["nodeid"] = self.checked.get(key)
                gd["outcome"] = self.outcomes.get(self.checked.get(key, ""))
            body.pop("verdict")
            out.update(body)
            out["coverage"] = ("complete" if not unchecked else
                               f"partial: {len(keys) - len(unchecked)} of {len(keys)} gates checked")
            out["verdict"] = "fail" if bad_exit else analysis.verdict
            # Only a complete gating is the run's verdict: a `-k` selection judged part of it.
            if not unchecked and self.failure is None:
                store, run, _ = self.ensure_run()
                store.record_gating(run.run_id, {
                    "thresholds": analysis.thresholds.record(), "verdict": out["verdict"],
                    "gates": len(keys), "gates_failed": len(analysis.failed), "tests": tests,
                    "failed_tests": failed_tests[:20], "scoring": self.extras.get("scoring"),
                    "at": utc_now(), "by": "pytest suites"})
                self.gated = True
        self.summary = out
        return out

    @property
    def summary_path(self) -> Path:
        return self.results / SUMMARY_NAME.format(backend=self.backend)

    def write_summary(self) -> Path:
        assert self.summary is not None
        self.results.mkdir(parents=True, exist_ok=True)
        self.summary_path.write_text(json.dumps(self.summary, indent=2, default=str) + "\n", encoding="utf-8")
        return self.summary_path

    def verdict_line(self) -> str:
        """One line: backend, documents, verdict, gates, the thresholds that judged them."""
        s = self.summary or {}
        gc = s.get("gate_counts") or {}
        th = s.get("thresholds") or {}
        docs = (s.get("metrics") or {}).get("documents")
        emulated = " [EMULATED]" if (s.get("run") or {}).get("emulated") else ""
        parts = [f"migbench {self.backend}{emulated}: verdict {str(s.get('verdict', 'not gated')).upper()}"]
        if docs is not None:
            parts.append(f"{docs} documents")
        if s.get("gates"):
            parts.append(f"{len(s['gates'])} gates, {gc.get('fail', 0)} failed, {gc.get('skip', 0)} skipped"
                         + ("" if s.get("coverage") == "complete" else f" ({s.get('coverage')})"))
        if th:
            parts.append(f"thresholds {th['name']} ({th['file']}, sha256 {th['sha256'][:12]})")
        if s.get("scoring"):
            parts.append(f"{s['scoring']} scoring")
        if self.report:
            parts.append(self.report)
        return "; ".join(parts)

    def write_report(self) -> str | None:
        """Render --report after a complete gating; otherwise the last good report stays as it was.
        Returns the line the console shows about it (None without --report)."""
        if self.report_path is None:
            return None
        if not self.gated:
            self.report = f"report not written ({self.report_path} left as it was: this session gated no run)"
            return self.report
        from migbench.report import generate

        try:
            generate(self.results, self.report_path,
                     review_rules=str(self.review_rules_path) if self.review_rules_path else None)
        except (MigbenchError, OSError) as exc:
            self.report = f"report not written: {exc}"
        else:
            self.report = f"report {self.report_path}"
        return self.report
