import os
import sqlite3

import pytest
from migbench.contracts import AuditEntry, DocResult, FieldScore, Response
from migbench.store import APPLICATION_ID, RunMeta, RunStore, StoreError


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
    assert row.scores[0].f1 == 1.0 and row.response.attempts == 2 and row.response.extra == {"emulated": True}
    assert row.ground_truth == {"TOTAL_AMOUNT": "$1.00"}
    assert store.counts(run) == {"ok": 1} and store.done_ids(run) == {"a.png"}


def test_lone_surrogates_in_model_text_are_stored_not_fatal(tmp_path):
    store = RunStore(tmp_path)
    run, _ = store.open_run(_meta())
    store.save_result(run, DocResult("a", "receipt", "x", "ok", Response(text="bad \ud800 text")), {})
    assert store.documents(run)[0].response.text == "bad ? text"  # the one unencodable character, replaced


def test_the_database_is_in_wal_mode(tmp_path):
    RunStore(tmp_path).close()
    assert sqlite3.connect(tmp_path / "migbench.sqlite").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_resuming_with_other_operational_settings_continues_the_same_run(tmp_path):
    store = RunStore(tmp_path)
    a, _ = store.open_run(_meta())
    m = _meta()
    m.config = {**m.config, "concurrency": 16, "read_timeout": 600, "endpoint_url": "https://vpce.example",
                "accept_unverified_profile": True, "allow_destinations": ["ap-southeast-6"], "quota_check": "never"}
    b, resumed = store.open_run(m)
    assert (b, resumed) == (a, True)
    m.config = {**m.config, "api": "invoke-nova"}  # a different request shape is a different run
    assert store.open_run(m)[0] != a


def test_rows_are_typed_records_with_their_ground_truth(tmp_path):
    from migbench.contracts import RunRecord

    store = RunStore(tmp_path)
    run, _ = store.open_run(_meta())
    resp = Response(text="GST_AMOUNT: $1", latency_s=0.25, input_tokens=5, output_tokens=1, cost_usd=0.001)
    res = DocResult("a.png", "invoice", "clean", "ok", resp, {"GST_AMOUNT": "$1"},
                    [FieldScore("GST_AMOUNT", "$1.00", "$1", 1.0, 1.0, 1.0)], 1.0,
                    ground_truth={"GST_AMOUNT": "$1.00", "DOCUMENT_TYPE": "INVOICE"})
    store.save_result(run, res)  # the ground truth travels on the record
    store.save_result(run, DocResult("b.png", "invoice", "heavy", "failed", Response(error="boom"),
                                     error_class="timeout", error="boom", ground_truth={"GST_AMOUNT": "$2.00"}))
    a, b = store.documents(run)
    assert isinstance(a, DocResult) and a.ok and not b.ok
    assert a.ground_truth == {"GST_AMOUNT": "$1.00", "DOCUMENT_TYPE": "INVOICE"}
    assert (a.response.text, a.response.latency_s, a.response.cost_usd) == ("GST_AMOUNT: $1", 0.25, 0.001)
    assert a.scores == res.scores and a.completed_at
    assert b.error_class == "timeout" and b.response.error_class.value == "timeout"
    rec = store.run(run)
    assert isinstance(rec, RunRecord) and rec.backend == "b" and rec.config == {"k": 1} and rec.gating is None
    assert store.runs() == [rec]


def test_a_gating_is_stored_with_its_run(tmp_path):
    store = RunStore(tmp_path)
    run, _ = store.open_run(_meta())
    store.record_gating(run, {"verdict": "pass", "thresholds": {"file": "x.yaml", "sha256": "ab"}})
    assert store.run(run).gating == {"verdict": "pass", "thresholds": {"file": "x.yaml", "sha256": "ab"}}


def test_a_store_written_before_the_gating_column_opens_and_is_migrated(tmp_path):
    old = sqlite3.connect(tmp_path / "migbench.sqlite")
    old.executescript("""
      CREATE TABLE runs (run_id TEXT PRIMARY KEY, backend TEXT NOT NULL, family TEXT, model TEXT,
        config_json TEXT, dataset_path TEXT, dataset_hash TEXT, n_documents INTEGER, prompt_hash TEXT,
        prompt_style TEXT, versions_json TEXT, git_commit TEXT, host TEXT, describe_json TEXT,
        emulated INTEGER DEFAULT 0, started_at TEXT, finished_at TEXT, status TEXT, wall_s REAL DEFAULT 0);
      INSERT INTO runs (run_id, backend, family, status, wall_s) VALUES ('old-1', 'ocr-baseline', 'ocr', 'complete', 3);
    """)
    old.commit()
    old.close()
    store = RunStore(tmp_path)
    (run,) = store.runs()
    assert (run.run_id, run.status, run.wall_s, run.gating, run.config) == ("old-1", "complete", 3.0, None, {})
    store.record_gating("old-1", {"verdict": "fail"})
    assert store.run("old-1").gating == {"verdict": "fail"}


# --- results folder problems: one line each, never writing over what is not migbench's ------------
def test_a_results_path_that_is_a_file_is_one_line(tmp_path):
    f = tmp_path / "results"
    f.write_text("not a folder")
    with pytest.raises(StoreError, match="is a file, not a folder"):
        RunStore(f)
    assert f.read_text() == "not a folder"


def test_a_store_file_that_is_not_a_database_is_refused_and_left_alone(tmp_path):
    db = tmp_path / "migbench.sqlite"
    db.write_bytes(b"this is a text file, not SQLite" * 100)
    before = db.read_bytes()
    with pytest.raises(StoreError, match="not a migbench store") as exc:
        RunStore(tmp_path)
    assert "\n" not in str(exc.value)
    assert db.read_bytes() == before and not (tmp_path / "migbench.sqlite-wal").exists()


