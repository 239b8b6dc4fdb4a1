"""Configuration: ``IMAGEGATE_*`` environment variables over an optional ``imagegate.yaml``.

Every field has an embedded default, so a fresh machine runs with no configuration at all:
SQLite in the working directory, no Redis, the built-in sandbox model.

An environment variable set to the empty string counts as unset, here and for the providers'
variables (``environment_value``): a deployment can forward every variable, empty where the
operator set none (``deploy/compose.yaml`` does). A value the gateway cannot use is a
``SettingsError`` whose message is one line naming the variable or YAML key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

MiB = 1024 * 1024
ENV_PREFIX = "IMAGEGATE_"
#: Names the YAML file to read instead of ``./imagegate.yaml``.
CONFIG_VARIABLE = "IMAGEGATE_CONFIG"


class SettingsError(Exception):
    """A setting the gateway cannot start with; the message is one line naming it."""


def environment_value(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """``name``'s value in the environment, or None where it is unset or empty."""
    value = (os.environ if environ is None else environ).get(name)
    return value or None


def config_file() -> Path:
    """The file ``IMAGEGATE_CONFIG`` names, else ``./imagegate.yaml``."""
    return Path(environment_value(CONFIG_VARIABLE) or "imagegate.yaml")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_ignore_empty=True, extra="ignore")

    database_url: str = Field(
        "sqlite+aiosqlite:///imagegate.db",
        description="SQLAlchemy async URL; SQLite file in the working directory by default.",
    )
    database_pool_size: int = Field(20, ge=1, description="Database connections kept open.")
    database_max_overflow: int = Field(40, ge=0, description="Extra connections allowed in a burst.")
    database_pool_timeout_s: float = Field(
        30.0, gt=0, description="Wait for a free connection before answering 503 (overloaded)."
    )
    sqlite_synchronous: Literal["normal", "full"] = Field(
        "full",
        description="SQLite only: `full` flushes the write-ahead log to disk at every commit, `normal` "
        "only at checkpoints. Neither loses a committed transaction when the process is killed; after "
        "a power loss `normal` may lose the last ones.",
    )
    redis_url: str | None = Field(
        None, description="Redis shared by every instance: rate limits and endpoint health."
    )

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)

    max_body_bytes: int = Field(64 * MiB, ge=1024, description="Largest request body; bigger is a 413.")
    max_prompt_chars: int = Field(
        100_000, ge=1, description="Longest prompt accepted, in characters; longer is a 400."
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="Seconds a client has to send a request's headers, from the connection "
        "opening (or the request's first byte on a kept-alive connection); then it is closed.",
    )
    body_timeout_s: float = Field(
        60.0, gt=0, description="Seconds a client has to send a request's body, from its headers; then "
        "the connection is closed.",
    )
    max_connections: int = Field(
        0, ge=0, description="Open client connections beyond which a new one is closed at once; 0: as "
        "many as the open-files limit (raised to its hard limit at start) leaves room for, with an "
        "upstream connection each.",
    )
    sse_keepalive_s: float = Field(5.0, gt=0, description="Seconds between SSE keep-alive comments.")
    provider_timeout_s: float = Field(
        300.0, gt=0, description="Default deadline for one upstream generation."
    )

    reference_max_bytes: int = Field(
        20 * MiB, ge=1, description="Largest encoded reference image."
    )
    reference_max_pixels: int = Field(
        50_000_000, ge=1, description="Largest reference width×height."
    )
    reference_fetch_timeout_s: float = Field(20.0, gt=0)
    reference_allow_networks: list[str] = Field(
        default_factory=list,
        description="CIDRs exempt from the refusal to fetch references from private addresses.",
    )

    rate_limit_rpm: int | None = Field(
        None, ge=1, description="Requests per minute per key (429 beyond); unset means no limit."
    )
    rate_limit_concurrency: int | None = Field(
        None, ge=1, description="Generations in flight per key (429 beyond); unset means no limit."
    )

    provider_preferences: dict[str, Any] | None = Field(
        None,
        description="Operator-wide provider preferences (only, ignore, order, sort, allow_fallbacks), "
        "merged under each request's `provider` object.",
    )
    fallback_on_content_refusal: bool = Field(
        False, description="Try the next endpoint when a provider refuses a prompt on content grounds."
    )

    cancel_on_disconnect: bool = Field(
        False,
        description="Cancel the upstream generation when the client disconnects (default: let it "
        "finish and record it, unbilled).",
    )

    reservation_ttl_s: float = Field(
        120.0, gt=0,
        description="Seconds after which money reserved by a process that stopped renewing it "
        "(it crashed) is released.",
    )
    reap_interval_s: float = Field(
        15.0, gt=0,
        description="How often expired reservations are released and the journals of processes that "
        "died are replayed.",
    )
    journal_dir: Path = Field(
        Path("imagegate-journal"),
        description="Folder of the journals in which each process writes down its generations as they "
        "go, so that one killed before its records are written still bills what it delivered and "
        "releases what it held (replayed by the next process to start). Local to the machine.",
    )
    tune_malloc: bool = Field(
        True,
        description="On glibc, keep image-sized buffers in the process instead of handing them back "
        "to the kernel after every request (MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ "
        "32 MiB). Skipped when either variable is set.",
    )
    tune_gc: bool = Field(
        True,
        description="Once started, keep what start-up built out of the garbage collector's walks "
        "(gc.freeze) and collect young objects every 5,000 allocations instead of 700.",
    )
    relay_images: bool = Field(
        True,
        description="Send a buffered answer's large images on while they arrive from the upstream "
        "(far less memory) where nothing needs them whole. Once an image's first byte is out, an "
        "upstream that breaks off mid-image cannot fall back to another provider: the connection is cut.",
    )
    relay_from_bytes: int = Field(
        8 * 1024 * 1024, ge=0,
        description="Relay only answers and images of at least this many bytes of base64; smaller "
        "ones are held whole, which costs less CPU and latency at a few megabytes (measured: a 1K "
        "PNG, 2.3 MB). The first 64 KiB of an image are always held, to read its header.",
    )
    record_output_sha256: bool = Field(
        False,
        description="Put each delivered image's sha256 in its generation record (about 1 ms of CPU "
        "per 1K PNG, off the request path).",
    )
    cache_ttl_s: float = Field(
        1.0, ge=0,
        description="Seconds an authenticated key, and whether an account is metered, are kept in "
        "memory: a key revoked or disabled, or a first top-up, made through another process takes "
        "effect within this time (through this one, at once). 0 reads the database every time.",
    )

    bootstrap_key: bool = Field(
        True, description="On start with no API keys, create one and print it."
    )
    catalog_paths: list[Path] = Field(
        default_factory=list, description="Extra catalog YAML files or folders, merged over ours."
    )
    providers: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per-provider settings (api_key, base_url, timeout_s …) by provider slug; "
        "each provider's environment variables (OPENAI_API_KEY …) override them.",
    )
    cors_allow_origins: list[str] = Field(default_factory=lambda: ["*"])
    #: uvicorn's levels.
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = "info"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, _Environment(settings_cls)]
        path = config_file()
        if path.is_file():
            sources.append(_ConfigFile(settings_cls, yaml_file=path))
        return tuple(sources)


