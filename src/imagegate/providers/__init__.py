"""Provider registry: which provider modules exist, and which this process can use.

A provider is configured from ``imagegate.yaml`` (``providers.<slug>``) and the
environment (its ``env`` names, e.g. ``OPENAI_API_KEY``), the environment winning; a variable
set to the empty string counts as unset. Only configured providers serve; the others are
listed with what they need. The secrets of every provider's configuration are registered for
redaction (``redaction.py``) as they are read.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from imagegate.providers.base import Provider
from imagegate.providers.http import HttpPool
from imagegate.redaction import protect_logs, register_secrets
from imagegate.settings import Settings, environment_value

log = logging.getLogger(__name__)

#: Catalog ``provider`` name → the class serving it (imported only when configured).
REGISTRY: dict[str, str] = {
    "imagegate": "imagegate.providers.sandbox:SandboxProvider",
    "openai": "imagegate.providers.openai:OpenAIProvider",
    "azure": "imagegate.providers.openai:AzureOpenAIProvider",
    "google-ai-studio": "imagegate.providers.google:GoogleAIStudioProvider",
    "google-vertex": "imagegate.providers.google:GoogleVertexProvider",
    "black-forest-labs": "imagegate.providers.bfl:BlackForestLabsProvider",
    "stability": "imagegate.providers.stability:StabilityProvider",
}


class NotConfigured(Exception):
    """A provider lacks configuration; the message says what to set."""


class ProviderClass(Protocol):
    slug: str
    #: Configuration field → environment variable that sets it.
    env: Mapping[str, str]

    @classmethod
    def configure(cls, config: Mapping[str, Any], http: HttpPool) -> Provider: ...


@dataclass(frozen=True, slots=True)
class Providers:
    configured: dict[str, Provider]
    #: Provider slug → what to set to enable it.
    missing: dict[str, str]


def load_providers(settings: Settings, http: HttpPool, environ: Mapping[str, str] | None = None) -> Providers:
    environ = os.environ if environ is None else environ
    protect_logs()
    configured: dict[str, Provider] = {}
    missing: dict[str, str] = {}
    for slug, target in REGISTRY.items():
        try:
            cls = _import(target)
        except Exception as exc:  # noqa: BLE001 - reported, and the provider stays off
            # An optional dependency missing must not take the whole gateway down.
            log.error("provider %s cannot be loaded: %s", slug, exc)
            missing[slug] = f"cannot be loaded: {exc}"
            continue
        config = {**settings.providers.get(slug, {})}
        for field, variable in getattr(cls, "env", {}).items():
            value = environment_value(variable, environ)
            if value is not None:
                config[field] = value
        register_secrets(config)  # whatever an upstream echoes, its keys never go further
        try:
            configured[slug] = cls.configure(config, http)
        except NotConfigured as exc:
            missing[slug] = str(exc)
    return Providers(configured, missing)


def require(config: Mapping[str, Any], field: str, variable: str) -> Any:
    """``config[field]``, or NotConfigured naming the environment variable to set."""
    value = config.get(field)
    if value in (None, ""):
        raise NotConfigured(f"set {variable}")
    return value


def _import(target: str) -> type[ProviderClass]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)
