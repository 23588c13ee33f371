"""Make page images acceptable to Nova before sending: format, mode, size, bytes.

Nova v1 takes png, jpeg, gif and webp, at most 8000 px per side, inside a 25 MB request (limits
live in bedrock_models.yaml). Scans arrive as TIFF, BMP, CMYK JPEG, 16-bit PNG or with alpha:
those are converted (alpha flattened onto white, since documents are printed on white), and
anything over the side limit or the configurable `max_dim` is downscaled. A page that is still
too big in bytes is re-encoded as JPEG at falling quality, then shrunk. The image-token estimate
is the emulator's fit to the published table (harness/emulator/protocol.py), reused, not copied.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from migbench.contracts import InputError
from migbench.residency import ImageLimits, load_model_catalog
from migbench.tokens import estimate_image_tokens
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "ImagePrepError",
    "PreparedImage",
    "estimate_image_tokens",
    "image_limits",
    "prepare_image",
    "prepare_images",
    "render_pdf_pages",
]

_PIL_TO_FORMAT = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg", "GIF": "gif", "WEBP": "webp"}
_FORMAT_TO_PIL = {"png": "PNG", "jpeg": "JPEG", "gif": "GIF", "webp": "WEBP"}
_OK_MODES = {"png": {"RGB", "L", "P"}, "jpeg": {"RGB", "L"}, "gif": {"P", "L"}, "webp": {"RGB"}}
_JPEG_QUALITIES = (90, 80, 70)


class ImagePrepError(InputError):
    """An image cannot be read or cannot be brought within the limits."""


class PreparedImage(NamedTuple):
    data: bytes
    format: str  # png | jpeg | gif | webp
    width: int
    height: int
    converted: bool  # re-encoded (format, mode or size changed)


@dataclass(frozen=True)
class _Budget:
    max_side: int
    max_bytes: int


def image_limits() -> ImageLimits:
    return load_model_catalog().image_limits


def _flatten(img: Image.Image) -> Image.Image:
    """To 8-bit RGB or L: alpha onto white, CMYK/YCbCr/palette to RGB, 16/32-bit and float scaled."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        hi = float(arr.max()) if arr.size else 0.0
        scale = 255.0 / hi if hi > 255 else 1.0
        return Image.fromarray(np.clip(arr * scale, 0, 255).astype("uint8"), mode="L")
    if img.mode == "1":
        return img.convert("L")
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if img.mode in ("RGB", "L"):
        return img
    return img.convert("RGB")


def _encode(img: Image.Image, fmt: str, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    if fmt == "jpeg":
        img.save(buf, format="JPEG", quality=quality, optimize=True)
    else:
        img.save(buf, format=_FORMAT_TO_PIL[fmt], optimize=True)
    return buf.getvalue()


def _scaled(img: Image.Image, max_side: int) -> Image.Image:
    w, h = img.size
    if max(w, h) <= max_side:
        return img
    ratio = max_side / max(w, h)
    return img.resize((max(1, round(w * ratio)), max(1, round(h * ratio))), Image.LANCZOS)


def prepare_image(data: bytes, *, limits: ImageLimits | None = None, max_dim: int | None = None,
                  max_bytes: int | None = None) -> PreparedImage:
    """One encoded image -> bytes Nova accepts, unchanged when it already does."""
    limits = limits or image_limits()
    max_side = min(limits.max_side_px, max_dim) if max_dim else limits.max_side_px
    if max_side < 1:
        raise ImagePrepError(f"max image dimension must be positive, got {max_side}")
    budget = _Budget(max_side, max_bytes or limits.max_request_bytes)
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImagePrepError(f"not a readable image ({len(data)} bytes): {exc}") from None
    src_fmt = _PIL_TO_FORMAT.get(img.format or "")
    animated = getattr(img, "n_frames", 1) > 1
    w, h = img.size
    if (src_fmt in limits.formats and not animated and img.mode in _OK_MODES.get(src_fmt, set())
            and "transparency" not in img.info
            and max(w, h) <= budget.max_side and len(data) <= budget.max_bytes):
        return PreparedImage(data, src_fmt, w, h, False)
    if animated:
        img.seek(0)  # a multi-frame TIFF/GIF here is one page; pages are split by harness/images.py
    img = ImageOps.exif_transpose(img) if img.mode not in ("I;16", "I", "F") else img
    img = _scaled(_flatten(img), budget.max_side)
    # Lossless first (text stays sharp), JPEG only when the bytes do not fit.
    target = src_fmt if src_fmt in ("png", "jpeg", "webp") and src_fmt in limits.formats else "png"
    out = _encode(img, target)
    if len(out) <= budget.max_bytes:
        return PreparedImage(out, target, *img.size, True)
    if "jpeg" not in limits.formats:
        raise ImagePrepError(f"image of {len(out)} bytes exceeds {budget.max_bytes} and JPEG is not allowed")
    rgb = img.convert("RGB") if img.mode != "L" else img
    while True:
        for q in _JPEG_QUALITIES:
            out = _encode(rgb, "jpeg", q)
            if len(out) <= budget.max_bytes:
                return PreparedImage(out, "jpeg", *rgb.size, True)
        if max(rgb.size) <= 64:
            raise ImagePrepError(f"image cannot be brought under {budget.max_bytes} bytes")
        rgb = _scaled(rgb, int(max(rgb.size) * 0.75))


def prepare_images(images: Sequence[bytes], *, limits: ImageLimits | None = None,
                   max_dim: int | None = None, reserve_bytes: int = 0) -> list[PreparedImage]:
    """All pages of a request. The byte budget is shared: the request as a whole must fit the limit,
    so each page gets an equal share of what the prompt (`reserve_bytes`) leaves. base64 (InvokeModel
    bodies, Converse JSON) inflates by 4/3, which the share allows for."""
    limits = limits or image_limits()
    if not images:
        return []
    share = int((limits.max_request_bytes - reserve_bytes) * 3 / 4 / len(images))
    if share <= 0:
        raise ImagePrepError("the prompt alone exceeds the request payload limit")
    return [prepare_image(d, limits=limits, max_dim=max_dim, max_bytes=share) for d in images]


def render_pdf_pages(pdf: bytes, *, dpi: int = 150, max_pages: int | None = None) -> list[bytes]:
    """PDF -> PNG page images, for APIs without document blocks (InvokeModel)."""
    import pypdfium2 as pdfium

    try:
        doc = pdfium.PdfDocument(pdf)
    except pdfium.PdfiumError as exc:
        raise ImagePrepError(f"not a readable PDF: {exc}") from None
    pages: list[bytes] = []
    try:
        for i in range(len(doc) if max_pages is None else min(len(doc), max_pages)):
            bitmap = doc[i].render(scale=dpi / 72)
            buf = io.BytesIO()
            bitmap.to_pil().convert("RGB").save(buf, format="PNG")
            pages.append(buf.getvalue())
    finally:
        doc.close()
    return pages


def estimate_request_image_tokens(prepared: Sequence[PreparedImage]) -> int:
    return sum(estimate_image_tokens(p.width, p.height) for p in prepared)