def load_settings(**overrides: Any) -> Settings:
    """The settings, or SettingsError naming each one that is wrong and why."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError("; ".join(
            f"{_origin(error['loc'], overrides)}: {error['msg']}" for error in exc.errors()
        )) from None


# --- helpers ---


class _Environment(EnvSettingsSource):
    """pydantic-settings' environment source, except that a variable that should hold JSON
    (a list or a mapping) and does not is reported under its own name."""

    def prepare_field_value(
        self, field_name: str, field: FieldInfo, value: Any, value_is_complex: bool
    ) -> Any:
        try:
            return super().prepare_field_value(field_name, field, value, value_is_complex)
        except ValueError as exc:
            raise SettingsError(f"{_variable(field_name)}: not valid JSON ({exc})") from None


class _ConfigFile(YamlConfigSettingsSource):
    """pydantic-settings' YAML source, except that a file it cannot read, or that is not a
    mapping of settings, is reported in one line."""

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        try:
            data = super()._read_file(file_path)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = exc.problem or exc.context
            raise SettingsError(f"{file_path}: not valid YAML{where}: {problem}") from None
        except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"{file_path}: cannot be read: {_one_line(exc)}") from None
        if not isinstance(data, dict):
            kind = type(data).__name__
            raise SettingsError(f"{file_path}: should be a mapping of settings, not a {kind}")
        return data


def _origin(loc: tuple[int | str, ...], overrides: Mapping[str, Any]) -> str:
    """Where the wrong value came from: the variable as written, else the key in the YAML file.

    The environment wins over the file, and defaults are not validated, so a value that is not
    an override nor in the environment came from the file.
    """
    key = ".".join(str(part) for part in loc)
    if not loc or loc[0] in overrides:
        return key or "settings"
    variable = _variable(str(loc[0]))
    if environment_value(variable) is not None:
        inner = key.partition(".")[2]
        return f"{variable} (at {inner})" if inner else variable
    return f"{config_file()}: {key}"


def _variable(field: str) -> str:
    """The variable that sets ``field``, spelled as in the environment (case does not matter)."""
    name = f"{ENV_PREFIX}{field}".upper()
    return next((key for key, value in os.environ.items() if key.upper() == name and value), name)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
