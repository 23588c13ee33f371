"""The harness's own CPU time per document, model time excluded.

Runs the real runner (read + decode + encode the page, build the request, retry loop, parse,
score, store in SQLite) over N documents with a backend that answers instantly from the ground
truth, and reports CPU ms per document, split by stage from a second, per-stage timing pass.

    python bench/overhead.py [--n 2000] [--dataset DIR]
Ends with:  overhead: ms_per_doc=X
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from migbench.contracts import Backend, BackendConfig, Request, Response
from migbench.datasets import Dataset, load_dataset
from migbench.fixtures import default_dataset
from migbench.parsing import parse_output, render_kv
from migbench.runner import Runner, RunOptions, build_request
from migbench.schema import load_schema
from migbench.scoring import score_document
from migbench.store import RunStore


class InstantBackend(Backend):
    """Answers with the document's ground truth at once: what is left is the harness."""

    family = "bench"

    def __init__(self, answers: dict[str, dict[str, str]]):
        super().__init__(BackendConfig(name="instant", model="instant"))
        self.answers = answers

    def generate(self, request: Request) -> Response:
        return Response(text=render_kv(self.answers[request.doc_id]), input_tokens=1500, output_tokens=200)


def repeated(ds: Dataset, n: int) -> Dataset:
    docs = [replace(d, doc_id=f"{i:06d}_{d.doc_id}") for i in range(n) for d in [ds.documents[i % len(ds.documents)]]]
    return Dataset(ds.root, ds.ground_truth_file, docs, [], hash=f"{ds.hash}x{n}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--dataset", default=str(default_dataset()))
    args = ap.parse_args(argv)
    ds = repeated(load_dataset(args.dataset), args.n)
    answers = {d.doc_id: d.ground_truth for d in ds.documents}
    schema = load_schema()

    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore(tmp)
        runner = Runner(InstantBackend(answers), ds, store, RunOptions(concurrency=1))
        c0, w0 = time.process_time(), time.perf_counter()
        summary = runner.run()
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        store.close()
    assert summary.ok == args.n, summary

    # Per-stage split on a sample, same code paths.
    sample = ds.documents[: min(200, args.n)]
    stages = {"read+encode": 0.0, "parse": 0.0, "score": 0.0}
    prompt = runner.prompts
    for d in sample:
        t = time.process_time()
        build_request(d, prompt[d.doc_type], schema, RunOptions())
        stages["read+encode"] += time.process_time() - t
        text = render_kv(d.ground_truth)
        t = time.process_time()
        fields = parse_output(text, d.doc_type, schema)
        stages["parse"] += time.process_time() - t
        t = time.process_time()
        score_document(d.ground_truth, fields, schema)
        stages["score"] += time.process_time() - t

    per_doc = cpu / args.n * 1000
    print(f"documents: {args.n} (repeating {len({d.path for d in ds.documents})} files of {args.dataset})")
    print(f"runner: cpu {cpu:.2f} s, wall {wall:.2f} s, {args.n / wall * 60:.0f} docs/min with an instant model")
    for k, v in stages.items():
        print(f"  {k:12s} {v / len(sample) * 1000:7.2f} ms/doc (cpu, sample of {len(sample)})")
    rest = per_doc - sum(v / len(sample) * 1000 for v in stages.values())
    print(f"  {'store+loop':12s} {rest:7.2f} ms/doc (cpu, by difference)")
    print(f"overhead: ms_per_doc={per_doc:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
