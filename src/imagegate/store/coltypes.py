"""Column types that behave the same on SQLite and PostgreSQL.

* ``UTCDateTime``: always binds and returns timezone-aware UTC datetimes (SQLite drops the
  offset, so values are stored as naive UTC there and re-labelled UTC on the way out).
* ``DecimalText``: an exact ``Decimal`` kept as its normalized fixed-point text in a string
  column, so no backend rounds it through a float.
* ``JSONDoc``: JSON written by ``dump_json``, which also takes the gateway's own values
  (``Decimal`` → number, tuples/sets → lists, dataclasses → objects).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
from sqlalchemy import JSON, DateTime, String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive datetime is taken to already be UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


def to_decimal(value: Decimal | int | str | float) -> Decimal:
    """An exact, finite ``Decimal`` from ``value``.

    A float is read through its shortest repr (``0.1`` → ``Decimal("0.1")``), which is what
    the person who wrote it meant; prefer passing a ``Decimal`` or a string.
    """
    if isinstance(value, bool):
        raise TypeError("a cost cannot be a bool")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        result = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"not a decimal number: {value!r}") from None
    else:
        raise TypeError(f"expected a Decimal, int or str, got {type(value).__name__}")
    if not result.is_finite():
        raise ValueError(f"a cost must be finite, got {value!r}")
    return result


def decimal_text(value: Decimal) -> str:
    """Fixed-point text without exponent or trailing zeros: ``0.0030060`` → ``0.003006``."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


class DecimalText(TypeDecorator[Decimal]):
    impl = String(64)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else decimal_text(to_decimal(value))

    def process_result_value(self, value: str | None, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


def dump_json(value: Any) -> str:
    """``value`` as JSON text, for every JSON column (the engine's serializer): ``Decimal`` →
    number, sets → sorted lists, tuples → lists, dataclasses → objects, datetimes → ISO 8601
    in UTC, keys → strings. A float that is not finite is stored as ``null``."""
    return orjson.dumps(value, default=_plain, option=_JSON_OPTIONS).decode()


_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    raise TypeError(f"cannot store a {type(value).__name__} as JSON")


class JSONDoc(TypeDecorator[Any]):
    """JSON written by ``dump_json`` (``db.create_engine`` makes it the engine's serializer)."""

    impl = JSON
    cache_ok = True
