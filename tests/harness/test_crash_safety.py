"""Kill a real `migbench run` with SIGKILL at random moments; rerun; nothing lost, nothing redone."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from migbench.datasets import load_dataset
from migbench.emulator import GroundTruthResponder, load_config, run_emulator
from migbench.emulator.server import LatencyConfig
from migbench.store import RunStore

from tests.conftest import ROOT, SYNTH

pytestmark = pytest.mark.slow


def _env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL_BEDROCK_RUNTIME=url, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               MIGBENCH_ALLOW_LOOPBACK="1", PYTHONPATH=str(ROOT))
    return env


def _stored(results) -> dict[str, str]:
    con = sqlite3.connect(results / "migbench.sqlite")
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return dict(con.execute("SELECT doc_id, completed_at FROM documents").fetchall())
    finally:
        con.close()


def test_sigkill_at_random_points_then_rerun_finishes_the_rest_exactly_once(tmp_path):
    ds = load_dataset(SYNTH)
    cfg = load_config(latency=LatencyConfig(distribution="uniform", min_s=0.3, max_s=0.7, seed=1))
    cmd = [sys.executable, "-m", "migbench.cli", "run", "--backend", "nova-pro", "--dataset", str(SYNTH),
           "--results", str(tmp_path), "--concurrency", "2"]
    rng = random.Random(1234)
    seen: dict[str, str] = {}
    kills = partial = 0
    with run_emulator(cfg, GroundTruthResponder(ds, error_rate=0.0, seed=0)) as emu:
        for _ in range(4):
            proc = subprocess.Popen(cmd, env=_env(emu.url), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(2.0, 3.5))  # start-up (imports) is ~1-2 s; kills land anywhere after
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait(timeout=60)
            if not (tmp_path / "migbench.sqlite").exists():
                continue
            now = _stored(tmp_path)
            partial += 0 < len(now) < len(ds)
            # A stored document is never rewritten by a later invocation.
            assert all(now[k] == v for k, v in seen.items())
            seen = now
        final = subprocess.run(cmd, env=_env(emu.url), capture_output=True, text=True, timeout=300, check=False)
        assert final.returncode == 0, final.stderr[-2000:]
        requests = emu.stats.snapshot()
    assert kills >= 2 and partial >= 2, (kills, partial)
    after = _stored(tmp_path)
    assert sorted(after) == sorted(d.doc_id for d in ds.documents)
    assert all(after[k] == v for k, v in seen.items())
    store = RunStore(tmp_path)
    (run,) = store.runs()
    assert run.status == "complete"
    assert all(d.status == "ok" for d in store.documents(run.run_id))
    # Each kill can lose at most the in-flight requests (2 workers, 2 queued): the rest were never redone.
    assert len(ds) <= requests["requests"] <= len(ds) + kills * 4
