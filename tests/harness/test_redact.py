import logging

from migbench.redact import install_log_scrubber, scrub


def test_access_keys_signatures_and_tokens_are_scrubbed():
    text = ("AKIAIOSFODNN7EXAMPLE aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY "
            "Credential=ASIAXXXXXXXXXXXXXXXX/20260101/ap-southeast-2/bedrock/aws4_request, "
            "Signature=0123456789abcdef0123456789abcdef 'X-Amz-Security-Token': b'IQoJb3JpZ2luX2VjEJr//////////wEaDmFw'")
    out = scrub(text)
    for secret in ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI", "ASIAXXXX", "0123456789abcdef0123", "IQoJb3JpZ2lu"):
        assert secret not in out
    assert out.count("[REDACTED]") >= 5


def test_values_of_the_credential_environment_are_scrubbed(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "plainsecretvalue")
    assert scrub("oops plainsecretvalue leaked") == "oops [REDACTED] leaked"


def test_ordinary_text_is_untouched():
    assert scrub("TOTAL_AMOUNT: $12.50 ABN 51 824 753 556") == "TOTAL_AMOUNT: $12.50 ABN 51 824 753 556"


def test_log_records_are_scrubbed_whichever_logger_emits_them(caplog):
    install_log_scrubber()
    caplog.set_level(logging.DEBUG)
    logging.getLogger("botocore.endpoint").debug("headers %s", {"Authorization": "Credential=AKIAIOSFODNN7EXAMPLE/x"})
    assert "AKIAIOSFODNN7EXAMPLE" not in caplog.text and "[REDACTED]" in caplog.text
