import base64
import io
import json

import pytest
from migbench.emulator import protocol as P
from PIL import Image

NOVA_TABLE = [(900, 450, 800), (900, 900, 1300), (1400, 900, 1800), (1800, 900, 2400), (1300, 1300, 2600)]


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), "white").save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("w,h,expected", NOVA_TABLE)
def test_image_token_estimate_is_within_ten_percent_of_the_nova_table(w, h, expected):
    assert abs(P.estimate_image_tokens(w, h) - expected) <= 0.1 * expected


def test_image_token_estimate_grows_with_area_and_is_held_flat_beyond_the_table():
    assert P.estimate_image_tokens(400, 400) < P.estimate_image_tokens(900, 900) < P.estimate_image_tokens(1300, 1300)
    assert P.estimate_image_tokens(8000, 8000) == P.estimate_image_tokens(1300, 1300)
    with pytest.raises(ValueError):
        P.estimate_image_tokens(0, 10)


def test_route_decodes_the_percent_encoded_model_id():
    assert P.route("/model/au.amazon.nova-pro-v1%3A0/converse") == ("Converse", "au.amazon.nova-pro-v1:0")
    assert P.route("/model/amazon.nova-lite-v1%3A0/invoke") == ("InvokeModel", "amazon.nova-lite-v1:0")
    with pytest.raises(P.ApiError) as err:
        P.route("/model/x/converse-stream")
    assert err.value.status == 404


def test_arn_model_ids_resolve_in_their_own_region_only():
    arn = "arn:aws:bedrock:ap-southeast-2::foundation-model/amazon.nova-pro-v1:0"
    assert P.base_model_id(arn, "ap-southeast-2") == "amazon.nova-pro-v1:0"
    with pytest.raises(P.ApiError) as err:
        P.base_model_id(arn.replace("ap-southeast-2", "us-east-1"), "ap-southeast-2")
    assert err.value.message == P.MSG_INVALID_MODEL


def test_error_statuses_follow_the_botocore_service_model():
    assert P.ERROR_STATUS["ModelNotReadyException"] == 429
    assert P.ERROR_STATUS["ModelTimeoutException"] == 408
    assert P.ERROR_STATUS["ModelErrorException"] == 424
    assert P.error_headers("ThrottlingException")["x-amzn-ErrorType"] == (
        "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/")
    assert json.loads(P.error_body("m")) == {"message": "m"}


def test_converse_parse_decodes_images_text_and_inference_config():
    body = {"messages": [{"role": "user", "content": [
        {"image": {"format": "png", "source": {"bytes": base64.b64encode(_png(30, 20)).decode()}}},
        {"text": "Extract the fields"}]}],
        "system": [{"text": "be exact"}], "inferenceConfig": {"maxTokens": 64, "temperature": 0.0}}
    req = P.parse_converse("amazon.nova-pro-v1:0", body)
    assert req.prompt == "Extract the fields" and req.system == "be exact"
    assert [(i.format, i.width, i.height) for i in req.images] == [("png", 30, 20)]
    assert req.max_tokens == 64 and req.temperature == 0.0
    assert "data" not in json.dumps(req.summary())


@pytest.mark.parametrize("body,needle", [
    ({}, "must start with a user message"),
    ({"messages": [{"role": "assistant", "content": [{"text": "x"}]}]}, "must start with a user message"),
    ({"messages": [{"role": "user", "content": [{"image": {"format": "bmp", "source": {"bytes": "AA=="}}}]}]},
     "enum value set: [gif, jpeg, png, webp]"),
    ({"messages": [{"role": "user", "content": [{"image": {"format": "jpeg", "source": {
        "bytes": base64.b64encode(_png(4, 4)).decode()}}}]}]}, "not a valid jpeg image"),
    ({"messages": [{"role": "user", "content": [{"image": {"format": "png", "source": {
        "bytes": base64.b64encode(_png(8001, 2)).decode()}}}]}]}, "8000 pixels"),
])
def test_converse_parse_rejects_invalid_requests_with_validation_exception(body, needle):
    with pytest.raises(P.ApiError) as err:
        P.parse_converse("amazon.nova-pro-v1:0", body)
    assert err.value.code == "ValidationException" and err.value.status == 400
    assert needle in err.value.message


def test_payload_over_the_limit_is_rejected_before_parsing():
    with pytest.raises(P.ApiError) as err:
        P.parse_request("Converse", "m", "nova", b"x" * 101, P.Limits(max_payload_bytes=100))
    assert err.value.code == "ValidationException"


def test_nova_invoke_body_rejects_an_anthropic_body():
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(P.ApiError) as err:
        P.parse_nova_invoke("amazon.nova-pro-v1:0", body)
    assert err.value.message.startswith("Malformed input request: #: extraneous key [anthropic_version]")


def test_anthropic_body_accepts_string_content_and_base64_images():
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10, "system": "sys",
            "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": base64.b64encode(_png(5, 6)).decode()}},
                {"type": "text", "text": "read it"}]}]}
    req = P.parse_anthropic_invoke("au.anthropic.claude-haiku-4-5-20251001-v1:0", body)
    assert (req.body_kind, req.prompt, req.system, req.max_tokens) == ("anthropic", "read it", "sys", 10)
    assert req.images[0].summary() == {"format": "png", "width": 5, "height": 6, "bytes": req.images[0].nbytes}
    with pytest.raises(P.ApiError):
        P.parse_anthropic_invoke("x", {k: v for k, v in body.items() if k != "max_tokens"})


def test_replies_longer_than_max_tokens_are_cut_and_say_so():
    text, stop = P.truncate_to_max_tokens("a" * 100, 5)
    assert (len(text), stop) == (20, "max_tokens")
    assert P.truncate_to_max_tokens("short", 5) == ("short", "end_turn")


def test_response_bodies_have_the_service_shapes():
    u = P.Usage(10, 3)
    conv = P.converse_response("t", u, 12)
    assert conv["usage"] == {"inputTokens": 10, "outputTokens": 3, "totalTokens": 13}
    assert conv["metrics"] == {"latencyMs": 12} and conv["stopReason"] == "end_turn"
    assert P.nova_invoke_response("t", u)["output"]["message"]["content"] == [{"text": "t"}]
    anth = P.anthropic_invoke_response("t", u, "m", "0f-aa")
    assert anth["usage"] == {"input_tokens": 10, "output_tokens": 3} and anth["content"][0]["type"] == "text"
