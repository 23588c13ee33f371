"""vLLM's offline engine on own GPUs, run as the incumbent runs it: `LLM(...)` + `LLM.chat`.

The incumbent (LMM_POC) builds `vllm.LLM` with prefix caching on, `limit_mm_per_prompt`,
`max_num_seqs`, `max_model_len=8192`, `gpu_memory_utilization=0.90`, eager mode and the spawn
start method, sends OpenAI-style chat messages with each page as a data URI, image before text for
extraction, and decodes greedily (`SamplingParams(temperature=0, max_tokens=...)`). This backend
does the same; each of those is an option (VLLMOptions) with the incumbent's value as its default
unless said otherwise there.

Scale-out is data parallel: one engine per GPU (or per `tensor_parallel_size` GPUs) over
CUDA_VISIBLE_DEVICES. With one engine the engine lives in this process, as the incumbent's does;
with several, each lives in its own spawned worker process whose CUDA_VISIBLE_DEVICES names only its
GPUs. `generate_batch` groups a batch's requests by document type (the same prompt, so the same
prefix: the prefix cache stays warm), gives each engine a contiguous share of that order, and
collects the answers in this process, where the runner stores them. Several `migbench run`
processes on one results folder also share documents through the store's atomic claims; this is the
in-run alternative that keeps one process, one run and one store writer.

The engine is made by an engine factory (`EngineFactory`): production uses `vllm_engine`, which
imports vLLM only when called; tests pass a fake through the same seam, so the message building,
grouping, sharding, worker protocol and output reading they check are the ones that run on a GPU.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from migbench.adapters.hf_local import resolve_model_source
from migbench.adapters.openai_compat import data_uri
from migbench.contracts import (
    Backend,
    BackendConfig,
    BackendError,
    BackendOptions,
    ErrorClass,
    GenParams,
    ImageBudget,
    Request,
    Response,
    SetupError,
    generate_one,
)
from pydantic import Field, field_validator

log = logging.getLogger("migbench.vllm")

INSTALL_HINT = "pip install 'migbench[vllm]' on a GPU host"
WORKER_ENV = {"VLLM_WORKER_MULTIPROC_METHOD": "spawn"}  # CUDA cannot be re-initialised in a forked child


# ---------------------------------------------------------------- pure helpers


def build_messages(request: Request, *, image_first: bool = True) -> list[dict[str, Any]]:
    """One conversation in the OpenAI chat format `LLM.chat` takes: the system prompt, then one user
    message with every page as an `image_url` data URI of the prepared bytes, and the prompt text.
    image_first: the incumbent puts the page before the text for extraction (fewer false positives in
    its trials); text first makes the whole prompt a prefix shared by every document of a type."""
    images = [{"type": "image_url", "image_url": {"url": data_uri(img)}} for img in request.images]
    text = {"type": "text", "text": request.prompt}
    content = [*images, text] if image_first else [text, *images]
    messages: list[dict[str, Any]] = [{"role": "system", "content": request.system}] if request.system else []
    messages.append({"role": "user", "content": content})
    return messages


def sampling_kwargs(params: GenParams, max_tokens: int | None = None) -> dict[str, Any]:
    """The run's generation parameters as `vllm.SamplingParams` keyword arguments (greedy at
    temperature 0, as the incumbent decodes)."""
    kw: dict[str, Any] = {"max_tokens": int(max_tokens or params.max_tokens),
                          "temperature": float(params.temperature), "top_p": float(params.top_p)}
    if params.stop:
        kw["stop"] = list(params.stop)
    return kw


def group_order(keys: Sequence[Any]) -> list[int]:
    """Indices with equal keys made adjacent, groups in order of first appearance, each group in its
    original order: documents of one type follow each other, so their shared prefix stays cached."""
    groups: dict[Any, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return [i for members in groups.values() for i in members]


def shard(order: Sequence[int], n: int) -> list[list[int]]:
    """`order` cut into n contiguous shares whose sizes differ by at most one (an engine gets whole
    runs of a type wherever possible, so its own prefix cache stays warm)."""
    if n < 1:
        raise ValueError("n must be at least 1")
    base, extra = divmod(len(order), n)
    out, pos = [], 0
    for k in range(n):
        size = base + (1 if k < extra else 0)
        out.append(list(order[pos:pos + size]))
        pos += size
    return out


def visible_gpus(env: dict[str, str] | None = None, probe: Callable[[], int] | None = None) -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries, without initialising CUDA
    (vLLM's spawned workers must be the first to): CUDA_VISIBLE_DEVICES when set (empty or -1: none),
    else one entry per GPU that `nvidia-smi -L` lists."""
    env = os.environ if env is None else env
    raw = env.get("CUDA_VISIBLE_DEVICES")
    if raw is not None:
        entries = [e.strip() for e in raw.split(",") if e.strip()]
        # CUDA stops at the first invalid entry; -1 is the usual way to hide every GPU.
        out = []
        for e in entries:
            if e.startswith("-"):
                break
            out.append(e)
        return out
    count = (probe or _nvidia_smi_count)()
    return [str(i) for i in range(count)]


