"""Discovery routes: every field of the spec, the general Models API and its filters."""

from __future__ import annotations

import httpx

from tests.conftest import LiveServer

LIST_FIELDS = {"id", "name", "description", "created", "architecture", "supported_parameters",
               "supports_streaming", "endpoints"}
ENDPOINT_FIELDS = {"provider_name", "provider_slug", "provider_tag", "supported_parameters",
                   "allowed_passthrough_parameters", "supports_streaming", "pricing"}


def get(server: LiveServer, path: str, **params) -> httpx.Response:
    with server.client() as client:
        return client.get(path, params=params)


def test_image_models_have_every_spec_field_and_relative_endpoints_url(server: LiveServer) -> None:
    data = get(server, "/images/models").json()["data"]
    assert data
    for model in data:
        assert set(model) == LIST_FIELDS
        assert model["endpoints"] == f"/api/v1/images/models/{model['id']}/endpoints"
        assert set(model["architecture"]) == {"input_modalities", "output_modalities"}


def test_endpoint_records_have_every_spec_field(server: LiveServer) -> None:
    body = get(server, "/images/models/imagegate/sandbox/endpoints").json()
    assert body["id"] == "imagegate/sandbox"
    for endpoint in body["endpoints"]:
        assert set(endpoint) == ENDPOINT_FIELDS
        for descriptor in endpoint["supported_parameters"].values():
            assert descriptor["type"] in ("enum", "range", "boolean")
        for line in endpoint["pricing"]:
            assert {"billable", "unit", "cost_usd"} <= set(line)


def test_model_level_parameters_equal_the_union_of_endpoint_parameters(server: LiveServer) -> None:
    for model in get(server, "/images/models").json()["data"]:
        endpoints = get(server, model["endpoints"].removeprefix("/api/v1")).json()["endpoints"]
        keys = set().union(*(e["supported_parameters"] for e in endpoints))
        assert set(model["supported_parameters"]) == keys


def test_discovery_is_public_and_ignores_a_bad_key(server: LiveServer) -> None:
    with server.client() as client:
        response = client.get("/images/models", headers={"Authorization": "Bearer nonsense"})
    assert response.status_code == 200


def test_models_default_to_text_output(server: LiveServer) -> None:
    ids = {m["id"] for m in get(server, "/models").json()["data"]}
    assert ids == {"imagegate/sandbox-tiers"}  # the only sandbox model that also outputs text


def test_models_filter_by_output_modalities_comma_list_and_all(server: LiveServer) -> None:
    images = {m["id"] for m in get(server, "/models", output_modalities="image").json()["data"]}
    everything = {m["id"] for m in get(server, "/models", output_modalities="all").json()["data"]}
    both = {m["id"] for m in get(server, "/models", output_modalities="text,image").json()["data"]}
    assert {"imagegate/sandbox", "imagegate/sandbox-vector"} <= images
    assert images == everything == both


def test_models_general_shape_and_pagination(server: LiveServer) -> None:
    page = get(server, "/models", output_modalities="image", limit=2).json()
    assert len(page["data"]) == 2 and page["total_count"] >= 4
    assert page["links"]["next"].startswith("/api/v1/models?")
    model = page["data"][0]
    assert {"id", "canonical_slug", "name", "created", "pricing", "context_length", "architecture",
            "top_provider", "per_request_limits", "supported_parameters", "default_parameters",
            "supported_voices", "links"} <= set(model)
    assert all(isinstance(v, str) for v in model["pricing"].values())
    assert model["links"]["details"] == f"/api/v1/models/{model['id']}/endpoints"


def test_unknown_modality_is_a_400(server: LiveServer) -> None:
    response = get(server, "/models", output_modalities="smell")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == 400


def test_general_endpoints_record(server: LiveServer) -> None:
    body = get(server, "/models/imagegate/sandbox/endpoints").json()["data"]
    assert body["id"] == "imagegate/sandbox"
    assert body["endpoints"][0]["tag"] == "imagegate"
    assert get(server, "/models/nobody/nothing/endpoints").status_code == 404


def test_unconfigured_endpoints_are_listed_only_on_request_with_what_to_set(server: LiveServer) -> None:
    default = {m["id"] for m in get(server, "/images/models").json()["data"]}
    everything = {m["id"] for m in get(server, "/images/models", include_unconfigured="true").json()["data"]}
    assert "openai/gpt-image-2" not in default and "openai/gpt-image-2" in everything
    endpoints = get(server, "/images/models/openai/gpt-image-2/endpoints", include_unconfigured="true").json()
    openai = next(e for e in endpoints["endpoints"] if e["provider_slug"] == "openai")
    assert openai["configured"] is False and openai["requires"] == ["OPENAI_API_KEY"]
    sandbox = get(server, "/images/models/imagegate/sandbox/endpoints", include_unconfigured="true").json()
    assert sandbox["endpoints"][0]["configured"] is True
    assert get(server, "/images/models/openai/gpt-image-2/endpoints").status_code == 404
    assert "configured" not in get(server, "/images/models/imagegate/sandbox/endpoints").json()["endpoints"][0]
