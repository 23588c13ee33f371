"""The incumbent's self-hosted models through transformers: Llama-3.2-Vision, InternVL3, Qwen2.5-VL.

One backend class serves the three families: each is loaded with AutoModelForImageTextToText +
AutoProcessor and prompted through the processor's own chat template, so what differs per family
is data (FAMILIES): which config `model_type` it accepts, which modules stay unquantised, and
how the processor wants a batch's images grouped.

Batching is the point of running locally: documents are generated in left-padded batches with
greedy decoding. A CUDA out-of-memory error never ends the run: the batch is halved down to one
document, then that document's pages are shrunk step by step down to `min_image_dim`, and only
then is that one document failed (PERMANENT, with the cause).
"""

from __future__ import annotations

import copy
import gc
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migbench.contracts import (
    Backend,
    BackendConfig,
    BackendError,
    BackendOptions,
    ErrorClass,
    ImageBudget,
    Request,
    Response,
    SetupError,
    generate_one,
)
from migbench.images import fit_within
from pydantic import Field, field_validator

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'migbench[local]'"
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
QUANTIZATIONS = ("none", "8bit", "4bit")
PROMPT_FAMILIES = {"mllama": "llama", "internvl": "internvl", "qwen2_5_vl": "qwen"}  # prompts/*.yaml


@dataclass(frozen=True)
class FamilySpec:
    model_types: tuple[str, ...]  # config.json model_type values this family accepts
    # Kept in full precision under bitsandbytes: vision encoders and projectors lose accuracy in
    # int8/nf4, and Mllama's projector and lm_head do not load in 8-bit on CPU at all.
    keep_unquantised: tuple[str, ...]
    nested_images: bool  # the processor wants one list of pages per sample (Mllama)


def _keep(*modules: str) -> tuple[str, ...]:
    # transformers 5 matches these as regexes anchored at the module's full name (or as a name
    # suffix), so a submodule is named with its `model.` prefix; the bare name covers checkpoints
    # whose classes keep the older flat layout.
    return tuple(p for m in modules for p in (f"model.{m}", m)) + ("lm_head",)


FAMILIES: dict[str, FamilySpec] = {
    "mllama": FamilySpec(("mllama",), _keep("vision_model", "multi_modal_projector"), True),
    "internvl": FamilySpec(("internvl",), _keep("vision_tower", "multi_modal_projector"), False),
    "qwen2_5_vl": FamilySpec(("qwen2_5_vl",), _keep("visual"), False),
}


# ---------------------------------------------------------------- pure helpers

