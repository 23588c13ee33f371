"""The OCR baseline: RapidOCR (ONNX models inside the wheel, fully offline) + rule extraction.

It is the offline default and the floor every model must beat. Its output is rendered in the
incumbent's `FIELD: value` format so the same parser and scorer path applies as for every model.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from typing import Any

from migbench.adapters.ocr_layout import OcrLine, pdf_text_lines
from migbench.adapters.ocr_rules import extract
from migbench.contracts import (
    Backend,
    BackendConfig,
    BackendError,
    BackendOptions,
    ErrorClass,
    ImageBudget,
    Request,
    Response,
    SetupError,
)
from migbench.schema import Schema, load_schema
from pydantic import Field

INSTALL_HINT = "the OCR baseline needs rapidocr-onnxruntime: pip install 'migbench[ocr]'"


def render_fields(fields: dict[str, str], doc_type: str, schema: Schema) -> str:
    """One `FIELD: value` line per field of the document type, NOT_FOUND when absent."""
    out = []
    for name in schema.fields_for(doc_type):
        value = (fields.get(name) or "").replace("\n", " ").strip() or schema.not_found
        out.append(f"{name}: {value}")
    return "\n".join(out)


def ocr_result_to_lines(result: Any, page: int) -> list[OcrLine]:
    """RapidOCR's [[quad, text, score], ...] (or None when nothing was detected) -> OcrLines."""
    return [OcrLine.from_quad(quad, str(text), float(score), page) for quad, text, score in (result or [])]


class OCRBaselineOptions(BackendOptions):
    """Options of the OCR baseline, validated when the backend is loaded."""

    threads: int | None = Field(None, ge=1, description="OCR threads (default: the CPU count)")
    max_side: int | None = Field(None, ge=1, description="downscale pages whose longer side exceeds this")
    schema_: str | None = Field(None, alias="schema", description="field schema YAML (default: the shipped one)")


class OCRBaseline(Backend):
    family = "ocr"
    Options = OCRBaselineOptions
    # A PDF's text layer is read as it is (exact words, no OCR); only its pages without one arrive
    # decoded, like every image page (by the runner, once per page).
    input_form = "pdf-text-or-pages"

    def __init__(self, config: BackendConfig):
        super().__init__(config)
        self.threads = int(config.get("threads") or os.cpu_count() or 1)
        # Downscale pages before OCR: faster on big scans, at the cost of small print.
        self.max_side = int(config.get("max_side")) if config.get("max_side") else None
        self._schema = load_schema(config.get("schema")) if config.get("schema") else load_schema()
        # onnxruntime sessions are thread-safe, but RapidOCR keeps per-call state on the engine
        # object, so each calling thread gets its own engine (the models are small).
        self._local = threading.local()
        self._create_lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return self.config.model or "rapidocr-onnxruntime-1.4.4+rules"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "threads": self.threads, "max_side": self.max_side, "emulated": False}

    def image_budget(self) -> ImageBudget:
        return ImageBudget(max_side_px=self.max_side)

    def preflight(self) -> None:
        self._engine()

    def _engine(self):
        eng = getattr(self._local, "engine", None)
        if eng is not None:
            return eng
        with self._create_lock:  # model loading is not worth racing on
            try:
                from rapidocr_onnxruntime import RapidOCR
            except ImportError as exc:
                raise SetupError(INSTALL_HINT) from exc
            eng = RapidOCR(intra_op_num_threads=self.threads, inter_op_num_threads=1)
        self._local.engine = eng
        return eng

    def ocr_pages(self, pages: list) -> list[OcrLine]:
        """RGB PIL pages (as the runner prepared them) -> OCR lines of every page."""
        engine = self._engine()
        lines: list[OcrLine] = []
        for i, page in enumerate(pages):
            result, _ = engine(page)
            lines.extend(ocr_result_to_lines(result, i))
        return lines

    def read_pdf(self, request: Request) -> tuple[list[OcrLine], int]:
        """(lines of every page, number of pages read from the text layer): text-layer pages as
        they are, the others OCR'd from the decoded pages the runner prepared for exactly them."""
        import pypdfium2 as pdfium
        from migbench.images import PDF_DPI, pdf_text_usable

        try:
            pdf = pdfium.PdfDocument(request.pdf_bytes)
        except pdfium.PdfiumError as exc:
            raise BackendError(f"{request.doc_id}: unreadable PDF ({exc})", ErrorClass.INPUT) from None
        lines: list[OcrLine] = []
        scanned = iter(request.pages)
        from_text = 0
        try:
            for i in range(len(pdf)):
                page = pdf[i]
                tp = page.get_textpage()
                try:
                    if pdf_text_usable(tp):
                        lines.extend(pdf_text_lines(tp, page.get_size()[1], i, PDF_DPI / 72))
                        from_text += 1
                        continue
                finally:
                    tp.close()
                image = next(scanned, None)
                if image is None:
                    raise BackendError(f"{request.doc_id}: page {i + 1} has no text layer and no decoded image",
                                       ErrorClass.INPUT)
                lines.extend(dataclasses.replace(ln, page=i) for ln in self.ocr_pages([image]))
        finally:
            pdf.close()
        return lines, from_text

    def generate(self, request: Request) -> Response:
        if not request.pages and not request.pdf_bytes:
            raise BackendError(f"{request.doc_id}: no decoded pages to OCR", ErrorClass.INPUT)
        if request.doc_type not in self._schema.document_types:
            raise BackendError(f"{request.doc_id}: unknown document type {request.doc_type!r}",
                               ErrorClass.PERMANENT)
        t0 = time.perf_counter()
        if request.pdf_bytes:
            lines, text_pages = self.read_pdf(request)
        else:
            lines, text_pages = self.ocr_pages(request.pages), 0
        ocr_s = time.perf_counter() - t0
        fields = extract(lines, request.doc_type, self._schema)
        latency = time.perf_counter() - t0
        return Response(
            text=render_fields(fields, request.doc_type, self._schema),
            input_tokens=None,
            output_tokens=None,
            latency_s=latency,
            model_id=self.model_id,
            endpoint="local",
            stop_reason="end",
            extra={"ocr_lines": [ln.to_compact() for ln in lines], "ocr_s": round(ocr_s, 3),
                   "pages": len(request.pdf_page_sizes) or len(request.pages), "text_layer_pages": text_pages},
        )

    def close(self) -> None:
        self._local = threading.local()
