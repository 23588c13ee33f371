"""Token estimates before a call, for rate limiting (the response's usage settles them)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from PIL import Image

# Least-squares fit tokens = a + b * pixels to the published Nova v1 table (Amazon Nova user guide,
# image understanding: https://docs.aws.amazon.com/nova/latest/userguide/modalities-image.html):
# 900x450~800, 900x900~1300, 1400x900~1800, 1800x900~2400, 1300x1300~2600 (within 7% of each).
_IMG_A = 202.1
_IMG_B = 1.3638e-3
# Nova resizes large images internally; beyond the largest point of the table the estimate is
# held flat (an assumption: the table says nothing about larger inputs).
_IMG_MAX_PIXELS = 1300 * 1300


def estimate_image_tokens(width: int, height: int) -> int:
    """Approximate Nova input tokens for one image of width x height pixels."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    return round(_IMG_A + _IMG_B * min(width * height, _IMG_MAX_PIXELS))


def estimate_text_tokens(text: str | None) -> int:
    """About four characters per token, the usual rule of thumb for English."""
    return math.ceil(len(text) / 4) if text else 0


def image_size(data: bytes) -> tuple[int, int] | None:
    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header only
            return img.size
    except Exception:  # noqa: BLE001 - an estimate must never fail a document
        return None


def estimate_request_tokens(prompt: str, system: str | None,
                            pages: Sequence[tuple[int, int] | bytes]) -> int:
    """Text plus each page, given as its pixel size (Request.page_sizes(): nothing is read) or as
    encoded bytes (only the header is read); an unreadable page counts a flat 1000."""
    tokens = estimate_text_tokens(prompt) + estimate_text_tokens(system)
    for page in pages:
        size = image_size(page) if isinstance(page, (bytes, bytearray)) else page
        tokens += estimate_image_tokens(*size) if size and size[0] > 0 and size[1] > 0 else 1000
    return max(1, tokens)
