"""The vllm backend: its pure parts, its refusals, and its generate path against a fake engine.

vLLM is not installed here and there is no GPU. The backend makes its engine through an engine
factory (production: `vllm_engine`, which imports vLLM); these tests pass a fake `LLM` through that
same seam, so message building, grouping, sharding, the worker processes and the reading of
outputs are the code a GPU host runs. The fake answers with the shipped set's ground truth (the
emulator's GroundTruthResponder matches each page it receives to its document).
"""

import base64
import importlib.util
import io
import json
import os
from types import SimpleNamespace

import pytest
from migbench.adapters.vllm_engine import (
    Engine,
    EngineSpec,
    VLLMBackend,
    build_messages,
    group_order,
    llm_kwargs,
    plan_engines,
    read_output,
    sampling_kwargs,
    shard,
    stop_reason,
    visible_gpus,
)
from migbench.contracts import (
    BackendConfig,
    BackendError,
    EncodedImage,
    ErrorClass,
    GenParams,
    Request,
    Response,
    SetupError,
    UsageError,
)
from migbench.datasets import load_dataset
from migbench.emulator.protocol import ImageInfo, ParsedRequest
from migbench.emulator.responders import GroundTruthResponder
from PIL import Image

from tests.conftest import SYNTH

N_DOCS = 6  # two of each type in the shipped set's first six


def png(color="red", size=(40, 30)) -> EncodedImage:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return EncodedImage(buf.getvalue(), "png", *size)


def request(doc_id="d1", doc_type="invoice", prompt="Extract the fields.", images=None, system=None,
            params=None) -> Request:
    return Request(doc_id=doc_id, doc_type=doc_type, prompt=prompt, system=system,
                   images=[png()] if images is None else images, params=params or GenParams(max_tokens=64))


@pytest.fixture
def model_dir(tmp_path):
    d = tmp_path / "Qwen2.5-VL-7B-Instruct"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl"}))
    return d


def make(model_dir, factory, **options) -> VLLMBackend:
    return VLLMBackend(BackendConfig(name="vllm", model=str(model_dir), options=options), engine_factory=factory)


# ---------------------------------------------------------------- the fake engine


def _pages(conversation) -> tuple[str | None, str, list[ImageInfo]]:
    system, texts, images = None, [], []
    for m in conversation:
        if m["role"] == "system":
            system = m["content"]
            continue
        for part in m["content"]:
            if part["type"] == "text":
                texts.append(part["text"])
            else:
                head, _, b64 = part["image_url"]["url"].partition(",")
                data = base64.b64decode(b64)
                images.append(ImageInfo(head.split(";")[0].split("/")[1], 0, 0, len(data), data))
    return system, "\n".join(texts), images


class FakeLLM:
    """vLLM's `LLM.chat` surface: a list of conversations and one SamplingParams each, one
    RequestOutput-shaped answer each. Prompt tokens: 100 + 10 per page; a prompt seen before is
    answered with 64 cached tokens (vLLM's num_cached_tokens); `fail_on` in a prompt raises."""

    def __init__(self, responder=None, fail_on: str | None = None):
        self.responder = responder
        self.fail_on = fail_on
        self.calls: list[tuple[list, list, dict]] = []
        self.seen: set = set()
        self.devices = os.environ.get("CUDA_VISIBLE_DEVICES")

    def chat(self, conversations, sampling_params, use_tqdm=True, **kw):
        assert use_tqdm is False
        self.calls.append((conversations, sampling_params, kw))
        outs = []
        for conv, sp in zip(conversations, sampling_params, strict=True):
            system, prompt, images = _pages(conv)
            if self.fail_on and self.fail_on in prompt:
                raise ValueError("The decoder prompt is longer than max_model_len\nsecond line")
            if self.responder is not None:
                text = self.responder(ParsedRequest("ChatCompletions", "m", "openai", prompt, system, images))
            else:
                text = f"{self.devices}|{os.getpid()}|{prompt}"
            key = (system, prompt)
            cached = 64 if key in self.seen else 0
            self.seen.add(key)
            n_out = min(42, sp["max_tokens"])
            outs.append(SimpleNamespace(
                prompt_token_ids=[0] * (100 + 10 * len(images)), num_cached_tokens=cached,
                outputs=[SimpleNamespace(text=f" {text}\n", token_ids=[1] * n_out,
                                         finish_reason="length" if n_out == sp["max_tokens"] else "stop",
                                         stop_reason=None)]))
        return outs


