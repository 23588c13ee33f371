"""The report from REAL runs in one store: an offline OCR run and an emulated Bedrock run,
rendered by the CLI and opened in headless Chromium."""

from __future__ import annotations

import pytest
from migbench.cli import main
from migbench.emulator import ScriptedResponder, run_emulator
from migbench.store import RunStore

from tests.harness.test_report_browser import CHROMIUM, check_in_chromium

pytestmark = pytest.mark.slow
HOSTILE = "SUPPLIER_NAME: <script>alert('x')</script><img src=x onerror=alert(2)>\nTOTAL_AMOUNT: $1.00"


def test_report_from_an_ocr_run_and_an_emulated_bedrock_run(tmp_path, monkeypatch):
    pytest.importorskip("rapidocr_onnxruntime")
    results = tmp_path / "results"
    assert main(["run", "--backend", "ocr-baseline", "--results", str(results), "--limit", "3"]) == 0
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with run_emulator(responder=ScriptedResponder([HOSTILE])) as emu:
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", emu.url)
        assert main(["run", "--backend", "nova-pro", "--results", str(results), "--limit", "6",
                     "--allow-loopback"]) == 0
    runs = {r.backend: r for r in RunStore(results).runs()}
    assert runs["nova-pro"].emulated and not runs["ocr-baseline"].emulated
    out = tmp_path / "report.html"
    assert main(["report", "--results", str(results), "--out", str(out), "--redact"]) == 0
    html = out.read_text()
    assert "EMULATED" in html and "<script>alert" not in html and "onerror=alert" not in html.replace("&lt;", "")
    assert main(["report", "--results", str(results), "--out", str(out)]) == 0
    html = out.read_text()
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html or "&lt;script&gt;" in html
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium: install it with `apt-get install -y chromium`")
    check_in_chromium(out, tmp_path / "report.png", hostile_text="<script>alert('x')</script>")
