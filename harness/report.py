"""`migbench report`: one self-contained HTML migration report rendered from stored runs only.

The store is read; per backend and model the latest complete run is chosen (`--run` picks
explicitly; what is left out is listed with the reason); `migbench.analysis.analyse` judges each
run with the thresholds the suites stored with it (else `--thresholds` or the incumbent's), so the
report shows the verdict the suites printed; `migbench.report_data.build_report` makes the view
model and Jinja2 (autoescape on, undefined names are errors) renders reports/templates/report.html.j2.
The output carries its CSS inline and its charts as SVG: no script, font, image or request leaves it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from migbench.audit_digest import AuditDigest
from migbench.catalog import CatalogError
from migbench.contracts import RunRecord, UsageError
from migbench.doctable import DocTable, TableBuilder
from migbench.report_data import (
    LeftOut,
    ReportOptions,
    build_report,
    default_baseline,
    other_profiles,
    select_runs,
)
from migbench.store import DB_NAME, RunStore, StoreError

DEFAULT_RESULTS = "results"
OnProgress = Callable[[str, int, int], None]  # (run id, documents read, documents)


class ReportError(UsageError):
    pass


# ------------------------------------------------------------------------------ formatting
def fmt_num(x: Any, digits: int = 3) -> str:
    return "not measured" if x is None else f"{x:,.{digits}f}"


def fmt_pct(x: Any, digits: int = 1) -> str:
    return "not measured" if x is None else f"{100 * x:.{digits}f}%"


def fmt_money(x: Any, currency: str = "USD") -> str:
    if x is None:
        return "not measured"
    if x == 0:
        return f"0 {currency}"
    digits = 2 if abs(x) >= 1 else (4 if abs(x) >= 0.01 else 6)
    return f"{x:,.{digits}f} {currency}"


def fmt_ci(lo: Any, hi: Any, digits: int = 3) -> str:
    return "" if lo is None or hi is None else f"[{lo:.{digits}f}, {hi:.{digits}f}]"


# An https URL inside a catalog's source text; trailing punctuation belongs to the sentence.
_URL = re.compile(r"https://[^\s<>\"'`]+")


def linkify(text: Any) -> Any:
    """Escape `text` and make each https URL in it a link a reader can open; nothing else becomes
    markup (a source that is not a URL stays text)."""
    from markupsafe import Markup, escape

    text = "" if text is None else str(text)
    out, pos = [], 0
    for m in _URL.finditer(text):
        url = m.group(0).rstrip(".,;:)]")
        out.append(escape(text[pos:m.start()]))
        out.append(Markup('<a href="{0}" rel="noopener noreferrer">{0}</a>').format(url))
        pos = m.start() + len(url)
    out.append(escape(text[pos:]))
    return Markup("").join(out)


def environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resources.files("migbench.reports") / "templates")),
        autoescape=True,  # model output is data: it must render as text, never as markup
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(num=fmt_num, pct=fmt_pct, money=fmt_money, ci=fmt_ci, linkify=linkify)
    return env


def render_html(model: dict[str, Any]) -> str:
    from markupsafe import Markup

    # Charts are built by migbench.svg, which escapes every text it writes.
    charts = {k: Markup(v) for k, v in model["charts"].items()}
    return environment().get_template("report.html.j2").render(m=model, charts=charts)


# ---------------------------------------------------------------------------------- inputs
STORED = "stored with the run by `pytest suites`"


def thresholds_for(run: RunRecord, given: Any, default: Any, schema: Any) -> tuple[Any, str, Any]:
    """(threshold set, where it came from, second set or None) for one run.

    The thresholds the suites stored with a run judge it, so the report repeats their verdict; a
    `--thresholds` file that differs is shown beside it as a second, labelled threshold set. A run
    the suites never gated is judged with `--thresholds`, else the incumbent's.
    """
    from migbench.gates import ThresholdSet

    stored = (run.gating or {}).get("thresholds")
    if stored:
        ts = ThresholdSet.from_record(stored, schema)
        gating = run.gating or {}
        origin = f"{STORED} (verdict {gating.get('verdict')}, {gating.get('at')})"
        second = given if given is not None and given.sha256 != ts.sha256 else None
        return ts, origin, second
    if given is not None:
        return given, "given to the report (--thresholds); the suites never gated this run", None
    return default, "the report's default (incumbent); the suites never gated this run", None


def load_inputs(store: RunStore, refs: list[str] | None, baseline: str | None, schema: Any, *, top_n: int = 15,
                progress: OnProgress | None = None
                ) -> tuple[list[RunRecord], dict[str, DocTable], dict[str, AuditDigest], str | None, list[LeftOut]]:
    all_runs = store.runs()
    if not all_runs:
        raise ReportError(f"no runs in {store.path}: run `migbench run` first")
    if refs:
        ids = [store.resolve(r) for r in refs]
        left = [LeftOut(r.run_id, r.backend, r.model, r.status, "not selected (--run given)")
                for r in all_runs if r.run_id not in ids]
    else:
        chosen, left = select_runs(all_runs, {r.run_id: store.counts(r.run_id) for r in all_runs})
        if not chosen:
            why = "; ".join(f"{x.run_id}: {x.reason}" for x in left[:5])
            raise ReportError(f"no complete run in {store.path} ({why}); "
                              "pass --run ID to report on one anyway")
        ids = [r.run_id for r in chosen]
    base_id = store.resolve(baseline) if baseline else None
    if base_id and base_id not in ids:
        ids.append(base_id)
        left = [x for x in left if x.run_id != base_id]
    ids = list(dict.fromkeys(ids))
    by_id = {r.run_id: r for r in all_runs}
    runs = [by_id[i] for i in ids]
    if base_id is None:
        base_id = default_baseline(runs)
    # Each run's documents as columns, read a chunk of rows at a time (never all rows at once): the
    # table keeps numbers per document and the few rows the report shows whole.
    docs = {i: document_table(store, by_id[i], schema, top_n, progress) for i in ids}
    # One digest per run, read a chunk at a time: the log has a row per request, its digest one per destination.
    audits = {i: AuditDigest.from_entries(store.iter_audit(i)) for i in ids}
    return runs, docs, audits, base_id, left


def document_table(store: RunStore, run: RunRecord, schema: Any, top_n: int,
                   progress: OnProgress | None = None) -> DocTable:
    """One run's documents as a DocTable, streamed from the store (raw answers left out), scored
    under every other scoring profile for the report's comparison, its worst documents kept whole."""
    recorded = store.scoring(run.run_id)
    builder = TableBuilder(keep_worst=top_n, failure_examples=ReportOptions.failed_examples,
                           profiles=other_profiles(recorded), schema=schema,
                           classified=bool((run.config or {}).get("classified")))
    total = sum(store.counts(run.run_id).values())
    for k, row in enumerate(store.iter_documents(run.run_id, raw_text=False), 1):
        builder.add(row)
        if progress is not None and (k % 5000 == 0 or k == total):
            progress(run.run_id, k, total)
    return builder.build()


