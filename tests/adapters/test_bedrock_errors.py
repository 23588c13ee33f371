"""Error classification by AWS error code (never by exception class), incl. streaming codes."""

import pytest
from botocore import exceptions as bx
from migbench.adapters.aws_common import classify_aws_error, classify_client_error, retry_after_s
from migbench.contracts import BackendError, ErrorClass, ResidencyError


def client_error(code, status, op="Converse", headers=None, **extra):
    return bx.ClientError({"Error": {"Code": code, "Message": "m"},
                           "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers or {}},
                           **extra}, op)


@pytest.mark.parametrize("code,status,expected", [
    ("ThrottlingException", 429, ErrorClass.THROTTLING),
    ("ServiceQuotaExceededException", 400, ErrorClass.THROTTLING),
    ("ServiceUnavailableException", 503, ErrorClass.TRANSIENT),
    ("InternalServerException", 500, ErrorClass.TRANSIENT),
    ("ModelNotReadyException", 429, ErrorClass.TRANSIENT),
    ("ModelErrorException", 424, ErrorClass.TRANSIENT),
    ("ModelTimeoutException", 408, ErrorClass.TIMEOUT),
    ("ValidationException", 400, ErrorClass.PERMANENT),
    ("AccessDeniedException", 403, ErrorClass.PERMANENT),
    ("ResourceNotFoundException", 404, ErrorClass.PERMANENT),
    ("UnrecognizedClientException", 403, ErrorClass.PERMANENT),
    ("SomethingNew", 502, ErrorClass.TRANSIENT),
    ("SomethingNew", 429, ErrorClass.THROTTLING),
    ("SomethingNew", 400, ErrorClass.PERMANENT),
])
def test_client_errors_classify_by_code_then_status(code, status, expected):
    assert classify_aws_error(client_error(code, status)) is expected


def test_streaming_throttling_code_in_lower_case_is_throttling():
    exc = bx.EventStreamError({"Error": {"Code": "throttlingException", "Message": "slow down"}},
                              "ConverseStream")
    assert classify_aws_error(exc) is ErrorClass.THROTTLING


def test_the_guides_import_does_not_exist_so_we_classify_by_code():
    with pytest.raises(ImportError):
        from botocore.exceptions import ThrottlingException  # noqa: F401  (the guide's bug)


def test_per_client_exception_classes_classify_through_their_code():
    import boto3

    client = boto3.client("bedrock-runtime", region_name="ap-southeast-2", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    exc = client.exceptions.ThrottlingException(
        {"Error": {"Code": "ThrottlingException", "Message": "Too many tokens"},
         "ResponseMetadata": {"HTTPStatusCode": 429}}, "Converse")
    assert classify_aws_error(exc) is ErrorClass.THROTTLING


@pytest.mark.parametrize("exc,expected", [
    (bx.ReadTimeoutError(endpoint_url="https://x"), ErrorClass.TIMEOUT),
    (bx.ConnectTimeoutError(endpoint_url="https://x"), ErrorClass.TRANSIENT),
    (bx.EndpointConnectionError(endpoint_url="https://x"), ErrorClass.TRANSIENT),
    (bx.ConnectionClosedError(endpoint_url="https://x"), ErrorClass.TRANSIENT),
    (ConnectionResetError(104, "reset"), ErrorClass.TRANSIENT),
    (bx.NoCredentialsError(), ErrorClass.PERMANENT),
    (ResidencyError("refused"), ErrorClass.RESIDENCY),
    (BackendError("x", ErrorClass.INPUT), ErrorClass.INPUT),
    (ValueError("bug"), ErrorClass.PERMANENT),
])
def test_transport_and_local_errors(exc, expected):
    assert classify_aws_error(exc) is expected


def test_sagemaker_model_error_follows_the_containers_status():
    assert classify_client_error("ModelError", 424, {"OriginalStatusCode": 503}) is ErrorClass.TRANSIENT
    assert classify_client_error("ModelError", 424, {"OriginalStatusCode": 400}) is ErrorClass.PERMANENT
    assert classify_client_error("ModelError", 424, {}) is ErrorClass.TRANSIENT


def test_retry_after_header_is_read_when_numeric():
    assert retry_after_s(client_error("ThrottlingException", 429, headers={"retry-after": "3"})) == 3.0
    assert retry_after_s(client_error("ThrottlingException", 429)) is None
