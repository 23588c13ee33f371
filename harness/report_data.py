"""The migration report's view model, built from analysed runs only (pure: no I/O, no clock).

`build_report(analyses, audits, ...)` turns `migbench.analysis.RunAnalysis` results (figures and
gates computed once, the same the suites check) into plain dicts/dataclasses that the Jinja2
templates only format. Where a run has no data the value is None and the template says "not
measured". `select_runs` decides which stored runs the report compares and says why it left the
others out.

Emulated runs (runs.emulated, or family "emulated") are carried everywhere with their flag, are
never a recommendation and fail the evidence gate: an emulator's answers say nothing about a model.
"""

from __future__ import annotations

import json
import shlex
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from migbench import svg
from migbench.analysis import RunAnalysis
from migbench.audit_digest import AuditDigest
from migbench.consistency import RULES, consistency_rates
from migbench.contracts import RunRecord
from migbench.cost import Pricing, RunCost, break_even_docs_per_day, token_prices
from migbench.doctable import HALLUCINATED, MISSED, DocTable, Documents
from migbench.gates import CLOUD_FAMILIES
from migbench.headline import AS_ZERO_LABEL, EXCLUDED_LABEL
from migbench.review import review_section
from migbench.stats import Summary, percentile

NO_NETWORK = "no network requests (audit log empty)"
NOT_EVIDENCE = "emulated: not evidence"

# The migration guide's compliance checklist (shared/seed/bedrock_migration_guide.md), verbatim.
GUIDE_CHECKLIST = (
    "Confirm `ap-southeast-2` region in all Bedrock client configurations",
    "Use Amazon Nova Pro (not Claude) for all inference",
    "Verify no cross-region calls to non-Australian regions",
    "Document data residency compliance for audit purposes",
    "Test Nova Pro accuracy against current model benchmarks",
)


# ------------------------------------------------------------------------------------ options
@dataclass
class ReportOptions:
    volumes: tuple[int, ...] = (10, 1000, 10000)
    gpu_hourly: float | None = None
    redact: bool = False
    top_n: int = 15  # worst documents drilled down per backend (the rest are counted)
    raw_chars: int = 1500  # raw response shown per drilled-down document
    failed_examples: int = 8
    generated_at: str = ""
    results_dir: str = ""


@dataclass
class GateRow:
    """One row of the report's gate table: the analysis' gates of one kind, grouped (a view, not
    a second engine), or one of the report's evidence gates."""

    name: str
    passed: bool | None  # None: not applicable (nothing measured, no threshold)
    value: str
    threshold: str
    detail: str = ""
    items: list[tuple[str, str]] = field(default_factory=list)  # (status, message) of grouped gates


# ------------------------------------------------------------------------------ run selection
def is_emulated(run: RunRecord) -> bool:
    return run.is_emulated


def is_imported(run: RunRecord) -> bool:
    """A run stored by `migbench import` from another system's results (e.g. the incumbent's)."""
    return bool((run.config or {}).get("imported"))


def display_name(run: RunRecord) -> str:
    """What the report calls a run: its backend, or the name an imported system was given."""
    return str((run.config or {}).get("name") or run.backend) if is_imported(run) else run.backend


def is_complete(run: RunRecord) -> bool:
    # `migbench import` ends its runs as "done": every document of the dataset is stored.
    return run.status == "complete" or (is_imported(run) and run.status == "done")


@dataclass
class LeftOut:
    run_id: str
    backend: str
    model: str | None
    status: str | None
    reason: str


def select_runs(runs: Sequence[RunRecord], counts: Mapping[str, Mapping[str, int]]
                ) -> tuple[list[RunRecord], list[LeftOut]]:
    """Per backend and model, the latest COMPLETE run on the dataset (the dataset of the latest
    complete run); every other run is left out, with the reason.

    A run that is not complete (partial, interrupted, running: e.g. refused before any request)
    is never a candidate: it would hide the complete run of the same backend. Among complete runs
    one in which some document completed is preferred; one with none is used only when it is the
    backend's only evidence (then the report shows its failures).
    """
    left: list[LeftOut] = []
    complete = []
    for r in sorted(runs, key=lambda r: (r.started_at or "", r.run_id)):
        c = counts.get(r.run_id, {})
        ok, stored = c.get("ok", 0), sum(c.values())
        if is_complete(r):
            complete.append(r)
            continue
        why = f"{r.status or 'unknown'}: {stored} of {r.n_documents} documents stored, {ok} ok"
        if not ok:
            why += " (refused or failed before any document completed)"
        left.append(LeftOut(r.run_id, r.backend, r.model, r.status, why + "; not complete, so not a candidate"))
    if not complete:
        return [], left
    dataset = complete[-1].dataset_hash
    groups: dict[tuple[str, str | None, str], list[RunRecord]] = defaultdict(list)
    for r in complete:
        if r.dataset_hash != dataset:
            left.append(LeftOut(r.run_id, r.backend, r.model, r.status,
                                f"another dataset (sha256 {(r.dataset_hash or 'unknown')[:12]}, this report: "
                                f"{(dataset or 'unknown')[:12]}); pass --run {r.run_id} to include it"))
        else:
            groups[(r.backend, r.model, display_name(r))].append(r)
    chosen = []
    for members in groups.values():
        with_results = [r for r in members if counts.get(r.run_id, {}).get("ok", 0)]
        pick = (with_results or members)[-1]
        chosen.append(pick)
        for r in members:
            if r is pick:
                continue
            if r in with_results or not with_results:
                why = f"superseded by the later complete run {pick.run_id} of the same backend and model"
            else:
                why = f"complete, but no document completed (0 ok); {pick.run_id} of the same backend and model has results"
            left.append(LeftOut(r.run_id, r.backend, r.model, r.status, why))
    return sorted(chosen, key=lambda r: (r.started_at or "", r.run_id)), left


