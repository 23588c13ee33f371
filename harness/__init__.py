"""migbench: evidence for migrating document extraction (see README.md).

`from migbench import load_results` gives stored runs as pandas DataFrames (migbench.notebook);
it is imported on first use, so `import migbench` needs neither pandas nor anything else heavy.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_results"]


def __getattr__(name: str) -> Any:
    if name == "load_results":
        from migbench.notebook import load_results

        return load_results
    raise AttributeError(f"module 'migbench' has no attribute {name!r}")
