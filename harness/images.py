"""The one image pipeline: read a document file once, decode each page once, prepare it once.

The runner calls `prepare_document` for each document, in the form its backend declares
(`Backend.input_form`) and within the backend's `ImageBudget`; every retry reuses the result.

- "pages": decoded 8-bit RGB pages (PIL) for local models and OCR.
- "encoded": page bytes a cloud API accepts (formats, side limit, request payload). A page that
  already fits is sent as its original bytes; anything else (TIFF, BMP, CMYK, 16-bit, alpha, a
  rotated photo, an oversize scan) is converted: alpha flattened onto white (documents are
  printed on white), scaled under the side limit, lossless first and JPEG at falling quality only
  when the bytes do not fit. The request budget is shared equally between the pages.
- "pdf-or-encoded": the original PDF bytes where the backend takes document blocks (checked for
  encryption, page count and page size, never rendered); otherwise "encoded".
- "pdf-text-or-pages": for a PDF, its bytes (checked as above) plus decoded pages only for the pages
  without a usable text layer (in page order; `pdf_text_usable` decides, and a backend reading the
  text layer uses the same test to pair them back); for an image, "pages". Text-layer pages are
  never rendered.

Formats are recognised by content, not extension (a PNG called .jpg is still a PNG). EXIF
orientation is applied to the decoded original, so a phone photo taken sideways is read upright
on every path. Every problem becomes an InputError with a one-line cause, recorded per document.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from migbench.contracts import EncodedImage, ImageBudget, InputError
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "DecodedPage",
    "ImagePrepError",
    "PreparedInput",
    "decode_pages",
    "encoded",
    "fit_within",
    "load_pages",
    "load_pages_from_bytes",
    "pdf_text_usable",
    "prepare_document",
    "prepare_input",
    "read_document",
    "sniff",
    "to_8bit",
    "to_rgb",
    "upright",
]

# Above this many pixels per page we refuse instead of decoding: a decompression bomb
# (a tiny file declaring a gigantic canvas) would otherwise take the machine's memory.
MAX_PIXELS = 80_000_000
MAX_PDF_PAGES = 20
PDF_DPI = 150
EXIF_ORIENTATION = 0x0112

_PIL_TO_FORMAT = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg", "GIF": "gif", "WEBP": "webp"}
_FORMAT_TO_PIL = {"png": "PNG", "jpeg": "JPEG", "gif": "GIF", "webp": "WEBP"}
# Modes each format can carry as sent (a CMYK JPEG is valid JPEG but not what vision APIs read).
_OK_MODES = {"png": {"RGB", "L", "P"}, "jpeg": {"RGB", "L"}, "gif": {"P", "L"}, "webp": {"RGB"}}
_JPEG_QUALITIES = (90, 80, 70)


class ImagePrepError(InputError):
    """A page cannot be brought within the backend's limits."""


@dataclass
class PreparedInput:
    """What a Request carries for one document, in the backend's form."""

    images: list[EncodedImage] = field(default_factory=list)
    pages: list[Image.Image] = field(default_factory=list)
    pdf_bytes: bytes | None = None
    pdf_page_sizes: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class DecodedPage:
    image: Image.Image  # decoded, orientation applied, in its source mode
    source: bytes | None = None  # the original encoded bytes, when they show exactly this page
    source_format: str | None = None


# ---------------------------------------------------------------- reading


