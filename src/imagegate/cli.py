"""``imagegate`` command line: serve, models, keys."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from imagegate.catalog import Endpoint, PricingLine, load_catalog
from imagegate.clock import system_clock
from imagegate.memory import tune_gc, tune_malloc
from imagegate.providers import Providers, load_providers
from imagegate.providers.http import HttpPool
from imagegate.settings import Settings, SettingsError, load_settings
from imagegate.store import LIMIT_RESETS, Store, upgrade

app = typer.Typer(help="imagegate: OpenRouter's Image API, self-hosted.", no_args_is_help=True)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
credits_app = typer.Typer(help="Top up and show the account's credit.", no_args_is_help=True)
app.add_typer(credits_app, name="credits")

# Human-facing output goes to stderr, so stdout carries only what scripts capture.
err = Console(stderr=True)
# Piped output keeps whole rows (rich would wrap tables at 80 columns), so grep and scripts work.
out = Console() if sys.stdout.isatty() else Console(width=240)
T = TypeVar("T")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default 8080).")] = None,
) -> None:
    """Migrate the database and serve the API."""
    import uvicorn

    from imagegate.api.app import create_app
    from imagegate.http_server import ConnectionLimits, connection_cap, protocol_with, raise_open_files_limit

    settings = _settings()
    if settings.tune_malloc:
        tune_malloc()
    host = host or settings.host
    port = port if port is not None else settings.port
    upgrade(settings.database_url)
    if settings.bootstrap_key:
        created = _run_store(settings.database_url, _bootstrap_key)
        if created:
            err.print("[bold]No API keys existed, so one was created. It is shown only once:[/bold]")
            print(created, flush=True)
    open_files = raise_open_files_limit()
    limits = ConnectionLimits(header_timeout_s=settings.header_timeout_s, body_timeout_s=settings.body_timeout_s,
                              max_connections=settings.max_connections or connection_cap(open_files))
    err.print(f"imagegate serving on [bold]http://{host}:{port}[/bold]  (API under /api/v1)")
    uvicorn.run(
        create_app(settings, on_started=tune_gc if settings.tune_gc else None),
        host=host,
        port=port,
        http=protocol_with(limits),
        log_level=settings.log_level,
        timeout_graceful_shutdown=30,
    )


@app.command()
def models(
    all_: Annotated[bool, typer.Option(
        "--all", help="Also list endpoints whose provider is not configured, and retired ones.")] = False,
    on: Annotated[datetime | None, typer.Option(
        formats=["%Y-%m-%d"], help="Show what is served on this day (default: today, UTC).")] = None,
) -> None:
    """Show the models and endpoints this gateway serves."""
    settings = _settings()
    providers = load_providers(settings, HttpPool())
    catalog = load_catalog(settings.catalog_paths)
    today = on.date() if on else system_clock().date()
    if not all_:
        catalog = catalog.restricted(set(providers.configured), today)
    table = Table(title="Image models")
    for column in ("model", "endpoint", "streams", "n", "refs", "pricing", "status"):
        table.add_column(column)
    for model in catalog.models():
        for i, endpoint in enumerate(model.endpoints):
            params = endpoint.supported_parameters
            table.add_row(
                model.id if i == 0 else "",
                endpoint.provider_slug,
                "yes" if endpoint.supports_streaming else "no",
                _range(params.get("n")),
                _range(params.get("input_references")),
                "; ".join(describe_price(line) for line in endpoint.pricing),
                _status(endpoint, providers, today),
            )
    out.print(table)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A note to recognize the key by.")] = "",
    limit: Annotated[str | None, typer.Option(help="Spending limit in USD (per reset period, if any).")] = None,
    reset: Annotated[str | None, typer.Option(help="Limit reset period: daily, weekly or monthly.")] = None,
    management: Annotated[bool, typer.Option("--management", help="May manage other keys over the API.")] = False,
) -> None:
    """Create a key and print it (alone, on stdout). It cannot be shown again."""
    settings = _settings()
    upgrade(settings.database_url)
    limit_usd = _usd(limit) if limit is not None else None
    if reset is not None and reset not in LIMIT_RESETS:
        err.print(f"[red]--reset must be one of {', '.join(LIMIT_RESETS)}[/red]")
        raise typer.Exit(2)
    secret, record = _run_store(
        settings.database_url,
        lambda store: store.create_key(name, is_management=management, limit_usd=limit_usd, limit_reset=reset),
    )
    err.print(f"Created key {record.label} (hash {record.hash[:16]}…)")
    print(secret, flush=True)


@keys_app.command("list")
def keys_list() -> None:
    """List keys (never their secrets)."""
    settings = _settings()
    upgrade(settings.database_url)
    records = _run_store(settings.database_url, lambda store: store.list_keys())
    table = Table(title="API keys")
    for column in ("hash", "label", "name", "created", "last used", "status"):
        table.add_column(column)
    for key in records:
        table.add_row(
            key.hash[:16],
            key.label,
            key.name,
            f"{key.created_at:%Y-%m-%d %H:%M}",
            f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "never",
            "active" if key.active else f"revoked {key.revoked_at:%Y-%m-%d}",
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    ident: Annotated[str, typer.Argument(help="The key's hash (or a unique prefix of it), or its label.")],
) -> None:
    """Revoke a key; requests with it get 401 from then on."""
    settings = _settings()
    upgrade(settings.database_url)
    try:
        record = _run_store(settings.database_url, lambda store: store.revoke_key(ident))
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    if record is None:
        err.print(f"[red]No key matches {ident!r}[/red]")
        raise typer.Exit(1)
    err.print(f"Revoked {record.label} (hash {record.hash[:16]}…)")


@credits_app.command("add")
def credits_add(
    amount: Annotated[str, typer.Argument(help="USD to add, e.g. 25 or 0.50.")],
    note: Annotated[str, typer.Option(help="Kept on the ledger entry.")] = "",
) -> None:
    """Add credit to the account. The first top-up turns on spending control: from then on a
    generation is refused (402) when the balance cannot cover it."""
    settings = _settings()
    upgrade(settings.database_url)
    try:
        account = _run_store(settings.database_url, lambda store: store.add_credits(_usd(amount), note=note))
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    out.print(f"balance ${account.balance_usd} (credits ${account.total_credits_usd}, used ${account.total_usage_usd})")


@credits_app.command("show")
def credits_show() -> None:
    """Show the account's credits, usage, balance and what requests in flight hold."""
    settings = _settings()
    upgrade(settings.database_url)
    account = _run_store(settings.database_url, lambda store: store.get_account())
    balance = "unmetered (no credit limit)" if account.balance_usd is None else f"${account.balance_usd}"
    held = f"; held ahead by running gateways ${account.held_ahead_usd}" if account.held_ahead_usd else ""
    out.print(f"balance {balance}; credits ${account.total_credits_usd}; used ${account.total_usage_usd}; "
              f"reserved ${account.reserved_usd}{held}")


