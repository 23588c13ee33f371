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


def test_registered_credential_values_are_scrubbed_whatever_their_shape():
    from migbench.redact import register_credentials, register_secret

    class Frozen:
        access_key, secret_key, token = "plainaccessvalue", "plain-secret-from-a-profile", "tokenFromSSO~with.dots"

    class Creds:
        def get_frozen_credentials(self):
            return Frozen()

    register_credentials(Creds())
    register_secret("short")  # too short to be a secret worth false positives
    out = scrub("denied for plainaccessvalue / plain-secret-from-a-profile / tokenFromSSO~with.dots short")
    assert out == "denied for [REDACTED] / [REDACTED] / [REDACTED] short"
    register_credentials(None)  # no credentials: nothing to do, never an error


def test_importing_the_aws_adapters_installs_no_process_wide_state():
    import subprocess
    import sys

    code = ("import logging; before = logging.getLogRecordFactory(); "
            "import migbench.adapters.aws_common, migbench.adapters.bedrock, migbench.adapters.sagemaker; "
            "assert logging.getLogRecordFactory() is before, 'import changed the log record factory'; "
            "from migbench.adapters.aws_common import make_client; "
            "make_client('bedrock-runtime', region='ap-southeast-2'); after = logging.getLogRecordFactory(); "
            "make_client('bedrock-runtime', region='ap-southeast-2'); "
            "assert after is not before and logging.getLogRecordFactory() is after, 'not installed once'")
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_EC2_METADATA_DISABLED": "true",
           "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                       check=False)
    assert r.returncode == 0, r.stderr[-2000:]
