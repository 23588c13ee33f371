"""The incumbent pipeline's artifacts (tmnestor/LMM_POC stages): read them into runs, write runs as them.

Its stages append one JSON record per image:
- `raw_extractions.jsonl` (stage extract): image_name, image_path, document_type, raw_response,
  processing_time, prompt_used, error;
- `cleaned_extractions.jsonl` (stage clean): the same with `extracted_data` (field -> value);
- `classifications.jsonl` (stage classify): image_name, document_type, confidence, raw_response.

`import_run` stores a run from those artifacts (or from any predictions file in the ground truth's own
format) through the same parser, scorer and store as a live run; `write_lmm_poc` writes a stored run
back in the incumbent's shapes so its own clean and evaluate stages read it unchanged.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migbench.classify import EXTRA_KEY, read_classification, run_classified
from migbench.contracts import NOT_FOUND, DocResult, Document, ErrorClass, InputError, Response
from migbench.datasets import FILE_COLUMNS, Dataset, load_dataset
from migbench.parsing import parse_output
from migbench.schema import Schema, load_schema
from migbench.scoring import document_f1, score_document
from migbench.store import RunMeta, RunStore

RAW = "raw_extractions.jsonl"
CLEANED = "cleaned_extractions.jsonl"
CLASSIFICATIONS = "classifications.jsonl"
FORMATS = ("lmm-poc", "csv", "jsonl")
NOT_IN_FILE = "not in the imported file"
IMPORTED_BACKEND = "imported"


@dataclass
class Prediction:
    """One document's prediction from an imported file."""

    name: str
    text: str | None = None  # raw model output, parsed like a live response
    fields: dict[str, str] | None = None  # already-extracted fields (cleaned / ground-truth format)
    document_type: str | None = None  # the type the source predicted or was given
    latency_s: float | None = None
    error: str | None = None


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as exc:
                raise InputError(f"{path}:{n}: not JSON ({exc.args[0]})") from None
            if not isinstance(rec, dict):
                raise InputError(f"{path}:{n}: expected one JSON object per line")
            yield rec


def _float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _record_name(rec: dict[str, Any], path: Path, n: int) -> str:
    name = rec.get("image_name") or (Path(str(rec["image_path"])).name if rec.get("image_path") else None)
    if not name:
        raise InputError(f"{path}: record {n} has no image_name or image_path")
    return str(name)


def read_lmm_poc(path: Path) -> tuple[list[Prediction], bool]:
    """(predictions, classified) from an artifacts folder or one of its JSONL files.

    A folder: raw_extractions.jsonl (the model's own text, parsed by migbench) is preferred to
    cleaned_extractions.jsonl; classifications.jsonl, when present, marks the types as predicted.
    """
    classified = False
    types: dict[str, str] = {}
    if path.is_dir():
        cls = path / CLASSIFICATIONS
        if cls.is_file():
            classified = True
            for n, rec in enumerate(_jsonl(cls), 1):
                types[_record_name(rec, cls, n)] = str(rec.get("document_type") or "")
        files = [p for p in (path / RAW, path / CLEANED) if p.is_file()]
        if not files:
            raise InputError(f"{path}: no {RAW} or {CLEANED} in this folder")
        path = files[0]
    elif not path.is_file():
        raise InputError(f"{path}: no such file")
    preds: dict[str, Prediction] = {}
    for n, rec in enumerate(_jsonl(path), 1):
        name = _record_name(rec, path, n)
        data = rec.get("extracted_data")
        raw = rec.get("raw_response")
        preds[name] = Prediction(  # append-only artifacts: a later record for an image wins
            name=name,
            text=str(raw) if raw is not None and data is None else None,
            fields={str(k).upper(): "" if v is None else str(v) for k, v in data.items()}
            if isinstance(data, dict) else None,
            document_type=types.get(name) or (str(rec["document_type"]) if rec.get("document_type") else None),
            latency_s=_float(rec.get("processing_time")),
            error=str(rec["error"]) if rec.get("error") else None,
        )
        if preds[name].text is None and preds[name].fields is None and not preds[name].error:
            preds[name].error = "the record holds neither raw_response nor extracted_data"
    return list(preds.values()), classified


