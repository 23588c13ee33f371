"""Fixtures of the adapter tests: tiny random-weight local models, built once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_model():
    """family -> directory of a tiny model of that family (fixtures.tiny_models), built on first use."""
    pytest.importorskip("torch", reason="the local backends need torch: pip install 'migbench[local]'")
    pytest.importorskip("transformers", reason="the local backends need transformers")
    pytest.importorskip("torchvision", reason="InternVL and Qwen2.5-VL processors need torchvision")
    import tempfile
    from pathlib import Path

    import torch

    from fixtures.tiny_models import build_tiny_model

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
