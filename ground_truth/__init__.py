"""What is true and how it is written: the field schema, the shipped sets' ground truth, the format.

`fields.yaml` is the schema every layer reads (migbench.schema); `<set>.csv` / `<set>.jsonl` are
the ground truth of the sets shipped under migbench.fixtures/<set>/; README.md describes the
format, which follows the incumbent pipeline's conventions so its files load unchanged.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

GT_SUFFIXES = (".csv", ".jsonl")


def ground_truth_dir() -> Path:
    return Path(str(resources.files(__name__)))


def schema_path() -> Path:
    return ground_truth_dir() / "fields.yaml"


def shipped_ground_truth(set_name: str) -> Path | None:
    """The ground-truth file of a shipped set (its CSV first), or None for a set not shipped."""
    for suffix in GT_SUFFIXES:
        p = ground_truth_dir() / f"{set_name}{suffix}"
        if p.is_file():
            return p
    return None
