"""Shared fixtures of the harness's own tests."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from migbench.contracts import Backend, BackendConfig, BackendError, ErrorClass, Request, Response
from migbench.parsing import render_kv

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
SYNTH = ROOT / "fixtures" / "synthetic_small"
# Real receipts (SROIE task 3 layout: images/ + ground_truth.csv) for the tests that need them;
# they skip with a reason when MIGBENCH_SROIE_DIR is not set.
SROIE = Path(os.environ.get("MIGBENCH_SROIE_DIR") or "/nonexistent/sroie")


class ScriptedBackend(Backend):
    """A test double for the runner and retry loop: answers from a script of outcomes.

    `answers` maps doc_id -> ground truth fields (rendered as the model's text); `faults` maps
    doc_id -> list of ErrorClass raised on successive attempts before answering. `classify` maps
    doc_id -> the answer to a classification request (doc_type ""; --classify), which costs
    10 input and 2 output tokens; `classify_faults` like `faults`, for those requests.
    """

    family = "scripted"

    def __init__(self, answers: dict[str, dict[str, str]] | None = None,
                 faults: dict[str, list[ErrorClass]] | None = None, concurrency: int = 1,
                 classify: dict[str, str] | None = None, classify_faults: dict[str, list[ErrorClass]] | None = None):
        super().__init__(BackendConfig(name="scripted", model="scripted-1", options={"concurrency": concurrency}))
        self.answers = answers or {}
        self.faults = {k: list(v) for k, v in (faults or {}).items()}
        self.classify_answers = classify or {}
        self.classify_faults = {k: list(v) for k, v in (classify_faults or {}).items()}
        self.calls: list[str] = []
        self.requests: list[Request] = []
        self._lock = threading.Lock()

    def generate(self, request: Request) -> Response:
        asks_type = request.doc_type == ""
        with self._lock:
            self.calls.append(request.doc_id)
            self.requests.append(request)
            pending = (self.classify_faults if asks_type else self.faults).get(request.doc_id)
            fault = pending.pop(0) if pending else None
        if fault is not None:
            raise BackendError(f"scripted {fault.value}", fault)
        if asks_type:
            return Response(text=self.classify_answers.get(request.doc_id, ""), input_tokens=10, output_tokens=2,
                            latency_s=0.25, model_id="scripted-1")
        fields = self.answers.get(request.doc_id, {})
        return Response(text=render_kv(fields), input_tokens=100, output_tokens=20, model_id="scripted-1")


@pytest.fixture
def scripted_backend():
    return ScriptedBackend


@pytest.fixture(scope="session")
def tiny_model():
    """family -> directory of a tiny model of that family (migbench.fixtures.tiny_models), built on first use."""
    pytest.importorskip("torch", reason="the local backends need torch: pip install 'migbench[local]'")
    pytest.importorskip("transformers", reason="the local backends need transformers")
    pytest.importorskip("torchvision", reason="InternVL and Qwen2.5-VL processors need torchvision")
    import tempfile

    import torch
    from migbench.fixtures.tiny_models import build_tiny_model

    # Tiny matmuls gain nothing from threads, and on a loaded 2-core machine OpenMP spin-waiting
    # makes each one ~100x slower; restored after the session.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    built: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="migbench-tiny-") as root:

        def get(family: str) -> Path:
            if family not in built:
                built[family] = build_tiny_model(family, root)
            return built[family]

        yield get
    torch.set_num_threads(threads)
