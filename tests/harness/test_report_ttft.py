"""The report's latency section shows a streamed run's TTFT p50/p95 and output tokens/s from the
analysis, and 'not measured (not streamed)' for the others."""

import sqlite3
from pathlib import Path

from migbench.stats import percentile
from migbench.store import DB_NAME, RunStore

from tests.harness.test_report import build_store, render, section


def test_latency_section_shows_ttft_of_the_streamed_run_only(tmp_path: Path) -> None:
    from migbench.report import generate

    ids = build_store(tmp_path / "r", hostile=False)
    # nova-lite was streamed: its first tokens came at a quarter of each answer's time
    with sqlite3.connect(tmp_path / "r" / DB_NAME) as db:
        db.execute("UPDATE documents SET ttft_s = latency_s / 4 WHERE run_id = ? AND status = 'ok'", (ids["nova-lite"],))
    docs = [d for d in RunStore(tmp_path / "r").documents(ids["nova-lite"]) if d.status == "ok"]
    model = generate(tmp_path / "r", tmp_path / "a.html")
    views = {v["backend"]: v for v in model["runs"]}
    s = views["nova-lite"]["streaming"]
    assert s.measured and s.n == len(docs)
    assert s.ttft_p50 == percentile([d.response.ttft_s for d in docs], 50)
    speeds = [d.response.output_tokens / (d.response.latency_s * 0.75) for d in docs]
    assert abs(s.tokens_per_s_p50 - percentile(speeds, 50)) < 1e-6
    assert not views["nova-pro"]["streaming"].measured
    html = section(render(tmp_path / "r", tmp_path / "b.html"), "latency")
    assert "Time to first token" in html and f"{s.ttft_p50:.3f}" in html and f"{s.ttft_p95:.3f}" in html
    assert html.count("not measured (not streamed)") == 2  # ocr-baseline and nova-pro
