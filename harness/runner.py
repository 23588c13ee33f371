"""Run a backend over a dataset: resumable, concurrent (or batched), nothing lost.

Each document ends as a stored result or a stored failure with its cause. Documents already in
the store are skipped, so a killed run resumes by rerunning the same command.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from migbench.contracts import (
    Backend,
    BackendError,
    DocResult,
    Document,
    ErrorClass,
    GenParams,
    ImageBudget,
    InputError,
    Request,
    Response,
)
from migbench.cost import Pricing, document_cost, load_pricing
from migbench.datasets import Dataset
from migbench.images import prepare_document
from migbench.parsing import cap_raw_text, max_raw_chars, parse_output
from migbench.prompting import Prompt, load_prompt
from migbench.provenance import git_commit, host, versions
from migbench.ratelimit import RateLimiter
from migbench.redact import scrub
from migbench.retry import Interrupted, RetryPolicy, call_with_retry
from migbench.schema import Schema, load_schema
from migbench.scoring import document_f1, score_document
from migbench.store import RunMeta, RunStore


@dataclass
class RunOptions:
    prompt_style: str = "kv"
    prompt_family: str | None = None  # default: the backend's prompt_family option, else "default"
    limit: int | None = None
    concurrency: int | None = None  # default: the backend's
    batch_size: int | None = None
    tokens_per_min: float | None = None
    requests_per_min: float | None = None
    quota_window_s: float = 60.0  # the quota's accounting window (benches shrink time)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    new_run: bool = False
    retry_failed: bool = False
    image_format: str | None = None  # None: the source's format where the backend takes it, else png
    max_image_dim: int | None = None
    seed: int = 0
    max_raw_chars: int | None = field(default_factory=max_raw_chars)  # None/0: keep all; cut recorded


@dataclass
class RunSummary:
    run_id: str
    resumed: bool
    total: int
    skipped: int  # already in the store before this invocation
    done_now: int
    ok: int
    failed: int
    remaining: int
    wall_s: float
    interrupted: bool = False
    mean_f1: float | None = None
    failures: dict[str, int] = field(default_factory=dict)

    @property
    def docs_per_min(self) -> float:
        return self.done_now / self.wall_s * 60 if self.wall_s > 0 else 0.0


ProgressFn = Callable[[DocResult], None]


def build_request(doc: Document, prompt: Prompt, schema: Schema, opts: RunOptions,
                  backend: Backend | None = None) -> Request:
    """Read the document once and prepare it in the backend's form (see migbench.images); retries reuse
    the request. Raises InputError for an unreadable file or a page that cannot be brought within the
    backend's limits."""
    form = backend.input_form if backend is not None else "encoded"
    budget = backend.image_budget() if backend is not None else ImageBudget()
    # What the rest of the body takes from the payload limit: prompt, system, JSON framing.
    reserve = len(prompt.user.encode()) + len((prompt.system or "").encode()) + 4096
    prepared = prepare_document(doc.path, form, budget, what=doc.doc_id, reserve_bytes=reserve,
                                image_format=opts.image_format, max_dim=opts.max_image_dim)
    max_tokens = schema.document_types[doc.doc_type].max_tokens
    return Request(doc_id=doc.doc_id, doc_type=doc.doc_type, prompt=prompt.user, system=prompt.system,
                   images=prepared.images, pages=prepared.pages, pdf_bytes=prepared.pdf_bytes,
                   pdf_page_sizes=prepared.pdf_page_sizes, params=GenParams(max_tokens=max_tokens))


def finish_document(doc: Document, resp: Response, schema: Schema) -> DocResult:
    """Parse and score one response into the stored record."""
    if not resp.ok:
        return DocResult(doc.doc_id, doc.doc_type, doc.tier, "failed", resp,
                         error_class=resp.error_class.value, error=resp.error, ground_truth=doc.ground_truth)
    fields = parse_output(resp.text, doc.doc_type, schema)
    scores = score_document(doc.ground_truth, fields, schema)
    return DocResult(doc.doc_id, doc.doc_type, doc.tier, "ok", resp, fields, scores, document_f1(scores),
                     ground_truth=doc.ground_truth)


def failed_input(doc: Document, message: str, cls: ErrorClass = ErrorClass.INPUT) -> DocResult:
    resp = Response(attempts=0, error_class=cls, error=message)
    return DocResult(doc.doc_id, doc.doc_type, doc.tier, "failed", resp, error_class=cls.value, error=message,
                     ground_truth=doc.ground_truth)


