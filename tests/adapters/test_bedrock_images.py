"""Page images are brought within Nova's formats and limits; acceptable ones pass untouched."""

import io

import numpy as np
import pytest
from migbench.adapters.bedrock_images import (
    ImagePrepError,
    estimate_image_tokens,
    image_limits,
    prepare_image,
    prepare_images,
    render_pdf_pages,
)
from PIL import Image


def encode(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def reopen(p):
    img = Image.open(io.BytesIO(p.data))
    img.load()
    return img


def test_acceptable_png_passes_unchanged():
    data = encode(Image.new("RGB", (300, 200), "white"), "PNG")
    p = prepare_image(data)
    assert p.data == data and p.format == "png" and not p.converted and (p.width, p.height) == (300, 200)


@pytest.mark.parametrize("fmt", ["TIFF", "BMP"])
def test_unsupported_formats_are_converted_to_png(fmt):
    p = prepare_image(encode(Image.new("RGB", (120, 80), (10, 20, 30)), fmt))
    assert p.format == "png" and p.converted and reopen(p).format == "PNG"
    assert reopen(p).getpixel((5, 5)) == (10, 20, 30)


def test_cmyk_jpeg_becomes_rgb_jpeg():
    p = prepare_image(encode(Image.new("CMYK", (64, 64), (0, 0, 0, 0)), "JPEG"))
    assert p.format == "jpeg" and reopen(p).mode == "RGB"


def test_sixteen_bit_png_is_scaled_to_eight_bit():
    arr = np.full((40, 40), 65535, dtype=np.uint16)
    arr[:, :20] = 0
    p = prepare_image(encode(Image.fromarray(arr), "PNG"))
    img = reopen(p)
    assert img.mode == "L" and img.getpixel((30, 5)) == 255 and img.getpixel((5, 5)) == 0


def test_alpha_is_flattened_onto_white():
    p = prepare_image(encode(Image.new("RGBA", (30, 30), (255, 0, 0, 0)), "PNG"))
    img = reopen(p)
    assert img.mode == "RGB" and img.getpixel((3, 3)) == (255, 255, 255)


def test_oversize_pages_are_resized_to_the_side_limit_and_to_max_dim():
    big = encode(Image.new("L", (9000, 100), 255), "PNG")
    p = prepare_image(big)
    assert max(p.width, p.height) == image_limits().max_side_px and p.converted
    p2 = prepare_image(encode(Image.new("RGB", (2400, 1200), "white"), "PNG"), max_dim=1200)
    assert (p2.width, p2.height) == (1200, 600)


def test_pages_over_the_byte_budget_are_reencoded_as_jpeg_within_it():
    rng = np.random.default_rng(0)
    noisy = encode(Image.fromarray(rng.integers(0, 255, (700, 700, 3), dtype=np.uint8)), "PNG")
    p = prepare_image(noisy, max_bytes=200_000)
    assert p.format == "jpeg" and len(p.data) <= 200_000


def test_request_budget_is_shared_between_pages():
    pages = [encode(Image.new("RGB", (50, 50), "white"), "PNG")] * 3
    out = prepare_images(pages, reserve_bytes=1000)
    assert len(out) == 3 and all(p.format == "png" for p in out)


def test_unreadable_bytes_raise_a_clear_error():
    with pytest.raises(ImagePrepError, match="not a readable image"):
        prepare_image(b"definitely not an image")


def test_image_token_estimate_tracks_the_published_table_within_ten_percent():
    table = {(900, 450): 800, (900, 900): 1300, (1400, 900): 1800, (1800, 900): 2400, (1300, 1300): 2600}
    for (w, h), tokens in table.items():
        assert abs(estimate_image_tokens(w, h) - tokens) / tokens < 0.10


def test_pdf_pages_render_to_png():
    pdf = encode(Image.new("RGB", (200, 100), "white"), "PDF")
    pages = render_pdf_pages(pdf, dpi=72)
    assert len(pages) == 1 and Image.open(io.BytesIO(pages[0])).format == "PNG"
