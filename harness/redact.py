"""Scrub credentials from any text before it is logged, stored or shown."""

from __future__ import annotations

import os
import re

# Each pattern keeps its label (group "keep") and replaces the secret after it.
_PATTERNS = [
    re.compile(r"(?P<keep>)\b(?:AKIA|ASIA|AIDA|AROA)[A-Z0-9]{12,}\b"),  # access key ids
    re.compile(r"(?i)(?P<keep>(?:aws_secret_access_key|aws_session_token|secret[_-]?key|session[_-]?token)"
               r"\s*[=:]\s*['\"]?)[A-Za-z0-9/+=]{16,}"),
    re.compile(r"(?i)(?P<keep>Signature=)[0-9a-f]{16,}"),
    re.compile(r"(?i)(?P<keep>Credential=)[^,\s]+"),
    re.compile(r"(?i)(?P<keep>X-Amz-Security-Token['\"]?\s*[=:]\s*b?['\"]?)[A-Za-z0-9/+=%]{16,}"),
]
_ENV_SECRETS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")


def scrub(text: str | None) -> str | None:
    if not text:
        return text
    for value in (os.environ.get(k) for k in _ENV_SECRETS):
        if value and len(value) >= 8:
            text = text.replace(value, "[REDACTED]")
    for pat in _PATTERNS:
        text = pat.sub(lambda m: m.group("keep") + "[REDACTED]", text)
    return text


_installed = False


def install_log_scrubber() -> None:
    """Scrub every log record at creation (botocore's DEBUG logs print signed headers).

    A record factory sees records of every logger, whichever handler emits them; it only runs
    for records whose level is enabled, so it costs nothing when debug logging is off.
    """
    import logging

    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string stays as it was
            return record
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
