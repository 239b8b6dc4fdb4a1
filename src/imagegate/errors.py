"""Error types. Each carries its HTTP status and renders as OpenRouter's error envelope.

Callers catch by meaning (``ClientError`` vs ``UpstreamError``); the API layer turns any
``ImagegateError`` into ``{"error": {"code", "message", "metadata"}}`` in one place.
"""

from __future__ import annotations

from typing import Any

from imagegate.redaction import redact, redact_all


class ImagegateError(Exception):
    """Base of every error the gateway reports to a client."""

    status: int = 500
    #: OpenRouter's ``metadata.error_type`` for this error, when it has one.
    error_type: str | None = None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_type: str | None = None,
        metadata: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if error_type is not None:
            self.error_type = error_type
        self.metadata = dict(metadata or {})
        if self.error_type and "error_type" not in self.metadata:
            self.metadata["error_type"] = self.error_type
        self.headers = dict(headers or {})

    def envelope(self) -> dict[str, Any]:
        return {
            "error": {
                "code": self.status,
                "message": self.message,
                "metadata": self.metadata or None,
            }
        }


# --- the client's own mistakes (4xx): never retried, never billed, never a fallback ---


class ClientError(ImagegateError):
    status = 400


class InvalidRequest(ClientError):
    status = 400


class InvalidImage(ClientError):
    """A reference image that cannot be decoded, is too big, or has an unsupported format."""

    status = 400
    error_type = "invalid_image"


class Unauthorized(ClientError):
    status = 401


class PaymentRequired(ClientError):
    status = 402


class Forbidden(ClientError):
    status = 403


class NotFound(ClientError):
    status = 404


class PayloadTooLarge(ClientError):
    status = 413


class RateLimited(ClientError):
    status = 429


# --- what happened upstream (5xx and provider refusals) ---


class UpstreamError(ImagegateError):
    """A provider failed. ``retryable`` says whether another endpoint may succeed.

    Its message and metadata may quote the upstream, which may echo the gateway's own
    credentials: both are redacted here (``redaction.py``), before anything reads them.
    """

    status = 502
    retryable = True

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(redact(message), **kwargs)
        self.metadata = redact_all(self.metadata)


class ContentRefused(UpstreamError):
    """The provider refused the prompt or an image on content grounds."""

    status = 400
    error_type = "content_policy_violation"
    retryable = False


class UpstreamRateLimited(UpstreamError):
    status = 429


class UpstreamTimeout(UpstreamError):
    status = 524


class UpstreamOverloaded(UpstreamError):
    status = 529


class InternalError(ImagegateError):
    status = 500
