"""``deploy/compose.yaml`` passes the gateway every variable it reads."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.variables import variables_read

COMPOSE = Path(__file__).parents[2] / "deploy" / "compose.yaml"

#: Set by the deployment itself: its database, Redis and volume, and what nginx and the
#: health check expect. Every other variable is the operator's, forwarded empty when unset.
FIXED_BY_THE_DEPLOYMENT = {
    "IMAGEGATE_DATABASE_URL", "IMAGEGATE_REDIS_URL", "IMAGEGATE_HOST", "IMAGEGATE_PORT",
    "IMAGEGATE_JOURNAL_DIR", "IMAGEGATE_BOOTSTRAP_KEY",
}


def _gateway_environment() -> dict[str, str]:
    return yaml.safe_load(COMPOSE.read_text())["services"]["imagegate"]["environment"]


def test_compose_forwards_every_variable_the_gateway_reads() -> None:
    environment = _gateway_environment()
    assert [name for name in variables_read() if name not in environment] == []


def test_compose_forwards_each_variable_under_its_own_name_empty_when_unset() -> None:
    environment = _gateway_environment()
    forwarded = {name for name, value in environment.items() if value == f"${{{name}:-}}"}
    assert set(environment) - forwarded == FIXED_BY_THE_DEPLOYMENT
    for name in FIXED_BY_THE_DEPLOYMENT:
        assert f"${{{name}" not in str(environment[name])