def read_table(path: Path, fmt: str) -> list[Prediction]:
    """Predictions in the ground truth's own format (ground_truth/README.md): CSV or JSONL."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if fmt == "csv":
        with path.open(encoding="utf-8-sig", newline="") as fh:
            rows = list(csv.DictReader(fh))
    else:
        rows = list(_jsonl(path))
    out = []
    for n, row in enumerate(rows, 1):
        col = next((c for c in FILE_COLUMNS if row.get(c)), None) or ("image_name" if row.get("image_name") else None)
        if col is None:
            raise InputError(f"{path}: row {n} has no file column ({', '.join(FILE_COLUMNS)})")
        fields = {str(k).upper(): "" if v is None else str(v) for k, v in row.items() if k != col}
        out.append(Prediction(name=str(row[col]), fields=fields, document_type=fields.get("DOCUMENT_TYPE")))
    return out


def _match(preds: Iterable[Prediction]) -> dict[str, Prediction]:
    """Index by name, basename and stem: the incumbent keys by image name, with or without extension."""
    idx: dict[str, Prediction] = {}
    for p in preds:
        for key in (p.name, Path(p.name).name, Path(p.name).stem):
            idx.setdefault(key, p)
    return idx


def _as_text(fields: dict[str, str]) -> str:
    # Already-extracted fields go through the same parser as a model's text: one KEY: value line each.
    return "\n".join(f"{k}: {NOT_FOUND if v == '' else v}" for k, v in fields.items())


def import_document(doc: Document, pred: Prediction | None, schema: Schema, model: str,
                    classified: bool, profile: str | None) -> DocResult:
    if pred is None:
        resp = Response(attempts=0, error_class=ErrorClass.INPUT, error=NOT_IN_FILE, model_id=model)
        return DocResult(doc.doc_id, doc.doc_type, doc.tier, "failed", resp, error_class=ErrorClass.INPUT.value,
                         error=NOT_IN_FILE)
    if pred.error:
        resp = Response(latency_s=pred.latency_s, model_id=model, error_class=ErrorClass.PERMANENT,
                        error=pred.error)
        return DocResult(doc.doc_id, doc.doc_type, doc.tier, "failed", resp,
                         error_class=ErrorClass.PERMANENT.value, error=pred.error)
    doc_type, cls = doc.doc_type, None
    if classified and pred.document_type:
        # the incumbent extracted with the prompt of the type it predicted (its fallback type for an
        # answer naming none): routed and recorded as `migbench run --classify` does
        cls = read_classification(pred.document_type, schema)
        doc_type = cls.route
    text = pred.text if pred.text is not None else _as_text(pred.fields or {})
    resp = Response(text=text, latency_s=pred.latency_s, model_id=model,
                    extra={EXTRA_KEY: cls.to_dict()} if cls is not None else {})
    fields = parse_output(text, doc_type, schema)
    if cls is not None:
        fields["DOCUMENT_TYPE"] = cls.label
    scores = score_document(doc.ground_truth, fields, schema, profile, classified=classified)
    return DocResult(doc.doc_id, doc.doc_type, doc.tier, "ok", resp, fields, scores, document_f1(scores))


def import_run(path: str | Path, fmt: str, name: str, dataset: str | Path | Dataset, store: RunStore, *,
               model: str | None = None, profile: str | None = "incumbent",
               schema: Schema | None = None) -> tuple[str, dict[str, int]]:
    """Store a run from an imported file. Returns (run_id, {'ok': n, 'failed': n})."""
    from migbench.scoring_profiles import profile_for

    if fmt not in FORMATS:
        raise InputError(f"unknown import format {fmt!r}; known: {', '.join(FORMATS)}")
    schema = schema or load_schema()
    profile_name, _ = profile_for(profile)
    path = Path(path)
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, schema=schema)
    if fmt == "lmm-poc":
        preds, classified = read_lmm_poc(path)
    else:
        preds, classified = read_table(path, fmt), False
    source_files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in source_files)).hexdigest()
    model = model or "unknown"
    config = {"imported": True, "name": name, "format": fmt, "source": str(path.resolve()),
              "source_sha256": digest, "classified": classified, "scoring": profile_name}
    meta = RunMeta(backend=IMPORTED_BACKEND, family=name, model=model, config=config,
                   dataset_path=str(ds.root), dataset_hash=ds.hash, n_documents=len(ds.documents),
                   prompt_hash=digest[:12], prompt_style="imported")
    run_id, _ = store.open_run(meta, new=True)
    idx = _match(preds)
    counts = {"ok": 0, "failed": 0}
    for doc in ds.documents:
        pred = idx.get(doc.doc_id) or idx.get(Path(doc.doc_id).name) or idx.get(Path(doc.doc_id).stem)
        result = import_document(doc, pred, schema, model, classified, profile_name)
        store.save_result(run_id, result, doc.ground_truth)
        counts[result.status] += 1
    for prob in getattr(ds, "problems", []):
        resp = Response(attempts=0, error_class=ErrorClass.INPUT, error=prob.message)
        store.save_result(run_id, DocResult(prob.doc_id, "", "", "failed", resp,
                                            error_class=ErrorClass.INPUT.value, error=prob.message), {})
        counts["failed"] += 1
    store.update_run(run_id, describe={"imported": True, "name": name, "model": model, "source": str(path),
                                       "format": fmt, "classified": classified, "scoring": profile_name},
                     status="done")
    _record_profile(store, run_id, profile_name)
    return run_id, counts


def _record_profile(store: RunStore, run_id: str, profile: str) -> None:
    setter = getattr(store, "set_scoring", None)
    if setter is not None:
        setter(run_id, profile)


# ---------------------------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------------------------

def _label(doc_type: str, schema: Schema) -> str:
    spec = schema.document_types.get(doc_type)
    return spec.label if spec else (doc_type or "").upper()


def lmm_poc_records(run: Any, docs: Iterable[Any], schema: Schema | None = None
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(raw_extractions records, cleaned_extractions records) of a stored run, in the incumbent's shapes."""
    raw, cleaned = [], []
    for base, data, _ in _records(run, docs, schema):
        raw.append(base)
        cleaned.append({**base, "extracted_data": data})
    return raw, cleaned


