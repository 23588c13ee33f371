"""Reading a run without holding it: chunked document reads, lean rows for the report, streamed exports.

The figures and bytes must not change: exports are pinned to the bytes the pre-streaming code wrote
for the same run, and the report rendered from lean rows is compared with the one rendered from full rows.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from migbench import report as report_mod
from migbench.cli import main as cli_main
from migbench.contracts import DocResult, ErrorClass, FieldScore, Response
from migbench.store import RunMeta, RunStore

from tests.harness.test_report import build_store

GT = {"TOTAL_AMOUNT": "$12.50", "SUPPLIER_NAME": "Café Ünïcode", "GST_AMOUNT": "NOT_FOUND"}
PREDICTIONS = [  # hostile cells (a formula, quotes, a newline), unicode, a failed document, a truncated answer
    ({"TOTAL_AMOUNT": "$12.50", "SUPPLIER_NAME": "=HYPERLINK(\"x\")", "GST_AMOUNT": "$1.14"}, "ok"),
    ({"TOTAL_AMOUNT": "12.5", "SUPPLIER_NAME": "Café Ünïcode", "GST_AMOUNT": "NOT_FOUND"}, "ok"),
    ({}, "failed"),
    ({"TOTAL_AMOUNT": "$99", "SUPPLIER_NAME": "Acme, \"Pty\"\nLtd"}, "ok"),
]
# sha256 of the files the export wrote for this run before it streamed (whole run read into a list first)
BEFORE_STREAMING = {
    "pred.csv": "3bc00c464c04ef8bc76cee6fc14a3fcfd0e58555ac25382db7de99713018ea2e",
    "pred.jsonl": "a11897158c4f8f8e70693fe4f299f5bc901d7ee6408d4ecc0277412d93c68acb",
    "pred.scores.csv": "d99844cfa4aeb4efde2e9872275b5b439fac921a7e86d1e75c1df6d6fa3d76d4",
    "lmm/raw_extractions.jsonl": "b2d9fb3a6e60587ef64bd60d55bd7a33c528874340a78172a5b78506d57a9ca0",
    "lmm/cleaned_extractions.jsonl": "2004de4a20574b233d3834aaaba29a59fc19d3119a10a5860fd689cf37dbc8b3",
}


def _small_run(root: Path) -> tuple[RunStore, str]:
    store = RunStore(root)
    meta = RunMeta("nova-lite", "bedrock", "m", {}, "/data/receipts", "h", 4, "p", "kv")
    run, _ = store.open_run(meta)
    for i, (pred, status) in enumerate(PREDICTIONS):
        if status == "failed":
            resp = Response(attempts=3, error_class=ErrorClass.TIMEOUT, error="read timeout")
            res = DocResult(f"doc{i}.png", "receipt", "clean", "failed", resp, error_class="timeout",
                            error="read timeout")
        else:
            scores = [FieldScore(f, GT[f], pred.get(f, "NOT_FOUND"), 1.0 if GT[f] == pred.get(f) else 0.0, 1.0, 0.5,
                                 hallucinated=GT[f] == "NOT_FOUND" and pred.get(f, "NOT_FOUND") != "NOT_FOUND")
                      for f in GT]
            resp = Response(text=f"answer {i}: " + json.dumps(pred, ensure_ascii=False), latency_s=0.25 * (i + 1),
                            extra={"raw_text_truncated": True, "raw_text_chars": 9000} if i == 3 else {})
            res = DocResult(f"doc{i}.png", "receipt", "clean", "ok", resp, pred, scores, sum(s.f1 for s in scores) / 3)
        store.save_result(run, res, GT)
    return store, run


def test_documents_are_read_in_chunks_in_doc_id_order_and_writes_between_chunks_are_safe(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    run, _ = store.open_run(RunMeta("b", "f", "m", {}, "/d", "h", 10, "p", "kv"))
    for i in reversed(range(10)):
        store.save_result(run, DocResult(f"d{i}", "receipt", "clean", "ok", Response(text=f"t{i}"), doc_f1=0.5), {})
    seen = []
    for d in store.iter_documents(run, chunk=3):
        seen.append(d.doc_id)
        store.update_scores(run, d.doc_id, {"TOTAL_AMOUNT": "$1"}, [], 1.0)  # as rescore does, mid-read
    assert seen == [f"d{i}" for i in range(10)]
    assert [d.doc_f1 for d in store.documents(run)] == [1.0] * 10
    assert list(store.stream_documents(run)) == list(store.stream_documents(run)) == store.documents(run)


def test_lean_rows_are_the_stored_rows_without_raw_text_which_is_fetched_on_demand(tmp_path: Path) -> None:
    store, run = _small_run(tmp_path)
    full, lean = store.documents(run), store.documents(run, raw_text=False)
    assert all(d.response.text == "" for d in lean) and any(d.response.text for d in full)
    texts = store.raw_texts(run, [d.doc_id for d in full])
    for d in full:
        assert texts[d.doc_id] == d.response.text
        d.response.text = ""
    assert lean == full
    # the same repeated value is one object across rows
    assert lean[0].scores[2].expected is lean[1].scores[2].expected is lean[1].ground_truth["GST_AMOUNT"]


def test_lean_rows_keep_values_that_are_not_text(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    run, _ = store.open_run(RunMeta("b", "f", "m", {}, "/d", "h", 1, "p", "kv"))
    fields = {"LINE_ITEM_PRICES": ["$1", "$2"], "PAYER": {"name": "A"}}  # as an imported JSON file may hold
    store.save_result(run, DocResult("d", "receipt", "clean", "ok", Response(text="t"), fields, doc_f1=1.0), {})
    assert store.documents(run, raw_text=False)[0].fields == fields


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "lmm-poc"])
def test_export_writes_the_same_bytes_as_before_it_streamed(tmp_path: Path, fmt: str) -> None:
    store, _ = _small_run(tmp_path / "results")
    store.close()
    out = tmp_path / ("lmm" if fmt == "lmm-poc" else f"pred.{fmt}")
    argv = ["export", "latest", "--results", str(tmp_path / "results"), "--out", str(out)]
    assert cli_main([*argv, "--format", "lmm-poc"] if fmt == "lmm-poc" else argv) == 0
    written = {p: h for p, h in BEFORE_STREAMING.items() if p.startswith("lmm/") == (fmt == "lmm-poc")
               and not (fmt == "csv" and p == "pred.jsonl") and not (fmt == "jsonl" and p == "pred.csv")}
    assert {p: hashlib.sha256((tmp_path / p).read_bytes()).hexdigest() for p in written} == written


def test_report_from_lean_rows_is_the_report_from_full_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build_store(tmp_path / "results")
    lean_model = report_mod.generate(tmp_path / "results", tmp_path / "lean.html", top_n=3)
    lean_html = (tmp_path / "lean.html").read_text(encoding="utf-8")
    # the report as it was: every row read whole, raw answers included
    real = RunStore.iter_documents
    monkeypatch.setattr(RunStore, "iter_documents", lambda self, run_id, raw_text=True, **kw: real(self, run_id, **kw))
    monkeypatch.setattr(report_mod, "with_worst_raw_texts", lambda *a: None)
    full_model = report_mod.generate(tmp_path / "results", tmp_path / "full.html", top_n=3)
    full_html = (tmp_path / "full.html").read_text(encoding="utf-8")
    assert [v["errors"]["worst"] for v in lean_model["runs"]] == [v["errors"]["worst"] for v in full_model["runs"]]
    assert any(w["raw"] for v in lean_model["runs"] for w in v["errors"]["worst"])
    assert [v["analysis"].to_dict() for v in lean_model["runs"]] == [v["analysis"].to_dict() for v in full_model["runs"]]
    assert lean_html.replace(lean_model["generated_at"], "T") == full_html.replace(full_model["generated_at"], "T")