def _nvidia_smi_count() -> int:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return 0
    try:
        res = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return 0
    if res.returncode != 0:
        return 0
    return sum(1 for line in res.stdout.splitlines() if line.startswith("GPU "))


def plan_engines(gpus: Sequence[str], tensor_parallel_size: int = 1,
                 data_parallel: int | None = None) -> list[str]:
    """One CUDA_VISIBLE_DEVICES value per engine: consecutive groups of `tensor_parallel_size` GPUs,
    as many as `data_parallel` asks (None: as many as the GPUs allow). SetupError when they do not fit."""
    tp = int(tensor_parallel_size)
    fits = len(gpus) // tp
    if fits < 1:
        raise SetupError(f"the vllm backend needs a CUDA GPU ({len(gpus)} visible, tensor_parallel_size={tp}): "
                         f"{INSTALL_HINT}; without GPUs, point the openai-compatible backend at a `vllm serve`")
    n = fits if data_parallel is None else int(data_parallel)
    if n > fits:
        raise SetupError(f"data_parallel={n} x tensor_parallel_size={tp} needs {n * tp} GPUs; "
                         f"{len(gpus)} visible (CUDA_VISIBLE_DEVICES={','.join(gpus)})")
    return [",".join(gpus[k * tp:(k + 1) * tp]) for k in range(n)]


def stop_reason(finish_reason: str | None, matched: Any = None) -> str | None:
    """vLLM's finish reason in the local backends' words (hf_local): end_turn, max_tokens, stop_sequence."""
    if finish_reason == "length":
        return "max_tokens"
    if finish_reason == "stop":
        # CompletionOutput.stop_reason: the stop string matched, a stop token id, or None for EOS.
        return "stop_sequence" if isinstance(matched, str) else "end_turn"
    return finish_reason


@dataclass
class Generated:
    """What an engine answered for one conversation: plain data, so it crosses a process pipe."""

    text: str = ""
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    stop_reason: str | None = None
    cached_tokens: int | None = None  # prompt tokens served from the prefix cache
    error: str | None = None


def _len(value: Any) -> int | None:
    return len(value) if value is not None else None


def read_output(out: Any) -> Generated:
    """A vLLM RequestOutput -> Generated: the first completion's text (stripped, as the incumbent's),
    prompt tokens from `prompt_token_ids`, output tokens from `token_ids`, the finish reason, and the
    prompt tokens the prefix cache served (`num_cached_tokens`, where this vLLM reports it)."""
    first = out.outputs[0]
    cached = getattr(out, "num_cached_tokens", None)
    return Generated(text=(first.text or "").strip(), prompt_tokens=_len(getattr(out, "prompt_token_ids", None)),
                     output_tokens=_len(getattr(first, "token_ids", None)),
                     stop_reason=stop_reason(getattr(first, "finish_reason", None), getattr(first, "stop_reason", None)),
                     cached_tokens=int(cached) if isinstance(cached, int) else None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


# ---------------------------------------------------------------- engines


@dataclass(frozen=True)
class EngineSpec:
    """Everything an engine is built from; plain data, so a worker process receives it whole."""

    model: str
    tensor_parallel_size: int = 1
    max_model_len: int = 8192
    gpu_memory_utilization: float = 0.90
    max_num_seqs: int = 16
    max_images: int = 1
    enable_prefix_caching: bool = True
    enforce_eager: bool = True
    trust_remote_code: bool = False
    dtype: str = "auto"
    seed: int = 0
    attention_backend: str | None = None
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)


