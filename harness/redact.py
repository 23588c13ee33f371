"""Scrub credentials from any text before it is logged, stored or shown.

Two layers: patterns that recognise credential-shaped text (access key ids, `secret_key=...`,
SigV4 signatures and security tokens), and the exact values of the credentials in use. The
values come from the environment and from every credential set botocore resolved for a client
(shared credentials file, profile, SSO, assumed role, container or instance role), registered
with `register_secret` when a client is made and before each attempt (refreshed role/SSO
credentials rotate), so a server that echoes a session token in an error message is scrubbed
whatever the token's source.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterable
from typing import Any

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
# Shorter values are not secrets worth the false positives (the emulator's "testing" key).
_MIN_SECRET_LEN = 8

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(*values: str | None) -> None:
    """Scrub these exact values from every later `scrub` call (process-wide: a secret stays one)."""
    fresh = {v for v in values if isinstance(v, str) and len(v) >= _MIN_SECRET_LEN}
    if fresh - _secrets:
        with _secrets_lock:
            _secrets.update(fresh)


def register_credentials(credentials: Any) -> None:
    """Register a botocore Credentials object's current values (access key, secret, token).

    `get_frozen_credentials` reads refreshable (role, SSO, container) credentials as of now; call
    again after a refresh. Never raises: failing to read credentials must not fail a request.
    """
    if credentials is None:
        return
    try:
        frozen = credentials.get_frozen_credentials() if hasattr(credentials, "get_frozen_credentials") \
            else credentials
        register_secret(getattr(frozen, "access_key", None), getattr(frozen, "secret_key", None),
                        getattr(frozen, "token", None))
    except Exception:  # noqa: BLE001 - an unreadable credential cannot be echoed by a server either
        return


def _known_values() -> Iterable[str]:
    env = (os.environ.get(k) for k in _ENV_SECRETS)
    # Longest first, so a value containing another is replaced whole.
    return sorted({v for v in env if v and len(v) >= _MIN_SECRET_LEN} | _secrets, key=len, reverse=True)


def scrub(text: str | None) -> str | None:
    if not text:
        return text
    for value in _known_values():
        if value in text:
            text = text.replace(value, "[REDACTED]")
    for pat in _PATTERNS:
        text = pat.sub(lambda m: m.group("keep") + "[REDACTED]", text)
    return text


_installed = False
_install_lock = threading.Lock()


def install_log_scrubber() -> None:
    """Scrub every log record at creation (botocore's DEBUG logs print signed headers).

    Called when an AWS client is made (not at import): a record factory sees records of every
    logger, whichever handler emits them, and only runs for records whose level is enabled, so it
    costs nothing when debug logging is off. Idempotent.
    """
    global _installed
    with _install_lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
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
