"""The model catalog: which models exist, their endpoints, descriptors and prices.

The catalog is data (``data/*.yaml``, one file per model author); this module loads it into
typed, frozen records and answers look-ups. Operators may add or override models with
their own YAML files (``catalog_paths``). ``ServedCatalog`` is what a gateway serves on the
day its clock reads: the endpoints of configured providers, none past its ``sunset`` date.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from imagegate.clock import Clock, system_clock
from imagegate.sizing import FixedSize, SizeRules

BILLABLES = ("output_image", "output_text", "input_image", "input_font", "input_reference", "input_text")
UNITS = ("image", "megapixel", "token", "request")
#: Billables counted in images, so a line may price the first unit of each image apart.
IMAGE_BILLABLES = ("output_image", "input_image", "input_reference")
#: A megapixel unless a line says otherwise: 1024×1024, so a 1024² image bills exactly 1 MP
#: (as OpenRouter does).
DEFAULT_PIXELS_PER_MEGAPIXEL = 1024 * 1024
DESCRIPTOR_TYPES = ("enum", "range", "boolean")


class CatalogError(ValueError):
    """A catalog file is malformed; raised at load time, never per request."""


@dataclass(frozen=True, slots=True)
class Descriptor:
    """A capability descriptor: ``enum{values}``, ``range{min,max}`` or ``boolean``."""

    type: str
    values: tuple[str, ...] = ()
    min: int | float | None = None
    max: int | float | None = None

    def to_wire(self) -> dict[str, Any]:
        if self.type == "enum":
            return {"type": "enum", "values": list(self.values)}
        if self.type == "range":
            return {"type": "range", "min": self.min, "max": self.max}
        return {"type": "boolean"}

    def merged(self, other: Descriptor) -> Descriptor:
        """The union of two descriptors of one parameter (model-level discovery)."""
        if self.type != other.type:
            return self if self.type == "boolean" else other if other.type == "boolean" else self
        if self.type == "enum":
            return Descriptor("enum", self.values + tuple(v for v in other.values if v not in self.values))
        if self.type == "range":
            return Descriptor("range", min=min(self.min, other.min), max=max(self.max, other.max))  # type: ignore[type-var]
        return self


@dataclass(frozen=True, slots=True)
class PricingLine:
    """One price: ``cost_usd`` per ``unit`` of ``billable``.

    Megapixel lines may also say how many pixels their megapixel has (``pixels_per_megapixel``,
    1024² unless given) and price the first megapixel of each image apart (``first_unit_usd``,
    charged for each image even when it is smaller; ``cost_usd`` is then the price of every
    further megapixel).
    """

    billable: str
    unit: str
    cost_usd: Decimal
    variant: str | None = None
    first_unit_usd: Decimal | None = None
    pixels_per_megapixel: int | None = None

    @property
    def megapixel_size(self) -> int:
        return self.pixels_per_megapixel or DEFAULT_PIXELS_PER_MEGAPIXEL

    def to_wire(self) -> dict[str, Any]:
        line: dict[str, Any] = {
            "billable": self.billable,
            "unit": self.unit,
            "cost_usd": float(self.cost_usd),
        }
        if self.variant is not None:
            line["variant"] = self.variant
        if self.first_unit_usd is not None:
            line["first_unit_usd"] = float(self.first_unit_usd)
        if self.pixels_per_megapixel is not None:
            line["pixels_per_megapixel"] = self.pixels_per_megapixel
        return line


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One provider's offer of one model."""

    model_id: str
    provider: str  # the provider module that serves it
    provider_name: str
    provider_slug: str
    provider_tag: str | None
    upstream_model: str
    supported_parameters: Mapping[str, Descriptor]
    allowed_passthrough_parameters: tuple[str, ...]
    supports_streaming: bool
    pricing: tuple[PricingLine, ...]
    #: Formats the upstream can produce itself; others are converted by the gateway.
    native_formats: tuple[str, ...] = ("png",)
    size_rules: SizeRules = field(default_factory=SizeRules)
    #: Upstream-specific settings handed to the provider (deployment names, API versions ...).
    settings: Mapping[str, Any] = field(default_factory=dict)
    #: The provider's last day of serving it is the day before.
    sunset: dt.date | None = None

    def retired_on(self, today: dt.date) -> bool:
        return self.sunset is not None and self.sunset <= today

    def to_wire(self) -> dict[str, Any]:
        return {
            "provider_name": self.provider_name,
            "provider_slug": self.provider_slug,
            "provider_tag": self.provider_tag,
            "supported_parameters": {k: d.to_wire() for k, d in self.supported_parameters.items()},
            "allowed_passthrough_parameters": list(self.allowed_passthrough_parameters),
            "supports_streaming": self.supports_streaming,
            "pricing": [line.to_wire() for line in self.pricing],
        }


