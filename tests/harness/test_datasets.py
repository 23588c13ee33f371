from pathlib import Path

import pytest
from migbench.datasets import DatasetError, load_dataset

from tests.conftest import SROIE, SYNTH


def _write(tmp_path: Path, csv_text: str, files=("a.png",), encoding="utf-8") -> Path:
    from PIL import Image
    for name in files:
        Image.new("RGB", (20, 20), "white").save(tmp_path / name)
    (tmp_path / "ground_truth.csv").write_bytes(csv_text.encode(encoding))
    return tmp_path


def test_shipped_synthetic_set_loads_with_tiers_and_types():
    ds = load_dataset(SYNTH)
    assert len(ds) >= 12 and not ds.problems
    assert set(ds.doc_types) == {"invoice", "receipt", "bank_statement"}
    assert {d.tier for d in ds.documents} >= {"clean", "heavy"}


def test_empty_cells_are_not_scored_but_not_found_is(tmp_path):
    ds = load_dataset(_write(tmp_path, "image_file,DOCUMENT_TYPE,TOTAL_AMOUNT,GST_AMOUNT\na.png,RECEIPT,$1.00,\n"))
    (doc,) = ds.documents
    assert doc.ground_truth == {"DOCUMENT_TYPE": "RECEIPT", "TOTAL_AMOUNT": "$1.00"}
    ds2 = load_dataset(_write(tmp_path, "filename,DOCUMENT_TYPE,GST_AMOUNT\na.png,RECEIPT,NOT_FOUND\n"))
    assert ds2.documents[0].ground_truth["GST_AMOUNT"] == "NOT_FOUND"


def test_unknown_field_column_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="unknown field column.*TOTAL_AMMOUNT"):
        load_dataset(_write(tmp_path, "image_file,DOCUMENT_TYPE,TOTAL_AMMOUNT\na.png,RECEIPT,1\n"))


def test_row_without_document_and_document_without_row_are_problems(tmp_path):
    ds = load_dataset(_write(tmp_path, "image_file,DOCUMENT_TYPE\nmissing.png,RECEIPT\n", files=("a.png",)))
    msgs = {p.doc_id: p.message for p in ds.problems}
    assert "no ground truth row" in msgs["a.png"]
    # The missing file stays a document: the runner records it as failed with "file not found".
    assert [d.doc_id for d in ds.documents] == ["missing.png"]


def test_path_escaping_the_dataset_folder_is_refused(tmp_path):
    ds = load_dataset(_write(tmp_path, "image_file,DOCUMENT_TYPE\n../../etc/passwd,RECEIPT\na.png,RECEIPT\n"))
    assert any("escapes the dataset folder" in p.message for p in ds.problems)
    assert [d.doc_id for d in ds.documents] == ["a.png"]


def test_non_utf8_ground_truth_names_the_byte_and_the_fix(tmp_path):
    with pytest.raises(DatasetError, match="not valid UTF-8.*--gt-encoding"):
        load_dataset(_write(tmp_path, "image_file,DOCUMENT_TYPE,SUPPLIER_NAME\na.png,RECEIPT,Café\n",
                            encoding="latin-1"))
    ds = load_dataset(tmp_path, encoding="cp1252")
    assert ds.documents[0].ground_truth["SUPPLIER_NAME"] == "Café"


def test_malformed_rows_and_duplicates_are_recorded_not_dropped(tmp_path):
    ds = load_dataset(_write(tmp_path, "image_file,DOCUMENT_TYPE\na.png,RECEIPT\na.png,RECEIPT\nb.png,RECEIPT,x,y\n"))
    msgs = " ".join(p.message for p in ds.problems)
    assert "duplicate row" in msgs and "cells for 2 columns" in msgs


def test_jsonl_lists_and_nulls(tmp_path):
    from PIL import Image
    Image.new("RGB", (10, 10)).save(tmp_path / "a.png")
    (tmp_path / "ground_truth.jsonl").write_text(
        '{"filename": "a.png", "DOCUMENT_TYPE": "INVOICE", "LINE_ITEM_PRICES": ["$1.00", "$2.00"], "GST_AMOUNT": null}\n')
    doc = load_dataset(tmp_path).documents[0]
    assert doc.ground_truth["LINE_ITEM_PRICES"] == "$1.00 | $2.00"
    assert doc.ground_truth["GST_AMOUNT"] == "NOT_FOUND"