def with_worst_raw_texts(store: RunStore, run_id: str, table: DocTable) -> None:
    """Put back the raw answers of the documents the Errors section shows in full (rows read lean)."""
    texts = store.raw_texts(run_id, [d.doc_id for d in table.worst])
    for d in table.worst:
        d.response.text = texts.get(d.doc_id, "")


def generate(results: str | Path, out: str | Path, *, runs: list[str] | None = None, baseline: str | None = None,
             redact: bool = False, volumes: tuple[int, ...] = (10, 1000, 10000), gpu_hourly: float | None = None,
             top_n: int = 15, pricing_path: str | None = None, thresholds: str | None = None,
             review_rules: str | None = None, progress: OnProgress | None = None) -> dict[str, Any]:
    """Render the report to `out` (written atomically); returns the view model. `progress(run_id,
    documents read, documents)` is called as each run's documents are read."""
    from migbench.analysis import analyse
    from migbench.cost import load_pricing
    from migbench.options import resolve_thresholds
    from migbench.review import load_review_rules
    from migbench.schema import load_schema

    results = Path(results)
    if not (results / DB_NAME).is_file():
        raise ReportError(f"no run store at {results / DB_NAME}: pass --results DIR (or set MIGBENCH_RESULTS)")
    schema = load_schema()
    given = resolve_thresholds(thresholds, schema) if thresholds else None
    default = given or resolve_thresholds(None, schema)
    store = RunStore.open_existing(results)  # reads only: never creates or converts a store
    try:
        run_rows, docs, audits, base_id, left_out = load_inputs(store, runs, baseline, schema, top_n=top_n,
                                                                progress=progress)
        for run_id, table in docs.items():
            with_worst_raw_texts(store, run_id, table)
        scoring = {r.run_id: store.scoring(r.run_id) for r in run_rows}  # read only: never rescored here
    finally:
        store.close()
    pricing = load_pricing(pricing_path)
    rules = load_review_rules(review_rules, schema)
    by_id = {r.run_id: r for r in run_rows}
    base = (by_id[base_id], docs[base_id]) if base_id in by_id else None
    analyses, origins, second = [], {}, {}
    for run in run_rows:
        ts, origins[run.run_id], alt = thresholds_for(run, given, default, schema)
        pair = None if base is None or run.run_id == base_id else base
        analyses.append(analyse(run, docs[run.run_id], ts, schema, pricing=pricing, baseline=pair,
                                gpu_hourly=gpu_hourly, review_rules=rules))
        if alt is not None:
            second[run.run_id] = analyse(run, docs[run.run_id], alt, schema, pricing=pricing, baseline=pair,
                                         gpu_hourly=gpu_hourly, review_rules=rules)
    opts = ReportOptions(volumes=volumes, gpu_hourly=gpu_hourly, redact=redact, top_n=top_n,
                         generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                         results_dir=str(results))
    model = build_report(analyses, audits, baseline_id=base_id, pricing=pricing, opts=opts,
                         judge=residency_judge(), iam_policy=iam_builder(), origins=origins, second=second,
                         left_out=left_out, reference=default, scoring=scoring, schema=schema,
                         catalog=catalog_rows(run_rows, audits))
    html = render_html(model)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, out)
    return model


