"""Quota-bound throughput: the migration guide's sequential loop vs the migbench runner.

Starts the Bedrock emulator with a token quota and a latency distribution, runs the same
documents through (a) a one-at-a-time loop like the guide's `extract_with_retry` (retries only
throttling, 1/2/4 s, then gives up: the document is lost) and (b) the runner (thread pool,
client-side token ledger, shared retry loop), in one process, and prints the ratios.

Time is compressed by --time-scale: latencies AND the quota's minute shrink together, so the
ratios are those of the real-time setting (1-3 s per request, a quota of a few docs/s).

    python bench/throughput.py [--docs 300] [--docs-per-s 4] [--time-scale 0.2] [--unknown-quota]
Ends with:  throughput: ceiling_ratio=R speedup=S throttled=P% lost=N

--unknown-quota gives the runner no quota at all (no --tpm/--rpm, nothing read at preflight): the
adaptive limiter must find the emulator's ceiling from throttling alone, and no document may end as
a throttling failure. The ceiling ratio is then measured on completions between the 20th and 90th
percentile (the learning at the start and the tail at the end left out).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from migbench.contracts import BackendError, ErrorClass
from migbench.datasets import load_dataset
from migbench.emulator import GroundTruthResponder, load_config, run_emulator
from migbench.emulator.server import LatencyConfig, QuotaConfig
from migbench.fixtures import default_dataset
from migbench.prompting import load_prompt
from migbench.registry import create_backend
from migbench.retry import RetryPolicy
from migbench.runner import Runner, RunOptions, build_request
from migbench.schema import load_schema
from migbench.store import RunStore

from bench.overhead import repeated


def _backend(url: str, concurrency: int):
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    return create_backend("nova-pro", options={"endpoint_url": url, "allow_loopback": True,
                                               "concurrency": concurrency, "read_timeout": 60})


def sequential_like_the_guide(backend, requests, scale: float) -> tuple[int, int, int]:
    """The guide's loop: one document at a time; throttling retried 3 times (1, 2, 4 s); else lost."""
    ok = lost = throttled = 0
    for req in requests:
        for attempt in range(3):
            try:
                backend.generate(req)
                ok += 1
                break
            except BackendError as exc:
                if exc.error_class is not ErrorClass.THROTTLING:
                    lost += 1  # the guide re-raises anything else: the batch loses the document
                    break
                throttled += 1
                time.sleep((2 ** attempt) * scale)
        else:
            lost += 1  # "Max retries exceeded"
    return ok, lost, throttled


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=300)
    ap.add_argument("--dataset", default=str(default_dataset()))
    ap.add_argument("--latency", default="1,3", help="uniform latency range in seconds (real time)")
    ap.add_argument("--docs-per-s", type=float, default=4.0, help="quota-bound ceiling in documents/s (real time)")
    ap.add_argument("--time-scale", type=float, default=0.2, help="compress time (latency and quota window)")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--client-quota-factor", type=float, default=1.0,
                    help="the runner is told quota x this (e.g. 1.3: an overstated quota it must discover)")
    ap.add_argument("--seq-docs", type=int, default=100,
                    help="documents the sequential loop runs (its rate is per document; default 100)")
    ap.add_argument("--quota-kind", choices=["tokens", "requests"], default="tokens",
                    help="what the emulator's quota counts (requests: an endpoint limited to N requests/min)")
    ap.add_argument("--unknown-quota", action="store_true",
                    help="tell the runner no quota: the limiter finds the ceiling from throttling alone")
    args = ap.parse_args(argv)
    lo, hi = (float(x) for x in args.latency.split(","))
    scale = args.time_scale
    window = 60.0 * scale
    ds = repeated(load_dataset(args.dataset), args.docs)
    schema = load_schema()

    # Calibrate: actual tokens per document (input + output) as the emulator counts them.
    with run_emulator(load_config(), GroundTruthResponder(load_dataset(args.dataset))) as emu:
        b = _backend(emu.url, 1)
        prompt = {dt: load_prompt("nova", dt) for dt in schema.document_types}
        uniq = {d.path: d for d in ds.documents}.values()
        toks = []
        for d in uniq:
            r = b.generate(build_request(d, prompt[d.doc_type], schema, RunOptions(), b))
            toks.append(r.input_tokens + r.output_tokens)
        b.close()
    per_doc = statistics.mean(toks)
    quota = int(args.docs_per_s * 60 * per_doc)  # tokens per (scaled) minute
    ceiling_per_min = quota / per_doc  # documents per real-time minute at steady state

    by_requests = args.quota_kind == "requests"
    server_quota = (QuotaConfig(window_s=window, requests_per_minute=max(1, round(args.docs_per_s * 60)))
                    if by_requests else QuotaConfig(window_s=window, tokens_per_minute=quota))
    cfg = load_config(latency=LatencyConfig(distribution="uniform", min_s=lo, max_s=hi, time_scale=scale, seed=7),
                      quota=server_quota)
    responder = GroundTruthResponder(load_dataset(args.dataset))
    quota_text = (f"{server_quota.requests_per_minute:,} requests/min" if by_requests else f"{quota:,} tokens/min")
    print(f"documents: {args.docs}; latency U({lo},{hi}) s; quota {quota_text} "
          f"(= {args.docs_per_s} docs/s at {per_doc:.0f} tokens/doc); time scale {scale}")

    # (a) sequential, like the guide
    with run_emulator(cfg, responder) as emu:
        b = _backend(emu.url, 1)
        reqs = (build_request(d, prompt[d.doc_type], schema, RunOptions(), b)
                for d in ds.documents[:max(1, args.seq_docs)])
        t0 = time.perf_counter()
        seq_ok, seq_lost, seq_thr = sequential_like_the_guide(b, reqs, scale)
        seq_wall = (time.perf_counter() - t0) / scale
        b.close()
    seq_rate = seq_ok / seq_wall * 60

    # (b) the runner
    done_at: list[float] = []  # completion times (kept for inspection)
    with run_emulator(cfg, responder) as emu, tempfile.TemporaryDirectory() as tmp:
        b = _backend(emu.url, args.concurrency)
        store = RunStore(tmp)
        client_quota = None if args.unknown_quota else quota * args.client_quota_factor
        client_rpm = None
        if by_requests and client_quota is not None:
            client_quota, client_rpm = None, server_quota.requests_per_minute * args.client_quota_factor
        opts = RunOptions(prompt_family="nova", tokens_per_min=client_quota, requests_per_min=client_rpm,
                          quota_window_s=window,
                          retry=RetryPolicy(max_attempts=8, base_s=1.0 * scale, cap_s=30 * scale))
        runner = Runner(b, ds, store, opts, on_result=lambda r: done_at.append(time.perf_counter()))
        admitted: list[float] = []
        acquire = runner.limiter.acquire

        def recording_acquire(tokens, stop=None):
            res = acquire(tokens, stop)
            admitted.append(time.perf_counter())
            return res

        runner.limiter.acquire = recording_acquire
        t0 = time.perf_counter()
        summary = runner.run()
        wall = (time.perf_counter() - t0) / scale
        docs = store.documents(summary.run_id)
        stats = emu.stats.snapshot()
        b.close()
    stored_ok = sum(d.status == "ok" for d in docs)
    lost = args.docs - len(docs)
    retries = sum((d.response.attempts or 1) - 1 for d in docs)
    throttled_pct = 100 * stats["throttled"] / max(1, stats["requests"])
    # Steady state: the admission rate once the burst allowance (a share of one window) is spent,
    # up to the last admission; the overall figure also carries start-up and the last latencies.
    if args.unknown_quota:
        # Admissions include throttled tries; completions are what the ceiling allows through.
        done = sorted(done_at)
        steady = done[len(done) // 5: len(done) * 9 // 10]
    else:
        burst_docs = int(runner.limiter.burst * ceiling_per_min * (window / 60 / scale)) + 1
        steady = sorted(admitted)[burst_docs:]
    steady_rate = ((len(steady) - 1) / ((steady[-1] - steady[0]) / scale) * 60
                   if len(steady) > 2 and steady[-1] > steady[0] else float("nan"))
    overall_rate = stored_ok / wall * 60
    ratio = steady_rate / ceiling_per_min
    speedup = overall_rate / seq_rate if seq_rate else float("inf")

    print(f"(a) sequential loop:  {seq_rate:7.1f} docs/min  ok={seq_ok} lost={seq_lost} throttled={seq_thr}")
    print(f"(b) migbench runner:  {overall_rate:7.1f} docs/min overall (start-up and tail included), "
          f"{steady_rate:.1f} docs/min admitted at steady state; ok={stored_ok} failed={len(docs) - stored_ok} "
          f"lost={lost}")
    print(f"quota-bound ceiling:  {ceiling_per_min:7.1f} docs/min; achieved/ceiling {ratio:.2f}"
          + ("; quota unknown to the runner, learned "
             f"{(runner.limiter.learned_rpm or 0) / window * 60 * scale:.1f} requests/min (real time), "
             f"{runner.limiter.throttle_events} throttles seen" if args.unknown_quota else ""))
    print(f"requests {stats['requests']}, throttled {stats['throttled']} ({throttled_pct:.1f}%), "
          f"retries {retries}, runner/sequential {speedup:.1f}x")
    mode = "unknown-quota " if args.unknown_quota else ""
    print(f"throughput: {mode}ceiling_ratio={ratio:.2f} speedup={speedup:.1f} throttled={throttled_pct:.1f}% "
          f"lost={lost + (len(docs) - stored_ok)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
