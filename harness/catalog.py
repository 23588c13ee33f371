"""Load the data files under harness/data (and user overrides) with validation at load.

Every catalog is a YAML file checked by a pydantic model, so a typo in a price or a field
name fails at start-up with the file and the key, not half way through a run.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from typing import TypeVar

import yaml
from migbench.contracts import UsageError
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class CatalogError(UsageError):
    """A data file is missing or does not match its schema."""


def data_path(name: str) -> Path:
    return Path(str(resources.files("migbench") / "data" / name))


def read_yaml(path: str | Path) -> object:
    p = Path(path)
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogError(f"{p}: file not found") from None
    except yaml.YAMLError as exc:
        raise CatalogError(f"{p}: not valid YAML: {exc}") from None


def load_model(model: type[M], path: str | Path) -> M:
    raw = read_yaml(path)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise CatalogError(f"{path}: {exc}") from None


@cache
def _packaged(model: type[M], name: str) -> M:
    return load_model(model, data_path(name))


def load_packaged(model: type[M], name: str) -> M:
    """A packaged catalog, parsed and validated once per process. Each caller gets its own deep
    copy: a caller that edits its catalog (a test, a --model override) cannot change what every
    later caller reads."""
    return _packaged(model, name).model_copy(deep=True)
