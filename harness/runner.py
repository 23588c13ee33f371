"""Run a backend over a dataset: resumable, concurrent (or batched), nothing lost.

Each document ends as a stored result or a stored failure with its cause. Documents already in
the store are skipped, so a killed run resumes by rerunning the same command.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import signal
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from migbench.classify import EXTRA_KEY, Classification, fallback_type, read_classification
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
    Terminated,
    UsageError,
)
from migbench.cost import Pricing, document_cost, load_pricing
from migbench.datasets import Dataset
from migbench.images import prepare_document
from migbench.parsing import cap_raw_text, max_raw_chars, parse_output
from migbench.prompting import CLASSIFY_DOC_TYPE, Prompt, load_classify_prompt, load_prompt
from migbench.provenance import git_commit, host, versions
from migbench.ratelimit import RateLimiter
from migbench.redact import scrub
from migbench.retry import Interrupted, RetryPolicy, call_with_retry
from migbench.schema import Schema, load_schema
from migbench.scoring import document_f1, score_document
from migbench.store import Claimant, RunMeta, RunStore, StoreError

# Backends that read no prompt (OCR rules, Textract's fixed APIs): they cannot be asked a document's type.
PROMPTLESS_FAMILIES = frozenset({"ocr", "textract"})


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
    # Ask the backend for each document's type first and extract with the predicted type's prompt
    # (the incumbent's pipeline); off: the ground truth's type is given and DOCUMENT_TYPE not scored.
    classify: bool = False
    classify_fallback: str | None = None  # type for answers naming none (default: invoice, as the incumbent)


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
    # Documents other live processes were running on the same run when this one ended: {"pid N on HOST": n}
    others: dict[str, int] = field(default_factory=dict)
    interrupt: KeyboardInterrupt | None = None  # what stopped the run (Ctrl-C, or SIGTERM as Terminated)

    @property
    def docs_per_min(self) -> float:
        return self.done_now / self.wall_s * 60 if self.wall_s > 0 else 0.0


ProgressFn = Callable[[DocResult], None]


def build_request(doc: Document, prompt: Prompt, schema: Schema, opts: RunOptions,
                  backend: Backend | None = None, *, reserve_for: Iterable[Prompt] = ()) -> Request:
    """Read the document once and prepare it in the backend's form (see migbench.images); retries reuse
    the request. Raises InputError for an unreadable file or a page that cannot be brought within the
    backend's limits. reserve_for: other prompts the same pages will travel with (classification
    routes to any type's prompt), so the pages fit beside the longest."""
    form = backend.input_form if backend is not None else "encoded"
    budget = backend.image_budget() if backend is not None else ImageBudget()
    # What the rest of the body takes from the payload limit: prompt, system, JSON framing.
    reserve = max(len(p.user.encode()) + len((p.system or "").encode()) for p in (prompt, *reserve_for)) + 4096
    prepared = prepare_document(doc.path, form, budget, what=doc.doc_id, reserve_bytes=reserve,
                                image_format=opts.image_format, max_dim=opts.max_image_dim)
    max_tokens = prompt.max_tokens or schema.document_types[doc.doc_type].output_tokens
    return Request(doc_id=doc.doc_id, doc_type=doc.doc_type, prompt=prompt.user, system=prompt.system,
                   images=prepared.images, pages=prepared.pages, pdf_bytes=prepared.pdf_bytes,
                   pdf_page_sizes=prepared.pdf_page_sizes, params=GenParams(max_tokens=max_tokens),
                   tool=prompt.tool)


