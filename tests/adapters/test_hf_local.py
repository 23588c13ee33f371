"""The local transformers backends, proven on tiny random-weight models of each family on the CPU.

The model path is the real one (from_pretrained, chat template, processor, generate); only the
weights are random, so assertions are about behaviour (tokens, batching, OOM fallback,
determinism), never about what the junk text says.
"""

from __future__ import annotations

import io
import json

import pytest
from migbench.adapters.hf_local import (
    FAMILIES,
    HFLocalBackend,
    build_messages,
    check_model_type,
    count_new_tokens,
    next_image_side,
    resolve_model_source,
)
from migbench.contracts import (
    BackendConfig,
    BackendError,
    ErrorClass,
    GenParams,
    Request,
    Response,
    SetupError,
    UsageError,
)
from migbench.images import prepare_input
from PIL import Image

FAMILY_LIST = list(FAMILIES)
ENV = {"mllama": "MIGBENCH_LLAMA_PATH", "internvl": "MIGBENCH_INTERNVL3_PATH",
       "qwen2_5_vl": "MIGBENCH_QWEN25VL_PATH"}


def png(w: int, h: int, color: str = "white") -> Image.Image:
    """A decoded page, as the runner's pipeline hands it to a "pages" backend (migbench.images)."""
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, "PNG")
    (page,) = prepare_input(buf.getvalue(), HFLocalBackend.input_form, what="page.png").pages
    return page


def request(doc_id: str, prompt: str = "Extract TOTAL_AMOUNT and GST_AMOUNT.", *, pages=None,
            max_tokens: int = 5, system: str | None = None) -> Request:
    return Request(doc_id=doc_id, doc_type="receipt", prompt=prompt, system=system,
                   pages=[png(120, 160)] if pages is None else pages,
                   params=GenParams(max_tokens=max_tokens))


def backend(path, family: str, **options) -> HFLocalBackend:
    b = HFLocalBackend(BackendConfig(name=f"tiny-{family}", model=str(path),
                                     options={"family": family, "model_env": ENV[family], **options}))
    b.preflight()
    return b


def model_dir(tmp_path, name: str, model_type: str):
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": model_type}))
    return d


# ---------------------------------------------------------------- configuration

def test_model_source_prefers_config_model_then_option_then_env(tmp_path):
    a, b, c = (model_dir(tmp_path, n, "mllama") for n in "abc")
    env = {"MIGBENCH_LLAMA_PATH": str(c)}
    opts = {"model_env": "MIGBENCH_LLAMA_PATH", "model_path": str(b)}
    assert resolve_model_source(BackendConfig("llama-3.2-vision", str(a), opts), env) == (str(a), True)
    assert resolve_model_source(BackendConfig("llama-3.2-vision", None, opts), env) == (str(b), True)
    del opts["model_path"]
    assert resolve_model_source(BackendConfig("llama-3.2-vision", None, opts), env) == (str(c), True)


def test_missing_model_path_says_which_variable_or_flag():
    cfg = BackendConfig("llama-3.2-vision", None, {"model_env": "MIGBENCH_LLAMA_PATH"})
    with pytest.raises(SetupError, match=r"set MIGBENCH_LLAMA_PATH or pass --model-path DIR") as e:
        resolve_model_source(cfg, {})
    assert "\n" not in str(e.value)


def test_hub_id_is_used_only_where_the_hub_is_reachable():
    cfg = BackendConfig("qwen2.5-vl", "Qwen/Qwen2.5-VL-7B-Instruct", {"model_env": "MIGBENCH_QWEN25VL_PATH"})
    assert resolve_model_source(cfg, {}) == ("Qwen/Qwen2.5-VL-7B-Instruct", False)
    with pytest.raises(SetupError, match="HF_HUB_OFFLINE"):
        resolve_model_source(cfg, {"HF_HUB_OFFLINE": "1"})


def test_nonexistent_directory_and_directory_without_config_are_setup_errors(tmp_path):
    cfg = BackendConfig("internvl3", str(tmp_path / "nope" / "InternVL3-8B"),
                        {"model_env": "MIGBENCH_INTERNVL3_PATH"})
    with pytest.raises(SetupError, match="does not exist"):
        resolve_model_source(cfg, {})
    with pytest.raises(SetupError, match="no config.json"):
        resolve_model_source(BackendConfig("internvl3", str(tmp_path), {}), {})


