"""The run store: one SQLite database (WAL) per results directory.

A run is identified by what determines its results (backend, model, config, dataset hash,
prompt hash), so rerunning the same command resumes the same run: documents already stored
are never redone. Each document is written in one transaction, so a kill at any moment leaves
either the whole row or nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from migbench.contracts import (
    AuditEntry,
    DocResult,
    ErrorClass,
    FieldScore,
    Response,
    RunRecord,
    UsageError,
    utc_now,
)

DB_NAME = "migbench.sqlite"
DOCUMENT_CHUNK = 1000  # rows read at a time when iterating a run's documents
# Stamped in the database header (PRAGMA application_id, ASCII "migb"): a SQLite file without it (and
# without migbench's tables) belongs to someone else and is never written to.
APPLICATION_ID = 0x6D696762
_KNOWN_TABLES = frozenset({"runs", "documents", "audit", "claims", "sqlite_sequence"})

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY, backend TEXT NOT NULL, family TEXT, model TEXT,
  config_json TEXT, dataset_path TEXT, dataset_hash TEXT, n_documents INTEGER,
  prompt_hash TEXT, prompt_style TEXT, versions_json TEXT, git_commit TEXT, host TEXT,
  describe_json TEXT, emulated INTEGER DEFAULT 0,
  started_at TEXT, finished_at TEXT, status TEXT, wall_s REAL DEFAULT 0, gating_json TEXT
);
CREATE TABLE IF NOT EXISTS documents (
  run_id TEXT NOT NULL REFERENCES runs(run_id), doc_id TEXT NOT NULL,
  doc_type TEXT, tier TEXT, status TEXT NOT NULL, ground_truth_json TEXT,
  raw_text TEXT, fields_json TEXT, scores_json TEXT, doc_f1 REAL,
  input_tokens INTEGER, output_tokens INTEGER, latency_s REAL, server_latency_ms REAL,
  attempts INTEGER, throttled INTEGER, retry_wait_s REAL, region TEXT, endpoint TEXT,
  model_id TEXT, request_id TEXT, stop_reason TEXT, error_class TEXT, error TEXT,
  cost_usd REAL, peak_memory_mb REAL, extra_json TEXT, completed_at TEXT,
  PRIMARY KEY (run_id, doc_id)
);
CREATE TABLE IF NOT EXISTS audit (
  id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, ts TEXT, backend TEXT,
  service TEXT, operation TEXT, region TEXT, host TEXT, model_id TEXT, doc_id TEXT,
  request_id TEXT, status INTEGER, attempt INTEGER, bytes_sent INTEGER, allowed INTEGER, reason TEXT
);
CREATE INDEX IF NOT EXISTS audit_run ON audit(run_id);
CREATE TABLE IF NOT EXISTS claims (
  run_id TEXT NOT NULL, doc_id TEXT NOT NULL, owner TEXT NOT NULL, pid INTEGER, host TEXT,
  heartbeat REAL NOT NULL, PRIMARY KEY (run_id, doc_id)
);
"""
# Columns added after the first release: (table, column, type). Stores written before them are
# migrated in place when opened (ALTER TABLE ADD COLUMN keeps every existing row).
ADDED_COLUMNS = (("runs", "gating_json", "TEXT"), ("runs", "scoring", "TEXT"), ("documents", "ttft_s", "REAL"),
                 ("documents", "cache_read_tokens", "INTEGER"), ("documents", "cache_write_tokens", "INTEGER"))
_RESPONSE_COLUMNS = ("input_tokens", "output_tokens", "latency_s", "server_latency_ms", "attempts", "throttled",
                     "retry_wait_s", "region", "endpoint", "model_id", "request_id", "stop_reason", "cost_usd",
                     "peak_memory_mb", "ttft_s", "cache_read_tokens", "cache_write_tokens")


OPERATIONAL_OPTIONS = frozenset({
    "concurrency", "batch_size", "read_timeout", "connect_timeout", "tokens_per_min", "requests_per_min",
    "allow_loopback", "endpoint_url", "threads", "preflight_profile", "profile",
    # Where to send and what the guard accepts: a refused request never produces a result, so a
    # rerun with another residency setting or check continues the same documents.
    "control_endpoint_url", "attempt_timeout", "accept_unverified_profile", "quota_check", "residency_file",
    "allow_destinations",
})


