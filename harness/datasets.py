"""Load a folder of documents plus ground truth in the incumbent's format.

ground_truth.csv or .jsonl; file column `image_file` or `filename`; one column per field;
`NOT_FOUND` = the document has no such value; an EMPTY cell = not annotated (not scored);
lists joined with " | ". The CSV delimiter may be `,`, `;`, tab or `|` (found from the header).

One file is one document, however the ground truth spells its name (`a.png`, `./a.png`,
`images/a.png`, `x/../a.png`, another letter case where the filesystem says it is the same file,
a symlink to it): later rows naming the same file are duplicates. Only regular files inside the
dataset folder are listed or read (a FIFO or device is never opened: opening one blocks).

Problems that concern one row or file (missing file, malformed or duplicate row, path outside
the folder, a file that is not a regular file, a file without a row) are kept as DatasetProblems
so the runner records each as a failed entry with its cause; a problem's id is never a
document's id. Problems that make the whole set meaningless (no ground truth, unknown or
duplicated field column, undecodable file) raise DatasetError.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from migbench.contracts import Document, InputError
from migbench.csvsafe import restore_cell
from migbench.fixtures import fixtures_dir
from migbench.ground_truth import shipped_ground_truth
from migbench.schema import Schema, load_schema

FILE_COLUMNS = ("image_file", "filename", "file")
META_COLUMNS = {"DOCUMENT_TYPE", "TIER"}
DOC_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".pdf", ".gif", ".bmp"}
GT_NAMES = ("ground_truth.csv", "ground_truth.jsonl")
DELIMITERS = (",", ";", "\t", "|")
_CHUNK = 1 << 20


class DatasetError(InputError):
    """The dataset as a whole cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class DatasetProblem:
    doc_id: str  # the id its failed row is stored under: never a document's id
    message: str


def distinct_problem_ids(documents: Iterable[Document], problems: Iterable[DatasetProblem]) -> list[DatasetProblem]:
    """The problems, renamed where an id is a document's or an earlier problem's.

    The runner stores each problem as a failed row keyed by its id and skips ids already stored:
    a problem sharing a document's id would overwrite that document's result, or make the run
    skip the document (or itself) for good. Renaming is deterministic, so resumes agree."""
    taken = {d.doc_id for d in documents}
    out: list[DatasetProblem] = []
    for p in problems:
        pid, n = p.doc_id, 2
        while pid in taken:
            pid, n = f"{p.doc_id} (problem {n})", n + 1
        taken.add(pid)
        out.append(p if pid == p.doc_id else DatasetProblem(pid, p.message))
    return out


@dataclass
class Dataset:
    root: Path
    ground_truth_file: Path
    documents: list[Document]
    problems: list[DatasetProblem] = field(default_factory=list)
    hash: str = ""

    def __post_init__(self) -> None:
        self.problems = distinct_problem_ids(self.documents, self.problems)

    @property
    def doc_types(self) -> list[str]:
        return sorted({d.doc_type for d in self.documents})

    def __len__(self) -> int:
        return len(self.documents)


def find_ground_truth(root: Path) -> Path:
    """The folder's own ground_truth.csv/.jsonl; for a set shipped with migbench, its file in
    migbench.ground_truth (the truth lives there, the documents under migbench.fixtures)."""
    for name in GT_NAMES:
        p = root / name
        if p.is_file():
            return p
        if os.path.lexists(p):
            try:
                kind = file_kind(os.stat(p).st_mode)
            except OSError as exc:
                kind = f"unreadable ({exc.strerror or exc})"
            raise DatasetError(f"{p}: {kind}, not a regular file; the ground truth must be a regular file")
    shipped = shipped_ground_truth(root.name)
    if shipped is not None and root.resolve() == (fixtures_dir() / root.name).resolve():
        return shipped
    raise DatasetError(f"{root}: no ground_truth.csv or ground_truth.jsonl found")


def _decode(path: Path, encoding: str | None) -> str:
    data = read_regular(path)
    try:
        return data.decode(encoding or "utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{path.name}: not valid {encoding or 'UTF-8'} (byte {exc.start}: {data[exc.start:exc.start + 1]!r}); "
            "re-save it as UTF-8 or pass --gt-encoding (e.g. cp1252)"
        ) from None


# ------------------------------------------------------------------------------ regular files only
class NotRegularFile(OSError):
    """A FIFO, device, socket or folder where a document file was expected."""


_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))


def file_kind(mode: int) -> str:
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return "not a regular file"


