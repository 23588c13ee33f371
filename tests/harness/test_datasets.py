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


@pytest.mark.skipif(not SROIE.exists(), reason="../shared/datasets/sroie_dev not present")
def test_sroie_dev_loads_126_receipts_with_images_subfolder():
    ds = load_dataset(SROIE)
    assert len(ds) == 126 and not ds.problems
    assert ds.documents[0].path.parent.name == "images"
