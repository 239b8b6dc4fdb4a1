"""Every environment variable imagegate reads, collected from the code rather than copied by hand:
the ``IMAGEGATE_*`` settings and each provider module's ``env`` table."""

from __future__ import annotations

import importlib

from imagegate.providers import REGISTRY
from imagegate.settings import CONFIG_VARIABLE, Settings


def variables_read() -> list[str]:
    prefix = Settings.model_config["env_prefix"]
    names = {CONFIG_VARIABLE, *(f"{prefix}{field}".upper() for field in Settings.model_fields)}
    for target in REGISTRY.values():
        module, _, name = target.partition(":")
        names.update(getattr(importlib.import_module(module), name).env.values())
    return sorted(names)
