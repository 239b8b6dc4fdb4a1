"""Provider registry: which provider modules this process can use."""

from __future__ import annotations

from imagegate.providers.base import Provider
from imagegate.settings import Settings


def configured_providers(settings: Settings) -> dict[str, Provider]:
    """Providers whose configuration is present, by the slug catalog endpoints name."""
    from imagegate.providers.sandbox import SandboxProvider

    return {"imagegate": SandboxProvider()}
