"""Throughput of a local backend: images/min and seconds per document.

Runs the documents of a dataset folder through a local backend (Llama-3.2-Vision, InternVL3,
Qwen2.5-VL through transformers, or any model through vLLM's offline engine) in batches, with the
requests the runner would send (same prompts, same image encoding, per-document-type max tokens),
and times the generate_batch calls only: model loading and one warm-up batch are reported apart.
The result is printed beside the incumbent's anchor, the issue's figures for LMM_POC (not measured
here): 14.5-37.9 images/min per deployment, 65.9 images/min batched on 2 GPUs, SROIE receipts.

    python bench/local_throughput.py --backend internvl3 --model-path /models/InternVL3-8B-hf \\
        --dataset DIR --batch-size 8 --limit 64
    python bench/local_throughput.py --backend vllm --model-path /models/InternVL3_5-8B \\
        --prompt-family internvl --trust-remote-code --limit 256   # one engine per visible GPU
    python bench/local_throughput.py --tiny qwen2_5_vl --max-tokens 32   # CPU, random weights

Without a GPU, `--backend vllm` says "not measured: no GPU" and measures nothing.

Ends with:  local: images_per_min=X s_per_doc=Y batch=B
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from migbench.contracts import BackendError, GenParams, Request, Response, SetupError

BACKEND_OF_FAMILY = {"mllama": "llama-3.2-vision", "internvl": "internvl3", "qwen2_5_vl": "qwen2.5-vl"}
VLLM = "vllm"
ANCHOR = ("incumbent anchor (the issue's figures for LMM_POC, not measured here): 14.5-37.9 images/min per "
          "deployment, 65.9 images/min batched on 2 GPUs")
DEFAULT_DATASET = Path(__file__).resolve().parent.parent / "fixtures" / "synthetic_small"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="The issue gives the incumbent's figures as 14.5-37.9 images/min per deployment and 65.9 "
               "images/min batched on 2 GPUs (SROIE receipts); compare like with like: same GPU, model size, "
               "dtype and batch.",
    )
    who = ap.add_mutually_exclusive_group(required=True)
    who.add_argument("--backend", choices=sorted([*BACKEND_OF_FAMILY.values(), VLLM]), help="registry name")
    who.add_argument("--tiny", choices=sorted(BACKEND_OF_FAMILY),
                     help="build a tiny random-weight model of this family in a temp dir (exercises the "
                          "path on CPU; its numbers are not a model's)")
    ap.add_argument("--model-path", help="model directory (else the backend's MIGBENCH_*_PATH variable)")
    ap.add_argument("--dataset", default=str(DEFAULT_DATASET), help="dataset folder with ground truth")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="documents per generate_batch call (default: 4; vllm: 64, shared by its engines)")
    ap.add_argument("--limit", type=int, default=None, help="first N documents")
    ap.add_argument("--max-tokens", type=int, default=None, help="override the per-document-type max tokens")
    ap.add_argument("--max-image-dim", type=int, default=None, help="downscale pages before sending")
    ap.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    ap.add_argument("--quantization", default="none", choices=["none", "8bit", "4bit"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--device-map", default=None, choices=["auto"])
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's; 1 for --tiny)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed batches first (CUDA kernels, caches)")
    v = ap.add_argument_group("vllm backend")
    v.add_argument("--prompt-family", default="default", help="prompts/*.yaml family (internvl, qwen, llama)")
    v.add_argument("--tensor-parallel-size", type=int, default=1, help="GPUs per engine")
    v.add_argument("--data-parallel", default="auto", help="engines (auto: every GPU group visible)")
    v.add_argument("--max-num-seqs", type=int, default=None, help="sequences an engine decodes at once")
    v.add_argument("--max-images", type=int, default=None, help="limit_mm_per_prompt image=N")
    v.add_argument("--gpu-memory-utilization", type=float, default=None)
    v.add_argument("--max-model-len", type=int, default=None)
    v.add_argument("--trust-remote-code", action="store_true", help="for checkpoints with their own code")
    v.add_argument("--no-prefix-caching", action="store_true", help="turn vLLM's prefix cache off (to compare)")
    return ap.parse_args(argv)


def build_requests(dataset: str, family: str, limit: int | None, max_tokens: int | None,
                   max_image_dim: int | None, backend=None) -> list[Request]:
    """The runner's requests for the dataset's documents, prepared in the backend's form (decoded pages
    for a local model); unreadable files are left out, and said."""
    from migbench.contracts import InputError
    from migbench.datasets import load_dataset
    from migbench.prompting import load_prompt
    from migbench.runner import RunOptions, build_request
    from migbench.schema import load_schema

    schema = load_schema()
    ds = load_dataset(dataset)
    opts = RunOptions(max_image_dim=max_image_dim)
    prompts: dict[str, object] = {}
    out = []
    for doc in ds.documents[:limit]:
        if doc.doc_type not in prompts:
            prompts[doc.doc_type] = load_prompt(family, doc.doc_type)
        try:
            req = build_request(doc, prompts[doc.doc_type], schema, opts, backend)
        except InputError as exc:
            print(f"skipped {doc.doc_id}: {exc}", file=sys.stderr)
            continue
        if max_tokens:
            req.params = GenParams(max_tokens=max_tokens)
        out.append(req)
    return out


def summarise(results: list[Response | BackendError], requests: list[Request], wall_s: float) -> dict:
    ok = [r for r in results if isinstance(r, Response)]
    images = sum(len(q.page_sizes()) for q, r in zip(requests, results) if isinstance(r, Response))
    peaks = [r.peak_memory_mb for r in ok if r.peak_memory_mb]
    return {
        "docs": len(results),
        "failed": len(results) - len(ok),
        "images": images,
        "wall_s": wall_s,
        "images_per_min": images / wall_s * 60 if wall_s > 0 else 0.0,
        # Over all documents, failed ones included: their time was spent too.
        "s_per_doc": wall_s / len(results) if results else 0.0,
        "mean_input_tokens": statistics.fmean(r.input_tokens for r in ok) if ok else 0.0,
        "mean_output_tokens": statistics.fmean(r.output_tokens for r in ok) if ok else 0.0,
        "output_tokens_per_s": sum(r.output_tokens for r in ok) / wall_s if wall_s > 0 else 0.0,
        "peak_memory_mb": max(peaks) if peaks else None,
    }


def backend_options(args: argparse.Namespace, name: str) -> dict:
    """The bench's flags as the backend's options (each backend family has its own)."""
    if name != VLLM:
        options = {"batch_size": args.batch_size, "dtype": args.dtype, "quantization": args.quantization,
                   "device": args.device}
        if args.device_map:
            options["device_map"] = args.device_map
        return options
    options = {"batch_size": args.batch_size, "prompt_family": args.prompt_family,
               "tensor_parallel_size": args.tensor_parallel_size, "data_parallel": args.data_parallel,
               "trust_remote_code": args.trust_remote_code, "enable_prefix_caching": not args.no_prefix_caching}
    if args.dtype != "auto":
        options["dtype"] = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[args.dtype]
    for key in ("max_num_seqs", "max_images", "gpu_memory_utilization", "max_model_len", "max_image_dim"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    return options


def engine_line(name: str, d: dict) -> str:
    if name == VLLM:
        return (f"engines={len(d.get('engines') or [])} on CUDA_VISIBLE_DEVICES {' | '.join(d.get('engines') or [])} "
                f"tp={d.get('tensor_parallel_size')} max_num_seqs={d.get('max_num_seqs')} "
                f"prefix_caching={d.get('enable_prefix_caching')} vllm={d.get('vllm')}")
    return (f"device={d.get('device')} gpu={d.get('gpu_name')} dtype={d.get('dtype')} "
            f"quantization={d.get('quantization')}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from migbench.registry import create_backend

    tmp = None
    model_path = args.model_path
    name = args.backend
    if args.batch_size is None:
        args.batch_size = 64 if name == VLLM else 4
    if name == VLLM:
        from migbench.adapters.vllm_engine import visible_gpus

        if not visible_gpus():
            print(f"{VLLM}: images_per_min not measured: no GPU (CUDA_VISIBLE_DEVICES and nvidia-smi show none)")
            print(ANCHOR)
            return 0
    if args.tiny:
        from migbench.fixtures.tiny_models import build_tiny_model

        tmp = tempfile.TemporaryDirectory(prefix="migbench-tiny-")
        model_path = str(build_tiny_model(args.tiny, tmp.name))
        name = BACKEND_OF_FAMILY[args.tiny]
        if args.threads is None:
            args.threads = 1  # tiny matmuls only lose to thread synchronisation
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        backend = create_backend(name, model=model_path, options=backend_options(args, name))
        t0 = time.perf_counter()
        backend.preflight()
        load_s = time.perf_counter() - t0
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    requests = build_requests(args.dataset, backend.config.get("prompt_family", "default"), args.limit,
                              args.max_tokens, args.max_image_dim, backend)
    if not requests:
        print("error: no readable documents in the dataset", file=sys.stderr)
        backend.close()
        return 2
    d = backend.describe()
    print(f"{name} model={d['model']} {engine_line(name, d)} load_s={load_s:.1f} docs={len(requests)}",
          file=sys.stderr)

    for i in range(args.warmup):
        t0 = time.perf_counter()
        backend.generate_batch(requests[:args.batch_size])
        print(f"warm-up batch {i + 1}: {time.perf_counter() - t0:.2f}s (not timed)", file=sys.stderr)

    results: list[Response | BackendError] = []
    wall = 0.0
    for start in range(0, len(requests), args.batch_size):
        chunk = requests[start:start + args.batch_size]
        t0 = time.perf_counter()
        out = backend.generate_batch(chunk)
        dt = time.perf_counter() - t0
        wall += dt
        results.extend(out)
        fails = sum(isinstance(r, BackendError) for r in out)
        print(f"batch {start // args.batch_size + 1}: {len(chunk)} docs {dt:.2f}s failed={fails}",
              file=sys.stderr)
    s = summarise(results, requests, wall)
    for r, q in zip(results, requests):
        if isinstance(r, BackendError):
            print(f"failed {q.doc_id}: {r.error_class.value}: {r}", file=sys.stderr)
    peak = f"{s['peak_memory_mb']:.0f}" if s["peak_memory_mb"] else "n/a"
    cached = [r.cache_read_tokens for r in results if isinstance(r, Response) and r.cache_read_tokens is not None]
    cache = f" prefix_cached_tokens={sum(cached)}" if cached else ""
    print(f"docs={s['docs']} failed={s['failed']} images={s['images']} wall_s={s['wall_s']:.2f} "
          f"mean_in_tokens={s['mean_input_tokens']:.0f} mean_out_tokens={s['mean_output_tokens']:.1f} "
          f"out_tokens_per_s={s['output_tokens_per_s']:.1f} peak_gpu_mb={peak}{cache} "
          f"final_batch_size={getattr(backend, 'batch_size', None) or args.batch_size}")
    where = engine_line(name, d)
    print(f"images/min: measured {s['images_per_min']:.1f} ({name}, {where}) | {ANCHOR}")
    if args.tiny:
        print("note: tiny random-weight model: these numbers time the harness path on this CPU, not a model")
    print(f"local: images_per_min={s['images_per_min']:.1f} s_per_doc={s['s_per_doc']:.3f} "
          f"batch={args.batch_size}")
    backend.close()
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
