import sqlite3

import pytest
from migbench.contracts import ErrorClass
from migbench.datasets import load_dataset
from migbench.retry import RetryPolicy
from migbench.runner import Runner, RunOptions
from migbench.store import RunStore

from tests.conftest import SYNTH, ScriptedBackend

FAST = RetryPolicy(max_attempts=3, base_s=0.001, cap_s=0.002)


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(SYNTH)


def _answers(ds):
    return {d.doc_id: d.ground_truth for d in ds.documents}


def test_perfect_answers_score_one_and_everything_is_stored(tmp_path, dataset):
    store = RunStore(tmp_path)
    b = ScriptedBackend(_answers(dataset), concurrency=3)
    s = Runner(b, dataset, store, RunOptions(retry=FAST)).run()
    assert (s.ok, s.failed, s.remaining) == (len(dataset), 0, 0)
    docs = store.documents(s.run_id)
    assert len(docs) == len(dataset)
    assert all(d.doc_f1 == pytest.approx(1.0) for d in docs)
    assert all(d.response.input_tokens == 100 and d.response.text for d in docs)


def test_rerunning_the_same_command_resumes_and_redoes_nothing(tmp_path, dataset):
    store = RunStore(tmp_path)
    first = Runner(ScriptedBackend(_answers(dataset)), dataset, store, RunOptions(limit=5, retry=FAST)).run()
    assert first.done_now == 5
    stored_first = {d.doc_id: d.completed_at for d in store.documents(first.run_id)}
    b = ScriptedBackend(_answers(dataset))
    second = Runner(b, dataset, store, RunOptions(retry=FAST)).run()
    assert second.run_id == first.run_id and second.resumed
    assert second.skipped == 5 and second.done_now == len(dataset) - 5
    assert len(b.calls) == len(dataset) - 5 and not set(b.calls) & set(stored_first)
    again = {d.doc_id: d.completed_at for d in store.documents(first.run_id)}
    assert all(again[k] == v for k, v in stored_first.items())
    third = ScriptedBackend(_answers(dataset))
    Runner(third, dataset, store, RunOptions(retry=FAST)).run()
    assert third.calls == []


def test_failures_are_recorded_with_their_class_and_the_run_continues(tmp_path, dataset):
    ids = [d.doc_id for d in dataset.documents]
    faults = {ids[0]: [ErrorClass.PERMANENT], ids[1]: [ErrorClass.THROTTLING] * 10, ids[2]: [ErrorClass.TRANSIENT]}
    store = RunStore(tmp_path)
    s = Runner(ScriptedBackend(_answers(dataset), faults), dataset, store, RunOptions(retry=FAST)).run()
    assert s.failed == 1 and s.ok == len(dataset) - 1
    by_id = {d.doc_id: d for d in store.documents(s.run_id)}
    assert by_id[ids[0]].error_class == "permanent" and by_id[ids[0]].response.attempts == 1
    # Throttling slows a document down, never fails it: ten throttles, then the answer.
    assert by_id[ids[1]].status == "ok" and by_id[ids[1]].response.attempts == 11
    assert by_id[ids[1]].response.throttled == 10
    assert by_id[ids[2]].status == "ok" and by_id[ids[2]].response.attempts == 2


def test_retry_failed_redoes_only_failed_documents(tmp_path, dataset):
    ids = [d.doc_id for d in dataset.documents]
    store = RunStore(tmp_path)
    Runner(ScriptedBackend(_answers(dataset), {ids[3]: [ErrorClass.PERMANENT]}), dataset, store,
           RunOptions(retry=FAST)).run()
    b = ScriptedBackend(_answers(dataset))
    s = Runner(b, dataset, store, RunOptions(retry=FAST, retry_failed=True)).run()
    assert b.calls == [ids[3]] and s.ok == 1


def test_unreadable_documents_and_dataset_problems_become_failed_rows(tmp_path):
    from PIL import Image
    Image.new("RGB", (50, 50), "white").save(tmp_path / "good.png")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "orphan.png").write_bytes(b"x")
    (tmp_path / "ground_truth.csv").write_text(
        "image_file,DOCUMENT_TYPE,TOTAL_AMOUNT\ngood.png,RECEIPT,$1.00\nempty.png,RECEIPT,$2.00\ngone.png,RECEIPT,$3\n")
    ds = load_dataset(tmp_path)
    store = RunStore(tmp_path / "results")
    s = Runner(ScriptedBackend({"good.png": {"TOTAL_AMOUNT": "$1.00"}}), ds, store, RunOptions(retry=FAST)).run()
    rows = {d.doc_id: d for d in store.documents(s.run_id)}
    assert rows["good.png"].status == "ok"
    assert "empty file" in rows["empty.png"].error and rows["empty.png"].error_class == "input"
    assert "file not found" in rows["gone.png"].error
    assert "no ground truth row" in rows["orphan.png"].error
    assert s.total == 4 and s.remaining == 0


