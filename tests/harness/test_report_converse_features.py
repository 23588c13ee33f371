"""The report beside each run: its prompt style, its unreadable-answer rate, and prompt-cache savings."""

import pytest
from migbench.datasets import load_dataset
from migbench.emulator import GroundTruthResponder, ScriptedResponder, run_emulator
from migbench.fixtures import default_dataset
from migbench.registry import create_backend
from migbench.report import generate
from migbench.retry import RetryPolicy
from migbench.runner import Runner, RunOptions
from migbench.store import RunStore

FAST = RetryPolicy(max_attempts=2, base_s=0.0, cap_s=0.0)


def _run(url, results, dataset, style, limit, **options):
    backend = create_backend("nova-pro", options={"endpoint_url": url, "allow_loopback": True, **options})
    try:
        return Runner(backend, dataset, RunStore(results), RunOptions(prompt_style=style, limit=limit,
                                                                       retry=FAST)).run()
    finally:
        backend.close()


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    dataset = load_dataset(default_dataset())
    with run_emulator(responder=GroundTruthResponder(dataset)) as emu:
        text = _run(emu.url, tmp_path, dataset, "kv", 3)
        cached = _run(emu.url, tmp_path, dataset, "tool", 4, prompt_cache=True)
    # a model that ignores the tool: every answer prose, so every answer a parse failure
    with run_emulator(responder=ScriptedResponder(["I could not read the document."])) as emu:
        ignored = _run(emu.url, tmp_path, dataset, "tool", 2, api="converse", max_image_dim=1000)
    return tmp_path, text, cached, ignored


def test_the_report_shows_prompt_style_parse_failures_and_cache_savings(results):
    folder, text, cached, ignored = results
    model = generate(folder, folder / "report.html", runs=[text.run_id, cached.run_id, ignored.run_id])
    views = {v["run_id"]: v for v in model["runs"]}
    assert views[text.run_id]["answers"] == {"style": "kv", "answered": 3, "parse_failures": 0, "unreadable": 0,
                                             "rate": 0.0}
    assert views[cached.run_id]["answers"]["style"] == "tool" and views[cached.run_id]["answers"]["rate"] == 0.0
    assert views[ignored.run_id]["answers"] == {"style": "tool", "answered": 2, "parse_failures": 2,
                                                "unreadable": 0, "rate": 1.0}
    cache = views[cached.run_id]["cost"].cache
    assert cache.read_tokens > 0 and cache.saving_usd > 0
    assert views[text.run_id]["cost"].cache is None
    html = (folder / "report.html").read_text()
    assert "Answers that could not be read, by prompt style" in html
    assert "100.0%" in html and "<h3>Prompt caching</h3>" in html
    assert f"{cache.read_tokens:,}" in html
