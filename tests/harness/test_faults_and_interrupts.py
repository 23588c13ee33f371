"""Realistic fault rates end every document as a success or a classified failure; Ctrl-C stops
cleanly and the same command finishes the rest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from migbench.datasets import load_dataset
from migbench.emulator import FaultPlan, GroundTruthResponder, load_config, run_emulator
from migbench.emulator.server import LatencyConfig
from migbench.registry import create_backend
from migbench.retry import RetryPolicy
from migbench.runner import Runner, RunOptions
from migbench.store import RunStore

from tests.conftest import ROOT, SYNTH


@pytest.fixture
def aws_env(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", raising=False)


def test_fault_storm_every_document_ends_with_a_result_or_its_class(tmp_path, aws_env):
    ds = load_dataset(SYNTH)
    rates = {"throttle": 0.25, "unavailable": 0.08, "internal": 0.05, "model_timeout": 0.05, "reset": 0.05,
             "slow": 0.04, "model_not_ready": 0.03}
    policy = RetryPolicy(max_attempts=4, max_timeouts=2, base_s=0.01, cap_s=0.05)
    with run_emulator(load_config(), GroundTruthResponder(ds)) as emu:
        emu.set_faults(FaultPlan(rates=rates, seed=3, slow_s=2.0))
        backend = create_backend("nova-pro", options={"endpoint_url": emu.url, "allow_loopback": True,
                                                      "read_timeout": 0.5, "concurrency": 4})
        store = RunStore(tmp_path)
        s = Runner(backend, ds, store, RunOptions(retry=policy)).run()
        backend.close()
        seen = emu.stats.snapshot()
    rows = store.documents(s.run_id)
    assert len(rows) == len(ds) and s.remaining == 0
    assert sum(seen["faults"].values()) > 5, seen["faults"]
    for r in rows:
        # Throttled calls are free (the limiter slows admissions); the other failures are bounded.
        assert 1 <= r.response.attempts - r.response.throttled <= policy.max_attempts
        # Throttling is never a document's final outcome while its deadline allows another try.
        assert r.status == "ok" or r.error_class in ("transient", "timeout"), r
    assert sum(r.response.attempts for r in rows) > len(rows), "faults were retried"
    # Retries were counted and most documents still made it.
    assert s.ok >= len(ds) * 0.6


def test_ctrl_c_stops_cleanly_and_the_same_command_finishes(tmp_path):
    ds = load_dataset(SYNTH)
    cfg = load_config(latency=LatencyConfig(distribution="fixed", fixed_s=0.5))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with run_emulator(cfg, GroundTruthResponder(ds)) as emu:
        env.update(AWS_ENDPOINT_URL_BEDROCK_RUNTIME=emu.url, AWS_ACCESS_KEY_ID="testing",
                   AWS_SECRET_ACCESS_KEY="testing", MIGBENCH_ALLOW_LOOPBACK="1", PYTHONPATH=str(ROOT),
                   COLUMNS="200")
        cmd = [sys.executable, "-m", "migbench.cli", "run", "--backend", "nova-pro", "--dataset", str(SYNTH),
               "--results", str(tmp_path), "--concurrency", "2"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while time.time() < deadline:  # wait until some documents are stored
            time.sleep(0.3)
            if (tmp_path / "migbench.sqlite").exists():
                store = RunStore(tmp_path)
                runs = store.runs()  # the run row may not be written yet
                if runs and len(store.documents(runs[-1].run_id)) >= 2:
                    break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err[-2000:]
        assert "interrupted" in err and "remain" in err
        store = RunStore(tmp_path)
        run = store.run("latest")
        assert run.status == "interrupted"
        done = len(store.documents(run.run_id))
        assert 2 <= done < len(ds)
        again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
        assert again.returncode == 0, again.stderr[-2000:]
    assert f"{done} already stored" in again.stderr
    assert len(store.documents(run.run_id)) == len(ds)
    assert store.run("latest").status == "complete"