def default_baseline(runs: Sequence[RunRecord]) -> str | None:
    """The incumbent: its own imported results, else a local (self-hosted VLM) run, else the OCR
    baseline; never an emulated run."""
    for r in runs:
        if is_imported(r) and not r.is_emulated:
            return r.run_id
    for family in ("local", "ocr"):
        for r in runs:
            if r.family == family and not r.is_emulated:
                return r.run_id
    return None


# ------------------------------------------------------------------------------- computations
def latency_view(run: RunRecord, rows: Documents, summary: Summary) -> dict[str, Any]:
    """The analysis' latency figures plus throughput, throttling and retries from the documents."""
    t = DocTable.of(rows)
    lat = summary.latency["all"]
    wall = run.wall_s or 0.0
    attempts = t.numbers["attempts"]
    attempts = attempts[~np.isnan(attempts)]
    throttled = t.counts["throttled"]
    server = t.numbers["server_latency_ms"][t.flags["status_ok"]]
    return {
        "n": lat.n, "p50": lat.p50, "p95": lat.p95, "p99": lat.p99, "mean": lat.mean, "max": lat.max,
        "values": lat.values,
        "docs_per_min": (len(t) / wall * 60) if wall > 0 and len(t) else None,
        "wall_s": wall or None,
        "throttled": int(throttled.sum()),
        "docs_throttled": int((throttled != 0).sum()),
        "retries": int(np.maximum(0, attempts.astype(np.int64) - 1).sum()),
        "retry_wait_s": sum(t.numbers["retry_wait_s"].tolist()),
        "attempts_recorded": int(attempts.size),
        "server_p50_ms": percentile(server[~np.isnan(server)].tolist(), 50),
    }


def paired_view(a: RunAnalysis, base_run: RunRecord) -> dict[str, Any]:
    p = a.paired
    assert p is not None
    same = a.run.dataset_hash == base_run.dataset_hash
    note = "" if same else "dataset hashes differ: paired on the document ids both runs share"
    if not p.n:
        note = "no documents in common with the baseline"
    return {**asdict(p), "same_dataset": same, "note": note}


def _redact(value: Any, redact: bool) -> str:
    text = "" if value is None else str(value)
    return f"[redacted] ({len(text)} chars)" if redact else text


def _kind(score: Any) -> str:
    if score.hallucinated:
        return "hallucinated"
    if score.missed:
        return "missed"
    return "wrong" if score.f1 == 0 else "partial"


KINDS = ("hallucinated", "missed", "wrong", "partial")  # how a field went wrong (migbench.report_data._kind)


def _first_seen(masks: dict[str, np.ndarray]) -> list[str]:
    """Names of the non-empty masks, by the first document each covers (stable for ties)."""
    firsts = {k: int(np.argmax(m)) for k, m in masks.items() if m.any()}
    return sorted(firsts, key=lambda k: firsts[k])


def errors_view(docs: Documents, opts: ReportOptions) -> dict[str, Any]:
    """Bounded drill-down: the top-N worst documents in full, every other problem only counted."""
    t = DocTable.of(docs, keep_worst=opts.top_n, failure_examples=opts.failed_examples)
    failed = ~t.flags["status_ok"]
    classes = t.groups("error_class", lambda v: v or "unknown", within=failed)
    order = _first_seen(classes)
    failures = [{"error_class": cls, "count": int(classes[cls].sum()),
                 "examples": t.failure_examples.get(cls, [])[: opts.failed_examples]}
                for cls in sorted(order, key=lambda c: -int(classes[c].sum()))]
    done = t.flags["status_ok"]
    # One field column at a time: no (documents x fields) temporaries for a million-document run.
    counts: dict[str, int] = {}
    first: dict[str, int] = {}  # field -> first document where it is wrong
    kind_counts = dict.fromkeys(KINDS, 0)
    for j, name in enumerate(t.fields):
        col, flags = t.f1[:, j], t.field_flags[:, j]
        with np.errstate(invalid="ignore"):
            bad = done & (col < 1.0)  # NaN (no score) is never below 1
        if not bad.any():
            continue
        counts[name], first[name] = int(bad.sum()), int(np.argmax(bad))
        hall = bad & ((flags & HALLUCINATED) != 0)
        missed = bad & ~hall & ((flags & MISSED) != 0)
        wrong = bad & ~hall & ~missed & (col == 0)
        for kind, m in zip(KINDS, (hall, missed, wrong, bad & ~hall & ~missed & ~wrong)):
            kind_counts[kind] += int(m.sum())
    by_field = sorted(first, key=lambda k: first[k])  # first seen first, then the most often wrong
    wrong_by_field = [(name, counts[name]) for name in sorted(by_field, key=lambda k: -counts[k])]
    kinds = {k: c for k, c in sorted(kind_counts.items(), key=lambda kv: -kv[1]) if c}  # most frequent first
    worst = []
    for d in t.worst[: opts.top_n]:
        raw = d.response.text or ""
        shown = [s for s in d.scores if s.f1 < 1.0]
        worst.append({
            "doc_id": d.doc_id, "doc_type": d.doc_type, "tier": d.tier, "doc_f1": d.doc_f1,
            "fields": [{"field": s.field, "expected": _redact(s.expected, opts.redact),
                        "predicted": _redact(s.predicted, opts.redact), "f1": s.f1, "kind": _kind(s)} for s in shown],
            "raw": _redact(raw, True) if opts.redact else raw[: opts.raw_chars],
            "raw_truncated": (not opts.redact) and len(raw) > opts.raw_chars, "raw_len": len(raw),
        })
    return {"failed": int(failed.sum()), "failures": failures, "imperfect_docs": int(t.flags["imperfect"].sum()),
            "wrong_fields": sum(counts.values()), "by_field": wrong_by_field,
            "kinds": kinds, "worst": worst, "shown": len(worst)}


