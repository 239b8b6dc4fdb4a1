"""The official ``openai`` SDK pointed at imagegate: its images.generate hits our alias route."""

from __future__ import annotations

import base64
import io

import openai
import pytest
from PIL import Image

from tests.conftest import LiveServer


def client(server: LiveServer, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(api_key=key or server.key, base_url=server.api_url, max_retries=0)


def test_openai_sdk_generates_through_the_generations_alias(server: LiveServer) -> None:
    result = client(server).images.generate(model="imagegate/sandbox-tokens", prompt="a cat", size="1536x1024", n=2)
    assert len(result.data) == 2
    image = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json)))
    assert image.size == (1536, 1024)


def test_openai_sdk_size_auto_means_the_endpoint_default(server: LiveServer) -> None:
    result = client(server).images.generate(model="imagegate/sandbox-tokens", prompt="a cat", size="auto")
    image = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json)))
    assert image.size == (1024, 1024)


def test_openai_sdk_sees_errors_as_its_own_classes(server: LiveServer) -> None:
    with pytest.raises(openai.AuthenticationError):
        client(server, key="sk-ig-v1-wrong").images.generate(model="imagegate/sandbox", prompt="x")
    with pytest.raises(openai.NotFoundError):
        client(server).images.generate(model="nobody/nothing", prompt="x")
    with pytest.raises(openai.BadRequestError) as caught:
        client(server).images.generate(model="imagegate/sandbox-tiers", prompt="x", n=3)
    assert "No provider for imagegate/sandbox-tiers" in str(caught.value)
