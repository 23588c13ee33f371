import io

import pytest
from migbench.tokens import estimate_image_tokens, estimate_request_tokens
from PIL import Image


@pytest.mark.parametrize("w,h,published", [(900, 450, 800), (900, 900, 1300), (1400, 900, 1800),
                                           (1800, 900, 2400), (1300, 1300, 2600)])
def test_image_estimate_is_within_ten_percent_of_novas_published_table(w, h, published):
    assert abs(estimate_image_tokens(w, h) - published) <= 0.1 * published


def test_request_estimate_reads_image_sizes_from_headers():
    buf = io.BytesIO()
    Image.new("RGB", (900, 900)).save(buf, format="PNG")
    est = estimate_request_tokens("x" * 400, None, [buf.getvalue()])
    assert est == 100 + estimate_image_tokens(900, 900)
    assert estimate_request_tokens("", None, [b"not an image"]) == 1000  # unknown image: a flat guess