def describe_price(line: PricingLine) -> str:
    """A pricing line in plain words: ``$0.03 per megapixel of output``."""
    what = {
        "output_image": "of output",
        "input_image": "of input images",
        "input_reference": "per reference image",
        "input_text": "of prompt text",
        "output_text": "of output text",
        "input_font": "per font",
    }[line.billable]
    unit = {"image": "image", "megapixel": "megapixel", "token": "token", "request": "request"}[line.unit]
    price = f"{_dollars(line.cost_usd)} per {unit}"
    if line.billable == "input_reference":
        price = f"{_dollars(line.cost_usd)} per reference image"
    elif line.unit != "request":
        price += f" {what}"
    if line.first_unit_usd is not None:
        price = f"{_dollars(line.first_unit_usd)} for the first {unit} of each image, then {price}"
    if line.pixels_per_megapixel is not None:
        price += f" (1 megapixel = {line.pixels_per_megapixel:,} pixels)"
    return price + (f" ({line.variant})" if line.variant else "")


# --- helpers ---


def _settings() -> Settings:
    """The settings; where one is wrong, one line saying which and why, and exit status 2."""
    try:
        return load_settings()
    except SettingsError as exc:
        # Plain text: rich would wrap a long line and read brackets in it as markup.
        typer.echo(f"imagegate: {exc}", err=True)
        raise typer.Exit(2) from None


def _status(endpoint: Endpoint, providers: Providers, today: date) -> str:
    """Serving, off (and what would turn it on), or retired (and since when)."""
    if endpoint.sunset is not None and endpoint.retired_on(today):
        return f"retired since {endpoint.sunset.isoformat()}"
    if endpoint.provider not in providers.configured:
        return f"off: {providers.missing.get(endpoint.provider, 'no such provider module')}"
    return f"serving; retires {endpoint.sunset.isoformat()}" if endpoint.sunset else "serving"


def _dollars(amount: Decimal) -> str:
    return f"${format(amount.normalize(), 'f')}"


async def _bootstrap_key(store: Store) -> str | None:
    if await store.count_active_keys():
        return None
    secret, _record = await store.create_key("bootstrap")
    return secret


def _run_store(url: str, action: Callable[[Store], Awaitable[T]]) -> T:
    async def run() -> T:
        store = Store(url)
        try:
            return await action(store)
        finally:
            await store.close()

    return asyncio.run(run())


def _usd(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        err.print(f"[red]not an amount of USD: {text!r}[/red]")
        raise typer.Exit(2) from None


def _range(descriptor: object) -> str:
    if descriptor is None:
        return "-"
    low, high = getattr(descriptor, "min", None), getattr(descriptor, "max", None)
    return str(low) if low == high else f"{low}-{high}"