class StoreError(UsageError):
    pass


@dataclass
class RunMeta:
    backend: str
    family: str
    model: str
    config: dict[str, Any]
    dataset_path: str
    dataset_hash: str
    n_documents: int
    prompt_hash: str
    prompt_style: str
    versions: dict[str, str] = field(default_factory=dict)
    git_commit: str | None = None
    host: str | None = None

    def identity(self) -> str:
        # How a run is executed (parallelism, timeouts, which URL reaches the same model) does not
        # change its results, so resuming with other settings continues the same run.
        config = {k: v for k, v in self.config.items() if k not in OPERATIONAL_OPTIONS}
        key = json.dumps([self.backend, self.model, config, self.dataset_hash, self.prompt_hash],
                         sort_keys=True, default=str)
        return f"{self.backend}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def _valid_text(value: Any) -> Any:
    """SQLite stores UTF-8: a lone surrogate (possible in decoded model JSON) becomes U+FFFD."""
    if isinstance(value, str) and not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "replace").decode("utf-8")
    return value


def _statements(script: str) -> list[str]:
    """The statements of a schema script (executescript would commit; these run in one transaction)."""
    return [stmt.strip() for stmt in script.split(";") if stmt.strip()]


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc).lower() or "busy" in str(exc).lower()


def _cause(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _store_error(path: Path, exc: sqlite3.Error) -> str:
    """One line for a store failure, with what the user can do about the usual causes."""
    cause = _cause(exc)
    low = cause.lower()
    if "readonly" in low or "read-only" in low or "unable to open" in low:
        hint = ": the results folder must be writable (pass another --results)"
    elif "disk is full" in low or "disk i/o" in low:
        hint = ": free space there (documents stored so far are kept; rerun the same command to resume)"
    elif "not a database" in low or "malformed" in low:
        hint = ": not a usable migbench store (pass another --results)"
    else:
        hint = ""
    return f"results store {path}: {cause}{hint}"


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str)


