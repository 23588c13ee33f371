"""Write a run's predictions in the ground truth's own format, with per-field scores beside.

Every CSV cell goes through migbench.csvsafe: text a spreadsheet would run as a formula gets a
leading single quote (model output and file names are untrusted).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from migbench.csvsafe import SafeDictWriter, SafeWriter
from migbench.datasets import FILE_COLUMNS, csv_delimiter, find_ground_truth
from migbench.schema import Schema, load_schema


def _gt_layout(dataset_path: str | None, docs: Iterable[Any], schema: Schema) -> tuple[str, list[str], str]:
    """The file column, field columns (in the ground truth's order) and CSV delimiter."""
    try:
        gt = find_ground_truth(Path(dataset_path or ""))
        if gt.suffix == ".csv":
            with gt.open(encoding="utf-8-sig", errors="replace", newline="") as fh:
                first = fh.readline()
            delimiter = csv_delimiter(first, schema)
            header = [c.strip() for c in next(csv.reader([first], delimiter=delimiter))]
            file_col = next((c for c in header if c in FILE_COLUMNS), "image_file")
            fields = [c for c in header if c.upper() in schema.fields]
            return file_col, fields, delimiter
    except (ValueError, OSError, StopIteration, csv.Error):
        pass
    fields = list(dict.fromkeys(f for d in docs for f in d.ground_truth))
    return "image_file", fields or list(schema.fields), ","


def _note(d: Any) -> str:
    """What a reader of the scores must know about the stored raw text."""
    extra = d.response.extra or {}
    if extra.get("raw_text_truncated"):
        return f"raw text truncated (model answered {extra.get('raw_text_chars', '?')} characters)"
    return ""


def export_run(run: Any, docs: Iterable[Any], out: Path, schema: Schema | None = None) -> tuple[Path, Path]:
    """Write the predictions file and its scores beside, one document at a time (any run size).

    `docs` is read once, unless the dataset's ground truth file is gone: then the field columns
    come from the stored ground truth and `docs` must be iterable twice (a list, or
    `RunStore.stream_documents`)."""
    schema = schema or load_schema()
    file_col, fields, delimiter = _gt_layout(run.dataset_path, docs, schema)
    out.parent.mkdir(parents=True, exist_ok=True)
    scores_path = out.with_name(out.stem + ".scores.csv")
    as_jsonl = out.suffix == ".jsonl"
    with out.open("w", encoding="utf-8", newline=None if as_jsonl else "") as fh, \
            scores_path.open("w", encoding="utf-8", newline="") as sfh:
        if not as_jsonl:
            w = SafeDictWriter(fh, fieldnames=[file_col, *fields], delimiter=delimiter)
            w.writeheader()
        sw = SafeWriter(sfh)
        sw.writerow([file_col, "doc_type", "status", "field", "expected", "predicted", "f1", "precision",
                     "recall", "hallucinated", "error", "note"])
        for d in docs:
            row = {file_col: d.doc_id}
            for f in fields:
                # A failed document has no prediction: empty cells, the scores file says why.
                row[f] = d.fields.get(f.upper(), "NOT_FOUND") if d.status == "ok" else ""
            if as_jsonl:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            else:
                w.writerow(row)
            note = _note(d)
            if d.status != "ok":
                sw.writerow([d.doc_id, d.doc_type, d.status, "", "", "", "", "", "", "",
                             f"{d.error_class}: {d.error}", note])
            for s in d.scores:
                sw.writerow([d.doc_id, d.doc_type, d.status, s.field, s.expected, s.predicted,
                             f"{s.f1:.4f}", f"{s.precision:.4f}", f"{s.recall:.4f}", int(s.hallucinated), "", note])
    return out, scores_path
