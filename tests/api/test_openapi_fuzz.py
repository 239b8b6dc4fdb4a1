"""Schemathesis against a running server: whatever a client sends, the answer is never a 5xx
and is what the OpenAPI document says (status, content type, body, headers).

Schemathesis' pytest plugin does not run under this pytest (it sets ``Function._nodeid``), so
each operation's cases are drawn with hypothesis here, from ``operation.as_strategy()``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import LiveServer, start_server

DOCUMENTED = [status_code_conformance, content_type_conformance, response_schema_conformance,
              response_headers_conformance]
EXAMPLES_PER_OPERATION = 25
#: Drawn names rarely exist: most cases name these instead, to get past the 404s.
SANDBOX_MODELS = ("imagegate/sandbox", "imagegate/sandbox-tokens", "imagegate/sandbox-tiers",
                  "imagegate/sandbox-vector")
#: The biggest generation a fuzzed request may ask of the sandbox: the document allows ten 4K
#: images, which take seconds each on a small machine.
MAX_IMAGES = 2
SMALL_RESOLUTIONS = ("512", "768", "1K")


@dataclass(frozen=True)
class Known:
    """Things that exist on the server, for a case to name."""

    key_hash: str  # a key of its own, which the fuzzing may update or delete
    generation_id: str


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server of its own: the keys and generations the fuzzing makes stay there."""
    live, stop = start_server(Path(tmp_path_factory.mktemp("fuzzed")), sse_keepalive_s=0.2)
    yield live
    stop()


@pytest.fixture(scope="module")
def api_schema(fuzzed_server: LiveServer) -> Any:
    return schemathesis.openapi.from_url(f"{fuzzed_server.base_url}/openapi.json")


@pytest.mark.parametrize("management", [False, True], ids=["api key", "management key"])
def test_every_answer_is_documented_and_never_a_server_error(
    fuzzed_server: LiveServer, api_schema: Any, management: bool
) -> None:
    secret = fuzzed_server.store_call(lambda s: s.create_key("fuzzing", is_management=management))[0]
    managed = fuzzed_server.store_call(lambda s: s.create_key("managed"))[1]
    with fuzzed_server.client() as client:
        made = client.post("/images", json={"model": SANDBOX_MODELS[0], "prompt": "x", "resolution": "512"},
                           headers=fuzzed_server.auth(secret))
    known = Known(managed.hash, made.headers["x-generation-id"])
    failures: list[str] = []
    operations = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()
        operations += 1
        try:
            _fuzz(operation, secret, known)
        except Exception as exc:  # each operation is reported, not only the first that fails
            failures.append(f"{operation.label}: {exc}")
    assert operations >= 16
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize(("body", "status", "media_type"), [
    ({"stream": True}, 200, "text/event-stream"),
    ({"stream": True, "n": 2, "provider": {"options": {"imagegate": {"fail": "after_first_image"}}}},
     200, "text/event-stream"),
    ({"provider": {"options": {"imagegate": {"fail": "upstream_error"}}}}, 502, "application/json"),
    ({"provider": {"options": {"imagegate": {"fail": "overloaded"}}}}, 529, "application/json"),
    ({"provider": {"options": {"imagegate": {"fail": "timeout"}}}}, 524, "application/json"),
    ({"provider": {"options": {"imagegate": {"fail": "rate_limit"}}}}, 429, "application/json"),
    ({"provider": {"options": {"imagegate": {"fail": "content_policy"}}}}, 400, "application/json"),
], ids=["stream", "stream failing midway", "502", "529", "524", "429", "content policy"])
def test_streams_and_upstream_failures_are_answered_as_documented(
    fuzzed_server: LiveServer, api_schema: Any, body: dict[str, Any], status: int, media_type: str
) -> None:
    case = api_schema["/api/v1/images"]["POST"].Case(
        body={"model": "imagegate/sandbox", "prompt": "a lighthouse", "resolution": "512", **body},
        media_type="application/json",
    )
    response = case.call_and_validate(headers=fuzzed_server.auth(), checks=DOCUMENTED, timeout=60)
    assert response.status_code == status
    assert response.headers["content-type"][0].startswith(media_type)


def _fuzz(operation: Any, secret: str, known: Known) -> None:
    cases = st.one_of(operation.as_strategy(), operation.as_strategy(GenerationMode.NEGATIVE))

    @given(case=cases, model=st.sampled_from((None, *SANDBOX_MODELS)))
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def check(case: Any, model: str | None) -> None:
        if model is not None:
            _name_known_things(case, model, known)
        if isinstance(case.body, dict):
            _bounded(case.body)
        case.call_and_validate(headers={"Authorization": f"Bearer {secret}"}, timeout=60,
                               checks=[not_a_server_error, *DOCUMENTED])

    check()


def _name_known_things(case: Any, model: str, known: Known) -> None:
    if isinstance(case.body, dict) and "model" in case.body:
        case.body["model"] = model
    if "author" in case.path_parameters:
        case.path_parameters["author"], case.path_parameters["slug"] = model.split("/")
    if "key_hash" in case.path_parameters:
        case.path_parameters["key_hash"] = known.key_hash
    if case.query and "id" in case.query:
        case.query["id"] = known.generation_id
    if case.query and "key" in case.query:
        case.query["key"] = known.key_hash


def _bounded(body: dict[str, Any]) -> None:
    """A generation request kept cheap for the sandbox: few images, small tiers, no injected
    failures (their answers are checked apart)."""
    if isinstance(body.get("n"), int | float) and not isinstance(body["n"], bool):
        body["n"] = min(body["n"], MAX_IMAGES)
    if body.get("resolution") not in (None, *SMALL_RESOLUTIONS):
        body["resolution"] = "1K"
    provider = body.get("provider")
    if isinstance(provider, dict) and isinstance(provider.get("options"), dict):
        provider["options"].pop("imagegate", None)
