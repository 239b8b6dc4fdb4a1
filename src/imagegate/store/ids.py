"""Identifiers and secrets: key secrets, their hashes and labels, and generation ids."""

from __future__ import annotations

import hashlib
import secrets
import string
import time

#: Every key the gateway issues starts with this; the rest is 64 lowercase hex characters.
KEY_PREFIX = "sk-ig-v1-"
_KEY_RANDOM_BYTES = 32
_ID_ALPHABET = string.ascii_letters + string.digits
_ID_RANDOM_CHARS = 20
#: Bytes 0-247 map onto the alphabet four times over; 248-255 are dropped (rejection
#: sampling), so every character is equally likely.
_ID_BYTE_TO_CHAR = bytes(ord(_ID_ALPHABET[b % len(_ID_ALPHABET)]) for b in range(256))
_ID_BYTES_REJECTED = bytes(range(4 * len(_ID_ALPHABET), 256))


def new_secret() -> str:
    """A fresh API key secret: ``sk-ig-v1-`` + 64 lowercase hex characters."""
    return KEY_PREFIX + secrets.token_hex(_KEY_RANDOM_BYTES)


def hash_secret(secret: str) -> str:
    """The sha256 hex digest of ``secret``: the only form of a key the database holds."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def label_for(secret: str) -> str:
    """The display form of a secret, ``sk-ig-v1-abc...xyz`` (first and last 3 random chars)."""
    random_part = secret[len(KEY_PREFIX) :] if secret.startswith(KEY_PREFIX) else secret
    return f"{KEY_PREFIX}{random_part[:3]}...{random_part[-3:]}"


def is_secret_shaped(value: str) -> bool:
    """Whether ``value`` has the exact shape of a secret this gateway issues."""
    rest = value[len(KEY_PREFIX) :]
    return (
        value.startswith(KEY_PREFIX)
        and len(rest) == 2 * _KEY_RANDOM_BYTES
        and all(c in "0123456789abcdef" for c in rest)
    )


def new_generation_id(now: float | None = None) -> str:
    """``gen-img-<unix seconds>-<20 alphanumerics>``; ``now`` defaults to the current time."""
    seconds = int(time.time() if now is None else now)
    # 20 uniform base-62 characters (about 119 bits), mapped from random bytes in C.
    chars = b""
    while len(chars) < _ID_RANDOM_CHARS:
        chars += secrets.token_bytes(32).translate(_ID_BYTE_TO_CHAR, _ID_BYTES_REJECTED)
    return f"gen-img-{seconds}-{chars[:_ID_RANDOM_CHARS].decode()}"