def read_document(path: str | Path) -> bytes:
    """The document's bytes, read once. Only regular files: a FIFO or device would block forever."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise InputError(f"{p.name}: file not found") from None
    except OSError as exc:
        raise InputError(f"{p.name}: cannot read ({exc.__class__.__name__})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "folder" if stat.S_ISDIR(st.st_mode) else "FIFO, device or socket"
        raise InputError(f"{p.name}: not a regular file ({kind})")
    try:
        return p.read_bytes()
    except OSError as exc:
        raise InputError(f"{p.name}: cannot read ({exc.__class__.__name__})") from None


def sniff(data: bytes) -> str:
    head = data[:16]
    if head.startswith(b"%PDF"):
        return "pdf"
    if head.startswith(b"\x89PNG"):
        return "png"
    if head.startswith(b"\xff\xd8"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:2] == b"BM":
        return "bmp"
    return "unknown"


# ---------------------------------------------------------------- decoding (once per page)


def _check_size(width: int, height: int, what: str) -> None:
    if width <= 0 or height <= 0:
        raise InputError(f"{what}: empty image ({width}x{height})")
    if width * height > MAX_PIXELS:
        raise InputError(
            f"{what}: {width}x{height} px exceeds the {MAX_PIXELS:,}-pixel limit (decompression bomb?)"
        )


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - a corrupt EXIF block is no reason to refuse the pixels
        return 1


def upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation to a decoded page (a no-op without one)."""
    if _orientation(img) in (2, 3, 4, 5, 6, 7, 8):
        return ImageOps.exif_transpose(img)
    return img


def _raster_pages(data: bytes, what: str) -> list[DecodedPage]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            _check_size(*img.size, what)
            n = getattr(img, "n_frames", 1)
            src_fmt = _PIL_TO_FORMAT.get(img.format or "")
            pages = []
            for i in range(n):
                if n > 1:
                    img.seek(i)
                    _check_size(*img.size, f"{what} page {i + 1}")
                img.load()
                if n == 1:
                    up = upright(img)
                    # The original bytes show this page only when nothing had to be turned.
                    pages.append(DecodedPage(up, data if up is img else None, src_fmt))
                else:
                    pages.append(DecodedPage(upright(img.copy())))
            return pages
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"{what}: refused as a decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise InputError(f"{what}: not a readable image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InputError(f"{what}: broken or truncated image ({exc})") from None


def _open_pdf(data: bytes, what: str):
    try:
        import pypdfium2 as pdfium
    except ImportError:  # pragma: no cover - core dependency
        raise InputError(f"{what}: PDF support needs pypdfium2 (pip install pypdfium2)") from None
    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if "password" in str(exc).lower():
            raise InputError(f"{what}: encrypted PDF (password required)") from None
        raise InputError(f"{what}: broken PDF ({exc})") from None
    return pdfium, pdf


def pdf_text_usable(textpage) -> bool:
    """Whether a PDF page's text layer carries the page's words: enough characters, and not the
    unmapped-glyph garbage some PDFs carry (their text then has to be read from the pixels)."""
    import pypdfium2.raw as pdfium_c

    n = textpage.count_chars()
    if n < 5:
        return False
    codes = [pdfium_c.FPDFText_GetUnicode(textpage.raw, i) for i in range(n)]
    visible = [u for u in codes if u > 32 and u not in (0xFFFD, 0xFFFE)]
    junk = sum(1 for u in codes if u == 0xFFFD or (u < 32 and u not in (9, 10, 13)))
    return len(visible) >= 5 and junk <= 0.1 * n


def _page_has_text(page) -> bool:
    tp = page.get_textpage()
    try:
        return pdf_text_usable(tp)
    finally:
        tp.close()


def _pdf_walk(data: bytes, what: str, *, render: bool, dpi: int = PDF_DPI, skip_text: bool = False):
    """(rendered sizes, rendered pages or []): page count and sizes checked before any rendering.
    With skip_text, pages with a usable text layer are not rendered (see pdf_text_usable)."""
    pdfium, pdf = _open_pdf(data, what)
    try:
        n = len(pdf)
        if n == 0:
            raise InputError(f"{what}: PDF has no pages")
        if n > MAX_PDF_PAGES:
            raise InputError(f"{what}: PDF has {n} pages, more than the {MAX_PDF_PAGES}-page limit")
        scale = dpi / 72
        sizes, pages = [], []
        for i in range(n):
            page = pdf[i]
            w, h = page.get_size()
            size = (int(w * scale), int(h * scale))
            _check_size(*size, f"{what} page {i + 1}")
            sizes.append(size)
            if render and not (skip_text and _page_has_text(page)):
                pages.append(DecodedPage(page.render(scale=scale).to_pil()))
        return sizes, pages
    except pdfium.PdfiumError as exc:
        raise InputError(f"{what}: broken PDF ({exc})") from None
    finally:
        pdf.close()


