"""What installing migbench adds to an environment: one import name, and nothing in other pytest runs."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_exactly_one_top_level_import_name(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("migbench-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"migbench"}
    # The card's folders all travel inside it, data files included.
    for path in ("migbench/contracts.py", "migbench/adapters/bedrock.py", "migbench/suites/test_accuracy.py",
                 "migbench/fixtures/synthetic_small/corpus.json", "migbench/prompts/default.yaml",
                 "migbench/reports/templates/report.html.j2", "migbench/ground_truth/fields.yaml",
                 "migbench/ground_truth/synthetic_small.csv", "migbench/data/residency.yaml"):
        assert path in names, path


def test_no_pytest_entry_point_is_registered():
    eps = metadata.entry_points(group="pytest11")
    assert not [ep for ep in eps if ep.value.startswith("migbench") or ep.name.startswith("migbench")]


def test_pytest_in_an_unrelated_project_sees_no_migbench_options_or_markers(tmp_path):
    project = tmp_path / "other"
    project.mkdir()
    # Markers migbench's suites use: an unrelated project's tests with the same names must run as usual.
    (project / "test_other.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.live\ndef test_live_runs():\n    assert True\n\n"
        "@pytest.mark.gpu\ndef test_gpu_runs():\n    assert True\n"
    )
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(project)],
                         check=False, cwd=project, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 passed" in run.stdout and "skipped" not in run.stdout
    helptext = subprocess.run([sys.executable, "-m", "pytest", "--help"], check=False, cwd=project,
                              capture_output=True, text=True, timeout=120).stdout
    assert "migbench" not in helptext and "--backend" not in helptext and "--dataset" not in helptext
    unknown = subprocess.run([sys.executable, "-m", "pytest", "-q", "--backend", "nova-pro", str(project)],
                             check=False, cwd=project, capture_output=True, text=True, timeout=120)
    assert unknown.returncode == 4 and "unrecognized arguments: --backend" in unknown.stderr
