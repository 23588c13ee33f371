"""One read per document and one decode per page, retries included, for every backend form
(issue: each page read and decoded once). Counted at the library calls that read a file or decode
pixels, so a second read or decode anywhere (runner, retry loop, adapter) would show."""

from __future__ import annotations

import builtins
import io
from collections import Counter
from pathlib import Path

import pypdfium2
import pytest
from migbench.contracts import ErrorClass, ImageBudget, Request, Response
from migbench.datasets import load_dataset
from migbench.retry import RetryPolicy
from migbench.runner import Runner, RunOptions
from migbench.store import RunStore
from PIL import Image, ImageFile

from tests.conftest import ScriptedBackend

FAST = RetryPolicy(max_attempts=4, base_s=0.001, cap_s=0.002)
TWICE = [ErrorClass.TRANSIENT, ErrorClass.THROTTLING]  # two transient failures, then an answer
GT = {"TOTAL_AMOUNT": "$1.00"}


class Recording(ScriptedBackend):
    """ScriptedBackend that keeps what each attempt received."""

    def __init__(self, faults, form="encoded", budget=None):
        super().__init__({k: GT for k in faults}, faults)
        self.input_form = form
        self._budget = budget or ImageBudget()
        self.seen: list[Request] = []

    def image_budget(self) -> ImageBudget:
        return self._budget

    def generate(self, request: Request) -> Response:
        self.seen.append(request)
        return super().generate(request)


def _frames(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (90, 120), c) for c in ("white", "gray", "black")[:n]]


def _write_dataset(root: Path) -> dict[str, int]:
    """A 3-page TIFF, a 3-page PDF and a one-page PNG; returns doc_id -> pages."""
    f = _frames(3)
    f[0].save(root / "three.tiff", format="TIFF", save_all=True, append_images=f[1:])
    f[0].save(root / "three.pdf", format="PDF", save_all=True, append_images=f[1:])
    f[0].save(root / "one.png", format="PNG")
    pages = {"three.tiff": 3, "three.pdf": 3, "one.png": 1}
    rows = "".join(f"{name},RECEIPT,$1.00\n" for name in pages)
    (root / "ground_truth.csv").write_text("image_file,DOCUMENT_TYPE,TOTAL_AMOUNT\n" + rows)
    return pages


@pytest.fixture
def counted(monkeypatch):
    """Counts file opens (by file name) and pixel decodes (raster frames, PDF page renders)."""
    counts = {"reads": Counter(), "raster": 0, "pdf": 0}
    real_open = builtins.open
    real_load = ImageFile.ImageFile.load
    real_render = pypdfium2.PdfPage.render

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, Path)):
            counts["reads"][Path(file).name] += 1
        return real_open(file, *args, **kwargs)

    def counting_load(self):
        if self.tile:  # pixels still to decode (a loaded image has no tiles left)
            counts["raster"] += 1
        return real_load(self)

    def counting_render(self, *args, **kwargs):
        counts["pdf"] += 1
        return real_render(self, *args, **kwargs)

    def start():
        monkeypatch.setattr(builtins, "open", counting_open)
        monkeypatch.setattr(io, "open", counting_open)  # pathlib opens through io.open
        monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
        monkeypatch.setattr(pypdfium2.PdfPage, "render", counting_render)
        return counts

    return start