def test_dataset_hash_changes_with_a_file_byte(tmp_path):
    _write(tmp_path, "image_file,DOCUMENT_TYPE\na.png,RECEIPT\n")
    h1 = load_dataset(tmp_path).hash
    (tmp_path / "a.png").write_bytes((tmp_path / "a.png").read_bytes() + b"\0")
    assert load_dataset(tmp_path).hash != h1


@pytest.mark.skipif(not SROIE.exists(), reason="set MIGBENCH_SROIE_DIR to a SROIE folder")
def test_sroie_dev_loads_126_receipts_with_images_subfolder():
    ds = load_dataset(SROIE)
    assert len(ds) == 126 and not ds.problems
    assert ds.documents[0].path.parent.name == "images"


# --- one file, one document; problems never take a document's id ----------------------------------

def _png(path: Path) -> None:
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 20), "white").save(path)


def _gt(tmp_path: Path, rows: list[str], header="image_file,DOCUMENT_TYPE,TOTAL_AMOUNT") -> Path:
    (tmp_path / "ground_truth.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return tmp_path


@pytest.mark.parametrize("spellings", [
    ["a.png", "./a.png", "images/a.png"],
    ["images/a.png", "a.png"],
    ["a.png", "x/../a.png", ".//a.png", "images//a.png", "./images/./a.png"],
    ["a.png", "link.png"],  # a symlink to the same file
    ["a.png", "hard.png"],  # a hard link: the same file under two names
])
def test_every_spelling_of_one_file_is_one_document_and_one_problem(tmp_path, spellings):
    import os
    _png(tmp_path / "images" / "a.png")
    (tmp_path / "x").mkdir()
    os.symlink("images/a.png", tmp_path / "link.png")
    os.link(tmp_path / "images" / "a.png", tmp_path / "hard.png")
    ds = load_dataset(_gt(tmp_path, [f"{s},RECEIPT,$1.00" for s in spellings]))
    assert [d.doc_id for d in ds.documents] == [spellings[0]]
    (problem,) = ds.problems  # no phantom "no ground truth row" for any spelling, one duplicate report
    assert "duplicate row" in problem.message and f"line 2 ({spellings[0]!r}" in problem.message
    assert problem.doc_id != spellings[0] and problem.doc_id not in spellings


def test_a_differing_duplicate_says_so_and_the_first_row_is_kept(tmp_path):
    _png(tmp_path / "a.png")
    ds = load_dataset(_gt(tmp_path, ["a.png,RECEIPT,$1.00", "./a.png,RECEIPT,$2.00", "a.png,RECEIPT,$1.00"]))
    (doc,) = ds.documents
    assert doc.ground_truth["TOTAL_AMOUNT"] == "$1.00"
    (problem,) = ds.problems
    assert "lines 3, 4" in problem.message and "with different values" in problem.message


def test_problem_ids_are_renamed_rather_than_share_a_documents_id(tmp_path):
    from migbench.contracts import Document
    from migbench.datasets import Dataset, DatasetProblem

    docs = [Document("ground_truth.csv:line 3", tmp_path / "x", "receipt", {})]
    ds = Dataset(tmp_path, tmp_path / "g.csv", docs, [DatasetProblem("ground_truth.csv:line 3", "dup"),
                                                        DatasetProblem("ground_truth.csv:line 3", "other")])
    ids = [p.doc_id for p in ds.problems]
    assert len(set(ids) | {docs[0].doc_id}) == 3
    # and through the loader: a file literally named like a problem id
    (tmp_path / "ground_truth.csv:line 3").write_bytes(b"not an image; the name is what matters")
    ds = load_dataset(_gt(tmp_path, ["ground_truth.csv:line 3,RECEIPT,$1", "./ground_truth.csv:line 3,RECEIPT,$1"]))
    assert {p.doc_id for p in ds.problems}.isdisjoint({d.doc_id for d in ds.documents})


def test_a_run_with_duplicates_completes_and_survives_a_kill_between_problem_and_document(tmp_path):
    from migbench.retry import RetryPolicy
    from migbench.runner import Runner, RunOptions
    from migbench.store import RunStore

    from tests.conftest import ScriptedBackend

    _png(tmp_path / "images" / "a.png")
    _png(tmp_path / "b.png")
    ds = load_dataset(_gt(tmp_path, ["a.png,RECEIPT,$1.00", "images/a.png,RECEIPT,$1.00", "b.png,RECEIPT,$2.00"]))
    store = RunStore(tmp_path / "results")
    opts = RunOptions(retry=RetryPolicy(base_s=0.001))

    class KilledAfterProblems(ScriptedBackend):
        def generate(self, request):
            raise KeyboardInterrupt  # the process dies once the problems are stored

    first = Runner(KilledAfterProblems({}), ds, store, opts).run()
    assert first.interrupted
    answers = {"a.png": {"TOTAL_AMOUNT": "$1.00"}, "b.png": {"TOTAL_AMOUNT": "$2.00"}}
    second = Runner(ScriptedBackend(answers), ds, store, opts).run()
    rows = {d.doc_id: d for d in store.documents(second.run_id)}
    assert rows["a.png"].status == "ok" and rows["b.png"].status == "ok"
    (problem,) = ds.problems
    assert rows[problem.doc_id].status == "failed" and "duplicate row" in rows[problem.doc_id].error
    assert second.remaining == 0 and len(rows) == 3
    third = Runner(ScriptedBackend(answers), ds, store, opts).run()
    assert third.done_now == 0 and third.remaining == 0


# --- columns ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("header", [
    "image_file,DOCUMENT_TYPE,TOTAL_AMOUNT,total_amount",
    "image_file,DOCUMENT_TYPE,TOTAL_AMOUNT,TOTAL_AMOUNT",
    "image_file,DOCUMENT_TYPE,Total_Amount,TOTAL_AMOUNT",
    "image_file,image_file,DOCUMENT_TYPE,TOTAL_AMOUNT",
    "image_file,DOCUMENT_TYPE,document_type,TOTAL_AMOUNT",
])
def test_a_duplicated_column_refuses_the_dataset_naming_both(tmp_path, header):
    _png(tmp_path / "a.png")
    with pytest.raises(DatasetError, match="duplicated column") as err:
        load_dataset(_gt(tmp_path, ["a.png,RECEIPT,$1,$2"], header=header))
    names = header.split(",")
    dup = next(n for i, n in enumerate(names) if n.upper() in [m.upper() for m in names[:i]])
    assert repr(dup) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("line", [
    '{"filename": "a.png", "TOTAL_AMOUNT": "$1", "total_amount": "$2"}',
    '{"filename": "a.png", "TOTAL_AMOUNT": "$1", "TOTAL_AMOUNT": "$2"}',
])
def test_a_duplicated_jsonl_key_refuses_the_dataset(tmp_path, line):
    _png(tmp_path / "a.png")
    (tmp_path / "ground_truth.jsonl").write_text(line + "\n")
    with pytest.raises(DatasetError, match=r"ground_truth.jsonl: line 1: duplicated column.*TOTAL_AMOUNT"):
        load_dataset(tmp_path)


