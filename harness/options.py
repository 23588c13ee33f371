"""How a command line becomes a backend, a dataset and a threshold set: one implementation that
`migbench run` (migbench.cli) and `pytest suites` (migbench.suite_session) both call, so the same
flag means the same thing on both paths and a mistake reads the same one line."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from migbench.contracts import UsageError


def parse_backend_options(pairs: Iterable[str] | None, flag: str = "--option") -> dict[str, Any]:
    """KEY=VALUE pairs -> options; VALUE is read as JSON when it parses (numbers, booleans, lists)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{flag} expects KEY=VALUE, got {pair!r}")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
        if key.strip() in POSITIVE_OPTIONS:
            check_positive(f"{flag} {key.strip()}", out[key.strip()], integer=POSITIVE_OPTIONS[key.strip()])
    return out


# Backend options that size the run: zero or negative would stall it or mean nothing.
POSITIVE_OPTIONS = {"concurrency": True, "batch_size": True, "max_image_dim": True,
                    "tokens_per_min": False, "requests_per_min": False}


def check_positive(flag: str, value: Any, *, integer: bool) -> Any:
    """`value` if it is a positive (whole, when `integer`) finite number or None, else one UsageError line."""
    if value is None:
        return None
    kind = "a whole number of at least 1" if integer else "a number above 0"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if not ok or (integer and value != int(value)):
        raise UsageError(f"{flag} must be {kind}, got {value!r}")
    return value


def backend_options(pairs: Iterable[str] | None, flag: str = "--option", **named: Any) -> dict[str, Any]:
    """Options from KEY=VALUE pairs, then the named flags that were given (None: not given)."""
    options = parse_backend_options(pairs, flag)
    options.update({k: v for k, v in named.items() if v is not None and v is not False})
    return options


def check_limit(limit: int | None) -> int | None:
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be at least 1, got {limit}")
    return limit


def resolve_dataset(path: str | Path | None, **kwargs: Any) -> Any:
    """The dataset at `path`, else the shipped synthetic set; a bad one is one `--dataset: ...` line."""
    from migbench.datasets import DatasetError, load_dataset
    from migbench.fixtures import default_dataset

    try:
        return load_dataset(path or default_dataset(), **kwargs)
    except DatasetError as exc:
        raise UsageError(f"--dataset: {exc}") from None


def resolve_thresholds(ref: str | Path | None, schema: Any = None) -> Any:
    """A migbench.gates.ThresholdSet from a file or packaged name (default: the incumbent's)."""
    from migbench.catalog import CatalogError
    from migbench.gates import load_threshold_set

    try:
        return load_threshold_set(ref, schema)
    except (CatalogError, OSError) as exc:
        raise UsageError(f"--thresholds: {exc}") from None


def apply_scoring(store: Any, run_id: str, requested: str | None, *, redone: int = 0, schema: Any = None) -> str:
    """Leave the stored run scored wholly with `requested` (default: incumbent); returns the profile.

    The runner scores with the default profile, so a run asked for under another profile, or a
    resumed run scored earlier with another one, is re-scored from its stored raw responses
    (migbench.rescore: no model is called): never half one profile and half the other.
    """
    from migbench.rescore import rescore_run
    from migbench.scoring_profiles import DEFAULT_PROFILE

    profile = requested or DEFAULT_PROFILE
    recorded = store.scoring(run_id)
    if (profile != DEFAULT_PROFILE and (redone or recorded != profile)) or recorded not in (None, profile):
        return rescore_run(store, run_id, profile, schema)[0]
    store.set_scoring(run_id, profile)
    return profile


def resolve_schema(path: str | Path | None, warn: Any = None) -> Any:
    """The field schema: the packaged one, or --schema FILE (migbench's format or the incumbent's
    config/field_definitions.yaml, told apart by its keys). Each assumption loading made (a field with
    no migbench type scored as text) goes to `warn` as one line."""
    from migbench.schema import load_schema

    if path is not None and not Path(path).is_file():
        raise UsageError(f"--schema {path}: file not found")
    schema = load_schema(path)
    for line in schema.warnings:
        if warn is not None:
            warn(line)
    return schema
