"""Run progress (migbench.progress): a bar on a terminal, plain periodic lines in a log."""

from __future__ import annotations

import io

from migbench.contracts import DocResult, Response
from migbench.progress import LineProgress, RunProgress, run_progress
from rich.console import Console


def result(status: str = "ok") -> DocResult:
    return DocResult("d.png", "receipt", None, status, Response())


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_a_log_gets_a_line_every_interval_and_one_at_the_end():
    buf, clock = io.StringIO(), Clock()
    console = Console(file=buf, width=200)
    with LineProgress(console, "nova-pro", interval_s=30, clock=clock) as prog:
        prog.on_start(4, 2)
        clock.t += 10
        prog.on_result(result())  # 10 s in: too soon for a line
        clock.t += 25
        prog.on_result(result("failed"))  # 35 s since the last line
        clock.t += 5
        prog.on_result(result())
        clock.t += 20
        prog.on_result(result())  # the last one: always a line
    assert buf.getvalue().splitlines() == [
        "nova-pro: 4 documents to run (2 already stored)",
        "nova-pro: 2/4 documents, 3.4 docs/min, 1 failed, ETA 35s",
        "nova-pro: 4/4 documents, 4.0 docs/min, 1 failed, 1m 00s",
    ]


def test_an_interrupted_run_says_where_it_stopped():
    buf, clock = io.StringIO(), Clock()
    with LineProgress(Console(file=buf, width=200), "ocr-baseline", interval_s=3600, clock=clock) as prog:
        prog.on_start(10, 0)
        clock.t += 60
        prog.on_result(result())
    assert buf.getvalue().splitlines()[-1] == "ocr-baseline: 1/10 documents, 1.0 docs/min, 0 failed, ETA 9m 00s"


def test_the_bar_on_a_terminal_plain_lines_elsewhere():
    assert isinstance(run_progress(Console(file=io.StringIO(), force_terminal=True), "x"), RunProgress)
    assert isinstance(run_progress(Console(file=io.StringIO()), "x"), LineProgress)
