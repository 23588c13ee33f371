"""The run store: one SQLite database (WAL) per results directory.

A run is identified by what determines its results (backend, model, config, dataset hash,
prompt hash), so rerunning the same command resumes the same run: documents already stored
are never redone. Each document is written in one transaction, so a kill at any moment leaves
either the whole row or nothing.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from migbench.contracts import AuditEntry, DocResult, FieldScore, UsageError, utc_now

DB_NAME = "migbench.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY, backend TEXT NOT NULL, family TEXT, model TEXT,
  config_json TEXT, dataset_path TEXT, dataset_hash TEXT, n_documents INTEGER,
  prompt_hash TEXT, prompt_style TEXT, versions_json TEXT, git_commit TEXT, host TEXT,
  describe_json TEXT, emulated INTEGER DEFAULT 0,
  started_at TEXT, finished_at TEXT, status TEXT, wall_s REAL DEFAULT 0
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
"""


OPERATIONAL_OPTIONS = frozenset({
    "concurrency", "batch_size", "read_timeout", "connect_timeout", "tokens_per_min", "requests_per_min",
    "allow_loopback", "endpoint_url", "threads", "preflight_profile", "profile",
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


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str)


class RunStore:
    def __init__(self, results_dir: str | Path):
        self.dir = Path(results_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / DB_NAME
        # One connection shared under a lock: writes are serialised anyway and the
        # audit hook runs on worker threads.
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> RunStore:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, sql: str, params: tuple | dict = ()) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if isinstance(params, tuple):
                    params = tuple(_valid_text(p) for p in params)
                self._db.execute(sql, params)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _query(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # runs ------------------------------------------------------------------
    def open_run(self, meta: RunMeta, *, new: bool = False) -> tuple[str, bool]:
        """Return (run_id, resumed). A new run is created unless the same one exists."""
        run_id = meta.identity()
        existing = self._query("SELECT run_id FROM runs WHERE run_id=?", (run_id,))
        if existing and not new:
            self._write("UPDATE runs SET status='running', finished_at=NULL WHERE run_id=?", (run_id,))
            return run_id, True
        if existing:
            run_id = f"{run_id}-{utc_now().replace(':', '').replace('-', '')[:15]}"
        self._write(
            "INSERT INTO runs (run_id, backend, family, model, config_json, dataset_path, dataset_hash,"
            " n_documents, prompt_hash, prompt_style, versions_json, git_commit, host, started_at, status)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?, 'running')",
            (run_id, meta.backend, meta.family, meta.model, _dumps(meta.config), meta.dataset_path,
             meta.dataset_hash, meta.n_documents, meta.prompt_hash, meta.prompt_style,
             _dumps(meta.versions), meta.git_commit, meta.host, utc_now()),
        )
        return run_id, False

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

    def runs(self) -> list[dict[str, Any]]:
        return [self._run_dict(r) for r in self._query("SELECT * FROM runs ORDER BY started_at, run_id")]

    def resolve(self, ref: str) -> str:
        """A run id, a unique prefix of one, or 'latest'."""
        runs = self.runs()
        if not runs:
            raise StoreError(f"no runs in {self.path}")
        if ref == "latest":
            return runs[-1]["run_id"]
        exact = [r["run_id"] for r in runs if r["run_id"] == ref]
        if exact:
            return exact[0]
        matches = [r["run_id"] for r in runs if r["run_id"].startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise StoreError(f"no run {ref!r} in {self.path}; known: {', '.join(r['run_id'] for r in runs)}")
        raise StoreError(f"run {ref!r} is ambiguous: {', '.join(matches)}")

    def run(self, ref: str) -> dict[str, Any]:
        run_id = self.resolve(ref)
        return self._run_dict(self._query("SELECT * FROM runs WHERE run_id=?", (run_id,))[0])

    @staticmethod
    def _run_dict(row: sqlite3.Row) -> dict[str, Any]:
        d = dict(row)
        for k in ("config_json", "versions_json", "describe_json"):
            d[k[:-5]] = json.loads(d.pop(k) or "null")
        d["emulated"] = bool(d["emulated"])
        return d

    # documents -------------------------------------------------------------
    def done_ids(self, run_id: str, *, include_failed: bool = True) -> set[str]:
        sql = "SELECT doc_id FROM documents WHERE run_id=?" + ("" if include_failed else " AND status='ok'")
        return {r[0] for r in self._query(sql, (run_id,))}

    def save_result(self, run_id: str, result: DocResult, ground_truth: dict[str, str]) -> None:
        r = result.response
        self._write(
            "INSERT OR REPLACE INTO documents (run_id, doc_id, doc_type, tier, status, ground_truth_json,"
            " raw_text, fields_json, scores_json, doc_f1, input_tokens, output_tokens, latency_s,"
            " server_latency_ms, attempts, throttled, retry_wait_s, region, endpoint, model_id, request_id,"
            " stop_reason, error_class, error, cost_usd, peak_memory_mb, extra_json, completed_at)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (run_id, result.doc_id, result.doc_type, result.tier, result.status, _dumps(ground_truth),
             r.text, _dumps(result.fields), _dumps([asdict(s) for s in result.scores]), result.doc_f1,
             r.input_tokens, r.output_tokens, r.latency_s, r.server_latency_ms, r.attempts, r.throttled,
             r.retry_wait_s, r.region, r.endpoint, r.model_id, r.request_id, r.stop_reason,
             result.error_class, result.error, r.cost_usd, r.peak_memory_mb, _dumps(r.extra), utc_now()),
        )

    def update_scores(self, run_id: str, doc_id: str, fields: dict[str, str], scores: list[FieldScore],
                      doc_f1: float | None) -> None:
        self._write(
            "UPDATE documents SET fields_json=?, scores_json=?, doc_f1=? WHERE run_id=? AND doc_id=?",
            (_dumps(fields), _dumps([asdict(s) for s in scores]), doc_f1, run_id, doc_id),
        )

    def documents(self, run_id: str) -> list[dict[str, Any]]:
        return list(self.iter_documents(run_id))

    def iter_documents(self, run_id: str) -> Iterator[dict[str, Any]]:
        for row in self._query("SELECT * FROM documents WHERE run_id=? ORDER BY doc_id", (run_id,)):
            d = dict(row)
            d["ground_truth"] = json.loads(d.pop("ground_truth_json") or "{}")
            d["fields"] = json.loads(d.pop("fields_json") or "{}")
            d["scores"] = [FieldScore(**s) for s in json.loads(d.pop("scores_json") or "[]")]
            d["extra"] = json.loads(d.pop("extra_json") or "{}")
            yield d

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
        rows = self._query("SELECT * FROM audit WHERE run_id=? ORDER BY id", (run_id,))
        return [{**dict(r), "allowed": bool(r["allowed"])} for r in rows]


class _RunAudit:
    """The store as an AuditSink bound to one run."""

    def __init__(self, store: RunStore, run_id: str):
        self.store, self.run_id = store, run_id

    def record_audit(self, entry: AuditEntry) -> None:
        self.store.add_audit(self.run_id, entry)