@pytest.mark.parametrize("app_id", [0, 0x12345678])
def test_another_programs_sqlite_database_is_never_written(tmp_path, app_id):
    db = tmp_path / "migbench.sqlite"
    other = sqlite3.connect(db)
    other.execute(f"PRAGMA application_id={app_id}")
    other.execute("CREATE TABLE contacts (name TEXT)")
    other.execute("INSERT INTO contacts VALUES ('ada')")
    other.commit()
    other.close()
    before = db.read_bytes()
    with pytest.raises(StoreError, match="another program's SQLite database"):
        RunStore(tmp_path)
    assert db.read_bytes() == before
    con = sqlite3.connect(db)
    assert [r[0] for r in con.execute("SELECT name FROM sqlite_master")] == ["contacts"]
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not switched to WAL


def test_a_new_store_is_stamped_as_migbench(tmp_path):
    RunStore(tmp_path).close()
    con = sqlite3.connect(tmp_path / "migbench.sqlite")
    assert con.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


def test_open_existing_refuses_a_folder_without_a_store_and_creates_nothing(tmp_path):
    with pytest.raises(StoreError, match="no migbench run store") as exc:
        RunStore.open_existing(tmp_path / "resutls")
    assert "resutls" in str(exc.value)
    assert list(tmp_path.iterdir()) == []
    RunStore(tmp_path / "results").close()
    assert RunStore.open_existing(tmp_path / "results").runs() == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_folder_is_one_line(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(StoreError, match="writable|cannot"):
            RunStore(ro)
    finally:
        ro.chmod(0o755)


def test_a_full_disk_names_the_cause_not_a_failed_rollback(tmp_path):
    store = RunStore(tmp_path)
    run, _ = store.open_run(_meta())
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count={pages + 2}")  # the disk fills up
    big = DocResult("a", "receipt", "x", "ok", Response(text="x" * 200_000))
    with pytest.raises(StoreError) as exc:
        store.save_result(run, big)
    message = str(exc.value)
    assert "full" in message and "rollback" not in message, message
    assert "\n" not in message
    # The store still works for what fits, and nothing half-written was left.
    assert store.documents(run) == []
    store.save_result(run, DocResult("b", "receipt", "x", "ok", Response(text="small")))
    assert [d.doc_id for d in store.documents(run)] == ["b"]


@pytest.mark.parametrize("command", [["runs"], ["export", "latest", "--out", "x.csv"], ["rescore", "latest"],
                                     ["run", "--limit", "1"]])
@pytest.mark.parametrize("problem", ["file", "not_db", "foreign"])
def test_results_folder_problems_are_one_line_in_every_command(tmp_path, monkeypatch, capsys, command, problem):
    from migbench.cli import main

    monkeypatch.chdir(tmp_path)
    results = tmp_path / "res"
    if problem == "file":
        results.write_text("x")
    else:
        results.mkdir()
        db = results / "migbench.sqlite"
        if problem == "not_db":
            db.write_bytes(b"garbage" * 1000)
        else:
            con = sqlite3.connect(db)
            con.execute("CREATE TABLE t (x)")
            con.commit()
            con.close()
    target = results if problem == "file" else results / "migbench.sqlite"
    before = target.read_bytes()
    assert main([*command, "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert str(results) in err.replace("\n", "")
    assert target.read_bytes() == before


def _open_store(folder: str) -> str:
    with RunStore(folder) as store:
        return store._db.execute("PRAGMA journal_mode").fetchone()[0]


def test_processes_opening_one_fresh_results_folder_at_once_all_succeed(tmp_path):
    # Switching a new file to WAL takes a lock SQLite's busy timeout does not wait for.
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    for attempt in range(3):
        folder = str(tmp_path / f"fresh{attempt}")
        with ctx.Pool(6) as pool:
            modes = pool.map(_open_store, [folder] * 6)
        assert modes == ["wal"] * 6
        with RunStore(folder) as store:
            assert store._db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


def test_stream_and_cache_figures_round_trip(tmp_path):
    with RunStore(tmp_path) as store:
        run_id, _ = store.open_run(_meta())
        resp = Response(text="x", ttft_s=0.25, cache_read_tokens=900, cache_write_tokens=0)
        store.save_result(run_id, DocResult("d1", "receipt", "clean", "ok", resp), {})
        (row,) = store.documents(run_id)
    assert (row.response.ttft_s, row.response.cache_read_tokens, row.response.cache_write_tokens) == (0.25, 900, 0)


def test_the_audit_log_is_read_in_chunks_in_recorded_order_without_other_runs_rows(tmp_path):
    with RunStore(tmp_path) as store:
        run_id, _ = store.open_run(_meta())
        other, _ = store.open_run(_meta(backend="other"))
        for i in range(10):  # another run's rows interleaved: chunks skip them by id, never by offset
            store.add_audit(run_id, AuditEntry("b", "bedrock-runtime", "Converse", "ap-southeast-2", "h", "m",
                                               doc_id=f"d{9 - i}", attempt=i + 1, status=200, bytes_sent=i))
            store.add_audit(other, AuditEntry("other", "bedrock-runtime", "Converse", "ap-southeast-2", "h", "m"))
        rows = list(store.iter_audit(run_id, chunk=3))
        assert [r["doc_id"] for r in rows] == [f"d{9 - i}" for i in range(10)]  # recorded order, not doc order
        assert [r["attempt"] for r in rows] == list(range(1, 11))
        assert all(r["allowed"] is True and r["run_id"] == run_id for r in rows)
        assert rows == store.audit(run_id)
        assert len(list(store.iter_audit(run_id, chunk=5))) == 10  # a chunk boundary at the very end