@dataclass(frozen=True, slots=True)
class Model:
    id: str
    name: str
    description: str
    created: int
    input_modalities: tuple[str, ...]
    output_modalities: tuple[str, ...]
    endpoints: tuple[Endpoint, ...]

    @property
    def author(self) -> str:
        return self.id.split("/", 1)[0]

    @property
    def slug(self) -> str:
        return self.id.split("/", 1)[1]

    @property
    def supported_parameters(self) -> dict[str, Descriptor]:
        """Union across endpoints: enum values joined, ranges widened."""
        union: dict[str, Descriptor] = {}
        for endpoint in self.endpoints:
            for key, descriptor in endpoint.supported_parameters.items():
                union[key] = union[key].merged(descriptor) if key in union else descriptor
        return union

    @property
    def supports_streaming(self) -> bool:
        return any(e.supports_streaming for e in self.endpoints)

    @property
    def endpoints_url(self) -> str:
        return f"/api/v1/images/models/{self.id}/endpoints"

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "created": self.created,
            "architecture": {
                "input_modalities": list(self.input_modalities),
                "output_modalities": list(self.output_modalities),
            },
            "supported_parameters": {k: d.to_wire() for k, d in self.supported_parameters.items()},
            "supports_streaming": self.supports_streaming,
            "endpoints": self.endpoints_url,
        }


class Catalog:
    """Models by id, in catalog order."""

    def __init__(self, models: Iterable[Model]) -> None:
        self._models = {m.id: m for m in models}

    def get(self, model_id: str) -> Model | None:
        return self._models.get(model_id)

    def models(self) -> list[Model]:
        return list(self._models.values())

    def restricted(self, available_providers: Set[str], today: dt.date) -> Catalog:
        """Only endpoints whose provider is configured and not past sunset; empty models vanish."""
        kept = []
        for model in self._models.values():
            endpoints = tuple(
                e for e in model.endpoints if e.provider in available_providers and not e.retired_on(today)
            )
            if endpoints:
                kept.append(_replace_endpoints(model, endpoints))
        return Catalog(kept)

    def retired_since(self, model_id: str, today: dt.date) -> dt.date | None:
        """The day a model was retired, when every one of its endpoints is past its sunset."""
        model = self._models.get(model_id)
        if model is None or not all(e.retired_on(today) for e in model.endpoints):
            return None
        return max(e.sunset for e in model.endpoints if e.sunset is not None)


class ServedCatalog:
    """What a gateway serves on the day its clock reads: the full catalog restricted to the
    configured providers' endpoints not past their sunset (worked out again when the day changes)."""

    def __init__(self, full: Catalog, providers: Set[str], clock: Clock = system_clock) -> None:
        self.full = full
        self._providers = frozenset(providers)
        self._clock = clock
        self._day: dt.date | None = None
        self._served = Catalog(())

    def today(self) -> dt.date:
        return self._clock().date()

    def serving(self) -> Catalog:
        day = self.today()
        if day != self._day:
            self._served, self._day = self.full.restricted(self._providers, day), day
        return self._served

    def get(self, model_id: str) -> Model | None:
        return self.serving().get(model_id)

    def retired_since(self, model_id: str) -> dt.date | None:
        return self.full.retired_since(model_id, self.today())


def load_catalog(extra_paths: Iterable[Path] = ()) -> Catalog:
    """The shipped catalog, then each extra file or folder; a later model id replaces an earlier."""
    models: dict[str, Model] = {}
    shipped = resources.files("imagegate.catalog") / "data"
    sources: list[tuple[str, str]] = sorted(
        (entry.name, entry.read_text("utf-8")) for entry in shipped.iterdir() if entry.name.endswith(".yaml")
    )
    for path in extra_paths:
        files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
        sources += [(str(f), f.read_text("utf-8")) for f in files]
    for name, text in sources:
        for model in parse_catalog_document(yaml.safe_load(text), source=name):
            models[model.id] = model
    return Catalog(models.values())


def parse_catalog_document(doc: Any, *, source: str = "<catalog>") -> list[Model]:
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), list):
        raise CatalogError(f"{source}: expected a mapping with a 'models' list")
    return [_parse_model(raw, source) for raw in doc["models"]]


# --- parsing helpers ---


def _replace_endpoints(model: Model, endpoints: tuple[Endpoint, ...]) -> Model:
    return Model(
        id=model.id,
        name=model.name,
        description=model.description,
        created=model.created,
        input_modalities=model.input_modalities,
        output_modalities=model.output_modalities,
        endpoints=endpoints,
    )


def _parse_model(raw: dict[str, Any], source: str) -> Model:
    model_id = _require(raw, "id", source)
    where = f"{source}: {model_id}"
    if model_id.count("/") != 1:
        raise CatalogError(f"{where}: model id must be 'author/slug'")
    endpoints = tuple(_parse_endpoint(model_id, e, where) for e in raw.get("endpoints", ()))
    if not endpoints:
        raise CatalogError(f"{where}: a model needs at least one endpoint")
    return Model(
        id=model_id,
        name=_require(raw, "name", where),
        description=raw.get("description", "").strip(),
        created=int(raw.get("created", 0)),
        input_modalities=tuple(raw.get("input_modalities", ("text",))),
        output_modalities=tuple(raw.get("output_modalities", ("image",))),
        endpoints=endpoints,
    )