@pytest.mark.parametrize("delim", [";", "\t", "|", ","])
def test_the_csv_delimiter_is_found_from_the_header(tmp_path, delim):
    import csv
    import io
    _png(tmp_path / "a.png")
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delim, lineterminator="\n")
    w.writerow(["image_file", "DOCUMENT_TYPE", "SUPPLIER_NAME", "TOTAL_AMOUNT"])
    w.writerow(["a.png", "RECEIPT", "Foo, Bar; Baz | Qux\tQuux", "$1,234.00"])
    (tmp_path / "ground_truth.csv").write_text(buf.getvalue())
    (doc,) = load_dataset(tmp_path).documents
    assert doc.ground_truth == {"DOCUMENT_TYPE": "RECEIPT", "SUPPLIER_NAME": "Foo, Bar; Baz | Qux\tQuux",
                                "TOTAL_AMOUNT": "$1,234.00"}


def test_no_file_column_says_how_the_header_was_read(tmp_path):
    _png(tmp_path / "a.png")
    with pytest.raises(DatasetError, match="no file column.*delimiter"):
        load_dataset(_gt(tmp_path, ["a.png:RECEIPT"], header="image_file:DOCUMENT_TYPE"))


def test_cells_migbench_neutralised_read_back_as_written(tmp_path):
    from migbench.csvsafe import SafeDictWriter

    _png(tmp_path / "a.png")
    with (tmp_path / "ground_truth.csv").open("w", newline="") as fh:
        w = SafeDictWriter(fh, ["image_file", "DOCUMENT_TYPE", "SUPPLIER_NAME", "TOTAL_AMOUNT"])
        w.writeheader()
        w.writerow({"image_file": "a.png", "DOCUMENT_TYPE": "RECEIPT", "SUPPLIER_NAME": "=HYPERLINK(\"x\")",
                    "TOTAL_AMOUNT": "-12.50"})
    assert "'=HYPERLINK" in (tmp_path / "ground_truth.csv").read_text()
    doc = load_dataset(tmp_path).documents[0]
    assert doc.ground_truth["SUPPLIER_NAME"] == '=HYPERLINK("x")' and doc.ground_truth["TOTAL_AMOUNT"] == "-12.50"


