"""Secrets kept out of upstream text: configured ones wherever they appear, credentials of a
known shape whatever holds them, in errors and in log records."""

from __future__ import annotations

import logging

import pytest

from imagegate.errors import UpstreamError
from imagegate.redaction import REDACTED, protect_logs, redact, register_secrets

#: Configured as a provider's key by the tests below: of no shape a pattern knows.
CONFIGURED = "cfg-77aa01-zz-unshaped"


def test_a_configured_secret_is_redacted_wherever_it_appears() -> None:
    register_secrets({"api_key": CONFIGURED, "base_url": "http://upstream.test/v1", "token_ttl": "short"})
    text = f"bad key {CONFIGURED}; again:{CONFIGURED}. base http://upstream.test/v1"
    assert redact(text) == f"bad key {REDACTED}; again:{REDACTED}. base http://upstream.test/v1"


def test_short_configured_values_are_not_taken_for_secrets() -> None:
    register_secrets({"api_key": "abc"})
    assert redact("abc is fine") == "abc is fine"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer abc123def456", "abc123def456"),
        ('{"authorization": "Bearer eyJhbGciOi.J9x-y_z"}', "eyJhbGciOi.J9x-y_z"),
        ("{'Authorization': 'Basic dXNlcjpwYXNz'}", "dXNlcjpwYXNz"),
        ("CIMultiDictProxy('Authorization', 'Bearer tok3n-value')", "tok3n-value"),
        ("<CIMultiDictProxy('x-key': '5f0c2e9a-11aa-4b7e')>", "5f0c2e9a-11aa-4b7e"),
        ("x-api-key: 0123abcd9876", "0123abcd9876"),
        ("api-key=9a8b7c6d5e4f", "9a8b7c6d5e4f"),
        ("X-Goog-Api-Key: AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUv", "AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUv"),
        ("GET /v1beta/models?key=AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUv&alt=sse", "AIzaSyA1b2C3d4E5f6"),
        ("Authorization: Key 1a2b3c4d-aaaa-bbbb:ffeeddccbbaa99887766", "1a2b3c4d-aaaa-bbbb:ffeedd"),
        ("invalid key sk-proj-AbCdEfGh1234567890", "sk-proj-AbCdEfGh1234567890"),
        ("token ya29.a0AfB_byC1d2e3f4g5h6 expired", "ya29.a0AfB_byC1d2e3f4g5h6"),
        ("access_token=opaque0987654321&scope=x", "opaque0987654321"),
    ],
)
def test_credentials_of_a_known_shape_are_redacted(text: str, secret: str) -> None:
    redacted = redact(text)
    assert secret not in redacted and REDACTED in redacted


@pytest.mark.parametrize(
    "text",
    [
        "Incorrect API key provided",
        "Your request was rejected by the safety system.",
        "Rate limit reached, retry later; see the keyboard shortcut docs",
        "the prompt mentions a secret garden and a bearer of gifts",
    ],
)
def test_ordinary_upstream_messages_are_left_alone(text: str) -> None:
    assert redact(text) == text


def test_an_upstream_error_redacts_its_message_and_metadata() -> None:
    error = UpstreamError("echo: Authorization: Bearer abc123def456",
                          metadata={"raw": {"headers": [f"x-key: {CONFIGURED}"]}, "upstream_status": 500})
    assert "abc123def456" not in error.message and "abc123def456" not in str(error)
    assert error.metadata == {"raw": {"headers": [f"x-key: {REDACTED}"]}, "upstream_status": 500}


def test_log_records_of_imagegate_are_redacted_traceback_included(caplog: pytest.LogCaptureFixture) -> None:
    protect_logs()
    log = logging.getLogger("imagegate.providers.test")
    with caplog.at_level(logging.INFO, logger="imagegate"):
        log.info("request failed: %r", {"Authorization": "Bearer abc123def456"})
        try:
            raise RuntimeError(f"upstream said {CONFIGURED}")
        except RuntimeError:
            log.exception("it broke")
    assert "abc123def456" not in caplog.text and CONFIGURED not in caplog.text
    assert caplog.text.count(REDACTED) == 2