def answer_format_view(run: RunRecord, docs: Documents) -> dict[str, Any]:
    """How often a run's answers could not be read, beside its prompt style: parse failures (a forced
    tool call answered in text) and answers from which no field at all was read, over the documents
    the model answered. The same measure for every style, so tool and text prompts compare."""
    t = DocTable.of(docs)
    parse = int(t.mask("error_class", "parse").sum())
    unreadable = int(t.flags["unreadable"].sum())
    answered = int(t.flags["status_ok"].sum()) + parse
    return {"style": run.prompt_style or "not recorded", "answered": answered, "parse_failures": parse,
            "unreadable": unreadable, "rate": (parse + unreadable) / answered if answered else None}


# ----------------------------------------------------------------------------------- scoring
NOT_RECORDED = "not recorded (scored before scoring profiles existed)"


def scoring_view(run: RunRecord, rows: Documents, recorded: str | None, schema: Any) -> dict[str, Any]:
    """The run's headline under the profile its stored scores were computed with, and every other
    profile's headline re-scored in memory from the stored fields and ground truth (the store is
    never written: `migbench rescore --scoring P` is what switches a stored run). A DocTable given
    here must have been built with those profiles (`other_profiles`)."""
    from migbench.headline import headline_of

    names = other_profiles(recorded) if schema is not None else []
    t = DocTable.of(rows, profiles=names, schema=schema, classified=bool((run.config or {}).get("classified")))
    done = t.flags["status_ok"]

    def headline(f1: np.ndarray, name: str | None) -> Any:
        scored = f1[done]
        return headline_of(scored[~np.isnan(scored)].tolist(), int((~done).sum()), name)

    missing = [n for n in names if n not in t.profile_f1]
    if missing:
        raise ValueError(f"document table of run {run.run_id} was built without scoring profiles {missing}")
    return {"profile": recorded, "profile_label": recorded or NOT_RECORDED,
            "headline": headline(t.numbers["doc_f1"], recorded),
            "others": [headline(t.profile_f1[n], n) for n in names],
            "truncated": int(t.flags["truncated"].sum())}


def other_profiles(recorded: str | None) -> list[str]:
    """The scoring profiles a report re-scores a run under (every one but the run's own)."""
    from migbench.scoring_profiles import profile_names

    return [n for n in profile_names() if n != recorded]


# -------------------------------------------------------------------------------- next steps
# Bedrock backends with a tox environment of their own (tox.ini: `tox -e NAME -- --live`).
TOX_LIVE_ENVS = ("nova-pro", "nova-lite", "au-nova-pro", "au-nova-lite", "au-claude-sonnet-4-5", "au-claude-haiku-4-5")
DEFAULT_LIVE = "au-nova-lite"


def _dataset_arg(views: Sequence[dict[str, Any]]) -> str:
    paths = [v["run"].dataset_path for v in views if v["run"].dataset_path]
    return f" --dataset {shlex.quote(paths[-1])}" if paths else ""


def live_command(backend: str, dataset_arg: str) -> str:
    if backend in TOX_LIVE_ENVS:
        return f"tox -e {backend} -- --live{dataset_arg}"
    return f"migbench run --backend {backend}{dataset_arg}"


