"""The dependency direction docs/ARCHITECTURE.md draws, checked on the source's import statements.

Every module import (top level or inside a function) is read with `ast`; a lower layer never
imports a higher one, and the core reaches adapters only through the registry's "module:Class"
strings, so `tox -e nova-pro` never imports torch.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"harness": "migbench", "adapters": "migbench.adapters", "fixtures": "migbench.fixtures",
           "suites": "migbench.suites", "ground_truth": "migbench.ground_truth"}

# Layer of each module, lowest first. A module may import its own layer or lower ones only.
CONTRACTS = {"migbench.contracts"}
PRESENTATION_AND_ENTRY = {"migbench.cli", "migbench.cli_aws", "migbench.cli_batch", "migbench.cli_sagemaker",
                          "migbench.pytest_plugin",
                          "migbench.suite_session",
                          "migbench.report",
                          "migbench.progress"}


def _modules() -> dict[str, Path]:
    out = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([package, *parts]) if parts else package] = path
    return out


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in found if m == "migbench" or m.startswith("migbench.")}


# Engine drivers run a backend family's own job API over a whole dataset (Bedrock batch inference):
# they sit above the runner and the store, beside the entry points, and only entry points import them.
# The SageMaker lifecycle (create, wait, delete endpoints) drives the service's control plane the same way.
DRIVERS = {"migbench.adapters.bedrock_batch", "migbench.adapters.sagemaker_lifecycle"}

MODULES = _modules()


def test_every_source_folder_maps_into_the_one_package():
    assert "migbench.contracts" in MODULES and "migbench.adapters.bedrock" in MODULES


def test_contracts_depend_on_no_other_migbench_module():
    assert _imports(MODULES["migbench.contracts"]) == set()


@pytest.mark.parametrize("name", sorted(m for m in MODULES if m.startswith("migbench.")
                                        and not m.startswith(("migbench.adapters", "migbench.fixtures",
                                                              "migbench.suites"))))
def test_core_never_imports_an_adapter(name):
    allowed = DRIVERS if name in PRESENTATION_AND_ENTRY else set()
    bad = {m for m in _imports(MODULES[name]) if m.startswith("migbench.adapters")
           and not any(m == d or m.startswith(d + ".") for d in allowed)}
    assert not bad, f"{name} imports {sorted(bad)}: reach adapters through the registry instead"


@pytest.mark.parametrize("name", sorted(m for m in MODULES if m.startswith("migbench.adapters") and m not in DRIVERS))
def test_adapters_never_import_orchestration_storage_or_presentation(name):
    higher = {"migbench.runner", "migbench.store", "migbench.registry", "migbench.gates", "migbench.stats",
              "migbench.report_data"} | PRESENTATION_AND_ENTRY
    bad = {m for m in _imports(MODULES[name]) if any(m == h or m.startswith(h + ".") for h in higher)}
    assert not bad, f"{name} imports {sorted(bad)}"


def test_only_entry_points_import_the_engine_drivers():
    for name, path in MODULES.items():
        if name in PRESENTATION_AND_ENTRY or name in DRIVERS:
            continue
        bad = {m for m in _imports(path) if any(m == d or m.startswith(d + ".") for d in DRIVERS)}
        assert not bad, f"{name} imports {sorted(bad)}"


@pytest.mark.parametrize("name", sorted(m for m in MODULES if m not in PRESENTATION_AND_ENTRY | DRIVERS
                                        and not m.startswith(("migbench.suites", "migbench.fixtures"))))
def test_nothing_below_the_entry_points_imports_them(name):
    bad = {m for m in _imports(MODULES[name])
           if any(m == h or m.startswith(h + ".") for h in PRESENTATION_AND_ENTRY)}
    assert not bad, f"{name} imports {sorted(bad)}"
