"""The report in a real headless Chromium: it renders, runs no script, loads nothing, shows every section.

Needs Debian's chromium at /usr/bin/chromium (`apt-get install -y chromium`); skipped otherwise.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from tests.harness.test_report import SECTIONS, build_store, render

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="no /usr/bin/chromium: install it with `apt-get install -y chromium`")


@pytest.fixture(scope="module")
def page_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    results = tmp_path_factory.mktemp("results")
    build_store(results)
    out = tmp_path_factory.mktemp("out") / "report.html"
    render(results, out)
    return out


def check_in_chromium(report: Path, shot: Path, *, hostile_text: str | None = None) -> None:
    """Open the report, fail on console errors, external requests, scripts or missing sections."""
    sync_api = pytest.importorskip("playwright.sync_api")
    from PIL import Image

    page_url = report.resolve().as_uri()
    console_errors: list[str] = []
    page_errors: list[str] = []
    dialogs: list[str] = []
    external: list[str] = []

    def route(r: object) -> None:
        url = r.request.url  # type: ignore[attr-defined]
        if url != page_url and not url.startswith("data:"):
            external.append(url)
            r.abort()  # type: ignore[attr-defined]
        else:
            r.continue_()  # type: ignore[attr-defined]

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.route("**/*", route)
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(page_url, wait_until="load")
            for sid in SECTIONS:
                loc = page.locator(f"section#{sid}")
                assert loc.count() == 1, f"section {sid} missing"
                assert loc.is_visible(), f"section {sid} not visible"
            assert page.locator("section#decision svg").count() >= 1
            assert page.evaluate("document.scripts.length") == 0
            if hostile_text is not None:
                # The stored response's markup is text in the page, not elements.
                assert page.locator("section#errors img").count() == 0
                assert hostile_text in page.locator("section#errors").text_content()
            png = page.screenshot(full_page=True)
        finally:
            browser.close()
    shot.write_bytes(png)
    assert not console_errors, console_errors
    assert not page_errors, page_errors
    assert not dialogs, f"script from model output ran: {dialogs}"
    assert not external, f"the report requested {external}"
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.width >= 1000 and img.height > 2000  # the whole long page
    colours = img.convert("RGB").resize((200, 400)).getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50  # charts and badges, not a blank or error page


def test_report_renders_in_chromium_without_errors_requests_or_script(page_report: Path, tmp_path: Path) -> None:
    check_in_chromium(page_report, tmp_path / "report.png", hostile_text="<script>alert(1)</script>")


# Where the layout screenshots go: MIGBENCH_SCREENSHOTS (CI keeps them as artifacts), else the test's tmp dir.
def _shot_dir(tmp_path: Path) -> Path:
    import os

    d = Path(os.environ.get("MIGBENCH_SCREENSHOTS") or tmp_path)
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.mark.parametrize("width", [1024, 1280])
def test_layout_never_scrolls_sideways_and_the_verdict_column_is_on_screen(page_report: Path, tmp_path: Path,
                                                                          width: int) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.goto(page_report.resolve().as_uri(), wait_until="load")
            scroll_w, inner_w = page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
            # Every "all gates" cell, header included: its box lies inside the viewport without scrolling.
            boxes = page.evaluate("""[...document.querySelectorAll('table.gates .verdict')].map(e => {
                const r = e.getBoundingClientRect(); return [r.left, r.right, e.textContent.trim()]; })""")
            chart = page.locator("section#decision svg").last
            chart_box = chart.bounding_box()
            shots = _shot_dir(tmp_path)
            page.screenshot(path=str(shots / f"report-{width}.png"))
            page.locator("table.gates").scroll_into_view_if_needed()
            page.screenshot(path=str(shots / f"report-{width}-gates.png"))
            chart.screenshot(path=str(shots / f"report-{width}-trade-off.png"))
        finally:
            browser.close()
    assert scroll_w <= inner_w, f"the page scrolls sideways at {width}px: {scroll_w} > {inner_w}"
    assert len(boxes) == 1 + 3  # the header and one verdict per run
    for left, right, text in boxes:
        assert 0 <= left and right <= inner_w, f"verdict cell {text!r} at {left:.0f}-{right:.0f} px, viewport {width}"
    assert chart_box is not None and chart_box["x"] + chart_box["width"] <= inner_w