def catalog_rows(runs: list[RunRecord], audits: Mapping[str, AuditDigest | list]) -> list[dict[str, Any]]:
    """The model catalog's dated claims (with their public sources) about the models these runs called."""
    from migbench.residency import load_model_catalog

    ids = [r.model for r in runs if r.model] + [m for log in audits.values() for m in AuditDigest.of(log).model_ids()]
    try:
        catalog = load_model_catalog()
    except CatalogError:
        return []
    rows = []
    for model_id in dict.fromkeys(ids):
        entry = catalog.by_model_id(model_id)
        for fact in entry.facts if entry else ():
            rows.append({"model_id": model_id, "claim": fact.claim, "source": fact.source,
                         "date": str(fact.date), "verified": fact.verified})
    return rows


def residency_judge() -> Callable[[dict[str, Any], bool], list[str]]:
    from migbench.residency import check_host, check_model_id, check_region, load_model_catalog, load_policy

    policy = load_policy()
    base_regions = load_model_catalog().base_regions()

    def judge(entry: dict[str, Any], emulated: bool) -> list[str]:
        reasons = [check_region(entry.get("region"), policy),
                   check_host(entry.get("host"), entry.get("service") or "", policy, allow_loopback=emulated)]
        if entry.get("service") in ("bedrock-runtime", "bedrock"):
            reasons.append(check_model_id(entry.get("model_id"), entry.get("region"), policy, base_regions))
        return [r for r in reasons if r]

    return judge


def iam_builder() -> Callable[[list[str]], tuple[dict[str, Any], list[str]]] | None:
    try:
        from migbench.iam import least_privilege_policy, policy_regions
    except ImportError:
        return None

    def build(models: list[str]) -> tuple[dict[str, Any], list[str]]:
        policy = least_privilege_policy(models)
        return policy, sorted(policy_regions(policy))

    return build


# ------------------------------------------------------------------------------------- CLI
def _volumes(text: str) -> tuple[int, ...]:
    try:
        vols = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--volumes expects comma-separated integers, got {text!r}") from None
    if not vols or any(v <= 0 for v in vols):
        raise argparse.ArgumentTypeError(f"--volumes needs positive documents/day values, got {text!r}")
    return vols


def _positive(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if x < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}")
    return x


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="migbench report", description="Render the HTML migration report from stored runs.")
    p.add_argument("--results", default=os.environ.get("MIGBENCH_RESULTS", DEFAULT_RESULTS),
                   help="results directory holding the run store (default: ./results or $MIGBENCH_RESULTS)")
    p.add_argument("--runs", "--run", nargs="+", action="extend", metavar="RUN", dest="runs",
                   help="run ids or prefixes, repeatable (default: per backend and model, the latest complete run "
                        "on the dataset; the report lists what it left out and why)")
    p.add_argument("--baseline", metavar="RUN", help="the incumbent run (default: a local run, else the OCR baseline)")
    p.add_argument("--redact", action="store_true", help="hide expected/extracted values and raw responses")
    p.add_argument("--out", default="report.html", help="output HTML file (default: report.html)")
    p.add_argument("--volumes", type=_volumes, default=(10, 1000, 10000), help="documents/day for monthly projections")
    p.add_argument("--gpu-hourly", type=_positive, help="cost of one own GPU per hour (prices the local backends)")
    p.add_argument("--top-n", type=int, default=15, help="worst documents drilled down per backend (default 15)")
    p.add_argument("--pricing", help="pricing YAML overriding harness/data/pricing.yaml")
    p.add_argument("--thresholds", help="thresholds YAML or packaged name for runs the suites never gated (default: "
                                        "the incumbent's); a run gated by `pytest suites` keeps the thresholds "
                                        "stored with it and shows these beside them as a second set")
    p.add_argument("--review-rules", metavar="FILE", help="rules routing documents to human review, and the price of "
                                                          "a review (default: harness/data/review_rules.yaml)")
    return p


def main(argv: list[str]) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    args = build_parser().parse_args(argv)
    bar = Progress(TextColumn("reading {task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=Console(stderr=True), transient=True)
    tasks: dict[str, Any] = {}

    def progress(run_id: str, done: int, total: int) -> None:
        if run_id not in tasks:
            tasks[run_id] = bar.add_task(run_id, total=total)
        bar.update(tasks[run_id], completed=done)

    try:
        with bar:
            model = generate(args.results, args.out, runs=args.runs, baseline=args.baseline, redact=args.redact,
                             volumes=args.volumes, gpu_hourly=args.gpu_hourly, top_n=max(0, args.top_n),
                             pricing_path=args.pricing, thresholds=args.thresholds, review_rules=args.review_rules,
                             progress=progress)
    except (UsageError, StoreError, CatalogError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size = Path(args.out).stat().st_size
    print(f"wrote {args.out} ({size / 1e6:.2f} MB): {len(model['runs'])} run(s); {model['decision']['headline']}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
