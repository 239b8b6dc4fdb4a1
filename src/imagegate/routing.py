"""Provider preferences → the ordered list of endpoints to try.

``only`` / ``ignore`` / ``order`` match an endpoint's ``provider_tag``; a base slug
(``google-vertex``) matches its regional endpoints (``google-vertex/global``).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from imagegate.catalog import Endpoint
from imagegate.wire import ProviderPreferences


def matches(endpoint: Endpoint, name: str) -> bool:
    """Whether a routing name selects ``endpoint``: its tag, its slug, or their base."""
    name = name.lower()
    for ident in (endpoint.provider_tag, endpoint.provider_slug):
        if ident and (ident.lower() == name or ident.lower().split("/", 1)[0] == name):
            return True
    return False


def route(endpoints: Sequence[Endpoint], prefs: ProviderPreferences | None) -> list[Endpoint]:
    """Endpoints allowed by ``prefs``, most preferred first.

    With ``allow_fallbacks: false`` only the first is returned, so a failure is final.
    """
    candidates = list(endpoints)
    if prefs is None:
        return candidates
    if prefs.only:
        candidates = [e for e in candidates if any(matches(e, n) for n in prefs.only)]
    if prefs.ignore:
        candidates = [e for e in candidates if not any(matches(e, n) for n in prefs.ignore)]
    sort_by = prefs.sort if isinstance(prefs.sort, str) or prefs.sort is None else prefs.sort.by
    if sort_by == "price":
        candidates.sort(key=_nominal_price)  # stable: catalog order breaks ties
    if prefs.order:
        ordered: list[Endpoint] = []
        for name in prefs.order:
            ordered += [e for e in candidates if matches(e, name) and not any(e is o for o in ordered)]
        candidates = ordered + [e for e in candidates if not any(e is o for o in ordered)]
    if prefs.allow_fallbacks is False:
        candidates = candidates[:1]
    return candidates


def _nominal_price(endpoint: Endpoint) -> Decimal:
    """A comparable price: the sum of the endpoint's output-image lines."""
    return sum((line.cost_usd for line in endpoint.pricing if line.billable == "output_image"), Decimal(0))