def missing_evidence(views: Sequence[dict[str, Any]], baseline: dict[str, Any] | None) -> list[dict[str, str]]:
    """What the report lacks to recommend, each with the exact command that produces it."""
    ds = _dataset_arg(views)
    ds_dir = ds.removeprefix(" --dataset ") or "DIR"
    out: list[dict[str, str]] = []
    real = {v["backend"] for v in views if not v["emulated"]}
    candidates = [v for v in views if not v["is_baseline"] and not v["emulated"]]
    for v in views:
        if v["emulated"] and v["backend"] not in real:
            out.append({"missing": f"a live run of {v['name']}: its scores here are emulator answers "
                                   f"({NOT_EVIDENCE}). Needs AWS credentials allowed in ap-southeast-2",
                        "command": live_command(v["backend"], ds)})
    if not candidates and not any(v["emulated"] for v in views):
        out.append({"missing": "a migration target: only the baseline was measured. Needs AWS credentials "
                               "allowed in ap-southeast-2",
                    "command": live_command(DEFAULT_LIVE, ds)})
    if baseline is None or not baseline.get("imported"):
        now = f"the baseline here is {baseline['name']}" if baseline else "there is no baseline"
        out.append({"missing": f"the incumbent's own results ({now}): import its lmm-poc artifacts "
                               "(raw_extractions.jsonl) for the same documents, then report again",
                    "command": f"migbench import PATH --format lmm-poc --name incumbent --dataset {ds_dir}"})
    for v in candidates:
        if not v["summary"].scored:
            out.append({"missing": f"scored documents from {v['name']}: none completed; see the Errors section",
                        "command": live_command(v["backend"], ds) + " (after fixing the cause)"})
    return out


# ---------------------------------------------------------------------------------- residency
Judge = Callable[[Mapping[str, Any], bool], list[str]]


def residency_view(run: RunRecord, audit: AuditDigest | Iterable[Mapping[str, Any]],
                   judge: Judge | None) -> dict[str, Any]:
    """The residency section of one run, from its audit digest (or its entries, digested here).

    The judge sees each distinct sent destination once (its SENT_FIELDS) and its reasons count
    once per entry sent there: a million requests to one endpoint are one judgement."""
    d = AuditDigest.of(audit)
    violations: Counter[str] = Counter()
    if judge is not None:
        for entry, n in d.sent_destinations():
            for reason in judge(entry, run.is_emulated):
                violations[reason] += n
    family = run.family
    if not d.entries:
        if family in CLOUD_FAMILIES or family == "emulated":
            state, summary = False, "no audit entries recorded for a cloud backend: residency not evidenced"
        else:
            state, summary = True, NO_NETWORK
    elif violations:
        state, summary = False, f"{sum(violations.values())} sent request(s) outside the residency policy"
    else:
        state = True
        summary = f"{d.sent} request(s) sent, all within the residency policy; {d.refused} refused before sending"
    return {
        "entries": d.entries, "sent": d.sent, "refused": d.refused, "ok": state, "summary": summary,
        "regions": d.count_sent(lambda a: a["region"] or "none").most_common(),
        "hosts": d.count_sent(lambda a: a["host"] or "none").most_common(),
        "models": d.count_sent(lambda a: a["model_id"] or "none").most_common(),
        "operations": d.count_sent(lambda a: f"{a['service']}:{a['operation']}").most_common(),
        "statuses": d.count_sent(lambda a: str(a["status"])).most_common(),
        "refused_reasons": d.refused_reasons.most_common(10),
        "refused_targets": d.refused_targets.most_common(10),
        "violations": violations.most_common(10),
        "bytes_sent": d.bytes_sent,
        "notes": residency_notes(run.describe or {}),
    }


def residency_notes(describe: Mapping[str, Any]) -> list[str]:
    """What the run's own record says a reader of the residency verdict must know: destinations the
    user added to the policy (New Zealand, say), a profile accepted without its destinations
    verified, and the backend's warnings (a plain-http server)."""
    notes = []
    policy = describe.get("residency") or {}
    if policy.get("added_destinations"):
        names = policy.get("added_destination_names") or policy["added_destinations"]
        notes.append("the policy was widened by the user: documents may also be processed in "
                     + ", ".join(f"{n} ({r})" if n != r else r for n, r in zip(names, policy["added_destinations"]))
                     + " (outside Australia)")
    if describe.get("profile_unverified_accepted"):
        notes.append("the inference profile's destinations could not be read (GetInferenceProfile failed) and "
                     "were accepted unverified (accept_unverified_profile): residency of routed requests is not proven")
    notes += [str(w) for w in describe.get("warnings") or []]
    return notes


