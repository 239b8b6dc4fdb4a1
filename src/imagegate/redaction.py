"""Secrets kept out of what upstreams say.

An upstream's error may echo the request it received, headers and all, and with them the
gateway's own provider key. Upstream text is redacted before it goes anywhere:

* :class:`imagegate.errors.UpstreamError` redacts its message and metadata when it is made, so
  the client's error, the generation record and every log line quoting the error are clean;
* :func:`protect_logs` redacts the log records of imagegate's own loggers when they are made,
  for anything else they are given (an HTTP library's exception that lists a request's headers).

Two nets catch a secret. The first holds the secrets this process was configured with (each
provider's keys and tokens, registered by :func:`imagegate.providers.load_providers`), found
wherever they appear. The second is credentials of a known shape, which also catches
short-lived tokens that no configuration holds (Vertex access tokens): an ``Authorization``
value, ``Bearer …``, ``Key …``, an ``x-api-key: …`` style header or field, a ``?key=`` query
parameter, and OpenAI (``sk-…``) and Google (``AIza…``, ``ya29.…``) key formats.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any

#: What a secret is replaced with.
REDACTED = "[redacted]"
#: Configured values shorter than this are not taken as secrets: they would redact ordinary
#: words, and no provider issues keys this short.
MIN_SECRET_CHARS = 8
#: Configuration fields whose values are secrets (``api_key``, ``google_api_key``, ``token`` …).
SECRET_FIELD = re.compile(r"key|token|secret|password", re.IGNORECASE)

_VALUE = r"[^\s\"',;&}\[\])]+"  # never "[": a value redacted already
_SHAPES = (
    # A credential named by its header or field, in headers, JSON, Python reprs and key=value
    # text; a scheme word (Bearer, Basic, Key, Token) before the value is kept.
    re.compile(
        r"(?P<keep>\b(?:proxy-)?authorization|\bx-api-key|\bapi-key|\bx-goog-api-key|\bx-key"
        r"|\bapi_?key|\baccess_token|\brefresh_token|\bclient_secret|\bpassword|\bsecret)"
        r"(?P<sep>[\"']?\s*[:=]\s*[\"']?|[\"']\s*,\s*[\"'])"
        r"(?P<scheme>(?:bearer|basic|key|token)\s+)?" + _VALUE,
        re.IGNORECASE,
    ),
    re.compile(r"(?P<keep>[?&](?:key|api_key|apikey|access_token|token)=)[^&\s\"'#]+", re.IGNORECASE),
    re.compile(r"(?P<keep>\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=:-]{6,}", re.IGNORECASE),
    # fal-style ``Key <id>:<secret>``: long enough not to be an English word after "key".
    re.compile(r"(?P<keep>\bkey\s+)[A-Za-z0-9][A-Za-z0-9._:-]{19,}", re.IGNORECASE),
    re.compile(r"\bsk-[A-Za-z0-9_-]{8,}|\bAIza[0-9A-Za-z_-]{30,}|\bya29\.[0-9A-Za-z_.-]{10,}"),
)


class _Secrets:
    """The configured secrets, as one pattern (rebuilt when one is added, read from any thread)."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()
        self.pattern: re.Pattern[str] | None = None

    def add(self, values: Iterable[str]) -> None:
        with self._lock:
            new = {v for v in values if len(v) >= MIN_SECRET_CHARS} - self._values
            if not new:
                return
            self._values |= new
            # Longest first, so that a secret containing another is replaced whole.
            alternatives = sorted(self._values, key=len, reverse=True)
            self.pattern = re.compile("|".join(map(re.escape, alternatives)))


_secrets = _Secrets()


def register_secrets(config: dict[str, Any]) -> None:
    """Take the values of ``config``'s secret fields (:data:`SECRET_FIELD`) as secrets."""
    _secrets.add(str(v) for k, v in config.items() if SECRET_FIELD.search(k) and isinstance(v, str))


def redact(text: str) -> str:
    """``text`` with every configured secret and every credential-shaped value replaced."""
    if (known := _secrets.pattern) is not None:
        text = known.sub(REDACTED, text)
    for shape in _SHAPES:
        text = shape.sub(_replacement, text)
    return text


def redact_all(value: Any) -> Any:
    """``value`` with every string in it redacted (dicts, lists and tuples walked)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_all(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_all(v) for v in value)
    return value


def protect_logs() -> None:
    """From now on, log records of the ``imagegate`` loggers are redacted as they are made, their
    traceback included (as the standard formatter would print it), before any handler sees them."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "redacting", False):
        return
    logging.setLogRecordFactory(_redacting(previous))


def _replacement(match: re.Match[str]) -> str:
    groups = match.groupdict()
    return "".join(groups.get(name) or "" for name in ("keep", "sep", "scheme")) + REDACTED


_formatter = logging.Formatter()


def _redacting(previous: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if record.name != "imagegate" and not record.name.startswith("imagegate."):
            return record
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is reported by the handler, as usual
            return record
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(_formatter.formatException(record.exc_info))
        return record

    factory.redacting = True  # type: ignore[attr-defined]
    return factory