def llm_kwargs(spec: EngineSpec) -> dict[str, Any]:
    """`vllm.LLM(**...)` for a spec: the incumbent's constructor arguments."""
    kw: dict[str, Any] = {
        "model": spec.model, "tensor_parallel_size": spec.tensor_parallel_size,
        "max_model_len": spec.max_model_len, "gpu_memory_utilization": spec.gpu_memory_utilization,
        "max_num_seqs": spec.max_num_seqs, "limit_mm_per_prompt": {"image": spec.max_images},
        "enable_prefix_caching": spec.enable_prefix_caching, "enforce_eager": spec.enforce_eager,
        "trust_remote_code": spec.trust_remote_code, "dtype": spec.dtype, "seed": spec.seed,
        "disable_log_stats": True,
    }
    if spec.attention_backend:
        kw["attention_backend"] = spec.attention_backend
    return kw


@dataclass
class Engine:
    """A started engine: the `LLM` (anything with vLLM's `chat`) and how to make its sampling params."""

    llm: Any
    sampling: Callable[..., Any]
    info: dict[str, Any] = field(default_factory=dict)  # facts for describe(): versions


EngineFactory = Callable[[EngineSpec], Engine]


def vllm_engine(spec: EngineSpec) -> Engine:
    """The production factory: import vLLM here (never at module import) and build the `LLM`."""
    for key, value in WORKER_ENV.items():
        os.environ.setdefault(key, value)
    try:
        import vllm
        from vllm import LLM, SamplingParams
    except ImportError as exc:
        raise SetupError(f"the vllm backend needs vLLM ({_first_line(exc)}): {INSTALL_HINT}") from exc
    try:
        llm = LLM(**llm_kwargs(spec))
    except Exception as exc:  # any start failure is a setup problem, said in one line
        raise SetupError(f"vLLM could not start {spec.model} on CUDA_VISIBLE_DEVICES="
                         f"{os.environ.get('CUDA_VISIBLE_DEVICES', '(all)')}: {_first_line(exc)}") from exc
    return Engine(llm, SamplingParams, {"vllm": getattr(vllm, "__version__", "unknown")})


def run_chat(engine: Engine, conversations: list[list[dict[str, Any]]], sampling: list[dict[str, Any]],
             chat_template_kwargs: dict[str, Any] | None = None) -> list[Generated]:
    """One `LLM.chat` call over conversations (the engine schedules them up to max_num_seqs at a time).
    A call that raises is retried one conversation at a time, so one bad document (too long for
    max_model_len, say) fails alone and the others still get answers."""
    if not conversations:
        return []
    extra = {"chat_template_kwargs": chat_template_kwargs} if chat_template_kwargs else {}
    try:
        params = [engine.sampling(**kw) for kw in sampling]
        outs = list(engine.llm.chat(conversations, params, use_tqdm=False, **extra))
        if len(outs) != len(conversations):
            raise RuntimeError(f"vLLM answered {len(outs)} of {len(conversations)} conversations")
        return [read_output(o) for o in outs]
    except Exception as exc:  # noqa: BLE001 - reported per document, never ends the run
        if len(conversations) == 1:
            return [Generated(error=_first_line(exc))]
        cause = _first_line(exc)
    log.warning("vLLM batch of %d failed (%s): retrying one by one", len(conversations), cause)
    return [g for conv, kw in zip(conversations, sampling)
            for g in run_chat(engine, [conv], [kw], chat_template_kwargs)]


class _LocalEngine:
    """The engine in this process (one engine: the incumbent's own arrangement)."""

    def __init__(self, devices: str, engine: Engine):
        self.devices, self.engine, self.info = devices, engine, engine.info

    def submit(self, conversations: list, sampling: list, chat_kw: dict) -> None:
        self._pending = (conversations, sampling, chat_kw)

    def result(self) -> tuple[list[Generated], float]:
        conversations, sampling, chat_kw = self._pending
        t0 = time.perf_counter()
        out = run_chat(self.engine, conversations, sampling, chat_kw)
        return out, time.perf_counter() - t0

    def close(self) -> None:
        self.engine = None  # type: ignore[assignment]