def fake_factory(spec: EngineSpec) -> Engine:
    """Module level, so a spawned worker process can unpickle it (as it does vllm_engine)."""
    return Engine(FakeLLM(), lambda **kw: kw, {"vllm": "fake", "devices": os.environ.get("CUDA_VISIBLE_DEVICES")})


def failing_factory(spec: EngineSpec) -> Engine:
    raise SetupError(f"vLLM could not start {os.path.basename(spec.model)}: no such architecture")


class DyingLLM:
    def chat(self, conversations, sampling_params, use_tqdm=True, **kw):
        os._exit(3)  # what a crashed engine looks like from the parent: the pipe closes


def dying_factory(spec: EngineSpec) -> Engine:
    return Engine(DyingLLM(), lambda **kw: kw)


class Recorder:
    def __init__(self, llm):
        self.llm, self.specs = llm, []

    def __call__(self, spec):
        self.specs.append(spec)
        return Engine(self.llm, lambda **kw: kw, {"vllm": "fake"})


# ---------------------------------------------------------------- pure parts


def test_messages_carry_each_page_as_a_data_uri_of_the_prepared_bytes_before_the_text():
    pages = [png("red"), png("blue", (20, 10))]
    msgs = build_messages(request(images=pages, system="You extract."))
    assert msgs[0] == {"role": "system", "content": "You extract."}
    user = msgs[1]
    assert user["role"] == "user" and [p["type"] for p in user["content"]] == ["image_url", "image_url", "text"]
    for part, page in zip(user["content"], pages):
        head, _, b64 = part["image_url"]["url"].partition(",")
        assert head == "data:image/png;base64" and base64.b64decode(b64) == page.data
    assert user["content"][-1] == {"type": "text", "text": "Extract the fields."}
    text_first = build_messages(request(images=pages), image_first=False)
    assert len(text_first) == 1 and [p["type"] for p in text_first[0]["content"]] == ["text", "image_url", "image_url"]


def test_sampling_params_follow_the_runs_generation_params():
    assert sampling_kwargs(GenParams(max_tokens=300)) == {"max_tokens": 300, "temperature": 0.0, "top_p": 1.0}
    kw = sampling_kwargs(GenParams(max_tokens=300, temperature=0.2, top_p=0.9, stop=("</s>",)), max_tokens=50)
    assert kw == {"max_tokens": 50, "temperature": 0.2, "top_p": 0.9, "stop": ["</s>"]}


def test_grouping_makes_each_type_adjacent_in_order_of_first_appearance():
    assert group_order(["inv", "rec", "inv", "bank", "rec", "inv"]) == [0, 2, 5, 1, 4, 3]
    assert group_order([]) == []