def decode_pages(data: bytes, what: str = "document") -> list[DecodedPage]:
    """Every page of a document's bytes, decoded once, upright, in its source mode."""
    if not data:
        raise InputError(f"{what}: empty file (0 bytes)")
    kind = sniff(data)
    if kind == "pdf":
        return _pdf_walk(data, what, render=True)[1]
    if kind == "unknown":
        raise InputError(f"{what}: not an image or PDF (unrecognised content)")
    return _raster_pages(data, what)


# ---------------------------------------------------------------- conversion


def to_8bit(img: Image.Image) -> Image.Image:
    """8-bit L or RGB: alpha onto white; CMYK, YCbCr, palette to RGB; 16/32-bit and float scaled."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # Scale by the actual range, not by truncation (a 12-bit scan would otherwise be black).
        lo, hi = img.getextrema()
        scale = 255.0 / (hi - lo) if hi > lo else 1.0
        return img.point(lambda v: (v - lo) * scale).convert("L")
    if img.mode == "1":
        return img.convert("L")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if img.mode in ("RGB", "L"):
        return img
    return img.convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """CMYK, 16-bit, palette, alpha and greyscale pages all become plain 8-bit RGB."""
    img = to_8bit(img)
    return img if img.mode == "RGB" else img.convert("RGB")


def fit_within(img: Image.Image, max_side: int | None) -> Image.Image:
    """Downscale so the longer side is at most max_side (aspect kept); never upscale."""
    if not max_side or max(img.size) <= max_side:
        return img
    scale = max_side / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.LANCZOS)


def _encode(img: Image.Image, fmt: str, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    if fmt == "jpeg":
        img.save(buf, format="JPEG", quality=quality, optimize=True)
    else:
        img.save(buf, format=_FORMAT_TO_PIL[fmt])
    return buf.getvalue()


def _encode_page(page: DecodedPage, budget: ImageBudget, *, max_side: int | None, max_bytes: int | None,
                 image_format: str | None, what: str) -> EncodedImage:
    img = page.image
    w, h = img.size
    src = page.source_format
    if (page.source is not None and src in budget.formats and img.mode in _OK_MODES.get(src, set())
            and "transparency" not in img.info and (image_format is None or image_format == src)
            and (not max_side or max(w, h) <= max_side) and (max_bytes is None or len(page.source) <= max_bytes)):
        return EncodedImage(page.source, src, w, h, converted=False)
    img = fit_within(to_8bit(img), max_side)
    if image_format is not None and image_format in budget.formats:
        target = image_format
    elif src in ("png", "jpeg", "webp") and src in budget.formats:
        target = src
    else:
        target = "png" if "png" in budget.formats else budget.formats[0]
    if target in ("jpeg", "webp") and img.mode != "RGB" and not (target == "jpeg" and img.mode == "L"):
        img = img.convert("RGB")
    out = _encode(img, target)
    if max_bytes is None or len(out) <= max_bytes:
        return EncodedImage(out, target, *img.size, converted=True)
    if "jpeg" not in budget.formats:
        raise ImagePrepError(f"{what}: page of {len(out)} bytes exceeds {max_bytes} and JPEG is not allowed")
    # Lossless did not fit: JPEG at falling quality, then smaller, until it does.
    rgb = img if img.mode in ("RGB", "L") else img.convert("RGB")
    while True:
        for q in _JPEG_QUALITIES:
            out = _encode(rgb, "jpeg", q)
            if len(out) <= max_bytes:
                return EncodedImage(out, "jpeg", *rgb.size, converted=True)
        if max(rgb.size) <= 64:
            raise ImagePrepError(f"{what}: page cannot be brought under {max_bytes} bytes")
        rgb = fit_within(rgb, int(max(rgb.size) * 0.75))


def _side(budget: ImageBudget, max_dim: int | None) -> int | None:
    sides = [s for s in (budget.max_side_px, max_dim) if s]
    side = min(sides) if sides else None
    if side is not None and side < 1:
        raise ImagePrepError(f"max image dimension must be positive, got {side}")
    return side


# ---------------------------------------------------------------- the pipeline


def prepare_input(data: bytes, form: str, budget: ImageBudget | None = None, *, what: str = "document",
                  reserve_bytes: int = 0, image_format: str | None = None,
                  max_dim: int | None = None) -> PreparedInput:
    """One document's bytes -> what its request carries, in `form` and within `budget`.

    `reserve_bytes` is what the rest of the request (prompt, system, JSON) takes from the payload
    limit; `image_format` forces the encoding of every page (None: keep the source's where
    allowed, else PNG); `max_dim` lowers the budget's side limit.
    """
    budget = budget or ImageBudget()
    if form not in ("encoded", "pages", "pdf-or-encoded", "pdf-text-or-pages"):
        raise ValueError(f"unknown input form {form!r}")
    max_side = _side(budget, max_dim)
    if not data:
        raise InputError(f"{what}: empty file (0 bytes)")
    if form == "pdf-or-encoded" and budget.takes_pdf and sniff(data) == "pdf":
        # base64 in JSON bodies inflates by 4/3; too big for a document block: sent as pages.
        fits = budget.max_request_bytes is None or len(data) * 4 // 3 + reserve_bytes <= budget.max_request_bytes
        fits = fits and (budget.max_document_bytes is None or len(data) <= budget.max_document_bytes)
        if fits:
            sizes, _ = _pdf_walk(data, what, render=False)
            return PreparedInput(pdf_bytes=data, pdf_page_sizes=sizes)
    if form == "pdf-text-or-pages" and sniff(data) == "pdf":
        sizes, textless = _pdf_walk(data, what, render=True, skip_text=True)
        return PreparedInput(pages=[fit_within(to_rgb(p.image), max_side) for p in textless], pdf_bytes=data,
                             pdf_page_sizes=sizes)
    pages = decode_pages(data, what)
    if form in ("pages", "pdf-text-or-pages"):
        return PreparedInput(pages=[fit_within(to_rgb(p.image), max_side) for p in pages])
    share = None
    if budget.max_request_bytes is not None:
        share = int((budget.max_request_bytes - reserve_bytes) * 3 / 4 / len(pages))
        if share <= 0:
            raise ImagePrepError(f"{what}: the prompt alone exceeds the request payload limit")
    return PreparedInput(images=[
        _encode_page(p, budget, max_side=max_side, max_bytes=share, image_format=image_format,
                     what=what if len(pages) == 1 else f"{what} page {i + 1}")
        for i, p in enumerate(pages)])


def prepare_document(path: str | Path, form: str, budget: ImageBudget | None = None, *,
                     what: str | None = None, **kwargs) -> PreparedInput:
    """Read a document file once and prepare it (see prepare_input)."""
    return prepare_input(read_document(path), form, budget, what=what or Path(path).name, **kwargs)


def encoded(data: bytes) -> EncodedImage:
    """Already acceptable page bytes as an EncodedImage, from the header only (no decode)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = _PIL_TO_FORMAT.get(img.format or "")
            size = img.size
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImagePrepError(f"not a readable image ({len(data)} bytes): {exc}") from None
    if fmt is None:
        raise ImagePrepError(f"{img.format} is not a format vision APIs take: prepare it with prepare_input")
    return EncodedImage(data, fmt, *size)


def load_pages_from_bytes(data: bytes, what: str = "document") -> list[Image.Image]:
    """Every page as 8-bit RGB, upright."""
    return [to_rgb(p.image) for p in decode_pages(data, what)]


def load_pages(path: str | Path) -> list[Image.Image]:
    return load_pages_from_bytes(read_document(path), Path(path).name)