@pytest.mark.parametrize("form,takes_pdf", [("encoded", False), ("pages", False), ("pdf-or-encoded", True)])
def test_each_document_is_read_once_and_each_page_decoded_once_retries_included(tmp_path, counted, form,
                                                                               takes_pdf):
    data = tmp_path / "data"
    data.mkdir()
    pages = _write_dataset(data)
    ds = load_dataset(data)  # loading (hashing) is not the run; counting starts below
    backend = Recording({d: list(TWICE) for d in pages}, form, ImageBudget(takes_pdf=takes_pdf))
    store = RunStore(tmp_path / "results")
    counts = counted()
    s = Runner(backend, ds, store, RunOptions(retry=FAST)).run()

    assert s.ok == 3 and s.failed == 0
    assert Counter(r.doc_id for r in backend.seen) == {d: 3 for d in pages}  # two failures, one answer
    assert {name: counts["reads"][name] for name in pages} == {name: 1 for name in pages}
    pdf_sent_as_document = takes_pdf
    assert counts["raster"] == pages["three.tiff"] + pages["one.png"]
    assert counts["pdf"] == (0 if pdf_sent_as_document else pages["three.pdf"])
    # Every attempt of a document got the very same prepared request, in the backend's form.
    for doc_id, n in pages.items():
        seen = [r for r in backend.seen if r.doc_id == doc_id]
        assert all(r is seen[0] for r in seen)
        carried = seen[0]
        if form == "pages":
            assert len(carried.pages) == n and not carried.images and carried.pdf_bytes is None
            assert all(p.mode == "RGB" for p in carried.pages)
        elif doc_id == "three.pdf" and pdf_sent_as_document:
            assert carried.pdf_bytes == (data / doc_id).read_bytes() and not carried.images
            assert len(carried.page_sizes()) == n
        else:
            assert len(carried.images) == n and not carried.pages and carried.pdf_bytes is None


class Batched(Recording):
    batches = True

    def __init__(self, answers):
        super().__init__({}, "pages")
        self.answers = answers
        self.batch_sizes: list[int] = []

    def generate_batch(self, requests):
        self.batch_sizes.append(len(requests))
        return super().generate_batch(requests)


def test_a_batched_backend_gets_decoded_pages_and_bad_files_fail_alone(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    pages = _write_dataset(data)
    (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with open(data / "ground_truth.csv", "a") as fh:
        fh.write("broken.png,RECEIPT,$2.00\n")
    backend = Batched({d: GT for d in pages})
    store = RunStore(tmp_path / "results")
    s = Runner(backend, load_dataset(data), store, RunOptions(retry=FAST, batch_size=4)).run()
    rows = {d.doc_id: d for d in store.documents(s.run_id)}
    assert rows["broken.png"].status == "failed" and rows["broken.png"].error_class == "input"
    assert all(rows[d].status == "ok" for d in pages)
    assert backend.batch_sizes == [3]  # the others still shared one batch
    assert all(p.mode == "RGB" for r in backend.seen for p in r.pages)


def test_pdf_text_or_pages_renders_only_the_pages_without_a_text_layer(tmp_path, counted):
    """A PDF with a text layer reaches the backend as bytes, never rendered; a scanned PDF's pages
    and image pages arrive decoded, once each, retries included."""
    from migbench.fixtures.render import text_pdf

    data = tmp_path / "data"
    data.mkdir()
    pages = _write_dataset(data)  # the PDF here is image-only: every page rendered
    page = Image.new("L", (600, 400), 255)
    page.text_ops = [("ACME PTY LTD", 50, "left", 40, 24, True), ("TOTAL $12.50", 550, "right", 300, 20, False)]
    (data / "text.pdf").write_bytes(text_pdf(page))
    with open(data / "ground_truth.csv", "a") as fh:
        fh.write("text.pdf,RECEIPT,$1.00\n")
    docs = {**pages, "text.pdf": 1}
    ds = load_dataset(data)
    backend = Recording({d: list(TWICE) for d in docs}, "pdf-text-or-pages")
    store = RunStore(tmp_path / "results")
    counts = counted()
    s = Runner(backend, ds, store, RunOptions(retry=FAST)).run()

    assert s.ok == 4 and s.failed == 0
    assert {name: counts["reads"][name] for name in docs} == {name: 1 for name in docs}
    assert counts["pdf"] == pages["three.pdf"]  # the text-layer PDF: no page rendered
    by_doc = {r.doc_id: r for r in backend.seen}
    assert by_doc["text.pdf"].pdf_bytes == (data / "text.pdf").read_bytes() and not by_doc["text.pdf"].pages
    assert len(by_doc["three.pdf"].pages) == 3 and by_doc["three.pdf"].pdf_bytes is not None
    assert len(by_doc["three.tiff"].pages) == 3 and by_doc["three.tiff"].pdf_bytes is None


def test_pdf_text_or_pages_keeps_hostile_pdfs_input_failures(tmp_path):
    from migbench.contracts import InputError
    from migbench.images import prepare_input

    with pytest.raises(InputError, match="broken PDF"):
        prepare_input(b"%PDF-1.7\n garbage", "pdf-text-or-pages", what="bad.pdf")
