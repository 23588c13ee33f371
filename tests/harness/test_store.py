import sqlite3

import pytest
from migbench.contracts import DocResult, FieldScore, Response
from migbench.store import RunMeta, RunStore, StoreError


def _meta(backend="b", prompt="p1"):
    return RunMeta(backend=backend, family="f", model="m", config={"k": 1}, dataset_path="/d", dataset_hash="h",
                   n_documents=2, prompt_hash=prompt, prompt_style="kv")


def test_the_same_configuration_is_the_same_run_and_resumes(tmp_path):
    store = RunStore(tmp_path)
    a, resumed_a = store.open_run(_meta())
    b, resumed_b = store.open_run(_meta())
    assert a == b and (resumed_a, resumed_b) == (False, True)
    c, _ = store.open_run(_meta(prompt="p2"))
    assert c != a
    d, resumed_d = store.open_run(_meta(), new=True)
    assert d.startswith(a) and d != a and not resumed_d


def test_runs_resolve_by_id_unique_prefix_or_latest(tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(StoreError, match="no runs"):
        store.resolve("latest")
    a, _ = store.open_run(_meta("alpha"))
    b, _ = store.open_run(_meta("alpine"))
    assert store.resolve("latest") == b and store.resolve(a) == a
    with pytest.raises(StoreError, match="ambiguous"):
        store.resolve("alp")
    assert store.resolve("alpha") == a
    with pytest.raises(StoreError, match="no run 'zzz'"):
        store.resolve("zzz")


def test_a_document_row_round_trips_with_scores_and_usage(tmp_path):
    store = RunStore(tmp_path)
    run, _ = store.open_run(_meta())
    resp = Response(text="TOTAL_AMOUNT: $1", input_tokens=10, output_tokens=2, latency_s=0.5, attempts=2,
                    region="ap-southeast-2", extra={"emulated": True})
    res = DocResult("a.png", "receipt", "clean", "ok", resp, {"TOTAL_AMOUNT": "$1"},
                    [FieldScore("TOTAL_AMOUNT", "$1.00", "$1", 1.0, 1.0, 1.0)], 1.0)
    store.save_result(run, res, {"TOTAL_AMOUNT": "$1.00"})
    (row,) = store.documents(run)
    assert row["scores"][0].f1 == 1.0 and row["attempts"] == 2 and row["extra"] == {"emulated": True}
    assert row["ground_truth"] == {"TOTAL_AMOUNT": "$1.00"}
    assert store.counts(run) == {"ok": 1} and store.done_ids(run) == {"a.png"}


def test_lone_surrogates_in_model_text_are_stored_not_fatal(tmp_path):
    store = RunStore(tmp_path)
    run, _ = store.open_run(_meta())
    store.save_result(run, DocResult("a", "receipt", "x", "ok", Response(text="bad \ud800 text")), {})
    assert store.documents(run)[0]["raw_text"] == "bad ? text"  # the one unencodable character, replaced


def test_the_database_is_in_wal_mode(tmp_path):
    RunStore(tmp_path).close()
    assert sqlite3.connect(tmp_path / "migbench.sqlite").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_resuming_with_other_operational_settings_continues_the_same_run(tmp_path):
    store = RunStore(tmp_path)
    a, _ = store.open_run(_meta())
    m = _meta()
    m.config = {**m.config, "concurrency": 16, "read_timeout": 600, "endpoint_url": "https://vpce.example"}
    b, resumed = store.open_run(m)
    assert (b, resumed) == (a, True)
    m.config = {**m.config, "api": "invoke-nova"}  # a different request shape is a different run
    assert store.open_run(m)[0] != a
