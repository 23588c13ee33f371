"""Progress and summary for runs: one implementation for `migbench run` and `pytest suites`.

On a terminal a rich bar (documents, docs/min, failures, ETA); anywhere else (CI logs, a pipe)
a plain line every `interval_s` and one at the end, so a log shows progress without a redrawn bar.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from migbench.contracts import DocResult
from migbench.runner import RunSummary
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

EMULATED_LABEL = "EMULATED (answers from a local emulator: plumbing evidence, not model accuracy)"


class _RateColumn(ProgressColumn):
    def render(self, task) -> Text:  # type: ignore[override]
        elapsed = task.elapsed or 0
        rate = task.completed / elapsed * 60 if elapsed > 0 else 0
        return Text(f"{rate:6.1f} docs/min", style="cyan")


class _FailColumn(ProgressColumn):
    def render(self, task) -> Text:  # type: ignore[override]
        n = task.fields.get("failed", 0)
        return Text(f"{n} failed", style="red" if n else "dim")


class RunProgress:
    """A live bar; callbacks for Runner(on_start=..., on_result=...)."""

    def __init__(self, console: Console, label: str):
        self.console = console
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 _RateColumn(), _FailColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                 console=console, transient=False)
        self.label = label
        self.task = None
        self.failed = 0

    def __enter__(self) -> RunProgress:  # noqa: PYI034
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def on_start(self, pending: int, skipped: int) -> None:
        if skipped:
            self.console.print(f"resuming: {skipped} documents already stored, {pending} to do")
        self.task = self.progress.add_task(self.label, total=pending, failed=0)

    def on_result(self, result: DocResult) -> None:
        if result.status == "failed":
            self.failed += 1
        if self.task is not None:
            self.progress.update(self.task, advance=1, failed=self.failed)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, s = divmod(seconds, 60)
    return f"{minutes}m {s:02d}s" if minutes < 60 else f"{minutes // 60}h {minutes % 60:02d}m"


class LineProgress:
    """Plain progress lines for logs: the same figures as the bar, every `interval_s` and at the end."""

    def __init__(self, console: Console, label: str, interval_s: float = 30.0,
                 clock: Any = time.monotonic):
        self.console, self.label, self.interval_s, self.clock = console, label, interval_s, clock
        self.total = self.done = self.failed = 0
        self.t0 = self.last = 0.0
        self._lock = threading.Lock()  # results may arrive from the runner's worker threads

    def __enter__(self) -> LineProgress:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        if self.done and self.done < self.total:  # stopped early: say where it stopped
            self._line()

    def on_start(self, pending: int, skipped: int) -> None:
        self.total, self.t0 = pending, self.clock()
        self.last = self.t0
        already = f" ({skipped} already stored)" if skipped else ""
        self.console.print(f"{self.label}: {pending} documents to run{already}", highlight=False)

    def on_result(self, result: DocResult) -> None:
        with self._lock:
            self.done += 1
            self.failed += result.status == "failed"
            now = self.clock()
            if self.done >= self.total or now - self.last >= self.interval_s:
                self.last = now
                self._line()

    def _line(self) -> None:
        elapsed = self.clock() - self.t0
        rate = self.done / elapsed * 60 if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate * 60 if rate > 0 and self.done < self.total else None
        text = (f"{self.label}: {self.done}/{self.total} documents, {rate:.1f} docs/min, {self.failed} failed"
                + (f", ETA {_duration(eta)}" if eta is not None else f", {_duration(elapsed)}"))
        self.console.print(text, highlight=False)


def run_progress(console: Console, label: str, interval_s: float = 30.0) -> RunProgress | LineProgress:
    """The bar on a terminal, periodic lines in a log."""
    return RunProgress(console, label) if console.is_terminal else LineProgress(console, label, interval_s)


def summary_table(s: RunSummary, backend: str, *, emulated: bool = False, run_docs: Iterable[Any] | None = None,
                  profile: str | None = None) -> Table:
    """The console summary of a run. With `run_docs` (the run's stored rows) the F1 shown is the
    run's, as the incumbent reports it and with failures as 0; this invocation's is labelled apart,
    since after a resume it covers only the documents redone."""
    from migbench.headline import headline_f1

    title = f"run {s.run_id}" + (" [EMULATED]" if emulated else "")
    t = Table(title=title, show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    t.add_row("backend", backend)
    if emulated:
        t.add_row("evidence", f"[yellow]{EMULATED_LABEL}[/]")
    t.add_row("documents", f"{s.total} ({s.skipped} already stored, {s.done_now} done now)")
    t.add_row("ok / failed", f"{s.ok} / {s.failed} (this invocation)" + (f"  {s.failures}" if s.failures else ""))
    t.add_row("remaining", str(s.remaining))
    tag = " [EMULATED]" if emulated else ""
    if run_docs is not None:
        h = headline_f1(run_docs, profile)
        name = f"document F1, {profile} scoring" if profile else "document F1"

        def fmt(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.3f}"

        t.add_row(f"{name}{tag}", f"mean {fmt(h.mean_excluded)}, median {fmt(h.median_excluded)} over "
                  f"{h.n_scored} documents (failed excluded, as the incumbent reports)")
        t.add_row("", f"mean {fmt(h.mean_as_zero)}, median {fmt(h.median_as_zero)} over {h.n_documents} "
                  f"documents ({h.n_failed} failed, counted as 0)")
        if s.skipped:
            t.add_row("mean doc F1, this invocation only", "n/a" if s.mean_f1 is None else
                      f"{s.mean_f1:.3f} over the {s.done_now} documents done now")
    else:
        t.add_row(f"mean doc F1 (this invocation){tag}", "n/a" if s.mean_f1 is None else f"{s.mean_f1:.3f}")
    t.add_row("wall time", f"{s.wall_s:.1f} s ({s.docs_per_min:.1f} docs/min)")
    if s.interrupted:
        t.add_row("status", f"[yellow]interrupted: {s.remaining} documents remain; rerun the same command[/]")
    return t
