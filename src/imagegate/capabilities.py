"""Requests against endpoint descriptors: what is rejected, what is dropped, what is applied.

OpenRouter's rule, kept here: a parameter an endpoint *lists* is enforced strictly (a value
outside its descriptor rejects the endpoint); a parameter it does *not* list is dropped,
never an error. Output shaping (format, compression, transparency) is the exception: the
gateway can do it itself, so an unlisted one is converted rather than dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from imagegate.catalog import Descriptor, Endpoint
from imagegate.errors import InvalidRequest

#: Request fields checked against descriptors, in the order OpenRouter echoes them.
CHECKED_PARAMETERS = (
    "resolution",
    "aspect_ratio",
    "quality",
    "output_format",
    "background",
    "output_compression",
    "n",
    "input_references",
    "seed",
)
#: Unlisted, these are done by the gateway instead of being dropped.
GATEWAY_SHAPED = frozenset({"output_format", "background", "output_compression"})
RASTER_FORMATS = ("png", "jpeg", "webp")
ALPHA_FORMATS = ("png", "webp")


@dataclass(frozen=True, slots=True)
class Rejection:
    endpoint: Endpoint
    parameter: str
    reason: str


def requested_parameters(fields: Mapping[str, Any], reference_count: int) -> dict[str, Any]:
    """The capability-checked values the client sent (``input_references`` as a count)."""
    requested = {k: fields[k] for k in CHECKED_PARAMETERS if fields.get(k) is not None}
    requested.pop("input_references", None)
    if reference_count:
        requested["input_references"] = reference_count
    return requested


def rejections(endpoint: Endpoint, requested: Mapping[str, Any]) -> list[Rejection]:
    """Why ``endpoint`` cannot serve ``requested``; empty when it can."""
    found = []
    for name, descriptor in endpoint.supported_parameters.items():
        if name in requested:
            reason = _violation(descriptor, requested[name])
        elif name == "input_references" and (descriptor.min or 0) > 0:
            # Edit-only models need references even when the client sent none.
            reason = _violation(descriptor, 0)
        else:
            reason = None
        if reason:
            found.append(Rejection(endpoint, name, reason))
    return found


def dropped_parameters(endpoint: Endpoint, requested: Mapping[str, Any]) -> list[str]:
    """Requested parameters this endpoint does not list and the gateway cannot apply itself."""
    listed = endpoint.supported_parameters
    return [
        name
        for name in requested
        if name not in listed and name not in GATEWAY_SHAPED and name != "n"
    ]


def no_provider_error(
    model_id: str, requested: Mapping[str, Any], found: Iterable[Rejection], endpoint_count: int
) -> InvalidRequest:
    """OpenRouter's 400 when the capability filter leaves no endpoint."""
    echoed = ", ".join(f'{name} "{_echo(value)}"' for name, value in requested.items())
    by_provider: dict[str, list[str]] = {}
    for rejection in found:
        by_provider.setdefault(rejection.endpoint.provider_name, []).append(
            f"{rejection.parameter}: {rejection.reason}"
        )
    explained = "; ".join(f"{name}: {', '.join(reasons)}" for name, reasons in by_provider.items())
    return InvalidRequest(
        f"No provider for {model_id} supports the requested parameter(s): {echoed or 'none'}. "
        f"Provider rejections: {explained}",
        metadata={
            "routing_funnel": [{"step": "Initial Endpoints", "endpoint_count": endpoint_count}],
            "failed_routing_step": "Filter by Image Capabilities",
        },
    )


@dataclass(frozen=True, slots=True)
class OutputPlan:
    """How the client's output shape is reached on one endpoint."""

    native_format: str  # asked of the upstream
    final_format: str  # returned to the client
    compression: int | None  # applied by the upstream or by conversion
    transparent: bool
    #: Work left to the gateway after the upstream answers.
    convert_format: bool = False
    convert_compression: bool = False
    convert_transparency: bool = False

    @property
    def converts(self) -> bool:
        return self.convert_format or self.convert_compression or self.convert_transparency


def plan_output(
    endpoint: Endpoint,
    output_format: str | None,
    background: str | None,
    output_compression: int | None,
) -> OutputPlan:
    """Pick the native format to ask for and what the gateway must convert afterwards."""
    native = endpoint.native_formats
    listed = endpoint.supported_parameters
    transparent = background == "transparent"
    wanted = output_format
    if wanted is not None and wanted not in native and (wanted == "svg" or native == ("svg",)):
        wanted = None  # raster ↔ vector is not a conversion the gateway can do: dropped
    if wanted is None:
        wanted = _default_format(native, transparent)
    if wanted in native:
        native_format = wanted
    elif transparent and "png" in native:
        native_format = "png"
    else:
        native_format = next((f for f in native if f in RASTER_FORMATS), native[0])

    lossy = wanted in ("jpeg", "webp")
    compression = output_compression if lossy else None
    native_transparency = "transparent" in getattr(listed.get("background"), "values", ())
    return OutputPlan(
        native_format=native_format,
        final_format=wanted,
        compression=compression,
        transparent=transparent and wanted in ALPHA_FORMATS,
        convert_format=native_format != wanted,
        convert_compression=compression is not None and "output_compression" not in listed,
        convert_transparency=transparent and wanted in ALPHA_FORMATS and not native_transparency,
    )


def check_background(background: str | None, output_format: str | None) -> None:
    """``transparent`` needs a format with alpha (spec §7.1)."""
    if background == "transparent" and output_format is not None and output_format not in ALPHA_FORMATS:
        raise InvalidRequest(
            f'background "transparent" requires output_format png or webp, got "{output_format}"',
            metadata={"param": "background"},
        )


# --- helpers ---


def _default_format(native: tuple[str, ...], transparent: bool) -> str:
    if transparent:
        return next((f for f in native if f in ALPHA_FORMATS), "png")
    return native[0]


def _violation(descriptor: Descriptor, value: Any) -> str | None:
    if descriptor.type == "enum":
        if str(value) in descriptor.values:
            return None
        return f"not supported. Accepted: {', '.join(descriptor.values)}"
    if descriptor.type == "range":
        if descriptor.min <= value <= descriptor.max:  # type: ignore[operator]
            return None
        if descriptor.min == descriptor.max:
            return f"must be exactly {_echo(descriptor.min)}"
        return f"must be between {_echo(descriptor.min)} and {_echo(descriptor.max)}"
    return None


def _echo(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
