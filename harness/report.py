"""`migbench report`: one self-contained HTML migration report rendered from stored runs only.

The store is read, `migbench.report_data.build_report` computes the view model, Jinja2 (autoescape
on, undefined names are errors) renders reports/templates/report.html.j2. The output carries its
CSS inline and its charts as SVG: no script, font, image or request leaves the file.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from migbench.catalog import CatalogError
from migbench.contracts import UsageError
from migbench.report_data import (
    GateConfig,
    GateFn,
    ReportOptions,
    build_report,
    builtin_gates,
    default_baseline,
    default_runs,
    grouped_gates,
)
from migbench.store import DB_NAME, RunStore, StoreError

DEFAULT_RESULTS = "results"


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


def environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resources.files("migbench.reports") / "templates")),
        autoescape=True,  # model output is data: it must render as text, never as markup
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(num=fmt_num, pct=fmt_pct, money=fmt_money, ci=fmt_ci)
    return env


def render_html(model: dict[str, Any]) -> str:
    from markupsafe import Markup

    # Charts are built by migbench.svg, which escapes every text it writes.
    charts = {k: Markup(v) for k, v in model["charts"].items()}
    return environment().get_template("report.html.j2").render(m=model, charts=charts)


# ---------------------------------------------------------------------------------- inputs
def gate_setup(thresholds: str | None, pricing: Any, gpu_hourly: float | None = None) -> tuple[GateConfig, GateFn]:
    """The thresholds and the gate function: migbench.gates over thresholds.yaml when it is
    installed (the same verdicts the pytest suites reach), else the built-in gates."""
    from migbench.schema import load_schema

    schema = load_schema()
    try:
        from migbench import gates as hg
    except ImportError:
        if thresholds:
            raise ReportError("--thresholds needs migbench.gates, which is not installed") from None
        cfg = GateConfig(critical_fields=tuple(schema.critical_fields))
        return cfg, builtin_gates(cfg)
    th = hg.load_thresholds(thresholds, schema)
    cfg = GateConfig(
        overall_f1=th.accuracy.overall if th.accuracy.overall is not None else float("nan"),
        critical_f1=th.accuracy.critical if th.accuracy.critical is not None else float("nan"),
        critical_fields=tuple(hg.critical_fields(th, schema)),
        noninferiority_margin=th.non_inferiority.margin,
        max_failure_rate=th.failures.max_rate if th.failures.max_rate is not None else float("nan"),
        source=f"{hg.thresholds_path(thresholds)} ({th.name}{', dry run' if th.dry_run else ''}),"
               f" statistic {th.statistic}, failed documents count as 0: {th.failed_as_zero}")

    def evaluate(view: Any, rows: Any, baseline: Any) -> list:
        return grouped_gates(hg.evaluate_run(view["run"], rows, th, schema, pricing, baseline, gpu_hourly))

    return cfg, evaluate


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


def load_inputs(store: RunStore, refs: list[str] | None, baseline: str | None
                ) -> tuple[list[dict[str, Any]], dict[str, list], dict[str, list], str | None]:
    all_runs = store.runs()
    if not all_runs:
        raise ReportError(f"no runs in {store.path}: run `migbench run` first")
    ids = [store.resolve(r) for r in refs] if refs else default_runs(all_runs)
    base_id = store.resolve(baseline) if baseline else None
    if base_id and base_id not in ids:
        ids.append(base_id)
    ids = list(dict.fromkeys(ids))
    by_id = {r["run_id"]: r for r in all_runs}
    runs = [by_id[i] for i in ids]
    if base_id is None:
        base_id = default_baseline(runs)
    docs = {i: store.documents(i) for i in ids}
    audits = {i: store.audit(i) for i in ids}
    return runs, docs, audits, base_id


def generate(results: str | Path, out: str | Path, *, runs: list[str] | None = None, baseline: str | None = None,
             redact: bool = False, volumes: tuple[int, ...] = (10, 1000, 10000), gpu_hourly: float | None = None,
             top_n: int = 15, pricing_path: str | None = None, thresholds: str | None = None) -> dict[str, Any]:
    """Render the report to `out` (written atomically); returns the view model."""
    from migbench.cost import load_pricing

    results = Path(results)
    if not (results / DB_NAME).is_file():
        raise ReportError(f"no run store at {results / DB_NAME}: pass --results DIR (or set MIGBENCH_RESULTS)")
    store = RunStore(results)
    try:
        run_rows, docs, audits, base_id = load_inputs(store, runs, baseline)
    finally:
        store.close()
    pricing = load_pricing(pricing_path)
    cfg, gate_fn = gate_setup(thresholds, pricing, gpu_hourly)
    opts = ReportOptions(volumes=volumes, gpu_hourly=gpu_hourly, redact=redact, top_n=top_n,
                         generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                         results_dir=str(results), gates=cfg)
    model = build_report(run_rows, docs, audits, baseline_id=base_id, pricing=pricing, opts=opts,
                         judge=residency_judge(), iam_policy=iam_builder(), gates=gate_fn)
    html = render_html(model)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, out)
    return model


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
    p.add_argument("--runs", nargs="+", metavar="RUN", help="run ids or prefixes (default: the latest run per backend)")
    p.add_argument("--baseline", metavar="RUN", help="the incumbent run (default: a local run, else the OCR baseline)")
    p.add_argument("--redact", action="store_true", help="hide expected/extracted values and raw responses")
    p.add_argument("--out", default="report.html", help="output HTML file (default: report.html)")
    p.add_argument("--volumes", type=_volumes, default=(10, 1000, 10000), help="documents/day for monthly projections")
    p.add_argument("--gpu-hourly", type=_positive, help="cost of one own GPU per hour (prices the local backends)")
    p.add_argument("--top-n", type=int, default=15, help="worst documents drilled down per backend (default 15)")
    p.add_argument("--pricing", help="pricing YAML overriding harness/data/pricing.yaml")
    p.add_argument("--thresholds", help="thresholds YAML or packaged name (default: harness/data/thresholds.yaml)")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        model = generate(args.results, args.out, runs=args.runs, baseline=args.baseline, redact=args.redact,
                         volumes=args.volumes, gpu_hourly=args.gpu_hourly, top_n=max(0, args.top_n),
                         pricing_path=args.pricing, thresholds=args.thresholds)
    except (ReportError, StoreError, CatalogError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size = Path(args.out).stat().st_size
    print(f"wrote {args.out} ({size / 1e6:.2f} MB): {len(model['runs'])} run(s); {model['decision']['headline']}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