def test_store_is_wal_and_one_row_per_document(tmp_path, dataset):
    store = RunStore(tmp_path)
    s = Runner(ScriptedBackend(_answers(dataset)), dataset, store, RunOptions(limit=3, retry=FAST)).run()
    con = sqlite3.connect(tmp_path / "migbench.sqlite")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT COUNT(*), COUNT(DISTINCT doc_id) FROM documents WHERE run_id=?",
                       (s.run_id,)).fetchone() == (3, 3)
    run = store.run("latest")
    assert run.dataset_hash == dataset.hash and run.prompt_hash and run.versions["python"]


def test_a_different_prompt_style_is_a_different_run(tmp_path, dataset):
    store = RunStore(tmp_path)
    a = Runner(ScriptedBackend(_answers(dataset)), dataset, store, RunOptions(limit=1, retry=FAST)).run()
    b = Runner(ScriptedBackend(_answers(dataset)), dataset, store,
               RunOptions(limit=1, retry=FAST, prompt_style="json")).run()
    assert a.run_id != b.run_id


def test_an_unforeseen_reader_failure_fails_that_document_only(tmp_path, dataset, monkeypatch):
    import migbench.runner as runner_mod

    real = runner_mod.prepare_document
    victim = dataset.documents[2].doc_id

    def flaky(path, *args, **kwargs):
        if path.name == victim:
            raise MemoryError("simulated")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(runner_mod, "prepare_document", flaky)
    store = RunStore(tmp_path)
    s = Runner(ScriptedBackend(_answers(dataset)), dataset, store, RunOptions(retry=FAST)).run()
    rows = {d.doc_id: d for d in store.documents(s.run_id)}
    assert s.remaining == 0 and rows[victim].status == "failed" and "MemoryError" in rows[victim].error
    assert sum(r.status == "ok" for r in rows.values()) == len(dataset) - 1


def test_every_stored_record_carries_its_documents_ground_truth(tmp_path, dataset):
    store = RunStore(tmp_path)
    s = Runner(ScriptedBackend(_answers(dataset)), dataset, store, RunOptions(limit=4, retry=FAST)).run()
    truth = {d.doc_id: d.ground_truth for d in dataset.documents}
    stored = store.documents(s.run_id)
    assert len(stored) == 4 and all(d.ground_truth == truth[d.doc_id] and d.ground_truth for d in stored)


def test_an_oversized_answer_is_cut_before_parsing_and_the_cut_is_recorded(tmp_path, dataset):
    class Verbose(ScriptedBackend):
        def generate(self, request):
            resp = super().generate(request)
            resp.text = resp.text + "\n" + "x" * 5000
            return resp

    store = RunStore(tmp_path)
    s = Runner(Verbose(_answers(dataset)), dataset, store, RunOptions(limit=2, retry=FAST, max_raw_chars=1000)).run()
    for d in store.documents(s.run_id):
        assert len(d.response.text) == 1000
        assert d.response.extra["raw_text_truncated"] is True and d.response.extra["raw_text_chars"] > 5000


def test_a_full_disk_ends_the_run_with_its_cause_and_the_same_command_resumes(tmp_path, dataset):
    from migbench.store import StoreError

    store = RunStore(tmp_path)
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count={pages + 12}")  # room for a few documents, then full
    with pytest.raises(StoreError) as exc:
        Runner(ScriptedBackend(_answers(dataset)), dataset, store, RunOptions(retry=FAST)).run()
    assert "full" in str(exc.value) and "rollback" not in str(exc.value)
    stored = len(store.done_ids(store.runs()[0].run_id))
    assert stored < len(dataset)
    store._db.execute("PRAGMA max_page_count=1073741823")  # space freed
    again = Runner(ScriptedBackend(_answers(dataset)), dataset, store, RunOptions(retry=FAST)).run()
    assert again.skipped == stored and again.remaining == 0
    assert len(store.documents(again.run_id)) == len(dataset)
