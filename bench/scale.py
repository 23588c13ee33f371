"""Peak memory and time of resume, report, export and rescore as a run grows (10k, 50k, 200k documents).

Each size gets a synthetic store written through the store's public API (`RunStore.open_run` +
`save_result`): model-like answers of 1-2 KB built from the shipped synthetic set's ground truth,
parsed and scored by the real parser and scorer (a pool of templates, cycled with fresh document ids,
latencies and token counts; every value but NOT_FOUND and the document type made unique per document,
as a real run's are). Each document also gets the audit rows the retry loop records for it (one
sent request for a completed document, three timed-out attempts for a failed one), so the report
reads a log as long as a live run's. Every operation then runs in a fresh child process, measured
from outside (the child's ru_maxrss from wait4, and its wall time):

- resume: what `migbench run` does before calling a model (open the same run, stored ids, pending);
- report: `migbench.report.generate`, the HTML written to a temporary file (no browser involved);
- export-csv / export-jsonl / export-lmm-poc: `migbench export` through the CLI;
- rescore: `migbench.rescore.rescore_run` (re-parses and re-scores every stored answer; --rescore).

    .venv/bin/python bench/scale.py [--sizes 10000,50000,200000] [--rescore] [--keep DIR]

Prints one table, then the growth in KB per 1,000 documents between the smallest and the largest size
and the projection to 1,000,000 documents against the 1 GB goal.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GOAL_MB = 1024.0
TARGET_DOCS = 1_000_000
TEMPLATES = 400
OPS = ("resume", "report", "export-csv", "export-jsonl", "export-lmm-poc")
BACKEND = ("nova-lite", "bedrock", "amazon.nova-lite-v1:0")
# The answer a chat model writes around its fields (the stored raw text is 1-2 KB, as live runs store).
PREAMBLE = ("Here are the fields extracted from the document. Values are copied exactly as printed; a field "
            "that does not appear on the page is written NOT_FOUND. Amounts keep their currency symbol and "
            "dates keep the document's own format.\n\n")


def _meta(n: int):
    from migbench.store import RunMeta

    return RunMeta(BACKEND[0], BACKEND[1], BACKEND[2], {"temperature": 0}, "synthetic_small x cycled",
                   f"scale-{n}", n, "scale0prompt", "kv", {"python": sys.version.split()[0]}, "bench", "bench host")


def _templates(rng: random.Random) -> list:
    """Scored answers (real parser and scorer) over the shipped synthetic documents, ~8% of fields wrong."""
    from migbench.contracts import NOT_FOUND
    from migbench.datasets import load_dataset
    from migbench.parsing import parse_output, render_kv
    from migbench.schema import load_schema
    from migbench.scoring import document_f1, score_document

    import migbench.fixtures

    ds = load_dataset(Path(migbench.fixtures.__file__).parent / "synthetic_small")
    schema = load_schema()
    out = []
    for k in range(TEMPLATES):
        doc = ds.documents[k % len(ds.documents)]
        pred = {f: (v if rng.random() > 0.08 else (NOT_FOUND if v != NOT_FOUND and rng.random() < 0.5 else "Acme"))
                for f, v in doc.ground_truth.items()}
        notes = "\n\nNotes: " + " ".join(["checked totals against line items;"] * rng.randrange(8, 30))
        fields = parse_output(PREAMBLE + render_kv(pred) + notes, doc.doc_type, schema)
        scores = score_document(doc.ground_truth, fields, schema)
        out.append((doc, pred, notes, fields, scores, document_f1(scores)))
    return out


def _unique(value: str, i: int) -> str:
    """A template's value made this document's own: a real run's ABNs, dates, names and amounts differ
    from document to document, so no two rows share them (the templates alone would)."""
    from migbench.contracts import NOT_FOUND

    return value if value == NOT_FOUND or value in _TYPES else f"{value} {i}"


_TYPES = frozenset({"INVOICE", "RECEIPT", "BANK_STATEMENT", "invoice", "receipt", "bank_statement"})


def build(results: Path, n: int) -> str:
    """A store of one complete run of n documents (1% failed); returns its run id."""
    from migbench.contracts import DocResult, ErrorClass, Response
    from migbench.parsing import render_kv
    from migbench.store import RunStore

    rng = random.Random(n)
    templates = _templates(rng)
    store = RunStore(results)
    store._db.execute("PRAGMA synchronous=OFF")  # a throwaway bench store: no fsync per row
    run_id, _ = store.open_run(_meta(n))
    audit = store.audit_sink(run_id)
    request_rng = random.Random(-n)  # request sizes drawn apart, so the documents are those built without audit rows
    for i in range(n):
        doc, pred, notes, fields, scores, f1 = templates[i % TEMPLATES]
        gt = {f: _unique(v, i) for f, v in doc.ground_truth.items()}
        fields = {f: _unique(v, i) for f, v in fields.items()}
        scores = [replace(x, expected=_unique(x.expected, i), predicted=_unique(x.predicted, i)) for x in scores]
        text = PREAMBLE + render_kv({f: _unique(v, i) for f, v in pred.items()}) + notes
        doc_id = f"{i:07d}_{doc.doc_id}"
        if rng.random() < 0.01:
            resp = Response(attempts=3, error_class=ErrorClass.TIMEOUT, error="ModelTimeoutException: read timeout")
            result = DocResult(doc_id, doc.doc_type, doc.tier, "failed", resp, error_class="timeout", error=resp.error)
            # as aws_common.audit_entry records a read timeout: sent (allowed), no HTTP status, the class as reason
            sent = [_audit(doc_id, None, attempt, request_rng, reason=ErrorClass.TIMEOUT.value)
                    for attempt in (1, 2, 3)]
        else:
            resp = Response(text=text, latency_s=rng.lognormvariate(0, 0.35), input_tokens=1800 + rng.randrange(600),
                            output_tokens=250 + rng.randrange(200), server_latency_ms=rng.uniform(200, 900),
                            region="ap-southeast-2", endpoint="bedrock-runtime.ap-southeast-2.amazonaws.com",
                            model_id=BACKEND[2], request_id=f"req-{i:08x}", stop_reason="end_turn",
                            ttft_s=rng.uniform(0.1, 0.4), cache_read_tokens=0, cache_write_tokens=0)
            result = DocResult(doc_id, doc.doc_type, doc.tier, "ok", resp, fields, scores, f1)
            sent = [_audit(doc_id, resp.request_id, 1, request_rng, status=200)]
        for entry in sent:  # as the retry loop records each attempt, before the document is saved
            audit.record_audit(entry)
        store.save_result(run_id, result, gt)
    store.update_run(run_id, status="complete", add_wall_s=0.05 * n)
    store.close()
    return run_id


def _audit(doc_id: str, request_id: str | None, attempt: int, rng: random.Random, *,
           status: int | None = None, reason: str | None = None):
    """One Converse request to Sydney as the audit keeps it (a few hundred KB: the page images)."""
    from migbench.contracts import AuditEntry

    return AuditEntry(BACKEND[0], "bedrock-runtime", "Converse", "ap-southeast-2",
                      "bedrock-runtime.ap-southeast-2.amazonaws.com", BACKEND[2], doc_id=doc_id,
                      request_id=request_id, status=status, attempt=attempt,
                      bytes_sent=rng.randrange(150_000, 450_000), allowed=True, reason=reason)


def child(op: str, results: str, n: int, work: str) -> None:
    """One operation, in this (fresh) process."""
    if op == "resume":
        from migbench.store import Claimant, RunStore

        with RunStore(results) as store:
            run_id, resumed = store.open_run(_meta(n))
            done = store.done_ids(run_id, include_failed=True)
            store.claimed_elsewhere(run_id, Claimant())
            assert resumed and len(done) == n, (resumed, len(done))
            store.update_run(run_id, status="complete")  # as the run ends: the report's candidate again
    elif op == "report":
        from migbench.report import generate

        generate(results, Path(work) / "report.html")
    elif op.startswith("export-"):
        from migbench.cli import main

        fmt = op.split("-", 1)[1]
        out = Path(work) / ("lmm" if fmt == "lmm-poc" else f"pred.{fmt}")
        argv = ["export", "latest", "--results", results, "--out", str(out)]
        if fmt == "lmm-poc":
            argv += ["--format", "lmm-poc"]
        if main(argv) != 0:
            raise SystemExit(f"export {fmt} failed")
    elif op == "rescore":
        from migbench.rescore import rescore_run
        from migbench.store import RunStore

        with RunStore(results) as store:
            rescore_run(store, store.resolve("latest"))
    else:
        raise SystemExit(f"unknown op {op}")


def measure(op: str, results: Path, n: int, work: Path) -> tuple[float, float]:
    """(peak RSS MB, wall s) of one operation in a child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", op, "--results", str(results), "--n", str(n),
                             "--work", str(work)], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{op} at {n} documents exited {proc.returncode}")
    return usage.ru_maxrss / 1024.0, wall  # ru_maxrss is in KiB on Linux


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,50000,200000")
    ap.add_argument("--rescore", action="store_true", help="also time rescore (parses every stored answer)")
    ap.add_argument("--keep", metavar="DIR", help="build the stores here and keep them (reused when present)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--results", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.results, args.n, args.work)
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    ops = [*OPS, *(["rescore"] if args.rescore else [])]
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="migbench-scale-"))
    table: dict[int, dict[str, tuple[float, float]]] = {}
    for n in sizes:
        results = base / f"docs{n}"
        if not (results / "migbench.sqlite").is_file():
            t0 = time.perf_counter()
            build(results, n)
            print(f"built {n} documents in {time.perf_counter() - t0:.1f} s "
                  f"({(results / 'migbench.sqlite').stat().st_size / 1e6:.0f} MB store)", flush=True)
        table[n] = {}
        for op in ops:
            with tempfile.TemporaryDirectory(prefix="migbench-scale-out-") as work:
                table[n][op] = measure(op, results, n, Path(work))
            print(f"  {n:>8} {op:<15} peak {table[n][op][0]:8.1f} MB  {table[n][op][1]:7.1f} s", flush=True)
    print()
    print(f"{'operation':<15}" + "".join(f"{f'{n:,} docs':>24}" for n in sizes))
    for op in ops:
        print(f"{op:<15}" + "".join(f"{f'{table[n][op][0]:.0f} MB / {table[n][op][1]:.1f} s':>24}" for n in sizes))
    if len(sizes) > 1:
        lo, hi = sizes[0], sizes[-1]
        print(f"\ngrowth between {lo:,} and {hi:,} documents, projected to {TARGET_DOCS:,} (goal {GOAL_MB:.0f} MB):")
        for op in ops:
            per_doc_kb = (table[hi][op][0] - table[lo][op][0]) * 1024.0 / (hi - lo)
            projected = table[hi][op][0] + per_doc_kb * (TARGET_DOCS - hi) / 1024.0
            verdict = "within" if projected <= GOAL_MB else "OVER"
            print(f"  {op:<15} {per_doc_kb * 1000:8.1f} KB per 1,000 docs -> {projected:8.0f} MB at 1M ({verdict})")
    if not args.keep:
        import shutil

        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