# --- only regular files inside the folder are listed or read ---------------------------------------

def _load_within(seconds, *args, **kw):
    """load_dataset in a thread that must finish in time (a blocked open() would hang the test)."""
    import threading
    out = {}

    def target():
        try:
            out["ds"] = load_dataset(*args, **kw)
        except Exception as exc:  # noqa: BLE001 - handed to the test
            out["exc"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    return t.is_alive(), out


def _unblock(fifo: Path) -> None:
    import contextlib
    import os
    with contextlib.suppress(OSError):  # a reader blocked in open() is released by a writer
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_is_a_problem_with_its_cause_and_is_never_opened(tmp_path):
    import os
    _png(tmp_path / "a.png")
    os.mkfifo(tmp_path / "pipe.png")
    os.mkfifo(tmp_path / "orphan.png")  # in the folder without a row: not listed, not opened
    _gt(tmp_path, ["pipe.png,RECEIPT,$1", "a.png,RECEIPT,$2"])
    hung, out = _load_within(10, tmp_path)
    _unblock(tmp_path / "pipe.png")
    _unblock(tmp_path / "orphan.png")
    assert not hung, "load_dataset blocked on a FIFO"
    ds = out["ds"]
    assert [d.doc_id for d in ds.documents] == ["a.png"]
    (problem,) = ds.problems
    assert problem.doc_id == "pipe.png" and "FIFO" in problem.message and "not a regular file" in problem.message


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_as_ground_truth_is_one_clear_error(tmp_path):
    import os
    os.mkfifo(tmp_path / "ground_truth.csv")
    hung, out = _load_within(10, tmp_path)
    _unblock(tmp_path / "ground_truth.csv")
    assert not hung
    assert isinstance(out["exc"], DatasetError) and "not a regular file" in str(out["exc"])


def test_a_symlinked_images_folder_outside_the_dataset_is_never_listed_or_read(tmp_path):
    import os
    outside = tmp_path / "outside"
    _png(outside / "secret.png")
    os.mkfifo(outside / "trap.png")  # read it and the test hangs
    root = tmp_path / "ds"
    _png(root / "a.png")
    os.symlink(outside, root / "images")
    os.symlink(outside / "secret.png", root / "b.png")
    _gt(root, ["a.png,RECEIPT,$1", "trap.png,RECEIPT,$1", "images/secret.png,RECEIPT,$1", "b.png,RECEIPT,$1"])
    hung, out = _load_within(10, root)
    _unblock(outside / "trap.png")
    assert not hung
    ds = out["ds"]
    assert [d.doc_id for d in ds.documents] == ["a.png"]
    msgs = {p.doc_id: p.message for p in ds.problems}
    assert set(msgs) == {"trap.png", "images/secret.png", "b.png"}
    assert all("escapes the dataset folder" in m for m in msgs.values())
    assert not any("secret" in p.doc_id and "no ground truth row" in p.message for p in ds.problems)
