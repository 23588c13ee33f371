"""Write a run's predictions in the ground truth's own format, with per-field scores beside."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from migbench.datasets import FILE_COLUMNS, find_ground_truth
from migbench.schema import Schema, load_schema


def _gt_layout(dataset_path: str, docs: list[dict[str, Any]], schema: Schema) -> tuple[str, list[str]]:
    """The file column and field columns of the run's ground truth, in its order."""
    try:
        gt = find_ground_truth(Path(dataset_path))
        if gt.suffix == ".csv":
            with gt.open(encoding="utf-8-sig", errors="replace", newline="") as fh:
                header = next(csv.reader(fh))
            file_col = next((c for c in header if c in FILE_COLUMNS), "image_file")
            fields = [c for c in header if c.upper() in schema.fields]
            return file_col, fields
    except (ValueError, OSError, StopIteration):
        pass
    fields = list(dict.fromkeys(f for d in docs for f in d["ground_truth"]))
    return "image_file", fields or list(schema.fields)


def export_run(run: dict[str, Any], docs: list[dict[str, Any]], out: Path,
               schema: Schema | None = None) -> tuple[Path, Path]:
    schema = schema or load_schema()
    file_col, fields = _gt_layout(run["dataset_path"], docs, schema)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for d in docs:
        row = {file_col: d["doc_id"]}
        for f in fields:
            # A failed document has no prediction: empty cells, the scores file says why.
            row[f] = d["fields"].get(f.upper(), "NOT_FOUND") if d["status"] == "ok" else ""
        rows.append(row)
    if out.suffix == ".jsonl":
        with out.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    else:
        with out.open("w", encoding="utf-8", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=[file_col, *fields])
            w.writeheader()
            w.writerows(rows)
    scores_path = out.with_name(out.stem + ".scores.csv")
    with scores_path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([file_col, "doc_type", "status", "field", "expected", "predicted", "f1", "precision",
                    "recall", "hallucinated", "error"])
        for d in docs:
            if d["status"] != "ok":
                w.writerow([d["doc_id"], d["doc_type"], d["status"], "", "", "", "", "", "", "",
                            f"{d['error_class']}: {d['error']}"])
            for s in d["scores"]:
                w.writerow([d["doc_id"], d["doc_type"], d["status"], s.field, s.expected, s.predicted,
                            f"{s.f1:.4f}", f"{s.precision:.4f}", f"{s.recall:.4f}", int(s.hallucinated), ""])
    return out, scores_path
