"""Several processes on one results folder, SIGTERM, SIGKILL: one model call per document, nothing lost.

These start real `migbench run` processes against the Bedrock emulator (slowed so the processes
overlap) and count the requests the emulator saw.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from migbench.datasets import load_dataset
from migbench.emulator import GroundTruthResponder, load_config, run_emulator
from migbench.emulator.server import LatencyConfig
from migbench.store import Claimant, RunStore

from tests.conftest import SYNTH


def _run_cmd(results: Path, *extra: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from migbench.cli import main; sys.exit(main())",
            "run", "--backend", "nova-pro", "--results", str(results), "--allow-loopback",
            "--dataset", str(SYNTH), "--concurrency", "2", *extra]


def _env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {**env, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": url, "COLUMNS": "200"}


def _slow_emulator(latency_s: float):
    cfg = load_config(latency=LatencyConfig(distribution="fixed", fixed_s=latency_s))
    return run_emulator(cfg, GroundTruthResponder(load_dataset(SYNTH)))


def _stored(results: Path) -> int:
    db = results / "migbench.sqlite"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as con:
            return con.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _wait_for(results: Path, n: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while _stored(results) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "the run stored nothing in time"
        time.sleep(0.05)


def test_two_processes_on_one_results_folder_call_the_model_once_per_document(tmp_path):
    n = len(load_dataset(SYNTH))
    with _slow_emulator(0.25) as emu:
        env = _env(emu.url)
        procs = [subprocess.Popen(_run_cmd(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]
        outs = [p.communicate(timeout=240) for p in procs]
        calls = emu.stats.snapshot()["requests"]
    assert [p.returncode for p in procs] == [0, 0], outs
    store = RunStore.open_existing(tmp_path)
    (run,) = store.runs()  # both joined the same run
    docs = store.documents(run.run_id)
    assert len(docs) == n and all(d.status == "ok" for d in docs)
    assert calls == n, f"{calls} model calls for {n} documents"
    assert run.status == "complete"
    with sqlite3.connect(tmp_path / "migbench.sqlite") as con:
        assert con.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0


def test_sigterm_stops_like_ctrl_c_and_the_same_command_finishes_without_redoing(tmp_path):
    n = len(load_dataset(SYNTH))
    with _slow_emulator(0.3) as emu:
        env = _env(emu.url)
        proc = subprocess.Popen(_run_cmd(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        _wait_for(tmp_path, 2, proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert "Traceback" not in err, err
        assert proc.returncode == 143, (proc.returncode, err)  # terminated, as a shell reports SIGTERM
        store = RunStore.open_existing(tmp_path)
        (run,) = store.runs()
        stored = len(store.documents(run.run_id))
        assert run.status == "interrupted" and 2 <= stored < n, (run.status, stored)
        # In-flight documents finished and were kept; nothing else was started.
        assert emu.stats.snapshot()["requests"] == stored
        store.close()
        again = subprocess.run(_run_cmd(tmp_path), check=False, env=env, capture_output=True, text=True, timeout=240)
        assert again.returncode == 0, again.stderr
        calls = emu.stats.snapshot()["requests"]
    store = RunStore.open_existing(tmp_path)
    assert store.run("latest").status == "complete" and len(store.documents(run.run_id)) == n
    assert calls == n, f"{calls} model calls for {n} documents"


def test_a_killed_process_claims_are_taken_over_and_nothing_is_lost(tmp_path):
    n = len(load_dataset(SYNTH))
    with _slow_emulator(0.3) as emu:
        env = _env(emu.url)
        proc = subprocess.Popen(_run_cmd(tmp_path), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for(tmp_path, 2, proc)
        proc.kill()  # SIGKILL: no cleanup, its claims stay in the store
        proc.wait()
        with sqlite3.connect(tmp_path / "migbench.sqlite") as con:
            held = con.execute("SELECT COUNT(*) FROM claims").fetchone()[0]
        again = subprocess.run(_run_cmd(tmp_path), check=False, env=env, capture_output=True, text=True, timeout=240)
        assert again.returncode == 0, again.stderr
    store = RunStore.open_existing(tmp_path)
    docs = store.documents(store.run("latest").run_id)
    assert held >= 1, "the killed process held claims"
    assert len(docs) == n and len({d.doc_id for d in docs}) == n and all(d.status == "ok" for d in docs)
    assert store.run("latest").status == "complete"


# ---------------------------------------------------------------------------- claims, unit level
def _meta():
    from migbench.store import RunMeta
    return RunMeta(backend="b", family="f", model="m", config={}, dataset_path="/d", dataset_hash="h",
                   n_documents=3, prompt_hash="p", prompt_style="kv")


class _Other(Claimant):
    """Another process's claimant: a given pid on this host."""

    def __init__(self, pid: int):
        super().__init__()
        self.pid = pid
        self.owner = f"{self.host}:{pid}:other"


def test_a_live_process_claim_is_respected_a_dead_one_is_taken_over(tmp_path):
    store = RunStore(tmp_path)
    run, _ = store.open_run(_meta())
    me = Claimant()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive = _Other(sleeper.pid)
        assert store.claim(run, "a", alive)
        assert not store.claim(run, "a", me)  # held by a live process
        assert store.claimed_elsewhere(run, me) == {f"pid {sleeper.pid} on {me.host}": 1}
    finally:
        sleeper.kill()
        sleeper.wait()
    assert store.claim(run, "a", me)  # its owner died: taken over
    assert store.claimed_elsewhere(run, me) == {}


def test_a_claim_whose_heartbeat_stopped_is_taken_over(tmp_path):
    store = RunStore(tmp_path)
    run, _ = store.open_run(_meta())
    other = _Other(os.getppid())  # alive, but it stops beating
    assert store.claim(run, "a", other)
    me = Claimant(stale_after_s=0.2)
    assert not store.claim(run, "a", me)
    time.sleep(0.3)
    assert store.claim(run, "a", me)


def test_a_stored_document_is_never_claimed_again(tmp_path):
    from migbench.contracts import DocResult, Response

    store = RunStore(tmp_path)
    run, _ = store.open_run(_meta())
    me = Claimant()
    assert store.claim(run, "a", me)
    store.save_result(run, DocResult("a", "receipt", "x", "failed", Response(), error_class="transient"))
    assert not store.claim(run, "a", me) and not store.claim(run, "a", Claimant())
    assert store.claim(run, "a", me, redo_failed=True)  # --retry-failed redoes a failed one
    with sqlite3.connect(tmp_path / "migbench.sqlite") as con:  # storing dropped the first claim
        assert con.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 1


def test_new_runs_started_in_the_same_second_get_distinct_ids(tmp_path):
    stores = [RunStore(tmp_path) for _ in range(2)]  # two processes' connections
    ids = [stores[i % 2].open_run(_meta(), new=True)[0] for i in range(4)]
    assert len(set(ids)) == 4


@pytest.mark.parametrize("kill_at", [1, 3])
def test_resumed_run_after_kill_stores_each_document_once(tmp_path, kill_at):
    """The store side of kill safety: a claim without a stored row is pending, and storing drops it."""
    from migbench.contracts import DocResult, Response

    store = RunStore(tmp_path)
    run, _ = store.open_run(_meta())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ghost = _Other(dead.pid)
    for doc in "abcd"[:kill_at]:
        assert store.claim(run, doc, ghost)  # claimed, then the process died before storing
    me = Claimant()
    for doc in "abcd":
        assert store.claim(run, doc, me)
        store.save_result(run, DocResult(doc, "receipt", "x", "ok", Response(text="t")))
    assert sorted(d.doc_id for d in store.documents(run)) == list("abcd")
