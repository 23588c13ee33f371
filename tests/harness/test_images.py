import io

import pytest
from migbench.contracts import InputError
from migbench.images import encode_image, load_pages, load_pages_from_bytes
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


def test_encode_image_fits_within_max_dim():
    data = encode_image(Image.new("RGB", (4000, 1000)), "jpeg", max_dim=1000)
    assert Image.open(io.BytesIO(data)).size == (1000, 250)