class Runner:
    def __init__(self, backend: Backend, dataset: Dataset, store: RunStore, opts: RunOptions | None = None,
                 *, schema: Schema | None = None, pricing: Pricing | None = None,
                 on_result: ProgressFn | None = None, on_start: Callable[[int, int], None] | None = None):
        self.backend, self.dataset, self.store = backend, dataset, store
        self.opts = opts or RunOptions()
        self.schema = schema or load_schema()
        self.pricing = pricing or load_pricing()
        self.on_result, self.on_start = on_result, on_start
        self.stop = threading.Event()
        fam = self.opts.prompt_family or backend.config.get("prompt_family", "default")
        self.prompts = {dt: load_prompt(fam, dt, self.opts.prompt_style) for dt in self.schema.document_types}
        tpm = self.opts.tokens_per_min or backend.config.get("tokens_per_min")
        rpm = self.opts.requests_per_min or backend.config.get("requests_per_min")
        self.limiter = RateLimiter(tpm, rpm, window_s=self.opts.quota_window_s) if (tpm or rpm) else None
        self._rng = random.Random(self.opts.seed)

    # identity --------------------------------------------------------------
    def meta(self) -> RunMeta:
        used = sorted({d.doc_type for d in self.dataset.documents}) or sorted(self.schema.document_types)
        prompt_hash = "+".join(self.prompts[dt].sha256[:12] for dt in used)
        config = {k: v for k, v in self.backend.config.options.items() if "secret" not in k.lower()}
        config.update(prompt_style=self.opts.prompt_style, max_image_dim=self.opts.max_image_dim,
                      image_format=self.opts.image_format, endpoint_kind=self.backend.endpoint_kind())
        return RunMeta(backend=self.backend.name, family=self.backend.family, model=self.backend.model_id,
                       config=config, dataset_path=str(self.dataset.root), dataset_hash=self.dataset.hash,
                       n_documents=len(self.dataset.documents) + len(self.dataset.problems),
                       prompt_hash=prompt_hash, prompt_style=self.opts.prompt_style,
                       versions=versions(), git_commit=git_commit(), host=host())

    # one document ----------------------------------------------------------
    def _process(self, doc: Document) -> DocResult:
        try:
            request = build_request(doc, self.prompts[doc.doc_type], self.schema, self.opts, self.backend)
        except InputError as exc:
            return failed_input(doc, str(exc))
        except Exception as exc:  # noqa: BLE001 - an unforeseen reader failure is this document's, not the run's
            return failed_input(doc, scrub(f"{doc.doc_id}: cannot read ({type(exc).__name__}: {exc})"))
        resp = call_with_retry(self.backend, request, self.opts.retry, limiter=self.limiter, stop=self.stop,
                               rng=random.Random(self._rng.random()), audit=self.backend.audit)
        return self._complete(doc, resp)

    def _complete(self, doc: Document, resp: Response) -> DocResult:
        cap_raw_text(resp, self.opts.max_raw_chars)  # before parsing, so a rescore reads what was scored
        if resp.cost_usd is None:  # the model or API called sets the price (tokens or pages), not the name
            resp.cost_usd = document_cost(self.pricing, self.backend.model_id, resp)
        try:
            return finish_document(doc, resp, self.schema)
        except Exception as exc:  # noqa: BLE001 - a scorer bug must not lose the raw response
            resp.error_class = ErrorClass.PARSE
            resp.error = scrub(f"parse/score failed: {type(exc).__name__}: {exc}")
            return DocResult(doc.doc_id, doc.doc_type, doc.tier, "failed", resp,
                             error_class=ErrorClass.PARSE.value, error=resp.error, ground_truth=doc.ground_truth)

    def _batch(self, docs: list[Document]) -> list[DocResult]:
        """Batched backends: one generate_batch call; per-document errors stay per document."""
        results: dict[str, DocResult] = {}
        ready: list[tuple[Document, Request]] = []
        for doc in docs:
            try:
                ready.append((doc, build_request(doc, self.prompts[doc.doc_type], self.schema, self.opts, self.backend)))
            except InputError as exc:
                results[doc.doc_id] = failed_input(doc, str(exc))
            except Exception as exc:  # noqa: BLE001 - see _process
                results[doc.doc_id] = failed_input(doc, scrub(f"{doc.doc_id}: cannot read ({type(exc).__name__}: {exc})"))
        if ready:
            t0 = time.perf_counter()
            try:
                outs = self.backend.generate_batch([r for _, r in ready])
            except Exception as exc:  # noqa: BLE001
                cls = self.backend.classify(exc)
                outs = [BackendError(f"{type(exc).__name__}: {exc}", cls) for _ in ready]
            for (doc, _), out in zip(ready, outs):
                if isinstance(out, BaseException):
                    resp = out.response or Response()
                    resp.error_class = self.backend.classify(out)
                    resp.error = scrub(f"{type(out).__name__}: {out}")
                    resp.latency_s = resp.latency_s or (time.perf_counter() - t0)
                else:
                    resp = out
                results[doc.doc_id] = self._complete(doc, resp)
        return [results[d.doc_id] for d in docs]

    # the run ---------------------------------------------------------------
    def pending(self, run_id: str) -> tuple[list[Document], list[DocResult], int]:
        done = self.store.done_ids(run_id, include_failed=not self.opts.retry_failed)
        problems = [failed_input(Document(p.doc_id, self.dataset.root / p.doc_id, "unknown", {}), p.message)
                    for p in self.dataset.problems if p.doc_id not in done]
        docs = [d for d in self.dataset.documents if d.doc_id not in done]
        skipped = len(done)
        if self.opts.limit is not None:
            docs = docs[: max(0, self.opts.limit - skipped)]
        return docs, problems, skipped

    def run(self) -> RunSummary:
        meta = self.meta()
        run_id, resumed = self.store.open_run(meta, new=self.opts.new_run)
        self.backend.attach_audit(self.store.audit_sink(run_id))
        docs, problems, skipped = self.pending(run_id)
        if self.on_start:
            self.on_start(len(docs) + len(problems), skipped)
        t0 = time.perf_counter()
        counts = {"ok": 0, "failed": 0}
        failures: dict[str, int] = {}
        f1s: list[float] = []
        interrupted = False

        def record(result: DocResult) -> None:
            self.store.save_result(run_id, result)
            counts[result.status] += 1
            if result.status == "failed":
                failures[result.error_class or "unknown"] = failures.get(result.error_class or "unknown", 0) + 1
            elif result.doc_f1 is not None:
                f1s.append(result.doc_f1)
            if result.response.extra.get("emulated"):
                self._emulated = True
            if self.on_result:
                self.on_result(result)

        self._emulated = False
        try:
            for r in problems:
                record(r)
            self.backend.preflight()
            self._apply_quota_hint()
            if self.backend.batches:
                self._run_batched(docs, record)
            else:
                self._run_pool(docs, record)
        except KeyboardInterrupt:
            interrupted = True
            self.stop.set()
        finally:
            wall = time.perf_counter() - t0
            done_total = len(self.store.done_ids(run_id))
            total = len(self.dataset.documents) + len(self.dataset.problems)
            if self.opts.limit is not None:
                total = min(total, self.opts.limit + len(self.dataset.problems))
            remaining = max(0, total - done_total)
            status = "interrupted" if interrupted else ("complete" if remaining == 0 else "partial")
            self.store.update_run(run_id, describe=self._describe(), emulated=self._emulated or None,
                                  status=status, add_wall_s=wall)
        mean_f1 = sum(f1s) / len(f1s) if f1s else None
        return RunSummary(run_id, resumed, total, skipped, counts["ok"] + counts["failed"], counts["ok"],
                          counts["failed"], remaining, wall, interrupted, mean_f1, failures)

    def _apply_quota_hint(self) -> None:
        """The provider's own tokens-per-minute quota, read at preflight (Backend.quota_hint), paces
        the run when the user gave no token limit: a first run stays under the account's quota."""
        if self.opts.tokens_per_min or self.backend.config.get("tokens_per_min"):
            return
        hint = self.backend.quota_hint()
        if not hint:
            return
        if self.limiter is None:
            self.limiter = RateLimiter(hint, None, window_s=self.opts.quota_window_s)
        else:
            self.limiter.tpm = hint

    def _describe(self) -> dict[str, Any]:
        try:
            return self.backend.describe()
        except Exception as exc:  # noqa: BLE001
            return {"describe_error": scrub(str(exc))}

    def _run_pool(self, docs: Iterable[Document], record: Callable[[DocResult], None]) -> None:
        workers = max(1, self.opts.concurrency or self.backend.max_concurrency())
        queue = list(docs)
        inflight: dict[Future, Document] = {}
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="migbench") as pool:
            try:
                while queue or inflight:
                    while queue and len(inflight) < workers * 2 and not self.stop.is_set():
                        doc = queue.pop(0)
                        inflight[pool.submit(self._process, doc)] = doc
                    if not inflight:
                        break
                    done, _ = wait(inflight, timeout=0.5, return_when=FIRST_COMPLETED)
                    for fut in done:
                        doc = inflight.pop(fut)
                        try:
                            record(fut.result())
                        except Interrupted:
                            pass  # not completed: stays pending for the next run
            except KeyboardInterrupt:
                self.stop.set()
                for fut in inflight:
                    fut.cancel()
                # In-flight calls finish (or stop at their next backoff) and are kept.
                for fut in list(inflight):
                    if fut.cancelled():
                        continue
                    try:
                        record(fut.result())
                    except (Interrupted, KeyboardInterrupt):
                        pass
                raise

    def _run_batched(self, docs: list[Document], record: Callable[[DocResult], None]) -> None:
        size = max(1, self.opts.batch_size or int(self.backend.config.get("batch_size", 4)))
        for i in range(0, len(docs), size):
            if self.stop.is_set():
                break
            for result in self._batch(docs[i:i + size]):
                record(result)