def checklist(views: Sequence[dict[str, Any]], baseline: dict[str, Any] | None,
              iam: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each line of the guide's checklist with its evidence from real (not emulated) cloud runs.

    status: True / False, None (not evidenced) or "info" (recorded, not a pass/fail requirement).
    """
    cloud = [v for v in views if v["residency"]["entries"] or v["family"] in CLOUD_FAMILIES]
    real = [v for v in cloud if not v["emulated"]]
    emulated = [v for v in cloud if v["emulated"]]
    regions = sorted({r for v in real for r, _ in v["residency"]["regions"]})
    models = sorted({m for v in real for m, _ in v["residency"]["models"]})
    refused = sum(v["residency"]["refused"] for v in real)
    sent = sum(v["residency"]["sent"] for v in real)
    bad = [v["label"] for v in real if v["residency"]["violations"] or not v["residency"]["ok"]]
    emu = (f" Emulated runs ({', '.join(v['label'] for v in emulated)}: "
           f"{sum(v['residency']['entries'] for v in emulated)} entries) exercise the code path only: "
           f"{NOT_EVIDENCE}." if emulated else "")
    items: list[dict[str, Any]] = []

    def item(text: str, status: bool | str | None, evidence: str) -> None:
        items.append({"item": text, "status": status, "evidence": evidence})

    if not real:
        why = (f"no real cloud run in this report ({NO_NETWORK} for every offline run)." + emu).strip()
        for text in GUIDE_CHECKLIST:
            item(text, None, why)
        return items
    item(GUIDE_CHECKLIST[0], (regions == ["ap-southeast-2"]) if regions else None,
         (f"signing regions of {sent} sent request(s): {', '.join(regions)}." if regions
          else "no request was sent.") + emu)
    item(GUIDE_CHECKLIST[1], "info",
         (f"model ids called: {', '.join(models)}." if models else "no model was called.")
         + " The guide's premise that Claude is unavailable in Australia is outdated (au. profiles exist,"
           " unverified): this line records what was called; the gates decide which model qualifies.")
    item(GUIDE_CHECKLIST[2], (not bad) if sent or refused else None,
         f"{sent} request(s) sent, every one re-judged against residency.yaml (region, host, model id);"
         f" {refused} refused before sending." + (f" Outside policy: {', '.join(bad)}." if bad else "") + emu)
    iam_ok = bool(iam and iam.get("policy_json"))
    item(GUIDE_CHECKLIST[3], iam_ok and not bad,
         f"this report's residency section: {sum(v['residency']['entries'] for v in real)} audit entries"
         + (f"; least-privilege IAM policy reaching only {', '.join(iam['regions'])}." if iam_ok
            else f"; IAM policy: {(iam or {}).get('error') or 'not generated'}."))
    nova = [v for v in real if any("nova-pro" in m.lower() for m, _ in v["residency"]["models"])]
    measured = [v for v in nova if v["paired"] and v["paired"]["diff"] is not None]
    if measured:
        item(GUIDE_CHECKLIST[4], True, "; ".join(
            f"{v['label']}: paired difference {v['paired']['diff']:+.3f} vs "
            f"{baseline['label'] if baseline else 'baseline'} ({v['paired']['verdict']})" for v in measured))
    else:
        item(GUIDE_CHECKLIST[4], False if nova else None,
             "not measured: no real Nova Pro run compared with a baseline." + emu)
    return items


# -------------------------------------------------------------------------------------- gates
Judge = Callable[[Mapping[str, Any], bool], list[str]]
KIND_NAMES = {
    "overall_f1": "overall F1", "doc_type_f1": "F1 per document type", "critical_f1": "critical fields F1",
    "field_f1": "other fields F1", "hallucination": "hallucination rate", "failure_rate": "failure rate",
    "latency": "latency", "cost_per_doc": "cost per document", "cost_per_month": "monthly cost",
    "non_inferiority": "non-inferior to baseline",
}
SUITES_GATE = "shared suites"


def evidence_gates(view: Mapping[str, Any]) -> list[GateRow]:
    """Gates every report applies whatever the thresholds: real evidence, residency, and the
    suites' own verdict where they gated the run (their non-gate tests: parser, residency, usage)."""
    s: Summary = view["summary"]
    out = []
    if view["emulated"]:
        out.append(GateRow("real model evidence", False, "emulated", "real responses", NOT_EVIDENCE))
    elif not s.scored:
        out.append(GateRow("real model evidence", False, "no scored documents", ">= 1 scored document",
                           f"{s.documents} stored, {s.failed} failed"))
    r = view["residency"]
    out.append(GateRow("data residency", r["ok"], "ok" if r["ok"] else "violation", "no request leaves AU",
                       r["summary"]))
    gating = view["run"].gating
    if gating:
        tests = gating.get("tests") or {}
        failed = gating.get("failed_tests") or []
        out.append(GateRow(SUITES_GATE, gating.get("verdict") == "pass", str(gating.get("verdict")),
                           "every suite test passes",
                           f"`pytest suites` at {gating.get('at')}: {tests.get('passed', 0)} passed, "
                           f"{tests.get('failed', 0) + tests.get('error', 0)} failed, {tests.get('skipped', 0)} skipped"
                           + (f"; failed: {', '.join(failed[:5])}" if failed else "")))
    return out


def grouped_gates(raw: Iterable[Any]) -> list[GateRow]:
    """The analysis' gates (kind, status pass/fail/skip, message) -> one row per kind.

    A group fails if any member fails, passes if any passes and none fails, is n/a if all skipped.
    """
    groups: dict[str, list[Any]] = {}
    for g in raw:
        kind = g.kind
        if kind == "field_f1" and (g.detail or {}).get("critical"):
            kind = "critical_f1"
        groups.setdefault(kind, []).append(g)
    out = []
    for kind, members in groups.items():
        fails = [g for g in members if g.status == "fail"]
        passes = [g for g in members if g.status == "pass"]
        passed = False if fails else (True if passes else None)
        if len(members) == 1:
            g = members[0]
            value = "n/a" if g.value is None else (f"{g.value:.4g}")
            threshold = "" if g.threshold is None else f"{g.op} {g.threshold:g}"
        else:
            value = f"{len(fails)} of {len(members)} fail" if fails else (
                f"{len(passes)} of {len(members)} pass" if passes else f"{len(members)} skipped")
            threshold = ""
        shown = fails or passes or members
        detail = "; ".join(g.message for g in shown[:4]) + (f"; ... {len(shown) - 4} more" if len(shown) > 4 else "")
        out.append(GateRow(KIND_NAMES.get(kind, kind), passed, value, threshold, detail,
                           items=[(g.status, g.message) for g in members]))
    return out


def _f(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def thresholds_view(a: RunAnalysis, origin: str) -> dict[str, Any]:
    ts = a.thresholds
    return {"name": ts.name, "file": ts.file, "sha256": ts.sha256, "label": ts.label, "origin": origin,
            "dry_run": ts.thresholds.dry_run, "statistic": ts.thresholds.statistic,
            "failed_as_zero": ts.thresholds.failed_as_zero}


# ---------------------------------------------------------------------------------- the model
def build_report(analyses: Sequence[RunAnalysis], audits: Mapping[str, AuditDigest | Sequence[Mapping[str, Any]]], *,
                 baseline_id: str | None, pricing: Pricing, opts: ReportOptions | None = None,
                 judge: Judge | None = None,
                 iam_policy: Callable[[list[str]], tuple[dict[str, Any], list[str]]] | None = None,
                 origins: Mapping[str, str] | None = None, second: Mapping[str, RunAnalysis] | None = None,
                 left_out: Sequence[LeftOut] = (), reference: Any = None,
                 scoring: Mapping[str, str | None] | None = None, schema: Any = None,
                 catalog: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The whole report as plain data, from one analysis per run (its figures and gates).

    `judge(audit_row, emulated) -> [reasons]` re-checks sent requests against the residency policy;
    `iam_policy(model_ids) -> (policy, reachable regions)` builds the least-privilege IAM policy for
    the models the runs called; `catalog` rows are the model catalog's dated claims about them.
    `origins[run_id]` says where a run's thresholds came from;
    `second[run_id]` is the same run judged with a second, explicitly requested threshold set.
    `reference` (a ThresholdSet) draws the overall-F1 reference line of the chart. `scoring[run_id]`
    is the profile the run's stored scores were computed with (None: not recorded); with `schema`
    every other profile's headline is computed in memory beside it.
    """
    opts = opts or ReportOptions()
    if not analyses:
        raise ValueError("no runs to report on")
    views = []
    for a in analyses:
        run = a.run
        v: dict[str, Any] = {
            "run": run, "run_id": run.run_id, "backend": run.backend, "family": run.family,
            "model": run.model, "emulated": run.is_emulated, "is_baseline": run.run_id == baseline_id,
            "name": display_name(run), "imported": is_imported(run),
            "label": display_name(run) + (" [EMULATED]" if run.is_emulated else ""),
            "analysis": a, "summary": a.summary, "hallucination": a.summary.hallucination,
            "latency": latency_view(run, a.table, a.summary), "streaming": a.stream, "cost": a.cost,
            "monthly": {vol: a.cost.monthly(vol) for vol in opts.volumes},
            "residency": residency_view(run, audits.get(run.run_id, []), judge),
            "errors": errors_view(a.table, opts), "answers": answer_format_view(run, a.table),
            "consistency": consistency_rates(a.table),
            "thresholds": thresholds_view(a, (origins or {}).get(run.run_id, "")),
            "paired": paired_view(a, a.baseline) if a.paired is not None and a.baseline is not None else None,
        }
        v["scoring"] = scoring_view(run, a.table, (scoring or {}).get(run.run_id), schema)
        v["gates"] = evidence_gates(v) + grouped_gates(a.gates)
        v["gate_map"] = {g.name: g for g in v["gates"]}
        v["failed_gates"] = [g.name for g in v["gates"] if g.passed is False]
        v["skipped_gates"] = [g.name for g in v["gates"] if g.passed is None]
        v["passes"] = not v["failed_gates"]
        alt = (second or {}).get(run.run_id)
        v["second"] = None if alt is None else {
            "label": alt.thresholds.label, "verdict": alt.verdict,
            "failed": sorted({KIND_NAMES.get(g.kind, g.kind) for g in alt.failed})}
        views.append(v)
    baseline = next((v for v in views if v["is_baseline"]), None)
    iam = _iam(views, iam_policy)
    crit = sorted({g.gate_id.rsplit("/", 1)[-1] for a in analyses for g in a.gates
                   if g.kind == "field_f1" and g.detail.get("critical")})
    return {
        "generated_at": opts.generated_at, "results_dir": opts.results_dir, "redact": opts.redact,
        "options": opts, "runs": views, "baseline": baseline,
        "decision": decision(views, baseline),
        "gate_names": _ordered(g.name for v in views for g in v["gates"]),
        "fields": _ordered(f for v in views for f in v["summary"].fields),
        "doc_types": _ordered(t for v in views for t in v["summary"].doc_types),
        "tiers": _ordered((t for v in views for t in v["summary"].tiers), key=_tier_key),
        "break_even": break_even_rows(views),
        "prices": price_rows(pricing, views, opts.gpu_hourly), "currency": pricing.currency,
        "checklist": checklist(views, baseline, iam), "iam": iam, "consistency_rules": RULES,
        "critical_fields": crit, "left_out": list(left_out),
        "second_thresholds": next((v["second"]["label"] for v in views if v["second"]), None),
        "charts": charts(views, opts, reference), "trade_off_caption": trade_off_caption(views),
        "headline_labels": {"excluded": EXCLUDED_LABEL, "as_zero": AS_ZERO_LABEL},
        "rerun_command": "migbench report --results " + shlex.quote(opts.results_dir or "results"),
        "catalog": list(catalog),
        "review": review_section(views, opts.volumes),  # total cost with review, powered or not
    }


_TIER_ORDER = {"clean": 0, "light": 1, "moderate": 2, "heavy": 3}


def _tier_key(t: str) -> tuple[int, str]:
    return (_TIER_ORDER.get(t, 9), t)


def _ordered(items: Iterable[str], key: Callable[[str], Any] | None = None) -> list[str]:
    seen = list(dict.fromkeys(items))
    return sorted(seen, key=key) if key else seen


def decision(views: Sequence[dict[str, Any]], baseline: dict[str, Any] | None) -> dict[str, Any]:
    candidates = [v for v in views if not v["is_baseline"] and not v["emulated"]]
    passing = [v for v in candidates if v["passes"]]
    emulated = [v["label"] for v in views if v["emulated"]]
    reasons = [{"label": v["label"], "failed": v["failed_gates"], "skipped": v["skipped_gates"]}
               for v in candidates if not v["passes"]]
    if passing:
        priced = sorted((v for v in passing if v["cost"].per_doc is not None), key=lambda v: v["cost"].per_doc)
        best = priced[0] if priced else passing[0]
        return {"recommended": best["run_id"], "label": best["label"], "cost": best["cost"],
                "headline": f"Migrate to {best['name']}: the cheapest backend that passes every gate"
                            if priced else f"{best['name']} passes every gate (its cost is not measured)",
                "passing": [v["label"] for v in passing], "reasons": reasons, "emulated": emulated, "missing": []}
    if not candidates:
        why = "no migration target was measured: only the baseline" + (
            " and emulated runs (emulated: not evidence)" if emulated else "")
    else:
        why = "no backend passes every gate"
    return {"recommended": None, "label": None, "cost": None, "headline": f"No recommendation: {why}",
            "passing": [], "reasons": reasons, "emulated": emulated, "missing": missing_evidence(views, baseline)}


def break_even_rows(views: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-token vs per-hour pairs: the daily volume above which the hour-priced one is cheaper."""
    token = [v for v in views if v["cost"].basis == "token"]
    hourly = [v for v in views if v["cost"].basis == "hourly"]
    rows = []
    for t in token:
        for h in hourly:
            hc: RunCost = h["cost"]
            if t["cost"].per_doc is None or hc.per_doc is None:
                rows.append({"token": t, "hourly": h, "docs_per_day": None, "note": "not measured: "
                             + (t["cost"].note if t["cost"].per_doc is None else hc.note)})
                continue
            be = break_even_docs_per_day(t["cost"].per_doc, hc)
            cap = hc.docs_per_hour * 24 if hc.docs_per_hour else None
            note = ("above this volume one always-on instance is cheaper" if be is not None else
                    f"per-token stays cheaper up to one instance's measured capacity ({cap:,.0f} docs/day)")
            if t["emulated"] or h["emulated"]:
                note += f"; {NOT_EVIDENCE}"
            rows.append({"token": t, "hourly": h, "docs_per_day": be, "note": note})
    return rows


def price_rows(pricing: Pricing, views: Sequence[dict[str, Any]], gpu_hourly: float | None) -> list[dict[str, Any]]:
    used = {v["cost"].price_key for v in views if v["cost"].price_key}
    rows = [{"key": k, "kind": "per 1K tokens (in / out)", "price": f"{p.input_per_1k:g} / {p.output_per_1k:g}",
             "region": p.region, "as_of": p.as_of, "source": p.source, "verified": p.verified, "used": k in used}
            for k, p in token_prices(pricing).items()]  # models and the profiles that bill as them
    for k, p in pricing.hourly.items():
        price = f"{p.per_hour:g}/h" if p.per_hour is not None else None
        source = p.source
        if k == pricing.defaults.local_instance and gpu_hourly is not None:
            price, source = f"{gpu_hourly:g}/h", f"--gpu-hourly {gpu_hourly:g} (given for this report)"
        rows.append({"key": k, "kind": "per instance-hour", "price": price, "region": p.region, "as_of": p.as_of,
                     "source": source, "verified": p.verified, "used": k in used})
    return rows


def _iam(views: Sequence[dict[str, Any]],
         iam_policy: Callable[[list[str]], tuple[dict[str, Any], list[str]]] | None) -> dict[str, Any]:
    models = sorted({m for v in views if v["family"] == "bedrock" or v["residency"]["sent"]
                     for m, _ in v["residency"]["models"] if m != "none"})
    if not models:
        return {"models": [], "policy_json": None, "regions": [], "error": "no Bedrock model was called"}
    if iam_policy is None:
        return {"models": models, "policy_json": None, "regions": [], "error": "migbench.iam not available"}
    try:
        policy, regions = iam_policy(models)
    except (ValueError, KeyError) as exc:
        return {"models": models, "policy_json": None, "regions": [], "error": str(exc)}
    return {"models": models, "policy_json": json.dumps(policy, indent=2), "regions": sorted(regions), "error": None}


# ------------------------------------------------------------------------------------- charts
def trade_off_points(views: Sequence[dict[str, Any]]) -> list[svg.Point]:
    """The trade-off chart's points (runs with a cost and an accuracy), frontier marked among real runs."""
    pts = [svg.Point(v["label"], v["cost"].per_doc, v["summary"].overall_failed_as_zero.mean,
                     v["latency"]["p95"], muted=v["emulated"])
           for v in views if v["cost"].per_doc is not None and v["summary"].overall_failed_as_zero.mean is not None]
    for p in svg.pareto_front([p for p in pts if not p.muted]):
        p.on_frontier = True
    return pts


def trade_off_caption(views: Sequence[dict[str, Any]]) -> str:
    """What the trade-off chart draws, in words: it is built from the same points, so it cannot
    describe a line or a marker that is not there."""
    pts = trade_off_points(views)
    if not pts:
        return "Not drawn: no backend has both a measured cost and a measured accuracy."
    out = ["Cost per document on a log scale; marker area grows with p95 latency (key beside the legend)."]
    free = [p.label for p in pts if p.x <= 0]
    if free:
        out.append(f"Cost 0 ({', '.join(free)}) cannot sit on a log scale: drawn left of the axis break, its "
                   "accuracy as a dotted reference line across the chart.")
    front = sorted((p for p in pts if p.on_frontier), key=lambda p: p.x)
    if len(front) > 1:
        out.append(f"Dashed staircase: the cost/accuracy frontier among real runs "
                   f"({', '.join(p.label for p in front)}): no other real run is both cheaper and more accurate; "
                   "between two of them, paying more buys no accuracy until the next.")
    elif front:
        out.append(f"{front[0].label} alone is on the cost/accuracy frontier (no other real run is cheaper or "
                   "more accurate), so no frontier line is drawn.")
    else:
        out.append("No real run has both a cost and an accuracy, so no frontier is drawn.")
    if any(p.muted for p in pts):
        out.append("Hollow grey markers are emulated runs (emulated: not evidence), never on the frontier.")
    unpriced = [v["label"] for v in views if v["cost"].per_doc is None]
    if unpriced:
        out.append(f"Left out (cost not measured): {', '.join(unpriced)}.")
    return " ".join(out)


def charts(views: Sequence[dict[str, Any]], opts: ReportOptions, reference: Any = None) -> dict[str, str]:
    labels = [v["label"] for v in views]
    muted = [v["label"] for v in views if v["emulated"]]
    ref = reference.thresholds.accuracy.overall if reference is not None else None
    ref_name = reference.name if reference is not None else ""
    fields = _ordered(f for v in views for f in v["summary"].fields)
    cells, tips = {}, {}
    for v in views:
        for name, fs in v["summary"].fields.items():
            cells[(v["label"], name)] = fs.mean_f1
            tips[(v["label"], name)] = (f"{v['label']} / {name}: F1 {_f(fs.mean_f1)} 95% CI [{_f(fs.lo)}, {_f(fs.hi)}]"
                                        f" n={fs.n}" + (f" ({NOT_EVIDENCE})" if v["emulated"] else ""))

    def group_map(attr: str) -> tuple[list[str], dict, dict]:
        cols = _ordered((k for v in views for k in getattr(v["summary"], attr)),
                        key=_tier_key if attr == "tiers" else None)
        c, t = {}, {}
        for v in views:
            for k, g in getattr(v["summary"], attr).items():
                c[(v["label"], k)] = g.mean
                t[(v["label"], k)] = f"{v['label']} / {k}: {_f(g.mean)} [{_f(g.lo)}, {_f(g.hi)}] n={g.n}, failed {g.failed}"
        return cols, c, t

    types, tc, tt = group_map("doc_types")
    tiers, rc, rt = group_map("tiers")
    bars = [svg.Bar(v["label"], v["summary"].overall_failed_as_zero.mean, v["summary"].overall_failed_as_zero.lo,
                    v["summary"].overall_failed_as_zero.hi, muted=v["emulated"]) for v in views]
    return {
        "frontier": svg.scatter(trade_off_points(views), title="accuracy vs cost per document (marker area: p95 latency)",
                                x_label="cost per document (USD)", y_label="document F1 (failed = 0)"),
        "overall": svg.bar_ci(bars, title="document F1 with 95% CI", x_label="mean document F1 (failed = 0)",
                              reference=ref, reference_label=f"{ref_name} gate {ref:g}" if ref is not None else ""),
        "fields": svg.heatmap(labels, fields, cells, tooltips=tips, title="F1 per backend and field"),
        "doc_types": svg.heatmap(labels, types, tc, tooltips=tt, title="F1 per document type", cell_w=80),
        "tiers": svg.heatmap(labels, tiers, rc, tooltips=rt, title="F1 per degradation tier", cell_w=70),
        "latency": svg.histograms({v["label"]: v["latency"]["values"] for v in views}, muted=muted,
                                  title="latency per document", x_label="seconds per document"),
    }
