"""USD amounts in the database: integer nano-USD.

The database holds money as BIGINT nano-USD (1 USD = 10⁹ nano) so that it can add,
subtract and compare balances atomically inside a conditional UPDATE; the Python API takes
and returns ``Decimal`` USD. A BIGINT holds up to about 9.2 billion USD.

Rounding to the nano: a reservation rounds *up* (it is a worst case and must cover the
charge that settles it); charges, credits and limits round half-up. A charge of at most
the reserved USD amount therefore never exceeds the reservation in nano.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal

from imagegate.store.coltypes import to_decimal

NANOS_PER_USD = 10**9


def usd_to_nano(amount: Decimal | int | str, *, round_up: bool = False) -> int:
    """``amount`` USD in whole nano-USD: half-up, or up (toward +∞) with ``round_up``."""
    nano = to_decimal(amount) * NANOS_PER_USD
    return int(nano.to_integral_value(ROUND_CEILING if round_up else ROUND_HALF_UP))


def nano_to_usd(nano: int) -> Decimal:
    """``nano`` nano-USD as an exact ``Decimal`` USD (``1_500_000`` → ``Decimal("0.0015")``)."""
    return Decimal(int(nano)) / NANOS_PER_USD