def finish_document(doc: Document, resp: Response, schema: Schema,
                    classification: Classification | None = None) -> DocResult:
    """Parse and score one response into the stored record. With a classification the output is read
    with the fields of the type it was routed to, DOCUMENT_TYPE is the predicted type and scored as
    the profile scores a predicted type; the record keeps the ground truth's type."""
    if not resp.ok:
        return DocResult(doc.doc_id, doc.doc_type, doc.tier, "failed", resp,
                         error_class=resp.error_class.value, error=resp.error, ground_truth=doc.ground_truth)
    fields = parse_output(resp.text, classification.route if classification else doc.doc_type, schema)
    if classification is not None:
        fields["DOCUMENT_TYPE"] = classification.label
    scores = score_document(doc.ground_truth, fields, schema, classified=classification is not None)
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
        self.prompts = {dt: load_prompt(fam, dt, self.opts.prompt_style, self.schema)
                        for dt in self.schema.document_types}
        if self.opts.prompt_style == "tool" and (why := backend.tools_unsupported()):
            raise UsageError(f"--prompt-style tool: backend {backend.name} cannot answer through a tool: {why}")
        self.classify_prompt: Prompt | None = None
        if self.opts.classify:
            if backend.family in PROMPTLESS_FAMILIES:
                raise UsageError(f"--classify: backend {backend.name} reads no prompt, so it cannot be asked "
                                 f"for a document's type; run it without --classify")
            try:
                self.classify_prompt = load_classify_prompt(fam, self.schema)
            except ValueError as exc:
                raise UsageError(f"--classify: {exc}") from None
        tpm = self.opts.tokens_per_min or backend.config.get("tokens_per_min")
        rpm = self.opts.requests_per_min or backend.config.get("requests_per_min")
        # Always a limiter: with no quota given it admits freely until the service throttles, then finds
        # the rate the service allows (see migbench.ratelimit), so throttling slows the run instead of
        # failing documents.
        self.limiter = RateLimiter(tpm, rpm, window_s=self.opts.quota_window_s)
        # This process as the holder of document claims: concurrent invocations on one results folder
        # share a run's documents, never call a model twice for one (see RunStore.claim).
        self.claimant = Claimant()
        self.claimed_elsewhere = 0
        self._rng = random.Random(self.opts.seed)

    # identity --------------------------------------------------------------
    def meta(self) -> RunMeta:
        used = sorted({d.doc_type for d in self.dataset.documents}) or sorted(self.schema.document_types)
        if self.classify_prompt is not None:  # any type's prompt may be used, and the question too
            used = sorted(self.schema.document_types)
        prompt_hash = "+".join(self.prompts[dt].sha256[:12] for dt in used if dt in self.prompts)
        config = {k: v for k, v in self.backend.config.options.items() if "secret" not in k.lower()}
        config.update(prompt_style=self.opts.prompt_style, max_image_dim=self.opts.max_image_dim,
                      image_format=self.opts.image_format, endpoint_kind=self.backend.endpoint_kind())
        config.update(self._classify_identity())
        return RunMeta(backend=self.backend.name, family=self.backend.family, model=self.backend.model_id,
                       config=config, dataset_path=str(self.dataset.root), dataset_hash=self.dataset.hash,
                       n_documents=len(self.dataset.documents) + len(self.dataset.problems),
                       prompt_hash=prompt_hash, prompt_style=self.opts.prompt_style,
                       versions=versions(), git_commit=git_commit(), host=host())

    # one document ----------------------------------------------------------
    def _process(self, doc: Document) -> DocResult:
        if self.classify_prompt is not None:
            return self._process_classified(doc)
        try:
            request = build_request(doc, self.prompts[doc.doc_type], self.schema, self.opts, self.backend)
        except InputError as exc:
            return failed_input(doc, str(exc))
        except Exception as exc:  # noqa: BLE001 - an unforeseen reader failure is this document's, not the run's
            return failed_input(doc, scrub(f"{doc.doc_id}: cannot read ({type(exc).__name__}: {exc})"))
        resp = call_with_retry(self.backend, request, self.opts.retry, limiter=self.limiter, stop=self.stop,
                               rng=random.Random(self._rng.random()), audit=self.backend.audit)
        return self._complete(doc, resp)

    def _complete(self, doc: Document, resp: Response, classification: Classification | None = None) -> DocResult:
        cap_raw_text(resp, self.opts.max_raw_chars)  # before parsing, so a rescore reads what was scored
        if resp.cost_usd is None:  # the model or API called sets the price (tokens or pages), not the name
            resp.cost_usd = document_cost(self.pricing, self.backend.model_id, resp)
        try:
            return finish_document(doc, resp, self.schema, classification)
        except Exception as exc:  # noqa: BLE001 - a scorer bug must not lose the raw response
            resp.error_class = ErrorClass.PARSE
            resp.error = scrub(f"parse/score failed: {type(exc).__name__}: {exc}")
            return DocResult(doc.doc_id, doc.doc_type, doc.tier, "failed", resp,
                             error_class=ErrorClass.PARSE.value, error=resp.error, ground_truth=doc.ground_truth)

    def _batch(self, docs: list[Document]) -> list[DocResult]:
        """Batched backends: one generate_batch call; per-document errors stay per document."""
        if self.classify_prompt is not None:
            return self._batch_classified(docs)
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

    # classification stage (--classify) ------------------------------------------
    def _classify_identity(self) -> dict[str, Any]:
        """What the run identity adds when documents are classified or the schema came from --schema:
        either changes what is asked and how it is scored, so it makes another run."""
        out: dict[str, Any] = {}
        if self.classify_prompt is not None:
            out.update(classified=True, classify_prompt=self.classify_prompt.sha256[:12],
                       classify_fallback=fallback_type(self.schema, self.opts.classify_fallback))
        if self.schema.origin:
            out["schema"] = {"format": self.schema.origin["format"], "sha256": self.schema.origin["sha256"][:16]}
        return out

    def _process_classified(self, doc: Document) -> DocResult:
        """Two calls through the same retry loop, rate limiter and audit: the question, then the
        extraction with the predicted type's prompt, on pages prepared once for both."""
        assert self.classify_prompt is not None
        try:
            ask = self._classify_request(doc)
        except InputError as exc:
            return failed_input(doc, str(exc))
        except Exception as exc:  # noqa: BLE001 - see _process
            return failed_input(doc, scrub(f"{doc.doc_id}: cannot read ({type(exc).__name__}: {exc})"))
        answer = call_with_retry(self.backend, ask, self.opts.retry, limiter=self.limiter, stop=self.stop,
                                 rng=random.Random(self._rng.random()), audit=self.backend.audit)
        if not answer.ok:
            return self._classification_failed(doc, answer)
        cls = read_classification(answer.text, self.schema, self.opts.classify_fallback)
        resp = call_with_retry(self.backend, self._routed_request(ask, cls), self.opts.retry, limiter=self.limiter,
                               stop=self.stop, rng=random.Random(self._rng.random()), audit=self.backend.audit)
        return self._complete(doc, self._with_classification(resp, answer, cls), cls)

    def _classify_request(self, doc: Document) -> Request:
        assert self.classify_prompt is not None
        ask = build_request(doc, self.classify_prompt, self.schema, self.opts, self.backend,
                            reserve_for=self.prompts.values())
        ask.doc_type = CLASSIFY_DOC_TYPE  # a classification request names no type yet
        return ask

    def _routed_request(self, ask: Request, cls: Classification) -> Request:
        """The extraction request for the type the answer routed to, on the question's pages."""
        prompt = self.prompts[cls.route]
        return dataclasses.replace(
            ask, doc_type=cls.route, prompt=prompt.user, system=prompt.system, estimated_input_tokens=None,
            tool=prompt.tool,
            params=dataclasses.replace(ask.params, max_tokens=self.schema.document_types[cls.route].output_tokens))

    def _with_classification(self, resp: Response, answer: Response, cls: Classification) -> Response:
        """The document's figures include the question's (tokens, latency, attempts, waits, so cost);
        the question's own figures and the routing are kept under extra['classification']."""
        record = cls.to_dict()
        record.update(input_tokens=answer.input_tokens, output_tokens=answer.output_tokens,
                      latency_s=answer.latency_s, attempts=answer.attempts, request_id=answer.request_id,
                      cost_usd=answer.cost_usd if answer.cost_usd is not None else
                      document_cost(self.pricing, self.backend.model_id, answer),
                      raw_text=cap_text(answer.text))
        resp.input_tokens = _sum(resp.input_tokens, answer.input_tokens)
        resp.output_tokens = _sum(resp.output_tokens, answer.output_tokens)
        resp.latency_s = _sum(resp.latency_s, answer.latency_s)
        resp.server_latency_ms = _sum(resp.server_latency_ms, answer.server_latency_ms)
        if resp.cost_usd is not None or answer.cost_usd is not None:  # else priced from the summed tokens
            resp.cost_usd = _sum(resp.cost_usd, record["cost_usd"])
        resp.attempts += answer.attempts
        resp.retry_wait_s += answer.retry_wait_s
        resp.throttled += answer.throttled
        resp.extra[EXTRA_KEY] = record
        return resp

    def _classification_failed(self, doc: Document, answer: Response) -> DocResult:
        answer.error = f"classification: {answer.error}"
        answer.extra[EXTRA_KEY] = {"error": answer.error}
        return self._complete(doc, answer)

    def _generate_batch(self, requests: list[Request]) -> list[Response]:
        """One generate_batch call; an exception fails each request, classified, never the batch."""
        t0 = time.perf_counter()
        try:
            outs: list[Any] = list(self.backend.generate_batch(requests))
        except Exception as exc:  # noqa: BLE001
            outs = [BackendError(f"{type(exc).__name__}: {exc}", self.backend.classify(exc)) for _ in requests]
        resps = []
        for out in outs:
            if isinstance(out, BaseException):
                resp = out.response or Response() if isinstance(out, BackendError) else Response()
                resp.error_class = self.backend.classify(out)
                resp.error = scrub(f"{type(out).__name__}: {out}")
                resp.latency_s = resp.latency_s or (time.perf_counter() - t0)
                out = resp
            resps.append(out)
        return resps

    def _batch_classified(self, docs: list[Document]) -> list[DocResult]:
        """Batched backends: a batch of questions, then a batch of extractions with the routed prompts."""
        results: dict[str, DocResult] = {}
        ready: list[tuple[Document, Request]] = []
        for doc in docs:
            try:
                ready.append((doc, self._classify_request(doc)))
            except InputError as exc:
                results[doc.doc_id] = failed_input(doc, str(exc))
            except Exception as exc:  # noqa: BLE001 - see _process
                results[doc.doc_id] = failed_input(doc, scrub(f"{doc.doc_id}: cannot read ({type(exc).__name__}: {exc})"))
        routed: list[tuple[Document, Request, Response, Classification]] = []
        if ready:
            for (doc, ask), answer in zip(ready, self._generate_batch([r for _, r in ready])):
                if not answer.ok:
                    results[doc.doc_id] = self._classification_failed(doc, answer)
                    continue
                cls = read_classification(answer.text, self.schema, self.opts.classify_fallback)
                routed.append((doc, self._routed_request(ask, cls), answer, cls))
        if routed:
            for (doc, _, answer, cls), resp in zip(routed, self._generate_batch([r for _, r, _, _ in routed])):
                results[doc.doc_id] = self._complete(doc, self._with_classification(resp, answer, cls), cls)
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
        interrupted, interrupt = False, None

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
        self._run_id = run_id
        beat = _Heartbeat(self.store, self.claimant)
        failing = False
        try:
            with _sigterm_as_interrupt(self.stop):
                beat.start()
                for r in problems:
                    record(r)
                self._execute(docs, record)
        except KeyboardInterrupt as exc:
            interrupted, interrupt = True, exc
            self.stop.set()
        except BaseException:
            failing = True
            raise
        finally:
            beat.stop()
            wall = time.perf_counter() - t0
            total = len(self.dataset.documents) + len(self.dataset.problems)
            if self.opts.limit is not None:
                total = min(total, self.opts.limit + len(self.dataset.problems))
            remaining = others = 0
            try:
                # Documents this process claimed but did not store stay pending for the next run.
                self.store.release(self.claimant)
                remaining = max(0, total - len(self.store.done_ids(run_id)))
                others = self.store.claimed_elsewhere(run_id, self.claimant)
                status = ("complete" if remaining == 0 else "running" if others
                          else "interrupted" if interrupted else "partial")
                self.store.update_run(run_id, describe=self._describe(), emulated=self._emulated or None,
                                      status=status, add_wall_s=wall)
            except StoreError:
                if not failing:  # the store's first error is the one reported
                    raise
        mean_f1 = sum(f1s) / len(f1s) if f1s else None
        return RunSummary(run_id, resumed, total, skipped, counts["ok"] + counts["failed"], counts["ok"],
                          counts["failed"], remaining, wall, interrupted, mean_f1, failures, others or {}, interrupt)

    def _execute(self, docs: list[Document], record: Callable[[DocResult], None]) -> None:
        self.backend.preflight()
        self._apply_quota_hint()
        if self.backend.batches:
            self._run_batched(docs, record)
        else:
            self._run_pool(docs, record)

    def _claim(self, doc: Document) -> bool:
        """Take the document for this process; False when it is stored or another process runs it."""
        if self.store.claim(self._run_id, doc.doc_id, self.claimant, redo_failed=self.opts.retry_failed):
            return True
        self.claimed_elsewhere += 1
        return False

    def _apply_quota_hint(self) -> None:
        """The provider's own tokens-per-minute quota, read at preflight (Backend.quota_hint), paces
        the run when the user gave no token limit: a first run stays under the account's quota."""
        if self.opts.tokens_per_min or self.backend.config.get("tokens_per_min"):
            return
        hint = self.backend.quota_hint()
        if not hint:
            return
        self.limiter.seed(tokens_per_min=hint)

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
                        if self._claim(doc):  # claimed at admission, so a long queue holds no claims
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
            batch = [d for d in docs[i:i + size] if self._claim(d)]
            for result in self._batch(batch) if batch else ():
                record(result)


class _Heartbeat:
    """Refreshes this process's claims while it runs, so another process can tell a live run (leave its
    documents alone) from a dead one (take them over)."""

    def __init__(self, store: RunStore, claimant: Claimant):
        self.store, self.claimant = store, claimant
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="migbench-heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self._done.wait(self.claimant.heartbeat_s):
            with contextlib.suppress(StoreError):  # a busy or full store: the claims just age
                self.store.heartbeat(self.claimant)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


@contextlib.contextmanager
def _sigterm_as_interrupt(stop: threading.Event):
    """SIGTERM (kill, systemd, a CI timeout, docker stop) ends a run like Ctrl-C: in-flight documents
    finish or stay pending, the run is marked interrupted. Only the main thread can take signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        if stop.is_set():
            return  # already stopping: a second SIGTERM must not break the orderly stop
        stop.set()
        raise Terminated

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _sum(a: float | None, b: float | None) -> float | None:
    """a + b over the known parts; None when neither is known."""
    return None if a is None and b is None else (a or 0) + (b or 0)


def cap_text(text: str, limit: int = 2000) -> str:
    """A classification answer kept for the record: a label, or the start of a model's rambling."""
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more characters]"
