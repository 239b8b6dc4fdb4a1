"""Whatever a client sends, the answer is never a 500."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import LiveServer

FIELDS = ["model", "prompt", "n", "resolution", "aspect_ratio", "size", "quality", "output_format",
          "background", "output_compression", "seed", "stream", "input_references", "provider",
          "session_id", "user", "trace"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                    st.text(max_size=20), st.sampled_from(["1K", "4K", "16:9", "auto", "png", "2048x2048",
                                                           "0x0", "99999x1", "imagegate/sandbox"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(["type", "image_url", "url", "options", "imagegate", "fail", "latency_ms", "order",
                     "only", "sort", "by"]), inner, max_size=3), max_leaves=6)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.fixed_dictionaries(
    {"model": st.sampled_from(["imagegate/sandbox", "imagegate/sandbox-tiers", "imagegate/sandbox-vector"]),
     "prompt": st.just("x")},
    optional={name: VALUES for name in FIELDS[2:]}))
def test_random_bodies_never_produce_a_server_error(server: LiveServer, body: dict) -> None:
    provider = body.get("provider")
    if isinstance(provider, dict) and isinstance(provider.get("options"), dict):
        provider["options"].pop("imagegate", None)  # no injected faults or latency here
    if body.get("resolution") == "4K" or body.get("size") in ("4K",):
        body["resolution"] = "1K"
    with server.client() as client:
        response = client.post("/images", content=json.dumps(body), headers=server.auth())
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.json()["error"]["code"] == response.status_code