def test_model_of_another_family_is_refused(tmp_path):
    d = model_dir(tmp_path, "Qwen2.5-VL-7B", "qwen2_5_vl")
    check_model_type(str(d), "qwen2_5_vl")
    with pytest.raises(SetupError, match="'qwen2_5_vl', but this backend runs the mllama family"):
        check_model_type(str(d), "mllama")


@pytest.mark.parametrize("options, message", [
    ({"family": "llava"}, "option family='llava': must be one of"),
    ({"family": "mllama", "dtype": "fp8"}, "option dtype='fp8': must be one of"),
    ({"family": "mllama", "quantization": "3bit"}, "option quantization='3bit': must be one of"),
    ({"family": "mllama", "batch_size": 0}, "option batch_size=0"),
    ({"family": "mllama", "min_image_dim": "big"}, "option min_image_dim='big'"),
    ({"family": "mllama", "dtyp": "bf16"}, "unknown option 'dtyp'"),
])
def test_bad_options_are_one_line_usage_errors(options, message):
    # Validated against HFLocalOptions when the backend loads (migbench.contracts.BackendOptions).
    with pytest.raises(UsageError, match=message) as info:
        HFLocalBackend(BackendConfig("llama-3.2-vision", None, dict(options)))
    assert len(str(info.value).splitlines()) == 1


def test_cuda_requested_without_a_gpu_is_a_setup_error():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    b = HFLocalBackend(BackendConfig("llama-3.2-vision", None, {"family": "mllama", "device": "cuda",
                                                                "device_map": "auto"}))
    with pytest.raises(SetupError, match="no CUDA GPU"):
        b.describe()


@pytest.mark.parametrize("name, family, prompt_family", [
    ("llama-3.2-vision", "mllama", "llama"), ("internvl3", "internvl", "internvl"),
    ("qwen2.5-vl", "qwen2_5_vl", "qwen")])
def test_registry_entries_build_this_backend_with_their_family(tmp_path, name, family, prompt_family):
    pytest.importorskip("torch")
    from migbench.registry import create_backend

    b = create_backend(name, model=str(model_dir(tmp_path, "m", family)))
    assert isinstance(b, HFLocalBackend)
    assert (b.model_family, b.config.get("prompt_family"), b.batches, b.family) == (family, prompt_family,
                                                                                    True, "local")


# ---------------------------------------------------------------- pure helpers