def engine_worker(conn: Any, devices: str, spec: EngineSpec, factory: EngineFactory) -> None:
    """A worker process's loop: its own CUDA_VISIBLE_DEVICES, one engine, then ("chat", ...) requests
    answered with ("ok", [Generated], wall_s) until ("close",) or the pipe closes."""
    os.environ["CUDA_VISIBLE_DEVICES"] = devices  # before vLLM (and CUDA) is imported in this process
    for key, value in WORKER_ENV.items():
        os.environ.setdefault(key, value)
    try:
        engine = factory(spec)
    except BaseException as exc:  # noqa: BLE001 - the parent says why, one line
        conn.send(("error", str(exc) if isinstance(exc, SetupError) else _first_line(exc)))
        conn.close()
        return
    conn.send(("ready", engine.info))
    parent = os.getppid()
    while True:
        try:
            if not conn.poll(1.0):
                if os.getppid() != parent:  # the parent was killed: free the GPU rather than linger
                    break
                continue
            msg = conn.recv()
        except (EOFError, OSError):
            break
        if msg[0] != "chat":
            break
        _, conversations, sampling, chat_kw = msg
        t0 = time.perf_counter()
        out = run_chat(engine, conversations, sampling, chat_kw)
        conn.send(("ok", out, time.perf_counter() - t0))
    conn.close()


class _WorkerEngine:
    """An engine in a spawned process that sees only `devices` (data parallel)."""

    def __init__(self, devices: str, spec: EngineSpec, factory: EngineFactory):
        ctx = multiprocessing.get_context("spawn")
        self.devices = devices
        self.conn, child = ctx.Pipe()
        # Not a daemon: vLLM starts processes of its own, which a daemonic process may not.
        self.proc = ctx.Process(target=engine_worker, args=(child, devices, spec, factory),
                                name=f"migbench-vllm-{devices}")
        self.proc.start()
        child.close()
        self.info: dict[str, Any] = {}
        self.broken: str | None = None
        # multiprocessing joins non-daemon children at exit; a worker still waiting for work would
        # hang that join, so an unclosed backend closes its workers first (atexit runs last-in first).
        atexit.register(self.close)

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.conn.poll(0.2):
            if not self.proc.is_alive():
                raise SetupError(f"the vLLM worker for GPU {self.devices} exited with code "
                                 f"{self.proc.exitcode} before its engine started")
            if time.monotonic() > deadline:
                raise SetupError(f"the vLLM engine on GPU {self.devices} did not start within "
                                 f"startup_timeout={timeout_s:g}s")
        try:
            kind, payload = self.conn.recv()
        except (EOFError, OSError) as exc:
            raise SetupError(f"the vLLM worker for GPU {self.devices} exited while starting") from exc
        if kind != "ready":
            raise SetupError(f"GPU {self.devices}: {payload}")
        self.info = payload

    def submit(self, conversations: list, sampling: list, chat_kw: dict) -> None:
        try:
            self.conn.send(("chat", conversations, sampling, chat_kw))
        except (OSError, ValueError) as exc:
            self.broken = _first_line(exc)

    def result(self) -> tuple[list[Generated], float]:
        try:
            if self.broken is not None:
                raise OSError(self.broken)
            _, out, wall = self.conn.recv()
        except (EOFError, OSError) as exc:
            self.broken = self.broken or "exited"
            self.proc.join(timeout=5)  # the pipe closes a moment before the process is reaped
            raise BackendError(f"the vLLM worker for GPU {self.devices} exited (code {self.proc.exitcode})",
                               ErrorClass.PERMANENT) from exc
        return out, wall

    def close(self) -> None:
        atexit.unregister(self.close)
        if self.conn.closed:
            return
        try:
            self.conn.send(("close",))
        except (OSError, ValueError):
            pass
        self.proc.join(timeout=60)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout=10)
        self.conn.close()


# ---------------------------------------------------------------- backend