def hub_offline(env: dict[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return any(env.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def resolve_model_source(config: BackendConfig, env: dict[str, str] | None = None) -> tuple[str, bool]:
    """(model directory or hub id, is_local_dir): BackendConfig.model, else model_path, else the env var."""
    env = os.environ if env is None else env
    model_env = config.get("model_env")
    source = config.model or config.get("model_path") or (env.get(model_env) if model_env else None)
    if not source:
        where = f"set {model_env} or pass --model-path DIR" if model_env else "pass --model-path DIR"
        raise SetupError(f"backend {config.name!r} needs a model directory: {where}")
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SetupError(f"{path} is not a model directory (no config.json)")
        return str(path.resolve()), True
    looks_like_hub_id = source.count("/") == 1 and not source.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise SetupError(f"model directory {source} does not exist ({config.name}: set {model_env} "
                         f"or pass --model-path DIR)")
    if hub_offline(env):
        raise SetupError(f"{source} is not a local directory and HF_HUB_OFFLINE is set: download the model "
                         f"and pass --model-path DIR")
    return source, False


def check_model_type(model_dir: str, family: str) -> None:
    """A directory of another family gives a clear error instead of a deep transformers trace."""
    try:
        model_type = json.loads((Path(model_dir) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError) as exc:
        raise SetupError(f"cannot read {model_dir}/config.json: {exc}") from exc
    if model_type not in FAMILIES[family].model_types:
        raise SetupError(f"model at {model_dir} is {model_type!r}, but this backend runs the {family} family")


def build_messages(request: Request) -> list[dict[str, Any]]:
    """Chat messages in the processor's format: page images first, then the prompt text."""
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": [{"type": "text", "text": request.system}]})
    content: list[dict[str, Any]] = [{"type": "image"} for _ in request.pages]
    content.append({"type": "text", "text": request.prompt})
    messages.append({"role": "user", "content": content})
    return messages


def next_image_side(current: int, min_side: int) -> int | None:
    """The OOM fallback's next longest side: half of now, not below min_side; None when exhausted."""
    if current <= min_side:
        return None
    return max(current // 2, min_side)


def count_new_tokens(row: list[int], stop_ids: set[int]) -> tuple[int, bool]:
    """Generated tokens up to and including the first stop token (the rest is batch padding)."""
    for i, tok in enumerate(row):
        if tok in stop_ids:
            return i + 1, True
    return len(row), False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    # Some allocations fail inside cuBLAS/cuDNN and surface as a plain RuntimeError.
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


# ---------------------------------------------------------------- backend

@dataclass
class _Item:
    index: int
    request: Request
    pages: list


class HFLocalOptions(BackendOptions):
    """Options of the local transformers backends, validated when the backend is loaded."""

    family: str = Field(description="model family: " + ", ".join(FAMILIES))
    model_env: str | None = Field(None, description="environment variable holding the model directory")
    model_path: str | None = Field(None, description="model directory (else --model-path or model_env)")
    dtype: str = Field("auto", description="auto, " + ", ".join(DTYPES))
    quantization: str = Field("none", description=", ".join(QUANTIZATIONS))
    device_map: str | dict[str, Any] | None = Field(None, description='"auto" spreads a model over GPUs')
    device: str = "auto"
    min_image_dim: int = Field(448, ge=1)
    max_image_dim: int | None = Field(None, ge=1)
    quant_skip_modules: list[str] | None = None

    @field_validator("family")
    @classmethod
    def _family(cls, value: str) -> str:
        if value not in FAMILIES:
            raise ValueError(f"must be one of {', '.join(FAMILIES)}")
        return value

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, value: str) -> str:
        if value not in ("auto", *DTYPES):
            raise ValueError(f"must be one of auto, {', '.join(DTYPES)}")
        return value

    @field_validator("quantization")
    @classmethod
    def _quantization(cls, value: str) -> str:
        if value not in QUANTIZATIONS:
            raise ValueError(f"must be one of {', '.join(QUANTIZATIONS)}")
        return value


class HFLocalBackend(Backend):
    family = "local"
    batches = True
    Options = HFLocalOptions
    input_form = "pages"  # decoded by the runner, once per page; max_image_dim applied there

    def __init__(self, config: BackendConfig):
        super().__init__(config)
        self.model_family = str(config.get("family") or "")
        if self.model_family not in FAMILIES:
            raise SetupError(f"backend {config.name!r}: option family must be one of {', '.join(FAMILIES)}")
        self.dtype_opt = str(config.get("dtype", "auto"))
        if self.dtype_opt not in ("auto", *DTYPES):
            raise SetupError(f"option dtype={self.dtype_opt} is not one of auto, {', '.join(DTYPES)}")
        self.quantization = str(config.get("quantization") or "none")
        if self.quantization not in QUANTIZATIONS:
            raise SetupError(f"option quantization={self.quantization} is not one of "
                             f"{', '.join(QUANTIZATIONS)}")
        self.device_map = config.get("device_map")  # "auto" spreads a big model over several GPUs
        # None: one generate call per generate_batch call (the runner's --batch-size decides);
        # an OOM lowers it for the rest of the run.
        self.batch_size: int | None = (self._positive_int("batch_size", 1)
                                        if config.get("batch_size") is not None else None)
        self.min_image_dim = self._positive_int("min_image_dim", 448)
        self.max_image_dim = (self._positive_int("max_image_dim", 0)
                              if config.get("max_image_dim") is not None else None)
        self.device_opt = str(config.get("device", "auto"))
        # The runner picks prompts by the backend's prompt_family option: default to the family's own.
        config.options.setdefault("prompt_family", PROMPT_FAMILIES[self.model_family])
        self.model = None
        self.processor = None
        self._source: str | None = None
        self._device: str | None = None

    def _positive_int(self, key: str, default: int) -> int:
        raw = self.config.get(key, default)
        try:
            value = int(raw)
        except (TypeError, ValueError):
            value = 0
        if value < 1:
            raise SetupError(f"option {key}={raw!r} must be a positive integer")
        return value

    # ---- setup

    def _torch(self):
        try:
            import torch
            import transformers  # noqa: F401
        except ImportError as exc:
            raise SetupError(f"local models need torch and transformers: {INSTALL_HINT}") from exc
        return torch

    @property
    def device(self) -> str:
        if self._device is None:
            torch = self._torch()
            want = self.device_opt
            cuda = torch.cuda.is_available()
            if want == "auto":
                want = "cuda" if cuda else "cpu"
            if want.startswith("cuda") and not cuda:
                raise SetupError(f"device {want} requested but torch sees no CUDA GPU: "
                                 f"use --option device=cpu")
            if want == "cuda":
                want = f"cuda:{torch.cuda.current_device()}"
            if self.device_map not in (None, "auto"):
                raise SetupError(f"option device_map={self.device_map!r}: only 'auto' (or unset) "
                                 f"is supported")
            self._device = want
        return self._device

    @property
    def torch_dtype(self):
        torch = self._torch()
        name = self.dtype_opt
        if name == "auto":
            name = "bf16" if self.device.startswith("cuda") else "fp32"
        return getattr(torch, DTYPES[name])

    @property
    def model_id(self) -> str:
        if self._source is None:
            self._source, _ = resolve_model_source(self.config)
        return Path(self._source).name if Path(self._source).is_dir() else self._source

    def describe(self) -> dict[str, Any]:
        torch = self._torch()
        import transformers

        on_cuda = self.device.startswith("cuda")
        return {
            **super().describe(),
            "model_family": self.model_family,
            "device": self.device,
            "device_map": self.device_map,
            "dtype": str(self.torch_dtype).removeprefix("torch."),
            "quantization": self.quantization,
            "gpu_name": torch.cuda.get_device_name(self.device) if on_cuda else None,
            "gpu_count": torch.cuda.device_count() if on_cuda else 0,
            "batch_size": self.batch_size,
            "min_image_dim": self.min_image_dim,
            "max_image_dim": self.max_image_dim,
            "decoding": "greedy",
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "emulated": False,
        }

    def image_budget(self) -> ImageBudget:
        return ImageBudget(max_side_px=self.max_image_dim)

    def preflight(self) -> None:
        self._load()

    def _quantization_config(self):
        if self.quantization == "none":
            return None
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as exc:
            raise SetupError(f"quantization={self.quantization} needs bitsandbytes: {INSTALL_HINT}") from exc
        from transformers import BitsAndBytesConfig

        skip = self.config.get("quant_skip_modules") or FAMILIES[self.model_family].keep_unquantised
        if isinstance(skip, str):  # from the command line: -o quant_skip_modules=a,b
            skip = [m.strip() for m in skip.split(",") if m.strip()]
        skip = list(skip)
        if self.quantization == "8bit":
            return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_compute_dtype=self.torch_dtype, llm_int8_skip_modules=skip)

    def _load(self) -> None:
        if self.model is not None:
            return
        self._torch()
        from transformers import AutoModelForImageTextToText, AutoProcessor

        source, is_dir = resolve_model_source(self.config)
        self._source = source
        if is_dir:
            check_model_type(source, self.model_family)
        local_only = is_dir or hub_offline()
        device = self.device
        quant = self._quantization_config()
        kwargs: dict[str, Any] = {"dtype": self.torch_dtype, "local_files_only": local_only,
                                  "device_map": self.device_map or {"": device}}
        if quant is not None:
            kwargs["quantization_config"] = quant
        try:
            self.processor = AutoProcessor.from_pretrained(source, local_files_only=local_only)
            self.model = AutoModelForImageTextToText.from_pretrained(source, **kwargs).eval()
        except (ImportError, RuntimeError, ValueError) as exc:
            first = _first_line(exc)
            if quant is not None:
                raise SetupError(f"{self.quantization} quantization cannot load on {device} with this "
                                 f"bitsandbytes: {first}") from exc
            if isinstance(exc, ImportError):
                raise SetupError(f"loading {source} needs a missing package ({first}): "
                                 f"{INSTALL_HINT}") from exc
            raise SetupError(f"cannot load {source}: {first}") from exc
        except OSError as exc:
            raise SetupError(f"cannot load {source}: {_first_line(exc)}") from exc
        tok = self.processor.tokenizer
        tok.padding_side = "left"  # decoder-only batching: prompts end where generation starts
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        log.info("loaded %s (%s) on %s dtype=%s quantization=%s", source, self.model_family, device,
                 self.torch_dtype, self.quantization)

    def close(self) -> None:
        self.model = None
        self.processor = None
        self._free_cuda()

    def _free_cuda(self) -> None:
        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # ---- generation

    def generate(self, request: Request) -> Response:
        return generate_one(self, request)

    def generate_batch(self, requests: list[Request]) -> list[Response | BackendError]:
        self._load()
        results: list[Response | BackendError | None] = [None] * len(requests)
        groups: dict[tuple, list[_Item]] = {}
        for i, req in enumerate(requests):
            pages = list(req.pages)
            # One generate call has one stop list; Mllama's processor refuses a batch mixing
            # documents with and without pages. Different max_tokens do batch together (see _run).
            key = (tuple(req.params.stop), bool(pages))
            groups.setdefault(key, []).append(_Item(i, req, pages))
        for items in groups.values():
            pos = 0
            while pos < len(items):
                # Read batch_size each time: an OOM earlier in the run lowers it for what follows.
                chunk = items[pos:pos + (self.batch_size or len(items))]
                pos += len(chunk)
                for item, out in zip(chunk, self._run_adaptive(chunk, None)):
                    results[item.index] = out
        return results  # type: ignore[return-value]

    def _run_adaptive(self, items: list[_Item], max_side: int | None) -> list[Response | BackendError]:
        try:
            return self._run(items, max_side)
        except Exception as exc:  # noqa: BLE001 - one bad batch must never end the run
            oom = is_oom(exc)
            cause = f"{type(exc).__name__}: {_first_line(exc)}"
            error_class = self.classify(exc)
        # Retried outside the except block: until the exception and its traceback are gone they pin
        # the failed batch's activations and KV cache, and the smaller retry would run out too.
        if not oom:
            if len(items) > 1:
                # Isolate the document that broke the batch; the others still get answers.
                return [r for item in items for r in self._run_adaptive([item], max_side)]
            return [BackendError(cause, error_class)]
        self._free_cuda()
        if len(items) > 1:
            half = len(items) // 2
            if self.batch_size is None or half < self.batch_size:
                log.warning("out of GPU memory at batch %d: batch size now %d", len(items), half)
                self.batch_size = half
            return self._run_adaptive(items[:half], max_side) + self._run_adaptive(items[half:], max_side)
        current = max_side or max((max(p.size) for p in items[0].pages), default=0)
        side = next_image_side(current, self.min_image_dim)
        if side is None:
            return [BackendError(f"out of GPU memory on {self.device} at batch size 1 with pages at "
                                 f"{current}px (min_image_dim={self.min_image_dim}): {cause}",
                                 ErrorClass.PERMANENT)]
        log.warning("out of GPU memory on %s at %dpx: retrying at %dpx", items[0].request.doc_id,
                    current, side)
        return self._run_adaptive(items, side)

    def _generation_config(self, max_new_tokens: int):
        gc_ = copy.deepcopy(self.model.generation_config)
        # Greedy and deterministic whatever sampling defaults the checkpoint ships with.
        gc_.do_sample = False
        gc_.num_beams = 1
        gc_.temperature = None
        gc_.top_p = None
        gc_.top_k = None
        gc_.max_new_tokens = max_new_tokens
        gc_.max_length = None
        if gc_.pad_token_id is None:
            gc_.pad_token_id = self.processor.tokenizer.pad_token_id
        return gc_

    def _stop_ids(self, gen_config) -> set[int]:
        eos = gen_config.eos_token_id
        ids = set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
        tok = self.processor.tokenizer
        if tok.eos_token_id is not None:
            ids.add(tok.eos_token_id)
        return ids

    def _run(self, items: list[_Item], max_side: int | None) -> list[Response]:
        import torch

        pages = [[fit_within(p, max_side) for p in item.pages] for item in items]
        texts = [self.processor.apply_chat_template(build_messages(item.request), add_generation_prompt=True,
                                                    tokenize=False) for item in items]
        images: Any = pages if FAMILIES[self.model_family].nested_images else [p for ps in pages for p in ps]
        if not any(pages):
            images = None
        # The chat template already wrote the BOS token; the tokenizer must not add a second.
        inputs = self.processor(text=texts, images=images, padding=True, add_special_tokens=False,
                                return_tensors="pt")
        inputs = inputs.to(self.model.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self._compute_dtype())
        req = items[0].request
        # The batch decodes up to the largest limit and each row is cut at its own: greedy rows are
        # independent, so a row cut at N tokens is what generating it alone with N would give, and
        # documents of different types (different limits) still share one batch.
        gen_config = self._generation_config(max(item.request.params.max_tokens for item in items))
        extra_kw: dict[str, Any] = {}
        if req.params.stop:
            extra_kw = {"stop_strings": list(req.params.stop), "tokenizer": self.processor.tokenizer}
        on_cuda = self.model.device.type == "cuda"
        if on_cuda:
            torch.cuda.reset_peak_memory_stats(self.model.device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(**inputs, generation_config=gen_config, **extra_kw)
        if on_cuda:
            torch.cuda.synchronize(self.model.device)
        wall = time.perf_counter() - t0
        # Peak over the whole batch: the memory a document needs is the batch's, not separable.
        peak_mb = torch.cuda.max_memory_allocated(self.model.device) / 2**20 if on_cuda else None

        prompt_len = inputs["input_ids"].shape[1]
        new = out[:, prompt_len:].tolist()
        mask = inputs["attention_mask"]
        stop_ids = self._stop_ids(gen_config)
        n = len(items)
        responses = []
        for i, item in enumerate(items):
            count, stopped = count_new_tokens(new[i][:item.request.params.max_tokens], stop_ids)
            text = self.processor.tokenizer.decode(new[i][:count], skip_special_tokens=True)
            stop_reason = "end_turn" if stopped else "max_tokens"
            for s in req.params.stop:
                if s in text:
                    text, stop_reason = text.split(s, 1)[0], "stop_sequence"
            responses.append(Response(
                text=text.strip(),
                # Prompt tokens after the processor expanded the image placeholders (Mllama keeps one
                # <|image|> token and feeds the image through cross-attention instead).
                input_tokens=int(mask[i].sum()),
                output_tokens=count,
                # Every row occupies the batch for the whole generate call (finished rows keep
                # decoding padding), so each document's share is the batch wall time / batch size;
                # the shares add up to the wall time, which keeps s/doc and cost per doc honest.
                latency_s=wall / n,
                endpoint=f"local:{self._endpoint_device()}",
                model_id=self.model_id,
                stop_reason=stop_reason,
                peak_memory_mb=peak_mb,
                extra={"batch_size": n, "batch_latency_s": wall, "max_image_side": max_side,
                       "pages": len(item.pages)},
            ))
        return responses

    def _compute_dtype(self):
        if self.quantization == "none":
            return self.model.dtype
        return self.torch_dtype

    def _endpoint_device(self) -> str:
        return f"{self.device}(device_map=auto)" if self.device_map else self.device

    def classify(self, exc: BaseException) -> ErrorClass:
        if isinstance(exc, BackendError):
            return exc.error_class
        return ErrorClass.PERMANENT if is_oom(exc) else super().classify(exc)