def _parse_endpoint(model_id: str, raw: dict[str, Any], where: str) -> Endpoint:
    provider = _require(raw, "provider", where)
    slug = raw.get("provider_slug", provider)
    where = f"{where} @ {slug}"
    sunset = raw.get("sunset")
    return Endpoint(
        model_id=model_id,
        provider=provider,
        provider_name=_require(raw, "provider_name", where),
        provider_slug=slug,
        provider_tag=raw.get("provider_tag", slug),
        upstream_model=raw.get("upstream_model", model_id.split("/", 1)[1]),
        supported_parameters={
            key: _parse_descriptor(value, f"{where}: {key}")
            for key, value in (raw.get("supported_parameters") or {}).items()
        },
        allowed_passthrough_parameters=tuple(raw.get("allowed_passthrough_parameters", ())),
        supports_streaming=bool(raw.get("supports_streaming", False)),
        pricing=tuple(_parse_pricing(line, where) for line in raw.get("pricing", ())),
        native_formats=tuple(raw.get("native_formats", ("png",))),
        size_rules=_parse_size_rules(raw.get("size_rules") or {}, where),
        settings=dict(raw.get("settings") or {}),
        sunset=sunset if isinstance(sunset, dt.date) or sunset is None else dt.date.fromisoformat(str(sunset)),
    )


def _parse_descriptor(raw: Any, where: str) -> Descriptor:
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind == "enum":
        values = raw.get("values")
        if not values:
            raise CatalogError(f"{where}: an enum descriptor needs values")
        return Descriptor("enum", values=tuple(str(v) for v in values))
    if kind == "range":
        if "min" not in raw or "max" not in raw or raw["min"] > raw["max"]:
            raise CatalogError(f"{where}: a range descriptor needs min <= max")
        return Descriptor("range", min=raw["min"], max=raw["max"])
    if kind == "boolean":
        return Descriptor("boolean")
    raise CatalogError(f"{where}: descriptor type must be one of {', '.join(DESCRIPTOR_TYPES)}")


def _parse_pricing(raw: dict[str, Any], where: str) -> PricingLine:
    billable, unit = raw.get("billable"), raw.get("unit")
    if billable not in BILLABLES or unit not in UNITS:
        raise CatalogError(f"{where}: pricing line needs billable in {BILLABLES} and unit in {UNITS}")
    where = f"{where}: {billable} per {unit}"
    first, pixels = raw.get("first_unit_usd"), raw.get("pixels_per_megapixel")
    if (first is not None or pixels is not None) and unit != "megapixel":
        raise CatalogError(f"{where}: first_unit_usd and pixels_per_megapixel need unit megapixel")
    if first is not None and billable not in IMAGE_BILLABLES:
        raise CatalogError(f"{where}: first_unit_usd prices the first unit of each image; {billable} has none")
    if pixels is not None and (isinstance(pixels, bool) or not isinstance(pixels, int) or pixels <= 0):
        raise CatalogError(f"{where}: pixels_per_megapixel must be a positive whole number")
    return PricingLine(
        billable,
        unit,
        _price(raw.get("cost_usd"), "cost_usd", where),
        raw.get("variant"),
        first_unit_usd=None if first is None else _price(first, "first_unit_usd", where),
        pixels_per_megapixel=pixels,
    )


def _price(raw: Any, key: str, where: str) -> Decimal:
    # Through str(): a YAML float like 0.00003 must become Decimal("0.00003"), not its binary value.
    try:
        price = Decimal(str(raw)) if isinstance(raw, (int, float, str)) else None
    except ArithmeticError:
        price = None
    if price is None or isinstance(raw, bool) or not price.is_finite() or price < 0:
        raise CatalogError(f"{where}: {key} must be a price in USD, 0 or more")
    return price


def _parse_size_rules(raw: dict[str, Any], where: str) -> SizeRules:
    table = tuple(
        FixedSize(
            width=int(entry["width"]),
            height=int(entry["height"]),
            resolution=entry.get("resolution"),
            aspect_ratio=entry.get("aspect_ratio"),
        )
        for entry in raw.get("table", ())
    )
    mode = raw.get("mode", "table" if table else "free")
    if mode == "table" and not table:
        raise CatalogError(f"{where}: size_rules mode 'table' needs a table")
    known = {f for f in SizeRules.__dataclass_fields__ if f not in ("mode", "table")}
    unknown = set(raw) - known - {"mode", "table"}
    if unknown:
        raise CatalogError(f"{where}: unknown size_rules keys {sorted(unknown)}")
    return SizeRules(mode=mode, table=table, **{k: v for k, v in raw.items() if k in known})


def _require(raw: dict[str, Any], key: str, where: str) -> Any:
    if key not in raw:
        raise CatalogError(f"{where}: missing '{key}'")
    return raw[key]
