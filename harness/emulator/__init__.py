"""Local bedrock-runtime emulator (SYNTHETIC answers) for tests, dry runs and benchmarks.

    with run_emulator() as emu:
        client = boto3.client("bedrock-runtime", endpoint_url=emu.url, region_name="ap-southeast-2", ...)

Names are imported lazily so `migbench.emulator.protocol` (pure, no botocore) stays cheap to import.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "run_emulator": "server", "Emulator": "server", "EmulatorConfig": "server", "load_config": "server",
    "serve_forever": "server", "main": "server", "responder_from_spec": "server", "EMULATED_HEADER": "server",
    "FaultPlan": "faults", "ScriptedResponder": "responders", "GroundTruthResponder": "responders",
    "NotFoundResponder": "responders", "estimate_image_tokens": "protocol", "ParsedRequest": "protocol",
}
__all__ = [
    "EMULATED_HEADER",
    "Emulator",
    "EmulatorConfig",
    "FaultPlan",
    "GroundTruthResponder",
    "NotFoundResponder",
    "ParsedRequest",
    "ScriptedResponder",
    "estimate_image_tokens",
    "load_config",
    "main",
    "responder_from_spec",
    "run_emulator",
    "serve_forever",
]  # same names as _EXPORTS


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'migbench.emulator' has no attribute {name!r}")
    return getattr(importlib.import_module(f"migbench.emulator.{_EXPORTS[name]}"), name)
