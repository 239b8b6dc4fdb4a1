"""Why the store refused to reserve money; both render as OpenRouter error envelopes."""

from __future__ import annotations

from decimal import Decimal

from imagegate.errors import Forbidden, PaymentRequired

#: ``metadata.limit_source`` values, as OpenRouter reports them (spec §10).
ACCOUNT_CREDITS = "openrouter_credits"
KEY_LIMIT = "openrouter_key_limit"


class LimitExceeded(PaymentRequired):
    """402: the account's balance or the key's limit cannot cover the reservation.

    ``available_usd`` is what was left to reserve (balance or limit, less what is reserved
    by requests in flight and, for a key, what it already spent this period).
    """

    def __init__(self, source: str, needed_usd: Decimal, available_usd: Decimal) -> None:
        what = "credits" if source == ACCOUNT_CREDITS else "key limit remaining"
        super().__init__(
            f"Insufficient {what}: this request can cost up to ${needed_usd}, "
            f"${available_usd} is available",
            metadata={"limit_source": source},
        )
        self.source = source
        self.needed_usd = needed_usd
        self.available_usd = available_usd


class KeyDisabled(Forbidden):
    """403: the key is disabled or revoked, so it cannot spend."""
