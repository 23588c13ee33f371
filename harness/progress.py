"""Progress bar and summary table for runs (rich)."""

from __future__ import annotations

import time

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
    """Callbacks for Runner(on_start=..., on_result=...)."""

    def __init__(self, console: Console, label: str):
        self.console = console
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 _RateColumn(), _FailColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                 console=console, transient=False)
        self.label = label
        self.task = None
        self.failed = 0
        self.t0 = time.perf_counter()

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


def summary_table(s: RunSummary, backend: str) -> Table:
    t = Table(title=f"run {s.run_id}", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    t.add_row("backend", backend)
    t.add_row("documents", f"{s.total} ({s.skipped} already stored, {s.done_now} done now)")
    t.add_row("ok / failed", f"{s.ok} / {s.failed}" + (f"  {s.failures}" if s.failures else ""))
    t.add_row("remaining", str(s.remaining))
    t.add_row("mean doc F1 (this invocation)", "n/a" if s.mean_f1 is None else f"{s.mean_f1:.3f}")
    t.add_row("wall time", f"{s.wall_s:.1f} s ({s.docs_per_min:.1f} docs/min)")
    if s.interrupted:
        t.add_row("status", f"[yellow]interrupted: {s.remaining} documents remain; rerun the same command[/]")
    return t
