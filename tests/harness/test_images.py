"""The one image pipeline (migbench.images): reading, decoding, orientation, and fitting pages
within a backend's limits."""

import io

import numpy as np
import pytest
from migbench.contracts import ImageBudget, InputError
from migbench.images import ImagePrepError, load_pages, load_pages_from_bytes, prepare_input
from migbench.residency import load_model_catalog
from migbench.tokens import estimate_image_tokens
from PIL import Image


def _png(img: Image.Image, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["CMYK", "P", "RGBA", "L", "I;16", "LA"])
def test_every_mode_becomes_rgb(mode):
    img = Image.new(mode if mode != "I;16" else "I;16", (30, 20))
    fmt = "JPEG" if mode == "CMYK" else ("TIFF" if mode == "LA" else "PNG")
    (page,) = load_pages_from_bytes(_png(img, fmt), "x")
    assert page.mode == "RGB" and page.size == (30, 20)


def test_alpha_is_composited_on_white():
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    (page,) = load_pages_from_bytes(_png(img), "x")
    assert page.getpixel((0, 0)) == (255, 255, 255)


def test_multipage_tiff_gives_every_page():
    frames = [Image.new("RGB", (10, 10), c) for c in ("red", "green", "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, format="TIFF", save_all=True, append_images=frames[1:])
    assert len(load_pages_from_bytes(buf.getvalue(), "t")) == 3


def test_pdf_pages_are_rendered():
    buf = io.BytesIO()
    Image.new("RGB", (200, 100), "white").save(buf, format="PDF")
    pages = load_pages_from_bytes(buf.getvalue(), "d.pdf")
    assert len(pages) == 1 and pages[0].width > 100


@pytest.mark.parametrize("data,cause", [
    (b"", "empty file"),
    (b"hello world, not an image", "not an image or PDF"),
    (b"%PDF-1.7\n garbage garbage", "broken PDF"),
])
def test_unreadable_inputs_name_their_cause(data, cause):
    with pytest.raises(InputError, match=cause):
        load_pages_from_bytes(data, "f")


def test_truncated_jpeg_is_an_input_error():
    data = _png(Image.new("RGB", (300, 300), "white"), "JPEG")
    with pytest.raises(InputError, match="broken or truncated"):
        load_pages_from_bytes(data[: len(data) // 3], "t.jpg")


def test_decompression_bomb_is_refused_before_decoding():
    # A tiny PNG that declares 20000x20000 px.
    img = Image.new("1", (20000, 20000))
    with pytest.raises(InputError, match="decompression bomb"):
        load_pages_from_bytes(_png(img), "bomb.png")


def test_format_is_sniffed_not_taken_from_the_extension(tmp_path):
    p = tmp_path / "really_png.jpg"
    p.write_bytes(_png(Image.new("RGB", (5, 5))))
    assert load_pages(p)[0].size == (5, 5)


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_pages(tmp_path / "nope.png")


def test_encoding_fits_within_max_dim():
    (p,) = prepare_input(_png(Image.new("RGB", (4000, 1000)), "JPEG"), "encoded", max_dim=1000).images
    assert Image.open(io.BytesIO(p.data)).size == (1000, 250) == (p.width, p.height)


# ---------------------------------------------------------------- cloud budgets (Nova's limits)
# Moved from tests/adapters/test_bedrock_images.py: the fitting now happens once, in the runner's
# pipeline, within the budget the backend declares (here the catalog's image limits, as Bedrock's).


def nova_budget(**kw) -> ImageBudget:
    limits = load_model_catalog().image_limits
    return ImageBudget(formats=tuple(limits.formats), max_side_px=kw.pop("max_side_px", limits.max_side_px),
                       max_request_bytes=kw.pop("max_request_bytes", limits.max_request_bytes), **kw)


def prepare_one(data: bytes, **kw):
    (p,) = prepare_input(data, "encoded", kw.pop("budget", None) or nova_budget(), **kw).images
    return p


def reopen(p):
    img = Image.open(io.BytesIO(p.data))
    img.load()
    return img


def test_acceptable_png_passes_unchanged():
    data = _png(Image.new("RGB", (300, 200), "white"), "PNG")
    p = prepare_one(data)
    assert p.data == data and p.format == "png" and not p.converted and (p.width, p.height) == (300, 200)


@pytest.mark.parametrize("fmt", ["TIFF", "BMP"])
def test_unsupported_formats_are_converted_to_png(fmt):
    p = prepare_one(_png(Image.new("RGB", (120, 80), (10, 20, 30)), fmt))
    assert p.format == "png" and p.converted and reopen(p).format == "PNG"
    assert reopen(p).getpixel((5, 5)) == (10, 20, 30)


def test_cmyk_jpeg_becomes_rgb_jpeg():
    p = prepare_one(_png(Image.new("CMYK", (64, 64), (0, 0, 0, 0)), "JPEG"))
    assert p.format == "jpeg" and reopen(p).mode == "RGB"


def test_sixteen_bit_png_is_scaled_to_eight_bit():
    arr = np.full((40, 40), 65535, dtype=np.uint16)
    arr[:, :20] = 0
    p = prepare_one(_png(Image.fromarray(arr), "PNG"))
    img = reopen(p)
    assert img.mode == "L" and img.getpixel((30, 5)) == 255 and img.getpixel((5, 5)) == 0


def test_alpha_is_flattened_onto_white():
    p = prepare_one(_png(Image.new("RGBA", (30, 30), (255, 0, 0, 0)), "PNG"))
    img = reopen(p)
    assert img.mode == "RGB" and img.getpixel((3, 3)) == (255, 255, 255)


def test_oversize_pages_are_resized_to_the_side_limit_and_to_max_dim():
    p = prepare_one(_png(Image.new("L", (9000, 100), 255), "PNG"))
    assert max(p.width, p.height) == load_model_catalog().image_limits.max_side_px and p.converted
    p2 = prepare_one(_png(Image.new("RGB", (2400, 1200), "white"), "PNG"), max_dim=1200)
    assert (p2.width, p2.height) == (1200, 600)


def test_pages_over_the_byte_budget_are_reencoded_as_jpeg_within_it():
    rng = np.random.default_rng(0)
    noisy = _png(Image.fromarray(rng.integers(0, 255, (700, 700, 3), dtype=np.uint8)), "PNG")
    p = prepare_one(noisy, budget=nova_budget(max_request_bytes=200_000 * 4 // 3))
    assert p.format == "jpeg" and len(p.data) <= 200_000


def test_request_budget_is_shared_between_pages():
    frames = [Image.new("RGB", (50, 50), "white")] * 3
    buf = io.BytesIO()
    frames[0].save(buf, format="TIFF", save_all=True, append_images=frames[1:])
    out = prepare_input(buf.getvalue(), "encoded", nova_budget(), reserve_bytes=1000).images
    assert len(out) == 3 and all(p.format == "png" for p in out)
    with pytest.raises(ImagePrepError, match="prompt alone exceeds"):
        prepare_input(buf.getvalue(), "encoded", nova_budget(max_request_bytes=900), reserve_bytes=1000)


def test_unreadable_bytes_raise_a_clear_error():
    with pytest.raises(InputError, match="not an image"):
        prepare_input(b"definitely not an image", "encoded", nova_budget())


def test_image_token_estimate_tracks_the_published_table_within_ten_percent():
    table = {(900, 450): 800, (900, 900): 1300, (1400, 900): 1800, (1800, 900): 2400, (1300, 1300): 2600}
    for (w, h), tokens in table.items():
        assert abs(estimate_image_tokens(w, h) - tokens) / tokens < 0.10


def test_pdf_pages_render_to_png_where_the_backend_takes_no_documents():
    pdf = _png(Image.new("RGB", (200, 100), "white"), "PDF")
    prepared = prepare_input(pdf, "pdf-or-encoded", nova_budget(takes_pdf=False))
    assert prepared.pdf_bytes is None and len(prepared.images) == 1
    assert reopen(prepared.images[0]).format == "PNG"


def test_a_pdf_goes_as_itself_where_the_backend_takes_documents_and_fits():
    pdf = _png(Image.new("RGB", (200, 100), "white"), "PDF")
    prepared = prepare_input(pdf, "pdf-or-encoded", nova_budget(takes_pdf=True))
    assert prepared.pdf_bytes == pdf and not prepared.images and len(prepared.pdf_page_sizes) == 1
    # Over the document limit: sent as page images instead of being refused by the service.
    too_big = prepare_input(pdf, "pdf-or-encoded", nova_budget(takes_pdf=True, max_document_bytes=len(pdf) - 1))
    assert too_big.pdf_bytes is None and len(too_big.images) == 1
    # Still checked: an encrypted or broken PDF is the document's failure, never sent.
    with pytest.raises(InputError, match="broken PDF"):
        prepare_input(b"%PDF-1.7\n garbage", "pdf-or-encoded", nova_budget(takes_pdf=True))


def test_forced_format_reencodes_every_page():
    p = prepare_one(_png(Image.new("RGB", (60, 40), "white"), "PNG"), image_format="jpeg")
    assert p.format == "jpeg" and reopen(p).format == "JPEG" and p.converted


def test_the_pages_form_gives_decoded_rgb_pages_within_the_side_limit():
    (page,) = prepare_input(_png(Image.new("RGBA", (400, 100), (0, 0, 0, 0)), "PNG"), "pages",
                            ImageBudget(max_side_px=200)).pages
    assert page.mode == "RGB" and page.size == (200, 50) and page.getpixel((3, 3)) == (255, 255, 255)


# ---------------------------------------------------------------- EXIF orientation
# A phone photo is stored as the sensor saw it plus an Orientation tag; read without the tag it
# lies sideways. The tag is applied to the decoded original on every path.

W, H = 120, 60  # as stored
MARK = (255, 0, 0)


def exif_jpeg(orientation: int, fmt: str = "JPEG") -> bytes:
    """A W x H image, white with a red block in its stored top-left corner, tagged with `orientation`."""
    img = Image.new("RGB", (W, H), "white")
    img.paste(MARK, (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, format=fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


# Where the stored top-left corner appears once the tag is applied (viewed size is H x W for 5-8):
# 6 = rotate 90 clockwise to view -> top-right; 8 = rotate 90 counter-clockwise -> bottom-left;
# 3 = 180 -> bottom-right; 1 = as stored.
UPRIGHT = {1: ((W, H), "tl"), 3: ((W, H), "br"), 6: ((H, W), "tr"), 8: ((H, W), "bl")}


def corner_of_mark(img: Image.Image) -> str:
    img = img.convert("RGB")
    w, h = img.size
    spots = {"tl": (5, 5), "tr": (w - 6, 5), "bl": (5, h - 6), "br": (w - 6, h - 6)}
    def is_red(px):
        return px[0] > 200 and px[1] < 80 and px[2] < 80

    red = [name for name, xy in spots.items() if is_red(img.getpixel(xy))]
    assert len(red) == 1, (red, img.size)
    return red[0]


def _viewed_pages(data: bytes, form: str) -> list[Image.Image]:
    prepared = prepare_input(data, form, nova_budget())
    return prepared.pages if form == "pages" else [reopen(p) for p in prepared.images]


@pytest.mark.parametrize("form", ["pages", "encoded", "pdf-or-encoded"])
@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exif_orientation_is_applied_for_every_backend_form(orientation, form):
    size, corner = UPRIGHT[orientation]
    (page,) = _viewed_pages(exif_jpeg(orientation), form)
    assert page.size == size and corner_of_mark(page) == corner


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_exif_orientation_is_applied_whatever_the_format(fmt):
    (page,) = _viewed_pages(exif_jpeg(6, fmt), "pages")
    assert page.size == (H, W) and corner_of_mark(page) == "tr"


def test_an_upright_photo_is_sent_as_its_original_bytes_and_a_rotated_one_is_not():
    upright_jpeg = exif_jpeg(1)
    (same,) = prepare_input(upright_jpeg, "encoded", nova_budget()).images
    assert same.data == upright_jpeg and not same.converted
    (turned,) = prepare_input(exif_jpeg(6), "encoded", nova_budget()).images
    assert turned.converted and (turned.width, turned.height) == (H, W)
    assert "exif" not in reopen(turned).info or reopen(turned).getexif().get(0x0112, 1) == 1


def test_load_pages_applies_the_orientation_too():
    (page,) = load_pages_from_bytes(exif_jpeg(8), "photo.jpg")
    assert page.size == (H, W) and corner_of_mark(page) == "bl"


def test_a_fifo_is_refused_without_blocking(tmp_path):
    import os

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        load_pages(fifo)
