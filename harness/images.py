"""Read any document file into RGB page images, and encode pages for a request.

Formats are recognised by content, not extension (a PNG called .jpg is still a PNG). Every
problem becomes an InputError with a one-line cause, so the runner records it per document.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from migbench.contracts import InputError
from PIL import Image, ImageOps, UnidentifiedImageError

# Above this many pixels per page we refuse instead of decoding: a decompression bomb
# (a tiny file declaring a gigantic canvas) would otherwise take the machine's memory.
MAX_PIXELS = 80_000_000
MAX_PDF_PAGES = 20
PDF_DPI = 150




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


def to_rgb(img: Image.Image) -> Image.Image:
    """CMYK, 16-bit, palette, alpha and greyscale pages all become plain 8-bit RGB."""
    img = ImageOps.exif_transpose(img) if img.format == "JPEG" else img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits by the actual range, not by truncation.
        lo, hi = img.getextrema()
        scale = 255.0 / (hi - lo) if hi > lo else 1.0
        img = img.point(lambda v: (v - lo) * scale).convert("L")
    if img.mode == "F":
        img = img.convert("L")
    if img.mode in ("P", "PA"):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA"):
        bg = Image.new("RGB", img.size, (255, 255, 255))
        bg.paste(img, mask=img.getchannel("A"))
        return bg
    return img.convert("RGB") if img.mode != "RGB" else img


def _check_size(width: int, height: int, what: str) -> None:
    if width <= 0 or height <= 0:
        raise InputError(f"{what}: empty image ({width}x{height})")
    if width * height > MAX_PIXELS:
        raise InputError(
            f"{what}: {width}x{height} px exceeds the {MAX_PIXELS:,}-pixel limit (decompression bomb?)"
        )


def _raster_pages(data: bytes, what: str) -> list[Image.Image]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            _check_size(*img.size, what)
            pages = []
            for i in range(getattr(img, "n_frames", 1)):
                img.seek(i)
                _check_size(*img.size, f"{what} page {i + 1}")
                img.load()
                pages.append(to_rgb(img.copy()))
            return pages
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"{what}: refused as a decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise InputError(f"{what}: not a readable image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InputError(f"{what}: broken or truncated image ({exc})") from None


def _pdf_pages(data: bytes, what: str, dpi: int = PDF_DPI) -> list[Image.Image]:
    try:
        import pypdfium2 as pdfium
    except ImportError:  # pragma: no cover - core dependency
        raise InputError(f"{what}: PDF support needs pypdfium2 (pip install pypdfium2)") from None
    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        msg = str(exc).lower()
        if "password" in msg:
            raise InputError(f"{what}: encrypted PDF (password required)") from None
        raise InputError(f"{what}: broken PDF ({exc})") from None
    try:
        n = len(pdf)
        if n == 0:
            raise InputError(f"{what}: PDF has no pages")
        if n > MAX_PDF_PAGES:
            raise InputError(f"{what}: PDF has {n} pages, more than the {MAX_PDF_PAGES}-page limit")
        pages = []
        for i in range(n):
            page = pdf[i]
            w, h = page.get_size()
            scale = dpi / 72
            _check_size(int(w * scale), int(h * scale), f"{what} page {i + 1}")
            pages.append(to_rgb(page.render(scale=scale).to_pil()))
        return pages
    except pdfium.PdfiumError as exc:
        raise InputError(f"{what}: broken PDF ({exc})") from None
    finally:
        pdf.close()


def load_pages_from_bytes(data: bytes, what: str = "document") -> list[Image.Image]:
    if not data:
        raise InputError(f"{what}: empty file (0 bytes)")
    kind = sniff(data)
    if kind == "pdf":
        return _pdf_pages(data, what)
    if kind == "unknown":
        raise InputError(f"{what}: not an image or PDF (unrecognised content)")
    return _raster_pages(data, what)


def load_pages(path: str | Path) -> list[Image.Image]:
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{p.name}: file not found") from None
    except (IsADirectoryError, PermissionError, OSError) as exc:
        raise InputError(f"{p.name}: cannot read ({exc.__class__.__name__})") from None
    return load_pages_from_bytes(data, p.name)


def fit_within(img: Image.Image, max_dim: int | None) -> Image.Image:
    if not max_dim or max(img.size) <= max_dim:
        return img
    scale = max_dim / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.LANCZOS)


def encode_image(img: Image.Image, fmt: str = "png", max_dim: int | None = None, quality: int = 90) -> bytes:
    img = fit_within(to_rgb(img), max_dim)
    buf = io.BytesIO()
    if fmt == "jpeg":
        img.save(buf, format="JPEG", quality=quality, optimize=True)
    elif fmt in ("png", "webp", "gif"):
        img.save(buf, format=fmt.upper())
    else:
        raise ValueError(f"unsupported output image format {fmt!r}")
    return buf.getvalue()