def open_regular(path: Path) -> int:
    """A read-only descriptor for a regular file, checked without blocking.

    stat() first, so a FIFO or device is refused without being opened (opening a FIFO blocks
    until a writer appears); then open with O_NONBLOCK and check the descriptor again, in case
    the path was swapped in between. Raises NotRegularFile or OSError."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise NotRegularFile(f"{path.name}: {file_kind(mode)}, not a regular file; only regular files are read")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(f"{path.name}: {file_kind(mode)}, not a regular file; only regular files are read")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: Path) -> bytes:
    """The bytes of a regular file (see open_regular)."""
    with os.fdopen(open_regular(path), "rb") as fh:
        return fh.read()


def _sha256_regular(path: Path) -> str:
    h = hashlib.sha256()
    with os.fdopen(open_regular(path), "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------------ ground truth rows
def _known_columns(schema: Schema) -> set[str]:
    return {*schema.fields, *META_COLUMNS, *(c.upper() for c in FILE_COLUMNS)}


def csv_delimiter(header_line: str, schema: Schema | None = None) -> str:
    """The delimiter of a ground-truth CSV: the one of , ; tab | that splits its header into the
    most known columns (a file column or a field); csv.Sniffer, restricted to those four, when
    no delimiter finds one; else a comma."""
    known = _known_columns(schema or load_schema())
    best, best_score = ",", 0
    for d in DELIMITERS:
        try:
            cells = next(csv.reader([header_line], delimiter=d), [])
        except csv.Error:
            continue
        score = sum(c.strip().upper() in known for c in cells)
        if score > best_score:
            best, best_score = d, score
    if best_score:
        return best
    try:
        return csv.Sniffer().sniff(header_line, delimiters="".join(DELIMITERS)).delimiter
    except csv.Error:
        return ","


def _duplicated(columns: Iterable[str]) -> list[str]:
    """Column names that name one column twice: the same name, or the same in another case."""
    groups: dict[str, list[str]] = {}
    for c in columns:
        groups.setdefault(c.strip().upper(), []).append(c)
    return [" and ".join(repr(n) for n in names) for names in groups.values() if len(names) > 1]


def _refuse_duplicates(columns: list[str], where: str) -> None:
    dups = _duplicated(columns)
    if dups:
        raise DatasetError(f"{where}: duplicated column(s) {'; '.join(dups)}: each column must appear once "
                           "(which one is right cannot be guessed)")


def _jsonl_object(pairs: list[tuple[str, object]]) -> dict[str, object]:
    _refuse_duplicates([str(k) for k, _ in pairs], "")  # message completed by the caller
    return dict(pairs)


def _read_rows(path: Path, encoding: str | None,
               schema: Schema | None = None) -> tuple[list[tuple[int, dict[str, str]]], list[str], str]:
    """Rows (with their line numbers) as {column: raw string}; malformed rows as messages; the
    CSV delimiter (empty for JSONL)."""
    text = _decode(path, encoding)
    rows: list[tuple[int, dict[str, str]]] = []
    bad: list[str] = []
    if path.suffix == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line, object_pairs_hook=_jsonl_object)
                if not isinstance(obj, dict):
                    raise ValueError("not an object")  # noqa: TRY004 - reported as a bad row, like bad JSON
            except DatasetError as exc:
                raise DatasetError(f"{path.name}: line {n}{exc}") from None
            except ValueError as exc:
                bad.append(f"line {n}: not a JSON object ({exc})")
                continue
            rows.append((n, {str(k): _jsonl_value(v) for k, v in obj.items()}))
        return rows, bad, ""
    delimiter = csv_delimiter(text.split("\n", 1)[0], schema)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise DatasetError(f"{path.name}: empty ground truth file") from None
    except csv.Error as exc:
        raise DatasetError(f"{path.name}: unreadable CSV header ({exc})") from None
    _refuse_duplicates(header, path.name)
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
        # migbench writes cells a spreadsheet would run with a leading quote (migbench.csvsafe)
        rows.append((reader.line_num, dict(zip(header, (restore_cell(v) for v in values)))))
    return rows, bad, delimiter


def _jsonl_value(v: object) -> str:
    if v is None:
        return "NOT_FOUND"
    if isinstance(v, list):
        return " | ".join(str(x) for x in v)
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _file_column(columns: list[str], gt: Path, delimiter: str) -> str:
    for c in FILE_COLUMNS:
        if c in columns:
            return c
    how = f", header read with delimiter {delimiter!r} as {columns[:4]}" if delimiter else ""
    raise DatasetError(f"{gt.name}: no file column (expected one of {', '.join(FILE_COLUMNS)}{how})")


# ------------------------------------------------------------------------------ files
def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def _resolve(root: Path, name: str) -> Path | None:
    """The document's real path (symlinks, `.` and `..` resolved) inside the dataset folder or
    its images/ subfolder; None if it resolves outside the folder."""
    rel = Path(name)
    if rel.is_absolute() or rel.drive:
        return None
    real_root = root.resolve()
    first: Path | None = None
    for base in (root, root / "images"):
        cand = (base / rel).resolve()
        if not _inside(cand, real_root):
            return None
        if os.path.lexists(cand):
            return cand
        first = first or cand
    return first


def _values(row: dict[str, str], file_col: str) -> dict[str, str]:
    return {k.upper(): v.strip() for k, v in row.items() if k != file_col}


def _identity(path: Path) -> tuple:
    """What makes two paths one file: device and inode when it exists (this also catches another
    letter case on a case-insensitive filesystem, and hard links), else the resolved path."""
    try:
        st = os.stat(path)
    except OSError:
        return ("path", os.path.normcase(str(path)))
    return ("inode", st.st_dev, st.st_ino)


def _listed_files(root: Path) -> dict[tuple, str]:
    """identity -> name (relative to root) of each document-like regular file in the folder or
    images/, never one that resolves outside the folder (a symlinked images/ included)."""
    real_root = root.resolve()
    out: dict[tuple, str] = {}
    for base in (root, root / "images"):
        if not base.is_dir() or not _inside(base.resolve(), real_root):
            continue
        for p in sorted(base.iterdir()):
            if p.suffix.lower() not in DOC_EXTENSIONS:
                continue
            real = p.resolve()
            try:
                regular = _inside(real, real_root) and stat.S_ISREG(os.stat(real).st_mode)
            except OSError:
                continue
            if regular:
                out.setdefault(_identity(real), p.relative_to(root).as_posix())
    return out


def load_dataset(root: str | Path, *, ground_truth: str | Path | None = None, doc_type: str | None = None,
                 schema: Schema | None = None, encoding: str | None = None) -> Dataset:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    schema = schema or load_schema()
    gt_path = Path(ground_truth) if ground_truth else find_ground_truth(root)
    try:
        rows, bad, delimiter = _read_rows(gt_path, encoding, schema)
    except NotRegularFile as exc:
        raise DatasetError(str(exc)) from None
    except OSError as exc:
        raise DatasetError(f"{gt_path}: cannot read ({exc.strerror or exc})") from None
    gt_name = gt_path.name
    problems = [DatasetProblem(f"{gt_name}:{m.split(':')[0]}", m) for m in bad]
    if not rows:
        raise DatasetError(f"{gt_name}: no usable rows")

    columns = list(dict.fromkeys(c for _, r in rows for c in r))
    file_col = _file_column(columns, gt_path, delimiter)
    known = set(schema.fields) | META_COLUMNS | set(FILE_COLUMNS)
    unknown = [c for c in columns if c.upper() not in known and c not in known]
    if unknown:
        raise DatasetError(
            f"{gt_name}: unknown field column(s) {unknown}; known fields: {', '.join(schema.fields)}"
        )

    docs: list[Document] = []
    first_row: dict[tuple, tuple[int, str, dict[str, str]]] = {}  # identity -> (line, name, row)
    repeats: dict[tuple, list[tuple[int, str, dict[str, str]]]] = {}
    hasher = hashlib.sha256()
    for line, row in rows:
        name = (row.get(file_col) or "").strip()
        if not name:
            problems.append(DatasetProblem(f"{gt_name}:line {line}", f"line {line}: empty {file_col}"))
            continue
        try:
            path = _resolve(root, name)
        except (OSError, ValueError, RuntimeError) as exc:  # NUL in the name, symlink loop, ...
            problems.append(DatasetProblem(f"{gt_name}:line {line}", f"line {line}: unusable path {name!r} ({exc})"))
            continue
        if path is None:
            problems.append(DatasetProblem(name, f"line {line}: path {name!r} escapes the dataset folder"))
            continue
        ident = _identity(path)
        if ident in first_row:
            repeats.setdefault(ident, []).append((line, name, row))
            continue
        first_row[ident] = (line, name, row)
        try:
            mode = os.stat(path).st_mode
        except OSError:
            mode = None  # missing: stays a document, the runner records "file not found"
        if mode is not None and not stat.S_ISREG(mode):
            problems.append(DatasetProblem(
                name, f"line {line}: {name!r} is {file_kind(mode)}, not a regular file; it is not read"))
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
            digest = _sha256_regular(path)
        except OSError:
            digest = "missing"  # recorded as a failed document by the runner when it loads the file
        hasher.update(json.dumps([name, digest, gt, dt, tier], sort_keys=True).encode())
        docs.append(Document(doc_id=name, path=path, doc_type=dt, ground_truth=gt, tier=tier))

    for ident, dups in repeats.items():
        line, name, row = first_row[ident]
        lines = ", ".join(str(n) for n, _, _ in dups)
        spelled = sorted({n for _, n, _ in dups} - {name})
        kept_values = _values(row, file_col)
        differ = any(_values(r, file_col) != kept_values for _, _, r in dups)
        problems.append(DatasetProblem(
            f"{gt_name}:line {dups[0][0]}",
            f"line{'s' if len(dups) > 1 else ''} {lines}: duplicate row{'s' if len(dups) > 1 else ''} for the file "
            f"of line {line} ({name!r}{', also written ' + ', '.join(map(repr, spelled)) if spelled else ''})"
            f"{' with different values' if differ else ''}; line {line} kept"))

    for ident, fname in _listed_files(root).items():
        if ident not in first_row:
            problems.append(DatasetProblem(fname, f"{fname}: document has no ground truth row"))
    return Dataset(root=root, ground_truth_file=gt_path, documents=docs, problems=problems,
                   hash=hasher.hexdigest()[:16])