def test_messages_put_system_first_then_pages_then_prompt():
    msgs = build_messages(request("d", "read it", pages=[png(8, 8), png(8, 8)], system="be exact"))
    assert msgs == [
        {"role": "system", "content": [{"type": "text", "text": "be exact"}]},
        {"role": "user",
         "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "read it"}]},
    ]


def test_new_tokens_count_up_to_the_first_stop_token_and_not_the_padding():
    assert count_new_tokens([5, 6, 2, 0, 0], {2}) == (3, True)
    assert count_new_tokens([5, 6, 7], {2}) == (3, False)
    assert count_new_tokens([2, 0], {2, 9}) == (1, True)


def test_image_side_halves_down_to_the_minimum_then_gives_up():
    assert next_image_side(2000, 448) == 1000
    assert next_image_side(600, 448) == 448
    assert next_image_side(448, 448) is None


# ---------------------------------------------------------------- tiny models, end to end

@pytest.fixture(scope="module", params=FAMILY_LIST)
def family_backend(request, tiny_model):
    b = backend(tiny_model(request.param), request.param)
    yield b
    b.close()


def test_batch_generates_with_tokens_latency_and_per_document_failures(family_backend):
    b = family_backend
    reqs = [request("short", max_tokens=3),
            request("long", "Extract every field of this Australian receipt, line items too. " * 3,
                    system="You read receipts.", max_tokens=6),
            request("wide", pages=[png(300, 90, "gray")], max_tokens=6)]
    # An unreadable document never reaches the backend: the runner's pipeline fails it alone
    # (tests/harness/test_pipeline.py::test_a_batched_backend_gets_decoded_pages_and_bad_files_fail_alone).
    out = b.generate_batch(reqs)
    ok = [out[0], out[1], out[2]]
    assert all(isinstance(r, Response) and r.ok for r in ok)
    for r, req in zip(ok, reqs):
        assert 0 < r.output_tokens <= req.params.max_tokens
        assert r.stop_reason == "end_turn" or r.output_tokens == req.params.max_tokens
        assert r.endpoint == "local:cpu" and r.model_id == f"tiny-{b.model_family}"
        assert r.peak_memory_mb is None  # no GPU here
    # Documents of different max_tokens share one batch, each cut at its own limit.
    assert [r.extra["batch_size"] for r in ok] == [3, 3, 3]
    assert sum(r.latency_s for r in ok) == pytest.approx(out[1].extra["batch_latency_s"])
    # Padding is not counted: a document's input tokens are the same alone as in a padded batch.
    alone = b.generate(reqs[2])
    assert alone.input_tokens == out[2].input_tokens
    assert out[1].input_tokens > out[2].input_tokens  # the longer prompt, the system message


def test_input_tokens_include_the_image_tokens(family_backend):
    b = family_backend
    with_image = b.generate(request("img"))
    text_only = b.generate(request("txt", pages=[]))
    image_tokens = with_image.input_tokens - text_only.input_tokens
    if b.model_family == "mllama":
        assert image_tokens == 1  # one <|image|>; the pixels go in through cross-attention
    else:
        assert image_tokens > 2  # start/end markers plus the expanded patch tokens


def test_multi_page_documents_batch_together_and_pageless_ones_apart(family_backend, monkeypatch):
    calls = []
    real = family_backend.model.generate

    def counting(**inputs):
        calls.append(inputs["input_ids"].shape[0])
        return real(**inputs)

    monkeypatch.setattr(family_backend.model, "generate", counting)
    out = family_backend.generate_batch([request("two", pages=[png(80, 120), png(120, 80, "gray")]),
                                         request("none", pages=[]), request("one", pages=[png(80, 120)])])
    assert all(isinstance(r, Response) and r.ok for r in out)
    # Mllama's processor refuses a batch mixing documents with and without pages.
    assert sorted(calls) == [1, 2]
    assert out[0].extra["pages"] == 2 and out[0].input_tokens > out[2].input_tokens


def test_same_input_gives_the_same_output(family_backend):
    reqs = [request("a", max_tokens=8), request("b", "Another prompt entirely.", max_tokens=8)]
    first = [r.text for r in family_backend.generate_batch(reqs)]
    again = [r.text for r in family_backend.generate_batch(reqs)]
    assert first == again


def test_real_prompt_output_goes_through_the_parser(family_backend):
    from migbench.parsing import parse_output
    from migbench.prompting import load_prompt
    from migbench.schema import load_schema

    p = load_prompt(family_backend.config.get("prompt_family"), "receipt")
    r = family_backend.generate(request("real", p.user, system=p.system, max_tokens=12))
    fields = parse_output(r.text, "receipt")
    assert set(fields) == set(load_schema().fields_for("receipt"))
    assert r.input_tokens > 500  # the full prompt was sent


def test_describe_reports_device_dtype_quantization_and_gpu(family_backend):
    d = family_backend.describe()
    assert (d["device"], d["dtype"], d["quantization"], d["gpu_name"], d["family"]) == (
        "cpu", "float32", "none", None, "local")


# ---------------------------------------------------------------- out of memory

class FakeOOM:
    """Wraps the model's real generate: raises CUDA OOM where a real GPU would run out.

    Out of memory when the batch has more than one row, when an image has more than
    `max_patches` patches (Qwen2.5-VL's pixel_values rows), or when the prompt is longer than
    `max_prompt` tokens; otherwise the real generate runs.
    """

    def __init__(self, model, max_patches: int, max_prompt: int):
        self.real = model.generate
        self.max_patches, self.max_prompt = max_patches, max_prompt
        self.calls: list[tuple[int, int]] = []

    def __call__(self, **inputs):
        import torch

        rows, patches = inputs["input_ids"].shape[0], inputs["pixel_values"].shape[0]
        self.calls.append((rows, patches))
        if rows > 1 or patches > self.max_patches or inputs["input_ids"].shape[1] > self.max_prompt:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.real(**inputs)


def test_oom_halves_the_batch_then_shrinks_images_then_fails_only_that_document(tiny_model, monkeypatch):
    b = backend(tiny_model("qwen2_5_vl"), "qwen2_5_vl", batch_size=4, min_image_dim=56)
    # 112x112 is 64 patches for the tiny Qwen processor, 56x56 is 16.
    fake = FakeOOM(b.model, max_patches=16, max_prompt=200)
    monkeypatch.setattr(b.model, "generate", fake)
    reqs = [request("small1", pages=[png(56, 56)]), request("big", pages=[png(112, 112)]),
            request("small2", pages=[png(56, 56)]), request("huge-prompt", "x " * 400, pages=[png(56, 56)])]
    out = b.generate_batch(reqs)

    assert [rows for rows, _ in fake.calls[:3]] == [4, 2, 1]  # halved down to one document
    assert b.batch_size == 1  # and it stays there for the rest of the run
    assert out[0].ok and out[2].ok and out[0].extra["max_image_side"] is None
    assert out[1].ok and out[1].extra["max_image_side"] == 56  # retried at half size
    assert isinstance(out[3], BackendError) and out[3].error_class is ErrorClass.PERMANENT
    assert "out of GPU memory" in str(out[3]) and "min_image_dim=56" in str(out[3])

    fake.calls.clear()
    b.generate_batch([request("s3", pages=[png(56, 56)]), request("s4", pages=[png(56, 56)])])
    assert fake.calls == [(1, 16), (1, 16)]  # no OOM to rediscover


def test_a_non_oom_failure_in_a_batch_fails_only_the_document_that_caused_it(tiny_model, monkeypatch):
    b = backend(tiny_model("qwen2_5_vl"), "qwen2_5_vl")
    real = b.model.generate

    def fragile(**inputs):
        if inputs["input_ids"].shape[1] > 200:
            raise RuntimeError("index out of range in self")
        return real(**inputs)

    monkeypatch.setattr(b.model, "generate", fragile)
    out = b.generate_batch([request("ok1"), request("bad", "y " * 400), request("ok2")])
    assert out[0].ok and out[2].ok
    assert isinstance(out[1], BackendError) and out[1].error_class is ErrorClass.PERMANENT
    assert "index out of range" in str(out[1])


# ---------------------------------------------------------------- quantization and GPU

def _quantized(tiny_model, family: str, quantization: str) -> HFLocalBackend:
    pytest.importorskip("bitsandbytes", reason="quantization needs bitsandbytes")
    try:
        return backend(tiny_model(family), family, quantization=quantization)
    except SetupError as exc:
        pytest.skip(f"bitsandbytes cannot run {quantization} on this CPU: {exc}")


@pytest.mark.parametrize("family", FAMILY_LIST)
def test_8bit_keeps_the_vision_tower_unquantised_and_generates_on_cpu(tiny_model, family):
    import torch

    b = _quantized(tiny_model, family, "8bit")
    kinds = {name: type(m).__name__ for name, m in b.model.named_modules()
             if isinstance(m, torch.nn.Linear)}
    towers = ("model.vision", "model.visual", "model.multi_modal")
    vision = {n: k for n, k in kinds.items() if n.startswith(towers)}
    assert vision and set(vision.values()) == {"Linear"}
    assert kinds["lm_head"] == "Linear"
    assert "Linear8bitLt" in {k for n, k in kinds.items() if n.startswith("model.language_model")}
    r = b.generate(request("q8"))
    assert r.output_tokens > 0 and b.describe()["quantization"] == "8bit"


def test_quantized_load_that_bitsandbytes_cannot_do_is_a_one_line_setup_error(tiny_model, monkeypatch):
    pytest.importorskip("bitsandbytes")
    import transformers

    def refuse(*args, **kwargs):
        raise ImportError("Using `bitsandbytes` 4-bit quantization requires a supported backend\nmore text")

    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained", refuse)
    with pytest.raises(SetupError, match=r"^4bit quantization cannot load on cpu") as e:
        backend(tiny_model("qwen2_5_vl"), "qwen2_5_vl", quantization="4bit")
    assert "\n" not in str(e.value)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILY_LIST)
def test_4bit_generates_on_cpu(tiny_model, family):
    b = _quantized(tiny_model, family, "4bit")
    assert b.generate(request("q4")).output_tokens > 0


def _needs_gpu():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")


@pytest.mark.gpu
def test_on_gpu_bf16_records_peak_memory_and_the_gpu(tiny_model):
    _needs_gpu()
    b = backend(tiny_model("qwen2_5_vl"), "qwen2_5_vl")
    r = b.generate(request("gpu"))
    assert r.peak_memory_mb and r.peak_memory_mb > 0 and r.endpoint.startswith("local:cuda:")
    d = b.describe()
    assert d["dtype"] == "bfloat16" and d["gpu_name"]


@pytest.mark.gpu
@pytest.mark.parametrize("family", FAMILY_LIST)
def test_on_gpu_4bit_and_device_map_auto_generate(tiny_model, family):
    _needs_gpu()
    b = backend(tiny_model(family), family, quantization="4bit", device_map="auto", batch_size=2)
    out = b.generate_batch([request("g1"), request("g2", "Another prompt.")])
    assert all(r.ok and r.output_tokens > 0 for r in out)
