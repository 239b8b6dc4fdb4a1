"""Descriptors: listed parameters are enforced, unlisted ones dropped, rejections explained."""

from __future__ import annotations

import pytest

from imagegate.capabilities import (
    check_background,
    dropped_parameters,
    no_provider_error,
    plan_output,
    rejections,
    requested_parameters,
)
from imagegate.catalog import Descriptor, Endpoint
from imagegate.errors import InvalidRequest


def endpoint(name: str = "OpenAI", native=("png", "jpeg", "webp"), **params: Descriptor) -> Endpoint:
    return Endpoint(
        model_id="a/b", provider="x", provider_name=name, provider_slug=name.lower(), provider_tag=name.lower(),
        upstream_model="b", supported_parameters=params, allowed_passthrough_parameters=(),
        supports_streaming=False, pricing=(), native_formats=native,
    )


def enum(*values: str) -> Descriptor:
    return Descriptor("enum", values=values)


def rng(low: int, high: int) -> Descriptor:
    return Descriptor("range", min=low, max=high)


def test_value_outside_listed_enum_is_rejected_with_accepted_values() -> None:
    e = endpoint(aspect_ratio=enum("1:1", "3:2", "2:3", "auto"))
    [found] = rejections(e, {"aspect_ratio": "21:9"})
    assert found.reason == "not supported. Accepted: 1:1, 3:2, 2:3, auto"


def test_single_value_range_says_must_be_exactly() -> None:
    [found] = rejections(endpoint(n=rng(1, 1)), {"n": 5})
    assert found.reason == "must be exactly 1"


def test_unlisted_parameters_are_dropped_not_rejected() -> None:
    e = endpoint(n=rng(1, 4))
    requested = {"quality": "high", "seed": 3, "n": 2}
    assert rejections(e, requested) == []
    assert dropped_parameters(e, requested) == ["quality", "seed"]


def test_output_shaping_parameters_are_never_dropped() -> None:
    assert dropped_parameters(endpoint(), {"output_format": "webp", "background": "transparent",
                                           "output_compression": 50}) == []


def test_edit_only_endpoint_rejects_a_request_without_references() -> None:
    [found] = rejections(endpoint(input_references=rng(1, 10)), {})
    assert found.parameter == "input_references"


def test_no_provider_error_reproduces_openrouter_message_and_metadata() -> None:
    e = endpoint(name="Black Forest Labs", n=rng(1, 1))
    requested = requested_parameters({"n": 5, "prompt": "x"}, 0)
    error = no_provider_error("black-forest-labs/flux.2-klein-4b", requested, rejections(e, requested), 1)
    assert error.status == 400
    assert error.message == (
        'No provider for black-forest-labs/flux.2-klein-4b supports the requested parameter(s): n "5". '
        "Provider rejections: Black Forest Labs: n: must be exactly 1"
    )
    assert error.metadata["failed_routing_step"] == "Filter by Image Capabilities"
    assert error.metadata["routing_funnel"] == [{"step": "Initial Endpoints", "endpoint_count": 1}]


def test_transparent_background_needs_png_or_webp() -> None:
    check_background("transparent", "png")
    check_background("transparent", None)
    with pytest.raises(InvalidRequest):
        check_background("transparent", "jpeg")


def test_native_format_passes_through_without_conversion() -> None:
    plan = plan_output(endpoint(), "webp", None, None)
    assert (plan.native_format, plan.final_format, plan.converts) == ("webp", "webp", False)


def test_format_the_endpoint_lacks_is_converted_by_the_gateway() -> None:
    plan = plan_output(endpoint(native=("png",)), "jpeg", None, 40)
    assert (plan.native_format, plan.final_format, plan.convert_format) == ("png", "jpeg", True)
    assert plan.compression == 40 and plan.convert_compression


def test_transparency_without_a_background_knob_is_done_by_the_gateway() -> None:
    plan = plan_output(endpoint(native=("png",)), None, "transparent", None)
    assert plan.final_format == "png" and plan.convert_transparency
    native = plan_output(endpoint(background=enum("auto", "transparent", "opaque")), None, "transparent", None)
    assert not native.converts


def test_vector_and_raster_never_convert_into_each_other() -> None:
    assert plan_output(endpoint(native=("png",)), "svg", None, None).final_format == "png"
    assert plan_output(endpoint(native=("svg",)), "png", None, None).final_format == "svg"
