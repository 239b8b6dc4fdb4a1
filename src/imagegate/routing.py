"""Provider preferences and health → the ordered list of endpoints to try.

``only`` / ``ignore`` / ``order`` match an endpoint's ``provider_tag``; a base slug
(``google-vertex``) matches its regional endpoints (``google-vertex/global``). Without
``order`` or ``sort``, load is balanced across healthy endpoints, cheaper ones preferred.
An endpoint whose circuit is open gets no traffic while another one can serve.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from decimal import Decimal

from imagegate.catalog import Endpoint
from imagegate.health import HealthBook
from imagegate.wire import ProviderPreferences


def endpoint_key(endpoint: Endpoint) -> str:
    return f"{endpoint.model_id}@{endpoint.provider_slug}"


def matches(endpoint: Endpoint, name: str) -> bool:
    """Whether a routing name selects ``endpoint``: its tag, its slug, or their base."""
    name = name.lower()
    for ident in (endpoint.provider_tag, endpoint.provider_slug):
        if ident and (ident.lower() == name or ident.lower().split("/", 1)[0] == name):
            return True
    return False


def merge_preferences(
    defaults: ProviderPreferences | None, request: ProviderPreferences | None
) -> ProviderPreferences | None:
    """Operator-wide defaults under the request's own preferences.

    Both allow lists apply (``only`` is their intersection) and both deny lists apply
    (``ignore`` is their union); the request's ``order``, ``sort``, ``allow_fallbacks`` and
    ``options`` win over the defaults.
    """
    if defaults is None or request is None:
        return request or defaults
    merged = request.model_dump(exclude_none=True)
    if defaults.only is not None:
        merged["only"] = defaults.only if request.only is None else [n for n in request.only if n in defaults.only]
    if defaults.ignore:
        merged["ignore"] = sorted({*defaults.ignore, *(request.ignore or ())})
    for name in ("order", "sort", "allow_fallbacks", "options"):
        if name not in merged and getattr(defaults, name) is not None:
            merged[name] = getattr(defaults, name)
    return ProviderPreferences.model_validate(merged)


def route(
    endpoints: Sequence[Endpoint],
    prefs: ProviderPreferences | None,
    *,
    health: HealthBook | None = None,
    rng: random.Random | None = None,
) -> list[Endpoint]:
    """Endpoints allowed by ``prefs``, most preferred first.

    With ``allow_fallbacks: false`` only the first is returned, so a failure is final.
    """
    prefs = prefs or ProviderPreferences()
    candidates = list(endpoints)
    if prefs.only is not None:
        candidates = [e for e in candidates if any(matches(e, n) for n in prefs.only)]
    if prefs.ignore:
        candidates = [e for e in candidates if not any(matches(e, n) for n in prefs.ignore)]
    if health is not None:
        closed = [e for e in candidates if not health.is_open(endpoint_key(e))]
        candidates = closed or candidates  # all broken: still try rather than refuse
    sort_by = prefs.sort if isinstance(prefs.sort, str) or prefs.sort is None else prefs.sort.by
    if sort_by == "price":
        candidates.sort(key=nominal_price)  # stable: catalog order breaks ties
    elif sort_by in ("latency", "throughput") and health is not None:
        candidates.sort(key=lambda e: _speed(health, e, sort_by))
    elif not prefs.order and len(candidates) > 1:
        candidates = _balanced(candidates, health, rng or random)
    if prefs.order:
        ordered: list[Endpoint] = []
        for name in prefs.order:
            ordered += [e for e in candidates if matches(e, name) and not any(e is o for o in ordered)]
        candidates = ordered + [e for e in candidates if not any(e is o for o in ordered)]
    if prefs.allow_fallbacks is False:
        candidates = candidates[:1]
    return candidates


def nominal_price(endpoint: Endpoint) -> Decimal:
    """A comparable price: the sum of the endpoint's output-image lines."""
    return sum((line.cost_usd for line in endpoint.pricing if line.billable == "output_image"), Decimal(0))


# --- helpers ---


def _speed(health: HealthBook, endpoint: Endpoint, sort_by: str) -> float:
    snapshot = health.snapshot(endpoint_key(endpoint))
    value = snapshot["latency_p50_s" if sort_by == "latency" else "seconds_per_megapixel"]
    return math.inf if value is None else float(value)  # unmeasured endpoints go last


def _balanced(candidates: list[Endpoint], health: HealthBook | None, rng: random.Random | random.Random) -> list[Endpoint]:
    """A weighted shuffle: weight ∝ success rate⁴ / price² (Efraimidis–Spirakis keys).

    The fourth power makes an endpoint failing half its requests get about a sixteenth of
    the traffic of a healthy one at the same price, while still being probed.
    """
    prices = [float(nominal_price(e)) for e in candidates]
    floor = min((p for p in prices if p > 0), default=1.0)

    def weight(endpoint: Endpoint, price: float) -> float:
        success = 1.0 - (health.snapshot(endpoint_key(endpoint))["error_rate"] if health else 0.0)  # type: ignore[operator]
        return max(success**4, 0.01) / max(price, floor / 10) ** 2

    keyed = [(rng.random() ** (1.0 / weight(e, p)), i) for i, (e, p) in enumerate(zip(candidates, prices))]
    return [candidates[i] for _, i in sorted(keyed, reverse=True)]
