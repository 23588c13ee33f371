"""Lazy backend registry: name -> "module:Class" from harness/data/backends.yaml.

Nothing is imported until a backend is asked for, so listing backends or running the OCR
default never imports boto3 or torch. Loading a backend validates its options (the registry's
defaults, then the caller's) against the backend's typed `Options` model: an unknown key, a wrong
type or a bad value stops here, one line per mistake, before anything is created.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from migbench.catalog import load_packaged
from migbench.contracts import Backend, BackendConfig, SetupError
from pydantic import BaseModel, Field


class BackendEntry(BaseModel):
    target: str = Field(pattern=r"^[\w.]+:\w+$")
    extra: str
    requires: list[str] = []
    description: str = ""
    defaults: dict[str, Any] = {}


class Registry(BaseModel):
    backends: dict[str, BackendEntry]


def registry() -> Registry:
    return load_packaged(Registry, "backends.yaml")


def entry(name: str) -> BackendEntry:
    reg = registry().backends
    if name not in reg:
        from migbench.residency import refused_backend  # the policy names backends it refuses, with why

        if (why := refused_backend(name)) is not None:
            raise SetupError(why)
        known = ", ".join(sorted(reg))
        raise SetupError(f"unknown backend {name!r}; known backends: {known}")
    return reg[name]


def missing_modules(name: str) -> list[str]:
    return [m for m in entry(name).requires if importlib.util.find_spec(m) is None]


def load_backend_class(name: str) -> type[Backend]:
    e = entry(name)
    missing = missing_modules(name)
    if missing:
        raise SetupError(
            f"backend {name!r} needs {', '.join(missing)}: pip install 'migbench[{e.extra}]'"
            f" (or: tox -e {name})"
        )
    module, _, cls = e.target.partition(":")
    return getattr(importlib.import_module(module), cls)


def create_backend(name: str, model: str | None = None, options: dict[str, Any] | None = None) -> Backend:
    """Load, validate the options of (UsageError naming each mistake) and construct a backend."""
    e = entry(name)
    opts = {**e.defaults, **(options or {})}
    cls = load_backend_class(name)
    settings = cls.Options.parse(name, opts)
    return cls(BackendConfig(name=name, model=model, options=opts, settings=settings))