def test_sharding_cuts_contiguous_shares_that_differ_by_at_most_one():
    assert shard(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert shard([4, 2], 3) == [[4], [2], []]
    assert shard([], 2) == [[], []]
    with pytest.raises(ValueError):
        shard([1], 0)


def test_visible_gpus_come_from_cuda_visible_devices_else_nvidia_smi():
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "0,1"}) == ["0", "1"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": " 2, 3 "}) == ["2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-5e1a,MIG-0f2b"}) == ["GPU-5e1a", "MIG-0f2b"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "1,-1,2"}) == ["1"]  # CUDA stops at an invalid entry
    assert visible_gpus({}, probe=lambda: 2) == ["0", "1"]
    assert visible_gpus({}, probe=lambda: 0) == []


def test_engines_are_planned_one_per_gpu_group():
    gpus = ["0", "1", "2", "3"]
    assert plan_engines(gpus) == ["0", "1", "2", "3"]
    assert plan_engines(gpus, tensor_parallel_size=2) == ["0,1", "2,3"]
    assert plan_engines(gpus, data_parallel=2) == ["0", "1"]
    assert plan_engines(["7"], 1, 1) == ["7"]
    with pytest.raises(SetupError, match=r"needs a CUDA GPU .*pip install 'migbench\[vllm\]' on a GPU host"):
        plan_engines([])
    with pytest.raises(SetupError, match="tensor_parallel_size=2"):
        plan_engines(["0"], tensor_parallel_size=2)
    with pytest.raises(SetupError, match="data_parallel=3 x tensor_parallel_size=1 needs 3 GPUs; 2 visible"):
        plan_engines(["0", "1"], data_parallel=3)


def test_outputs_give_text_tokens_cached_tokens_and_the_stop_reason():
    out = SimpleNamespace(prompt_token_ids=[1] * 812, num_cached_tokens=512,
                          outputs=[SimpleNamespace(text="  TOTAL: $5.00\n", token_ids=[3] * 17,
                                                   finish_reason="stop", stop_reason=None)])
    g = read_output(out)
    assert (g.text, g.prompt_tokens, g.output_tokens, g.cached_tokens, g.stop_reason) == (
        "TOTAL: $5.00", 812, 17, 512, "end_turn")
    older = SimpleNamespace(prompt_token_ids=None, outputs=[SimpleNamespace(text="x", token_ids=[1],
                                                                           finish_reason="length")])
    g = read_output(older)
    assert (g.prompt_tokens, g.cached_tokens, g.stop_reason) == (None, None, "max_tokens")
    assert stop_reason("stop", "</s>") == "stop_sequence"
    assert stop_reason("stop", 128009) == "end_turn"  # a stop token id, not a string
    assert stop_reason("abort") == "abort" and stop_reason(None) is None


def test_the_engine_is_built_with_the_incumbents_arguments():
    kw = llm_kwargs(EngineSpec(model="/m", max_images=3, max_num_seqs=8))
    assert kw["limit_mm_per_prompt"] == {"image": 3} and kw["max_num_seqs"] == 8
    assert kw["enable_prefix_caching"] is True and kw["enforce_eager"] is True
    assert (kw["max_model_len"], kw["gpu_memory_utilization"], kw["tensor_parallel_size"]) == (8192, 0.90, 1)
    assert "attention_backend" not in kw
    assert llm_kwargs(EngineSpec(model="/m", attention_backend="FLASHINFER"))["attention_backend"] == "FLASHINFER"


def test_options_are_typed_and_refused_one_line_each(model_dir):
    b = make(model_dir, fake_factory, data_parallel="2", max_num_seqs="4", enable_prefix_caching="false")
    assert (b.opts.data_parallel, b.opts.max_num_seqs, b.opts.enable_prefix_caching) == (2, 4, False)
    assert make(model_dir, fake_factory).opts.data_parallel == "auto"
    from migbench.registry import registry

    # The registry's own check skips a backend whose extra is missing (vLLM is not installed here).
    defaults = VLLMBackend.Options.parse("vllm", registry().backends["vllm"].defaults)
    assert (defaults.model_env, defaults.batch_size) == ("MIGBENCH_VLLM_MODEL", 64)
    with pytest.raises(UsageError) as info:
        make(model_dir, fake_factory, data_parallel="0", max_images=0, gpu_memory_utilization=1.5)
    lines = str(info.value).splitlines()
    assert len(lines) == 3 and all(line.startswith("vllm: option ") for line in lines)


# ---------------------------------------------------------------- refusals


def test_without_a_gpu_the_backend_refuses_before_building_an_engine(model_dir, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    factory = Recorder(FakeLLM())
    b = make(model_dir, factory)
    with pytest.raises(SetupError, match=r"needs a CUDA GPU .*pip install 'migbench\[vllm\]' on a GPU host"):
        b.preflight()
    assert factory.specs == []


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_without_vllm_the_backend_refuses_naming_the_extra(model_dir, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    b = VLLMBackend(BackendConfig(name="vllm", model=str(model_dir)))  # the production factory
    with pytest.raises(SetupError, match=r"needs vLLM .*pip install 'migbench\[vllm\]' on a GPU host"):
        b.preflight()


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_the_registry_names_the_extra_when_vllm_is_missing():
    from migbench.registry import create_backend

    with pytest.raises(SetupError, match=r"backend 'vllm' needs vllm: pip install 'migbench\[vllm\]'"):
        create_backend("vllm", model="/m")


def test_a_missing_model_directory_is_a_setup_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.delenv("MIGBENCH_VLLM_MODEL", raising=False)
    b = VLLMBackend(BackendConfig(name="vllm", options={"model_env": "MIGBENCH_VLLM_MODEL"}),
                    engine_factory=fake_factory)
    with pytest.raises(SetupError, match="set MIGBENCH_VLLM_MODEL or pass --model-path DIR"):
        b.preflight()


# ---------------------------------------------------------------- generate, one engine in this process


def test_a_full_run_stores_scored_documents_batched_and_grouped_by_type(tmp_path, model_dir, monkeypatch):
    from migbench.prompting import load_prompt
    from migbench.runner import Runner, RunOptions
    from migbench.store import RunStore

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    ds = load_dataset(SYNTH)
    ds.documents[:] = ds.documents[:N_DOCS]
    llm = FakeLLM(GroundTruthResponder(ds))
    factory = Recorder(llm)
    b = make(model_dir, factory, batch_size=N_DOCS)
    store = RunStore(tmp_path)
    s = Runner(b, ds, store, RunOptions()).run()
    b.close()
    assert (s.ok, s.failed, s.remaining) == (N_DOCS, 0, 0)
    docs = store.documents(s.run_id)
    assert all(d.doc_f1 == pytest.approx(1.0) for d in docs)  # the pages reached the engine intact
    assert all(d.response.input_tokens == 110 and d.response.stop_reason == "end_turn" for d in docs)
    assert all(d.response.endpoint == "local:vllm:cuda:0" and d.response.latency_s > 0 for d in docs)
    # One engine, one LLM.chat call for the batch, documents of a type side by side.
    assert len(factory.specs) == 1 and len(llm.calls) == 1
    conversations, params, kw = llm.calls[0]
    type_of = {load_prompt("default", t).user: t for t in {d.doc_type for d in ds.documents}}
    types = [type_of[_pages(conv)[1]] for conv in conversations]
    runs = [t for i, t in enumerate(types) if i == 0 or types[i - 1] != t]
    assert len(runs) == len(set(types)) == 3, types
    assert all(p["temperature"] == 0.0 for p in params) and kw == {}
    # The second document of a type found its prompt cached.
    assert sorted(d.response.cache_read_tokens for d in docs) == [0, 0, 0, 64, 64, 64]
    run = store.run(s.run_id)
    assert run.family == "local" and run.model == model_dir.name
    assert run.describe["engines"] == ["0"] and run.describe["limit_mm_per_prompt"] == {"image": 4}


def test_a_conversation_that_breaks_the_batch_fails_alone(model_dir, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    llm = FakeLLM(fail_on="HUGE")
    b = make(model_dir, Recorder(llm))
    out = b.generate_batch([request("a"), request("b", prompt="HUGE table"), request("c")])
    assert isinstance(out[0], Response) and isinstance(out[2], Response)
    err = out[1]
    assert isinstance(err, BackendError) and err.error_class is ErrorClass.PERMANENT
    assert str(err) == "vLLM on GPU 0: ValueError: The decoder prompt is longer than max_model_len"
    assert [len(c[0]) for c in llm.calls] == [3, 1, 1, 1]  # the batch, then one by one


def test_a_document_with_more_pages_than_the_limit_fails_without_being_sent(model_dir, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    llm = FakeLLM()
    b = make(model_dir, Recorder(llm), max_images=1)
    out = b.generate_batch([request("two", images=[png(), png("blue")]), request("one")])
    assert isinstance(out[0], BackendError) and "limit_mm_per_prompt image=1 (raise -o max_images=2)" in str(out[0])
    assert isinstance(out[1], Response)
    assert [len(c[0]) for c in llm.calls] == [1]


def test_options_reach_the_engine_and_the_chat_call(model_dir, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    llm = FakeLLM()
    factory = Recorder(llm)
    b = make(model_dir, factory, max_num_seqs=4, max_images=2, disable_thinking=True, max_tokens=7,
             image_first=False)
    r = b.generate(request(params=GenParams(max_tokens=500)))
    [spec] = factory.specs
    assert (spec.model, spec.max_num_seqs, spec.max_images) == (str(model_dir.resolve()), 4, 2)
    conversations, params, kw = llm.calls[0]
    assert kw == {"chat_template_kwargs": {"enable_thinking": False}}
    assert params[0]["max_tokens"] == 7 and r.output_tokens == 7 and r.stop_reason == "max_tokens"
    assert conversations[0][0]["content"][0]["type"] == "text"


# ---------------------------------------------------------------- data parallel: one process per GPU


def test_data_parallel_runs_one_engine_per_gpu_each_in_its_own_process(model_dir, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    b = make(model_dir, fake_factory)
    reqs = [request("i1", "invoice", "INVOICE"), request("r1", "receipt", "RECEIPT"),
            request("i2", "invoice", "INVOICE"), request("r2", "receipt", "RECEIPT")]
    try:
        out = b.generate_batch(reqs)
        procs = [e.proc for e in b._engines]
    finally:
        b.close()
    assert all(isinstance(r, Response) for r in out), out
    # Grouped by type, then cut in two: GPU 0 answers the invoices, GPU 1 the receipts.
    fields = [r.text.split("|") for r in out]
    assert [f[0] for f in fields] == ["0", "1", "0", "1"]
    assert [f[2] for f in fields] == ["INVOICE", "RECEIPT", "INVOICE", "RECEIPT"]
    pids = {f[0]: f[1] for f in fields}
    assert len(set(pids.values())) == 2 and str(os.getpid()) not in pids.values()
    assert out[1].endpoint == "local:vllm:cuda:1" and out[0].extra["engines"] == 2
    assert not any(p.is_alive() for p in procs)


def test_a_worker_that_cannot_start_its_engine_is_a_setup_error(model_dir, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    b = make(model_dir, failing_factory)
    with pytest.raises(SetupError, match=f"GPU 0: vLLM could not start {model_dir.name}: no such architecture"):
        b.preflight()
    assert b._engines == []


def test_a_worker_that_dies_fails_its_documents_and_every_later_batch(model_dir, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    b = make(model_dir, dying_factory)
    try:
        for _ in range(2):
            out = b.generate_batch([request("a"), request("b")])
            assert [type(r) for r in out] == [BackendError, BackendError]
            assert all(r.error_class is ErrorClass.PERMANENT for r in out)
            assert str(out[0]) == "the vLLM worker for GPU 0 exited (code 3)"
    finally:
        b.close()


def test_a_backend_left_open_does_not_hang_the_interpreters_exit(tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    (tmp_path / "config.json").write_text("{}")
    script = (
        "import os\n"
        "from tests.adapters.test_vllm_engine import make, fake_factory, request\n"
        "if __name__ == '__main__':\n"
        "    os.environ['CUDA_VISIBLE_DEVICES'] = '0,1'\n"
        f"    b = make({str(tmp_path)!r}, fake_factory)\n"
        "    print(len(b.generate_batch([request('a'), request('b')])))\n")
    (tmp_path / "leave_open.py").write_text(script)
    proc = subprocess.run([sys.executable, str(tmp_path / "leave_open.py")], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "2", proc.stderr[-2000:]


# ---------------------------------------------------------------- a real engine


@pytest.mark.gpu
def test_on_a_gpu_a_real_engine_answers_a_shipped_document():
    pytest.importorskip("vllm", reason="needs vLLM: pip install 'migbench[vllm]'")
    model = os.environ.get("MIGBENCH_VLLM_MODEL")
    if not model:
        pytest.skip("set MIGBENCH_VLLM_MODEL to a small vision-language model directory")
    from migbench.images import prepare_document

    doc = load_dataset(SYNTH).documents[0]
    b = VLLMBackend(BackendConfig(name="vllm", model=model, options={"max_model_len": 4096, "data_parallel": 1}))
    try:
        budget = b.image_budget()
        req = Request(doc.doc_id, doc.doc_type, "Extract the invoice number.",
                      images=prepare_document(doc.path, "encoded", budget).images, params=GenParams(max_tokens=32))
        r = b.generate(req)
    finally:
        b.close()
    assert r.text and r.input_tokens > 0 and 0 < r.output_tokens <= 32
    assert b.describe()["vllm"]


# ---------------------------------------------------------------- the throughput bench


def test_the_bench_says_not_measured_without_a_gpu_beside_the_incumbents_anchor(monkeypatch, capsys):
    from bench import local_throughput

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert local_throughput.main(["--backend", "vllm"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "vllm: images_per_min not measured: no GPU (CUDA_VISIBLE_DEVICES and nvidia-smi show none)"
    assert out[1].startswith("incumbent anchor (the issue's figures for LMM_POC, not measured here)")
    assert "14.5-37.9 images/min per deployment, 65.9 images/min batched on 2 GPUs" in out[1]


def test_the_bench_passes_its_vllm_flags_as_the_backends_options():
    from bench import local_throughput

    args = local_throughput.parse_args(["--backend", "vllm", "--prompt-family", "internvl", "--data-parallel", "2",
                                        "--max-num-seqs", "32", "--no-prefix-caching", "--dtype", "bf16"])
    args.batch_size = 64
    opts = local_throughput.backend_options(args, "vllm")
    assert opts["prompt_family"] == "internvl" and opts["max_num_seqs"] == 32 and opts["dtype"] == "bfloat16"
    assert opts["enable_prefix_caching"] is False
    parsed = VLLMBackend.Options.parse("vllm", opts)  # every key the bench sends is a valid option
    assert parsed.data_parallel == 2 and parsed.batch_size == 64