class RunStore:
    def __init__(self, results_dir: str | Path, *, create: bool = True):
        """Open (or, with create, make) the store under a results folder.

        Raises StoreError with one line for every folder problem: a path that is a file, a folder that
        cannot be written, a file that is not a database or is another program's database (never
        written to), a full disk. With create=False a folder without a store is refused, so a
        mistyped --results on a command that only reads never leaves an empty store behind."""
        self.dir = Path(results_dir)
        self.path = self.dir / DB_NAME
        if self.dir.exists() and not self.dir.is_dir():
            raise StoreError(f"results folder {self.dir} is a file, not a folder")
        if not create and not self.path.is_file():
            raise StoreError(f"--results {self.dir}: no migbench run store there (no {DB_NAME}); pass the folder "
                             "`migbench run` wrote to (default ./results, or MIGBENCH_RESULTS)")
        if self.path.exists() and not self.path.is_file():
            raise StoreError(f"{self.path} is not a file")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create results folder {self.dir}: {exc.strerror or exc}") from exc
        # One connection shared under a lock: writes are serialised anyway and the
        # audit hook runs on worker threads.
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.path}: {_cause(exc)}") from exc
        self._db.row_factory = sqlite3.Row
        try:
            with self._lock:
                self._initialise()
        except StoreError:
            self._db.close()
            raise
        except sqlite3.Error as exc:
            self._db.close()
            raise StoreError(_store_error(self.path, exc)) from exc

    def _initialise(self, wait_s: float = 30.0) -> None:
        """Stamp, switch to WAL and create the schema, retrying while another process does the same.

        Switching a new file to WAL takes an exclusive lock that SQLite's busy timeout does not wait
        for, so two processes opening a fresh results folder at once would otherwise see
        "database is locked"; the schema itself is created in one immediate transaction."""
        deadline = time.monotonic() + wait_s
        delay = 0.01
        while True:
            try:
                stamped = self._check_ownership()
                if self._db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for statement in _statements(SCHEMA):
                        self._db.execute(statement)
                    if not stamped:  # a new store, or one written before the stamp
                        self._db.execute(f"PRAGMA application_id={APPLICATION_ID}")
                    self._migrate()
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    @classmethod
    def open_existing(cls, results_dir: str | Path) -> RunStore:
        """The store of a folder that must already hold one (commands that only read runs)."""
        return cls(results_dir, create=False)

    def _check_ownership(self) -> bool:
        """Refuse a database that is not migbench's before writing anything to it; True when stamped."""
        try:
            app_id = self._db.execute("PRAGMA application_id").fetchone()[0]
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a migbench store ({_cause(exc)}); it was left untouched: "
                             "pass another --results folder") from exc
        if app_id == APPLICATION_ID:
            return True
        # A store written before the application id was stamped is known by its tables; an empty
        # database (a new file) is ours to initialise.
        ours = app_id == 0 and (not tables or (tables <= _KNOWN_TABLES and "runs" in tables and {"run_id", "backend"}
                                               <= {r[1] for r in self._db.execute("PRAGMA table_info(runs)")}))
        if not ours:
            what = f"application id {app_id:#x}" if app_id else f"tables {', '.join(sorted(tables))}"
            raise StoreError(f"{self.path} is another program's SQLite database ({what}); it was left "
                             "untouched: pass another --results folder")
        return False

    def _migrate(self) -> None:
        for table, column, kind in ADDED_COLUMNS:
            have = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> RunStore:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, sql: str, params: tuple | dict = ()) -> None:
        if isinstance(params, tuple):
            params = tuple(_valid_text(p) for p in params)
        self._transaction(lambda db: db.execute(sql, params))

    def _transaction(self, body: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run body in one immediate transaction; a store failure is one StoreError naming its cause."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    out = body(self._db)
                    self._db.execute("COMMIT")
                    return out
                except BaseException:
                    # SQLite has already rolled back after some errors (a full disk); rolling back again
                    # would raise "no transaction is active" and hide the cause.
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StoreError(_store_error(self.path, exc)) from exc

    def _query(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(_store_error(self.path, exc)) from exc

    # runs ------------------------------------------------------------------
    def open_run(self, meta: RunMeta, *, new: bool = False) -> tuple[str, bool]:
        """Return (run_id, resumed). A new run is created unless the same one exists.

        Atomic, so two processes opening the same run at once both resume it, and two `--new` runs
        started in the same second get distinct ids."""
        base = meta.identity()

        def body(db: sqlite3.Connection) -> tuple[str, bool]:
            def exists(run_id: str) -> bool:
                return db.execute("SELECT 1 FROM runs WHERE run_id=?", (run_id,)).fetchone() is not None

            run_id = base
            if exists(run_id) and not new:
                db.execute("UPDATE runs SET status='running', finished_at=NULL WHERE run_id=?", (run_id,))
                return run_id, True
            if exists(run_id):
                run_id = stamped = f"{base}-{utc_now().replace(':', '').replace('-', '')[:15]}"
                n = 1
                while exists(run_id):
                    n += 1
                    run_id = f"{stamped}-{n}"
            db.execute(
                "INSERT INTO runs (run_id, backend, family, model, config_json, dataset_path, dataset_hash,"
                " n_documents, prompt_hash, prompt_style, versions_json, git_commit, host, started_at, status)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?, 'running')",
                tuple(_valid_text(p) for p in (
                    run_id, meta.backend, meta.family, meta.model, _dumps(meta.config), meta.dataset_path,
                    meta.dataset_hash, meta.n_documents, meta.prompt_hash, meta.prompt_style,
                    _dumps(meta.versions), meta.git_commit, meta.host, utc_now())),
            )
            return run_id, False

        return self._transaction(body)

    # claims: one model call per document, whatever the number of processes -------------------
    def claim(self, run_id: str, doc_id: str, claimant: Claimant, *, redo_failed: bool = False) -> bool:
        """Atomically take a document for this process: False when it is already stored (failed ones
        too, unless redo_failed) or another live process holds it. A claim of a process that died
        (SIGKILL, power loss) is taken over: its document was never stored, so nothing is lost."""

        def body(db: sqlite3.Connection) -> bool:
            row = db.execute("SELECT status FROM documents WHERE run_id=? AND doc_id=?", (run_id, doc_id)).fetchone()
            if row is not None and (row[0] == "ok" or not redo_failed):
                return False
            held = db.execute("SELECT owner, pid, host, heartbeat FROM claims WHERE run_id=? AND doc_id=?",
                              (run_id, doc_id)).fetchone()
            if held is not None and held[0] != claimant.owner and claimant.is_live(held[1], held[2], held[3]):
                return False
            db.execute("INSERT OR REPLACE INTO claims (run_id, doc_id, owner, pid, host, heartbeat)"
                       " VALUES (?,?,?,?,?,?)",
                       (run_id, doc_id, claimant.owner, claimant.pid, claimant.host, time.time()))
            return True

        return self._transaction(body)

    def heartbeat(self, claimant: Claimant) -> None:
        """Keep this process's claims fresh (a claim whose heartbeat stops is taken over)."""
        self._write("UPDATE claims SET heartbeat=? WHERE owner=?", (time.time(), claimant.owner))

    def release(self, claimant: Claimant, run_id: str | None = None, doc_id: str | None = None) -> None:
        """Give back this process's claims (one document, or all): the documents stay pending."""
        sql, params = "DELETE FROM claims WHERE owner=?", [claimant.owner]
        if run_id is not None:
            sql += " AND run_id=?"
            params.append(run_id)
        if doc_id is not None:
            sql += " AND doc_id=?"
            params.append(doc_id)
        self._write(sql, tuple(params))

    def claimed_elsewhere(self, run_id: str, claimant: Claimant) -> dict[str, int]:
        """Live claims of other processes on this run: {"pid N on HOST": documents}."""
        out: dict[str, int] = {}
        for owner, pid, host_, beat in self._query(
                "SELECT owner, pid, host, heartbeat FROM claims WHERE run_id=? AND owner<>?", (run_id, claimant.owner)):
            if claimant.is_live(pid, host_, beat):
                key = f"pid {pid} on {host_}"
                out[key] = out.get(key, 0) + 1
        return out

    def update_run(self, run_id: str, *, describe: dict[str, Any] | None = None, emulated: bool | None = None,
                   status: str | None = None, add_wall_s: float = 0.0) -> None:
        sets, params = ["wall_s = wall_s + ?"], [add_wall_s]
        if describe is not None:
            sets.append("describe_json=?")
            params.append(_dumps(describe))
        if emulated is not None:
            sets.append("emulated=?")
            params.append(int(emulated))
        if status is not None:
            sets.append("status=?")
            params.append(status)
            if status != "running":
                sets.append("finished_at=?")
                params.append(utc_now())
        self._write(f"UPDATE runs SET {', '.join(sets)} WHERE run_id=?", (*params, run_id))

    def record_gating(self, run_id: str, gating: dict[str, Any]) -> None:
        """Store the suites' verdict on a run with the thresholds it was judged with."""
        self._write("UPDATE runs SET gating_json=? WHERE run_id=?", (_dumps(gating), run_id))

    def set_scoring(self, run_id: str, profile: str) -> None:
        """Record which scoring profile the run's stored scores were computed with."""
        self._write("UPDATE runs SET scoring=? WHERE run_id=?", (profile, run_id))

    def scoring(self, run_id: str) -> str | None:
        """The scoring profile of the run's stored scores (None: scored before profiles existed)."""
        rows = self._query("SELECT scoring FROM runs WHERE run_id=?", (run_id,))
        return rows[0][0] if rows else None

    def runs(self) -> list[StoredRun]:
        return [self._run_record(r) for r in self._query("SELECT * FROM runs ORDER BY started_at, run_id")]

    def resolve(self, ref: str) -> str:
        """A run id, a unique prefix of one, or 'latest'."""
        runs = self.runs()
        if not runs:
            raise StoreError(f"no runs in {self.path}")
        if ref == "latest":
            return runs[-1].run_id
        exact = [r.run_id for r in runs if r.run_id == ref]
        if exact:
            return exact[0]
        matches = [r.run_id for r in runs if r.run_id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise StoreError(f"no run {ref!r} in {self.path}; known: {', '.join(r.run_id for r in runs)}")
        raise StoreError(f"run {ref!r} is ambiguous: {', '.join(matches)}")

    def run(self, ref: str) -> StoredRun:
        run_id = self.resolve(ref)
        return self._run_record(self._query("SELECT * FROM runs WHERE run_id=?", (run_id,))[0])

    @staticmethod
    def _run_record(row: sqlite3.Row) -> StoredRun:
        d = dict(row)
        return StoredRun(
            run_id=d["run_id"], backend=d["backend"], family=d["family"], model=d["model"],
            config=json.loads(d["config_json"] or "null") or {}, dataset_path=d["dataset_path"],
            dataset_hash=d["dataset_hash"], n_documents=d["n_documents"], prompt_hash=d["prompt_hash"],
            prompt_style=d["prompt_style"], versions=json.loads(d["versions_json"] or "null") or {},
            git_commit=d["git_commit"], host=d["host"], describe=json.loads(d["describe_json"] or "null") or {},
            emulated=bool(d["emulated"]), started_at=d["started_at"], finished_at=d["finished_at"],
            status=d["status"], wall_s=float(d["wall_s"] or 0.0),
            gating=json.loads(d.get("gating_json") or "null"))

    # documents -------------------------------------------------------------
    def done_ids(self, run_id: str, *, include_failed: bool = True) -> set[str]:
        sql = "SELECT doc_id FROM documents WHERE run_id=?" + ("" if include_failed else " AND status='ok'")
        with self._lock:  # straight from the cursor: a million ids, never a million rows besides
            try:
                return {r[0] for r in self._db.execute(sql, (run_id,))}
            except sqlite3.Error as exc:
                raise StoreError(_store_error(self.path, exc)) from exc

    def save_result(self, run_id: str, result: DocResult, ground_truth: dict[str, str] | None = None) -> None:
        """Write one document and drop its claim in the same transaction: a kill leaves either the
        stored row or a pending (claimed, reclaimable) document, never both nor neither."""
        ground_truth = result.ground_truth if ground_truth is None else ground_truth
        r = result.response
        params = tuple(_valid_text(p) for p in (
            run_id, result.doc_id, result.doc_type, result.tier, result.status, _dumps(ground_truth),
            r.text, _dumps(result.fields), _dumps([asdict(s) for s in result.scores]), result.doc_f1,
            r.input_tokens, r.output_tokens, r.latency_s, r.server_latency_ms, r.attempts, r.throttled,
            r.retry_wait_s, r.region, r.endpoint, r.model_id, r.request_id, r.stop_reason,
            result.error_class, result.error, r.cost_usd, r.peak_memory_mb, _dumps(r.extra), utc_now(),
            r.ttft_s, r.cache_read_tokens, r.cache_write_tokens))

        def body(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR REPLACE INTO documents (run_id, doc_id, doc_type, tier, status, ground_truth_json,"
                " raw_text, fields_json, scores_json, doc_f1, input_tokens, output_tokens, latency_s,"
                " server_latency_ms, attempts, throttled, retry_wait_s, region, endpoint, model_id, request_id,"
                " stop_reason, error_class, error, cost_usd, peak_memory_mb, extra_json, completed_at, ttft_s,"
                " cache_read_tokens, cache_write_tokens)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", params)
            db.execute("DELETE FROM claims WHERE run_id=? AND doc_id=?", (run_id, result.doc_id))

        self._transaction(body)

    def update_scores(self, run_id: str, doc_id: str, fields: dict[str, str], scores: list[FieldScore],
                      doc_f1: float | None) -> None:
        self._write(
            "UPDATE documents SET fields_json=?, scores_json=?, doc_f1=? WHERE run_id=? AND doc_id=?",
            (_dumps(fields), _dumps([asdict(s) for s in scores]), doc_f1, run_id, doc_id),
        )

    def documents(self, run_id: str, *, raw_text: bool = True) -> list[StoredDocument]:
        return list(self.iter_documents(run_id, raw_text=raw_text))

    def iter_documents(self, run_id: str, *, raw_text: bool = True, chunk: int = DOCUMENT_CHUNK
                       ) -> Iterator[StoredDocument]:
        """The run's documents in doc_id order, read `chunk` rows at a time, so a million-document run
        is never in memory at once (the caller may write between chunks: rescore does).

        raw_text=False leaves `response.text` empty (the analysis never reads it; `raw_texts` fetches
        the few a report shows) and shares the repeated strings and numbers of the rows, so the
        rows of a whole run can be held for its figures."""
        columns = "*" if raw_text else ", ".join(
            "NULL AS raw_text" if r[1] == "raw_text" else r[1] for r in self._query("PRAGMA table_info(documents)"))
        share = _Sharer() if not raw_text else None
        last = None
        while True:
            rows = self._query(
                f"SELECT {columns} FROM documents WHERE run_id=?" + (" AND doc_id>?" if last is not None else "")
                + " ORDER BY doc_id LIMIT ?", (run_id, last, chunk) if last is not None else (run_id, chunk))
            for row in rows:
                yield self._document(row, share)
            if len(rows) < chunk:
                return
            last = rows[-1]["doc_id"]

    def stream_documents(self, run_id: str, *, raw_text: bool = True) -> StoredDocuments:
        """The run's documents as an iterable read from the store each time it is iterated."""
        return StoredDocuments(self, run_id, raw_text)

    def raw_texts(self, run_id: str, doc_ids: list[str]) -> dict[str, str]:
        """The stored raw answers of some documents (those a report shows in full)."""
        out: dict[str, str] = {}
        for i in range(0, len(doc_ids), 500):
            part = doc_ids[i:i + 500]
            out.update((r[0], r[1] or "") for r in self._query(
                f"SELECT doc_id, raw_text FROM documents WHERE run_id=? AND doc_id IN ({','.join('?' * len(part))})",
                (run_id, *part)))
        return out

    @staticmethod
    def _document(row: sqlite3.Row, share: _Sharer | None = None) -> StoredDocument:
        d = dict(row)
        error_class = d["error_class"]
        known = {e.value for e in ErrorClass}
        hook = share.json_pairs if share is not None else None
        resp = Response(text=d["raw_text"] or "", extra=json.loads(d["extra_json"] or "{}"),
                        error=d["error"], error_class=ErrorClass(error_class) if error_class in known else None,
                        **{k: d[k] for k in _RESPONSE_COLUMNS if d[k] is not None})
        doc = StoredDocument(
            doc_id=d["doc_id"], doc_type=d["doc_type"], tier=d["tier"], status=d["status"], response=resp,
            fields=json.loads(d["fields_json"] or "{}", object_pairs_hook=hook),
            scores=[FieldScore(**s) for s in json.loads(d["scores_json"] or "[]", object_pairs_hook=hook)],
            doc_f1=d["doc_f1"], error_class=error_class, error=d["error"],
            ground_truth=json.loads(d["ground_truth_json"] or "{}", object_pairs_hook=hook), completed_at=d["completed_at"])
        if share is not None:
            share.row(doc)
        return doc

    def counts(self, run_id: str) -> dict[str, int]:
        rows = self._query("SELECT status, COUNT(*) FROM documents WHERE run_id=? GROUP BY status", (run_id,))
        return {r[0]: r[1] for r in rows}

    # audit -----------------------------------------------------------------
    def audit_sink(self, run_id: str) -> _RunAudit:
        return _RunAudit(self, run_id)

    def add_audit(self, run_id: str, e: AuditEntry) -> None:
        self._write(
            "INSERT INTO audit (run_id, ts, backend, service, operation, region, host, model_id, doc_id,"
            " request_id, status, attempt, bytes_sent, allowed, reason) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (run_id, e.ts, e.backend, e.service, e.operation, e.region, e.host, e.model_id, e.doc_id,
             e.request_id, e.status, e.attempt, e.bytes_sent, int(e.allowed), e.reason),
        )

    def audit(self, run_id: str) -> list[dict[str, Any]]:
        return list(self.iter_audit(run_id))

    def iter_audit(self, run_id: str, *, chunk: int = DOCUMENT_CHUNK) -> Iterator[dict[str, Any]]:
        """The run's audit rows in the order they were recorded, read `chunk` rows at a time: a run
        records at least one row per document, so a million-document run's log is never held at once."""
        last = 0  # AUTOINCREMENT ids start at 1
        while True:
            rows = self._query("SELECT * FROM audit WHERE run_id=? AND id>? ORDER BY id LIMIT ?",
                               (run_id, last, chunk))
            for r in rows:
                yield {**dict(r), "allowed": bool(r["allowed"])}
            if len(rows) < chunk:
                return
            last = rows[-1]["id"]


class StoredDocuments:
    """A run's documents, read in chunks from the store on each iteration (never all in memory):
    for writers that stream a run to a file, and may need to read it twice."""

    def __init__(self, store: RunStore, run_id: str, raw_text: bool = True):
        self.store, self.run_id, self.raw_text = store, run_id, raw_text

    def __iter__(self) -> Iterator[StoredDocument]:
        return self.store.iter_documents(self.run_id, raw_text=self.raw_text)


class _Sharer:
    """One copy of each repeated string and number across the rows of one read.

    A run repeats the same field names, document types, statuses, regions and values (NOT_FOUND,
    the ground truth's value again as a score's expected value, the prediction again as its
    predicted value) in every row; JSON decoding makes a new object for each occurrence. The table
    of seen values is emptied when it reaches MAX entries, so unique values never pile up in it."""

    MAX = 100_000
    LONGEST = 512

    def __init__(self) -> None:
        seen: dict[Any, Any] = {}
        limit, longest = self.MAX, self.LONGEST

        # Closures over locals: this runs for every key and value of every row read.
        def one(value: Any) -> Any:
            if value is None or value is True or value is False or value.__class__ is str and len(value) > longest:
                return value
            try:
                got = seen.get(value)
            except TypeError:  # a list or object in a stored value (an imported file's): kept as read
                return value
            if got is not None and got.__class__ is value.__class__:  # 1 == 1.0, yet not the same value
                return got
            if len(seen) >= limit:
                seen.clear()
            seen[value] = value
            return value

        def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
            return {one(k): one(v) for k, v in items}

        self.one, self.json_pairs = one, pairs

    def row(self, doc: StoredDocument) -> None:
        one = self.one
        doc.doc_type, doc.tier, doc.status, doc.error_class = (one(doc.doc_type), one(doc.tier), one(doc.status),
                                                                one(doc.error_class))
        r = doc.response
        for name in ("region", "endpoint", "model_id", "stop_reason", "input_tokens", "output_tokens", "attempts",
                     "throttled", "retry_wait_s", "cache_read_tokens", "cache_write_tokens"):
            setattr(r, name, one(getattr(r, name)))


class Claimant:
    """This process as the holder of document claims: its id, pid and host, and how long a claim
    stays valid without a heartbeat."""

    heartbeat_s: float = 10.0
    stale_after_s: float = 60.0

    def __init__(self, stale_after_s: float | None = None):
        self.pid, self.host = os.getpid(), socket.gethostname()
        self.owner = f"{self.host}:{self.pid}:{uuid.uuid4().hex[:12]}"
        if stale_after_s is not None:
            self.stale_after_s = stale_after_s

    def is_live(self, pid: int | None, host_: str | None, heartbeat: float | None) -> bool:
        """A claim holds while its heartbeat is fresh and, on this host, its process still exists."""
        if heartbeat is None or time.time() - heartbeat > self.stale_after_s:
            return False
        if host_ == self.host and pid is not None:
            return pid_alive(pid)
        return True


def pid_alive(pid: int) -> bool:
    """Whether a process exists (a zombie, killed but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2:][:1] != "Z"
    except (OSError, ValueError):
        return True


class _RunAudit:
    """The store as an AuditSink bound to one run."""

    def __init__(self, store: RunStore, run_id: str):
        self.store, self.run_id = store, run_id

    def record_audit(self, entry: AuditEntry) -> None:
        self.store.add_audit(self.run_id, entry)


# ------------------------------------------------------------------------------------ typed rows
@dataclass(eq=True)
class StoredDocument(DocResult):
    """A document row as stored: a DocResult with its ground truth and completion time."""


@dataclass(eq=True)
class StoredRun(RunRecord):
    """A run row as stored (a RunRecord)."""
