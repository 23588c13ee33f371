"""Load a folder of documents plus ground truth in the incumbent's format.

ground_truth.csv or .jsonl; file column `image_file` or `filename`; one column per field;
`NOT_FOUND` = the document has no such value; an EMPTY cell = not annotated (not scored);
lists joined with " | ". Problems that concern one document (missing file, malformed row,
path outside the folder, file without a row) are kept as DatasetProblems so the runner records
each as a failed document with its cause; problems that make the whole set meaningless
(no ground truth, unknown field column, undecodable file) raise DatasetError.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from migbench.contracts import Document, InputError
from migbench.fixtures import fixtures_dir
from migbench.ground_truth import shipped_ground_truth
from migbench.schema import Schema, load_schema

FILE_COLUMNS = ("image_file", "filename", "file")
META_COLUMNS = {"DOCUMENT_TYPE", "TIER"}
DOC_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".pdf", ".gif", ".bmp"}
GT_NAMES = ("ground_truth.csv", "ground_truth.jsonl")


class DatasetError(InputError):
    """The dataset as a whole cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class DatasetProblem:
    doc_id: str
    message: str


@dataclass
class Dataset:
    root: Path
    ground_truth_file: Path
    documents: list[Document]
    problems: list[DatasetProblem] = field(default_factory=list)
    hash: str = ""

    @property
    def doc_types(self) -> list[str]:
        return sorted({d.doc_type for d in self.documents})

    def __len__(self) -> int:
        return len(self.documents)


def find_ground_truth(root: Path) -> Path:
    """The folder's own ground_truth.csv/.jsonl; for a set shipped with migbench, its file in
    migbench.ground_truth (the truth lives there, the documents under migbench.fixtures)."""
    for name in GT_NAMES:
        if (root / name).is_file():
            return root / name
    shipped = shipped_ground_truth(root.name)
    if shipped is not None and root.resolve() == (fixtures_dir() / root.name).resolve():
        return shipped
    raise DatasetError(f"{root}: no ground_truth.csv or ground_truth.jsonl found")


def _decode(path: Path, encoding: str | None) -> str:
    data = path.read_bytes()
    try:
        return data.decode(encoding or "utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{path.name}: not valid {encoding or 'UTF-8'} (byte {exc.start}: {data[exc.start:exc.start + 1]!r}); "
            "re-save it as UTF-8 or pass --gt-encoding (e.g. cp1252)"
        ) from None


def _read_rows(path: Path, encoding: str | None) -> tuple[list[tuple[int, dict[str, str]]], list[str]]:
    """Rows (with their line numbers) as {column: raw string}; malformed rows as messages."""
    text = _decode(path, encoding)
    rows: list[tuple[int, dict[str, str]]] = []
    bad: list[str] = []
    if path.suffix == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError("not an object")  # noqa: TRY004 - reported as a bad row, like bad JSON
            except ValueError as exc:
                bad.append(f"line {n}: not a JSON object ({exc})")
                continue
            rows.append((n, {str(k): _jsonl_value(v) for k, v in obj.items()}))
        return rows, bad
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise DatasetError(f"{path.name}: empty ground truth file") from None
    except csv.Error as exc:
        raise DatasetError(f"{path.name}: unreadable CSV header ({exc})") from None
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            bad.append(f"line {reader.line_num}: malformed CSV ({exc})")
            continue
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            bad.append(f"line {reader.line_num}: {len(values)} cells for {len(header)} columns")
            continue
        rows.append((reader.line_num, dict(zip(header, values))))
    return rows, bad


def _jsonl_value(v: object) -> str:
    if v is None:
        return "NOT_FOUND"
    if isinstance(v, list):
        return " | ".join(str(x) for x in v)
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _file_column(columns: list[str], gt: Path) -> str:
    for c in FILE_COLUMNS:
        if c in columns:
            return c
    raise DatasetError(f"{gt.name}: no file column (expected one of {', '.join(FILE_COLUMNS)})")


def _resolve(root: Path, name: str) -> Path | None:
    """The document's path inside the dataset folder; None if the name escapes it."""
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts:
        return None
    for base in (root, root / "images"):
        cand = (base / rel).resolve()
        if not cand.is_relative_to(root.resolve()):
            return None
        if cand.exists():
            return cand
    return (root / rel).resolve()


def _listed_files(root: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for base in (root, root / "images"):
        if base.is_dir():
            for p in sorted(base.iterdir()):
                if p.is_file() and p.suffix.lower() in DOC_EXTENSIONS:
                    out.setdefault(p.name, p)
    return out


def load_dataset(root: str | Path, *, ground_truth: str | Path | None = None, doc_type: str | None = None,
                 schema: Schema | None = None, encoding: str | None = None) -> Dataset:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    schema = schema or load_schema()
    gt_path = Path(ground_truth) if ground_truth else find_ground_truth(root)
    rows, bad = _read_rows(gt_path, encoding)
    problems = [DatasetProblem(f"{gt_path.name}:{m.split(':')[0]}", m) for m in bad]
    if not rows:
        raise DatasetError(f"{gt_path.name}: no usable rows")

    columns = list(dict.fromkeys(c for _, r in rows for c in r))
    file_col = _file_column(columns, gt_path)
    known = set(schema.fields) | META_COLUMNS | set(FILE_COLUMNS)
    unknown = [c for c in columns if c.upper() not in known and c not in known]
    if unknown:
        raise DatasetError(
            f"{gt_path.name}: unknown field column(s) {unknown}; known fields: {', '.join(schema.fields)}"
        )

    docs: list[Document] = []
    seen: set[str] = set()
    hasher = hashlib.sha256()
    for line, row in rows:
        name = (row.get(file_col) or "").strip()
        if not name:
            problems.append(DatasetProblem(f"{gt_path.name}:line {line}", f"line {line}: empty {file_col}"))
            continue
        if name in seen:
            problems.append(DatasetProblem(name, f"line {line}: duplicate row for {name!r} (first kept)"))
            continue
        seen.add(name)
        path = _resolve(root, name)
        if path is None:
            problems.append(DatasetProblem(name, f"line {line}: path {name!r} escapes the dataset folder"))
            continue
        label = (row.get("DOCUMENT_TYPE") or "").strip()
        dt = schema.doc_type_from_label(label) if label else doc_type
        if dt is None:
            problems.append(DatasetProblem(
                name, f"line {line}: unknown DOCUMENT_TYPE {label!r} (known: {', '.join(schema.document_types)})"))
            continue
        gt = {c.upper(): v.strip() for c, v in row.items()
              if c.upper() in schema.fields and v is not None and v.strip() != ""}
        tier = (row.get("TIER") or row.get("tier") or "").strip() or "unknown"
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            digest = "missing"  # recorded as a failed document by the runner when it loads the file
        hasher.update(json.dumps([name, digest, gt, dt, tier], sort_keys=True).encode())
        docs.append(Document(doc_id=name, path=path, doc_type=dt, ground_truth=gt, tier=tier))

    for fname in _listed_files(root):
        if fname not in seen:
            problems.append(DatasetProblem(fname, f"{fname}: document has no ground truth row"))
    return Dataset(root=root, ground_truth_file=gt_path, documents=docs, problems=problems,
                   hash=hasher.hexdigest()[:16])
