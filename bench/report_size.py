"""How long the HTML report takes to render, and how big it gets, at 5 backends x 1,000 documents.

The store is synthesised (no model): the checked-in synthetic ground truth cycled to N documents,
model-like answers with per-backend error rates rendered as text, parsed and scored by the real
parser and scorer, audit entries for the cloud backends, one emulated run. Only the render
(store read + view model + template) is timed.

    .venv/bin/python bench/report_size.py [--docs 1000] [--out /tmp/report_bench.html]

Last line: `report: backends=5 docs=1000 render_s=X size_mb=Y`.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from migbench.contracts import NOT_FOUND, AuditEntry, DocResult, ErrorClass, Response
from migbench.datasets import load_dataset
from migbench.parsing import parse_output, render_kv
from migbench.report import generate
from migbench.schema import load_schema
from migbench.scoring import document_f1, score_document
from migbench.store import RunMeta, RunStore

ROOT = Path(__file__).resolve().parents[1]
# backend -> (family, model, field error rate, failure rate, latency mean s, wall s per doc, emulated)
BACKENDS = {
    "ocr-baseline": ("ocr", "rapidocr+rules", 0.30, 0.01, 3.0, 3.0, False),
    "internvl3": ("local", "/models/InternVL3-8B", 0.12, 0.005, 4.0, 1.0, False),
    "sagemaker": ("sagemaker", "qwen25vl-endpoint", 0.10, 0.01, 2.5, 0.5, False),
    "nova-pro": ("bedrock", "amazon.nova-pro-v1:0", 0.07, 0.01, 1.8, 0.2, False),
    "nova-lite": ("bedrock", "amazon.nova-lite-v1:0", 0.05, 0.0, 0.3, 0.05, True),
}
HOSTS = {"bedrock": "bedrock-runtime.ap-southeast-2.amazonaws.com", "sagemaker": "runtime.sagemaker.ap-southeast-2.amazonaws.com"}


def _perturb(value: str, rng: random.Random) -> str:
    if value == NOT_FOUND:
        return "Acme Pty Ltd"
    return NOT_FOUND if rng.random() < 0.4 else value[::-1]


def synthesise(results: Path, n_docs: int) -> None:
    ds = load_dataset(ROOT / "fixtures" / "synthetic_small")
    schema = load_schema()
    store = RunStore(results)
    store._db.execute("PRAGMA synchronous=OFF")  # a throwaway bench store: no need to fsync each row
    for k, (backend, (family, model, err, fail, lat, wall_per_doc, emulated)) in enumerate(BACKENDS.items()):
        rng = random.Random(k)
        meta = RunMeta(backend, family, model, {"instance_type": "ml.g5.2xlarge"} if family == "sagemaker" else {},
                       "synthetic_small x cycled", f"bench-{n_docs}", n_docs, "bench0prompt", "kv",
                       {"python": sys.version.split()[0]}, "bench", "bench host")
        run_id, _ = store.open_run(meta, new=True)
        cloud = family in HOSTS
        for i in range(n_docs):
            doc = ds.documents[i % len(ds.documents)]
            doc_id = f"{i:05d}_{doc.doc_id}"
            if rng.random() < fail:
                resp = Response(attempts=3, error_class=ErrorClass.TIMEOUT, error="ModelTimeoutException: read timeout")
                result = DocResult(doc_id, doc.doc_type, doc.tier, "failed", resp, error_class="timeout",
                                   error=resp.error)
            else:
                pred = {f: (_perturb(v, rng) if rng.random() < err else v) for f, v in doc.ground_truth.items()}
                throttled = 1 if (cloud and rng.random() < 0.03) else 0
                resp = Response(text=render_kv(pred), latency_s=rng.lognormvariate(0, 0.35) * lat,
                                input_tokens=1800 + rng.randrange(600) if cloud else None,
                                output_tokens=250 + rng.randrange(200) if cloud else None,
                                attempts=1 + throttled, throttled=throttled, retry_wait_s=throttled * 1.2,
                                region="ap-southeast-2" if cloud else None, model_id=model)
                fields = parse_output(resp.text, doc.doc_type, schema)
                scores = score_document(doc.ground_truth, fields, schema)
                result = DocResult(doc_id, doc.doc_type, doc.tier, "ok", resp, fields, scores, document_f1(scores))
            store.save_result(run_id, result, doc.ground_truth)
            if cloud:
                service = "sagemaker-runtime" if family == "sagemaker" else "bedrock-runtime"
                store.add_audit(run_id, AuditEntry(backend, service, "InvokeEndpoint" if family == "sagemaker"
                                                   else "Converse", "ap-southeast-2",
                                                   "127.0.0.1" if emulated else HOSTS[family], model, doc_id=doc_id,
                                                   status=200, bytes_sent=60_000))
        store.update_run(run_id, status="complete", add_wall_s=wall_per_doc * n_docs, emulated=emulated or None)
    store.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "migbench_report_bench.html"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="migbench-report-bench-") as tmp:
        t0 = time.perf_counter()
        synthesise(Path(tmp), args.docs)
        print(f"synthesised {len(BACKENDS)} backends x {args.docs} documents in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        generate(tmp, args.out, gpu_hourly=2.0)
        render_s = time.perf_counter() - t0
    size_mb = Path(args.out).stat().st_size / 1e6
    print(f"wrote {args.out}")
    print(f"report: backends={len(BACKENDS)} docs={args.docs} render_s={render_s:.2f} size_mb={size_mb:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