def _records(run: Any, docs: Iterable[Any], schema: Schema | None = None
             ) -> Iterator[tuple[dict[str, Any], dict[str, Any], Any]]:
    """(raw record, cleaned extracted_data, document) per document, as the documents are read."""
    schema = schema or load_schema()
    root = Path(str(run.dataset_path or ""))
    classified = run_classified(run)
    for d in docs:
        ok = d.status == "ok"
        error = None if ok else f"{d.error_class}: {d.error}"
        label = _label(d.doc_type, schema)
        if classified and ok and d.fields.get("DOCUMENT_TYPE"):
            label = str(d.fields["DOCUMENT_TYPE"])  # the incumbent records the type it predicted
        base = {
            "image_name": Path(d.doc_id).name,
            "image_path": str(root / d.doc_id),
            "document_type": label,
            "raw_response": d.response.text or "" if ok else "",
            "processing_time": float(d.response.latency_s or 0.0),
            "prompt_used": f"migbench:{run.backend}:{run.prompt_style}",
            "error": error,
        }
        if ok and d.doc_type in schema.document_types:
            # the incumbent's cleaned record lists every field of the type, NOT_FOUND when absent
            data = {f: d.fields.get(f, NOT_FOUND) for f in schema.fields_for(d.doc_type)}
            data["DOCUMENT_TYPE"] = d.fields.get("DOCUMENT_TYPE", label)
        else:
            data = dict(d.fields) if ok else {}
        yield base, data, d


def write_lmm_poc(run: Any, docs: Iterable[Any], out_dir: str | Path,
                  schema: Schema | None = None) -> tuple[Path, Path]:
    """Write the incumbent's artifacts of a stored run, one document at a time (any run size)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = (out / RAW, out / CLEANED)
    classified = run_classified(run)

    def line(fh: Any, rec: dict[str, Any]) -> None:
        fh.write(json.dumps(rec, ensure_ascii=False) + "\n")

    with contextlib.ExitStack() as stack:
        raw_fh, cleaned_fh = (stack.enter_context(p.open("w", encoding="utf-8")) for p in paths)
        # the incumbent's classify stage output, so an import of this export is classified again
        classes_fh = stack.enter_context((out / CLASSIFICATIONS).open("w", encoding="utf-8")) if classified else None
        for base, data, d in _records(run, docs, schema):
            line(raw_fh, base)
            line(cleaned_fh, {**base, "extracted_data": data})
            if classes_fh is not None and d.status == "ok":
                answer = (d.response.extra or {}).get(EXTRA_KEY) or {}
                line(classes_fh, {"image_name": base["image_name"], "document_type": base["document_type"],
                                  "confidence": 1.0, "raw_response": answer.get("raw_text", base["document_type"])})
    return paths


# ---------------------------------------------------------------------------------------------
# `migbench import`
# ---------------------------------------------------------------------------------------------

def main(argv: list[str]) -> int:
    import argparse
    import os

    from migbench.scoring_profiles import profile_names

    p = argparse.ArgumentParser(prog="migbench import",
                                description="store a run from another system's predictions (no model is called)")
    p.add_argument("path", help="lmm-poc: artifacts folder or raw/cleaned_extractions.jsonl; csv/jsonl: a "
                                "predictions file in the ground truth's format")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--name", required=True, help="label of the imported system (e.g. internvl3.5-8b-prod)")
    p.add_argument("--dataset", required=True, help="dataset folder the predictions are for (with its ground truth)")
    p.add_argument("--model", help="model id of the imported system (recorded)")
    p.add_argument("--scoring", choices=profile_names(), default=None, help="scoring profile (default: incumbent)")
    p.add_argument("--results", default=os.environ.get("MIGBENCH_RESULTS", "results"),
                   help="results directory holding the run store (default: ./results)")
    args = p.parse_args(argv)
    from migbench.headline import headline_f1

    with RunStore(args.results) as store:
        run_id, counts = import_run(args.path, args.format, args.name, args.dataset, store, model=args.model,
                                    profile=args.scoring)
        docs = store.stream_documents(run_id, raw_text=False)
        head = headline_f1(docs, store.scoring(run_id) if hasattr(store, "scoring") else args.scoring)
    import sys

    for line in [f"imported {counts['ok']} documents ({counts['failed']} failed) as run {run_id}", *head.lines()]:
        print(line, file=sys.stderr)
    print(run_id)
    return 0