class VLLMOptions(BackendOptions):
    """Options of the vllm backend; the defaults are the incumbent's unless a description says not."""

    model_env: str | None = Field(None, description="environment variable holding the model directory")
    model_path: str | None = Field(None, description="model directory or hub id (else --model or model_env)")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per engine")
    data_parallel: Literal["auto"] | int = Field("auto", description=(
        "engines, each on its own tensor_parallel_size GPUs of CUDA_VISIBLE_DEVICES (auto: all that fit)"))
    max_num_seqs: int = Field(16, ge=1, description=(
        "sequences an engine decodes at once (the incumbent's spec default is 1; its batched figures use more)"))
    max_model_len: int = Field(8192, ge=256, description="context length (prompt + pages + answer)")
    gpu_memory_utilization: float = Field(0.90, gt=0, le=1, description="share of each GPU vLLM may take")
    max_images: int = Field(4, ge=1, description=(
        "limit_mm_per_prompt image=N: pages per document (the incumbent sends 1; a document with more "
        "pages fails without being sent)"))
    enable_prefix_caching: bool = True
    enforce_eager: bool = Field(True, description="no CUDA graphs: faster start, slower decode (the incumbent's)")
    trust_remote_code: bool = Field(False, description=(
        "run the checkpoint's own Python (the incumbent sets it for InternVL's original checkpoints)"))
    dtype: str = Field("auto", description="auto, bfloat16, float16")
    seed: int = 0
    attention_backend: str | None = Field(None, description="e.g. FLASHINFER (the incumbent's); unset: vLLM picks")
    disable_thinking: bool = Field(False, description=(
        "chat_template_kwargs enable_thinking=false (the incumbent does this for Qwen3.5 / Gemma 4)"))
    image_first: bool = Field(True, description="page before text in the user message (the incumbent's, extraction)")
    max_tokens: int | None = Field(None, ge=1, description="override the prompt's output token budget")
    max_image_dim: int | None = Field(None, ge=1, description="downscale pages whose longer side exceeds this")
    startup_timeout: float = Field(1800.0, gt=0, description="seconds an engine may take to load")

    @field_validator("data_parallel", mode="before")
    @classmethod
    def _dp(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() != "auto":
            try:
                value = int(value)
            except ValueError:
                raise ValueError("must be auto or a positive integer") from None
        if isinstance(value, int) and not isinstance(value, bool) and value < 1:
            raise ValueError("must be auto or a positive integer")
        return value


class VLLMBackend(Backend):
    family = "local"  # own GPUs: priced by the hour like the transformers backends
    input_form = "encoded"  # pages as the bytes that go into the data URIs, prepared once by the runner
    batches = True
    Options = VLLMOptions

    def __init__(self, config: BackendConfig, *, engine_factory: EngineFactory = vllm_engine):
        super().__init__(config)
        self.opts: VLLMOptions = config.settings  # type: ignore[assignment]
        self.engine_factory = engine_factory
        self._engines: list[_LocalEngine | _WorkerEngine] = []
        self._plan: list[str] = []
        self._source: str | None = None
        self._info: dict[str, Any] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------ facts

    @property
    def model_id(self) -> str:
        if self._source is None:
            self._source, _ = resolve_model_source(self.config)
        return os.path.basename(self._source.rstrip("/")) if os.path.isdir(self._source) else self._source

    def spec(self) -> EngineSpec:
        o = self.opts
        if self._source is None:
            self._source, _ = resolve_model_source(self.config)
        return EngineSpec(
            model=self._source, tensor_parallel_size=o.tensor_parallel_size, max_model_len=o.max_model_len,
            gpu_memory_utilization=o.gpu_memory_utilization, max_num_seqs=o.max_num_seqs, max_images=o.max_images,
            enable_prefix_caching=o.enable_prefix_caching, enforce_eager=o.enforce_eager,
            trust_remote_code=o.trust_remote_code, dtype=o.dtype, seed=o.seed, attention_backend=o.attention_backend,
            chat_template_kwargs={"enable_thinking": False} if o.disable_thinking else {})

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        o = self.opts
        d.update({"engine": "vllm offline (LLM.chat)", "engines": list(self._plan),
                  "tensor_parallel_size": o.tensor_parallel_size, "max_num_seqs": o.max_num_seqs,
                  "max_model_len": o.max_model_len, "gpu_memory_utilization": o.gpu_memory_utilization,
                  "limit_mm_per_prompt": {"image": o.max_images}, "enable_prefix_caching": o.enable_prefix_caching,
                  "enforce_eager": o.enforce_eager, "image_first": o.image_first,
                  "decoding": "the run's generation parameters (temperature 0: greedy)",
                  "vllm": self._info.get("vllm"), "emulated": False})
        return d

    def image_budget(self) -> ImageBudget:
        return ImageBudget(formats=("png", "jpeg", "webp"), max_side_px=self.opts.max_image_dim)

    def endpoint_kind(self) -> str:
        return "vllm-offline"

    # ------------------------------------------------------------ engines

    def preflight(self) -> None:
        self._start()

    def _start(self) -> list[_LocalEngine | _WorkerEngine]:
        with self._lock:
            if self._engines:
                return self._engines
            spec = self.spec()
            gpus = visible_gpus()
            dp = None if self.opts.data_parallel == "auto" else int(self.opts.data_parallel)
            plan = plan_engines(gpus, self.opts.tensor_parallel_size, dp)
            engines: list[_LocalEngine | _WorkerEngine] = []
            try:
                if len(plan) == 1 and plan[0] == ",".join(gpus):
                    engines.append(_LocalEngine(plan[0], self.engine_factory(spec)))
                else:  # each engine in a process that sees only its GPUs; all load at once
                    workers = [_WorkerEngine(devices, spec, self.engine_factory) for devices in plan]
                    engines.extend(workers)
                    for w in workers:
                        w.wait_ready(self.opts.startup_timeout)
            except BaseException:
                for e in engines:
                    e.close()
                raise
            log.info("vLLM: %d engine(s) on CUDA_VISIBLE_DEVICES %s", len(plan), " | ".join(plan))
            self._engines, self._plan = engines, plan
            self._info = engines[0].info
            return engines

    def close(self) -> None:
        with self._lock:
            engines, self._engines = self._engines, []
        for e in engines:
            e.close()

    # ------------------------------------------------------------ generation

    def generate(self, request: Request) -> Response:
        return generate_one(self, request)

    def generate_batch(self, requests: list[Request]) -> list[Response | BackendError]:
        engines = self._start()
        results: list[Response | BackendError | None] = [None] * len(requests)
        sendable: list[int] = []
        for i, req in enumerate(requests):
            if len(req.images) > self.opts.max_images:
                results[i] = BackendError(
                    f"{req.doc_id}: {len(req.images)} pages but limit_mm_per_prompt image={self.opts.max_images} "
                    f"(raise -o max_images={len(req.images)})", ErrorClass.PERMANENT)
            else:
                sendable.append(i)
        order = [sendable[k] for k in group_order([(requests[i].doc_type, requests[i].system, requests[i].prompt)
                                                   for i in sendable])]
        shares = shard(order, len(engines))
        chat_kw = dict(self.spec().chat_template_kwargs)
        t0 = time.perf_counter()
        busy = []
        for engine, share in zip(engines, shares):
            if share:
                engine.submit([build_messages(requests[i], image_first=self.opts.image_first) for i in share],
                              [sampling_kwargs(requests[i].params, self.opts.max_tokens) for i in share], chat_kw)
                busy.append((engine, share))
        for engine, share in busy:
            try:
                outs, wall = engine.result()
            except BackendError as exc:
                for i in share:
                    results[i] = exc
                continue
            for i, gen in zip(share, outs):
                results[i] = self._response(requests[i], gen, engine.devices, wall, len(share))
        batch_wall = time.perf_counter() - t0
        for r in results:
            if isinstance(r, Response):
                r.extra["batch_latency_s"] = batch_wall
                r.extra["engines"] = len(engines)
        return results  # type: ignore[return-value]

    def _response(self, req: Request, gen: Generated, devices: str, wall: float, n: int) -> Response | BackendError:
        if gen.error is not None:
            return BackendError(f"vLLM on GPU {devices}: {gen.error}", ErrorClass.PERMANENT,
                                response=Response(latency_s=wall / n, endpoint=f"local:vllm:cuda:{devices}",
                                                  model_id=self.model_id))
        # An engine schedules its share continuously, so a document's share of the engine's wall
        # time is wall / n; the shares add up to the engines' busy time (GPU-seconds), which keeps
        # s/doc and the hourly cost per document honest under data parallelism.
        return Response(text=gen.text, input_tokens=gen.prompt_tokens, output_tokens=gen.output_tokens,
                        latency_s=wall / n, endpoint=f"local:vllm:cuda:{devices}", model_id=self.model_id,
                        stop_reason=gen.stop_reason, cache_read_tokens=gen.cached_tokens,
                        extra={"engine_devices": devices, "engine_batch": n, "engine_wall_s": wall,
                               "pages": len(req.images)})

