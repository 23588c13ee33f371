"""Measure the OCR baseline on a receipt dataset (a folder of receipts with ground_truth.csv, e.g. SROIE).

OCR runs once per image and is cached as JSON under /tmp (never in the repo), so the rules
in adapters/ocr_rules.py can be iterated on in seconds. Prints per-field F1 and OCR seconds
per receipt.

    .venv/bin/python bench/ocr_sroie.py                       # OCR what is not cached, score
    .venv/bin/python bench/ocr_sroie.py --show TOTAL_AMOUNT   # list the misses of one field
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from migbench.adapters.ocr_layout import OcrLine
from migbench.adapters.ocr_rules import extract
from migbench.contracts import BackendConfig
from migbench.schema import load_schema

DEFAULT_CACHE = "/tmp/migbench_ocr_sroie_cache.json"


def read_ground_truth(root: Path) -> list[dict[str, str]]:
    with open(root / "ground_truth.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def image_path(root: Path, name: str) -> Path:
    for cand in (root / "images" / name, root / name):
        if cand.exists():
            return cand
    raise FileNotFoundError(name)


def ocr_missing(root: Path, rows: list[dict[str, str]], cache_path: Path, threads: int) -> dict:
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    todo = [r["image_file"] for r in rows if r["image_file"] not in cache]
    if not todo:
        return cache
    from migbench.adapters.ocr_baseline import OCRBaseline

    backend = OCRBaseline(BackendConfig(name="ocr-baseline", options={"threads": threads}))
    backend.preflight()  # model loading is not counted in the per-receipt time
    for i, name in enumerate(todo, 1):
        data = image_path(root, name).read_bytes()
        t0 = time.perf_counter()
        lines = backend.ocr_pages([data])
        cache[name] = {"ocr_s": time.perf_counter() - t0, "lines": [ln.to_compact() for ln in lines]}
        print(f"[{i}/{len(todo)}] {name} {cache[name]['ocr_s']:.2f}s {len(lines)} lines", file=sys.stderr)
        if i % 10 == 0 or i == len(todo):
            cache_path.write_text(json.dumps(cache))
    return cache


def make_scorer(schema):
    from migbench.scoring import score_document  # the incumbent's comparators

    return lambda gt, pred: {s.field: s.f1 for s in score_document(gt, pred, schema)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True, help="folder with receipts and ground_truth.csv (SROIE layout)")
    ap.add_argument("--cache", default=DEFAULT_CACHE)
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: all cores)")
    ap.add_argument("--show", default=None, help="print the misses of this field")
    args = ap.parse_args(argv)

    root = Path(args.dataset)
    rows = read_ground_truth(root)
    cache = ocr_missing(root, rows, Path(args.cache), args.threads or 0)
    schema = load_schema()
    score = make_scorer(schema)

    per_field: dict[str, list[float]] = {}
    for row in rows:
        name = row["image_file"]
        gt = {k: v for k, v in row.items() if k != "image_file" and k in schema.fields}
        doc_type = schema.doc_type_from_label(gt.get("DOCUMENT_TYPE", "receipt")) or "receipt"
        lines = [OcrLine.from_compact(r) for r in cache[name]["lines"]]
        pred = extract(lines, doc_type, schema)
        for f, s in score(gt, pred).items():
            per_field.setdefault(f, []).append(s)
            if f == args.show and s < 1:
                print(f"{name}  f1={s:.2f}  gt={gt[f]!r}  pred={pred.get(f)!r}")

    ocr_s = [cache[r["image_file"]]["ocr_s"] for r in rows]
    print("scorer: migbench.scoring (incumbent comparators)")
    print(f"documents: {len(rows)}  OCR mean {sum(ocr_s) / len(ocr_s):.2f} s/receipt "
          f"(cached pass; threads={args.threads or 'all'})")
    for f, vals in per_field.items():
        print(f"{f:20s} F1 {sum(vals) / len(vals):.3f}  (n={len(vals)})")
    allv = [sum(v[i] for v in per_field.values()) / len(per_field) for i in range(len(rows))]
    print(f"{'document mean':20s} F1 {sum(allv) / len(allv):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
