"""The models page in a real browser: content from the discovery API, filters in the URL."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

pytest.importorskip("playwright.sync_api", reason="the web tests need playwright")

from playwright.sync_api import Page, expect  # noqa: E402

from imagegate.catalog import load_catalog  # noqa: E402
from imagegate.clock import fixed_clock  # noqa: E402
from imagegate.cli import describe_price  # noqa: E402
from tests.conftest import LiveServer  # noqa: E402
from tests.web.conftest import DESKTOP, PHONE, no_horizontal_scroll, screenshot  # noqa: E402

SANDBOX_MODELS = ["imagegate/sandbox", "imagegate/sandbox-tokens", "imagegate/sandbox-tiers", "imagegate/sandbox-vector"]
#: The page lists every shipped model, configured or not; the test server configures only the sandbox.
ALL_MODELS = [m.id for m in load_catalog().models()]
SANDBOX_ONLY = "provider=imagegate"


def shown(page: Page):
    return page.locator("article.model:not([hidden])")


def expect_shown(page: Page, ids: list[str]) -> None:
    expect(shown(page).locator(".meta code")).to_have_text(ids)  # the model ids, in catalog order


def test_every_model_with_endpoints_capabilities_and_prices(page: Page, server: LiveServer) -> None:
    page.goto("/")
    expect_shown(page, ALL_MODELS)
    expect(page.locator("#summary")).to_have_text(f"{len(ALL_MODELS)} models")
    catalog = load_catalog()
    for model_id in SANDBOX_MODELS:
        model = catalog.get(model_id)
        card = page.locator(f'article[data-model-id="{model_id}"]')
        expect(card.locator("h2")).to_have_text(model.name)
        expect(card).to_contain_text(f"by {model.author}")
        expect(card.locator(".description")).to_have_text(model.description)
        expect(card.locator(".modalities")).to_contain_text(", ".join(model.output_modalities))
        link = card.get_by_role("link", name="Try in playground")
        expect(link).to_have_attribute("href", re.compile(r"/playground\?model=" + re.escape(model_id.replace("/", "%2F"))))
        for endpoint in model.endpoints:
            section = card.locator(f'.endpoint[data-provider="{endpoint.provider_slug}"]')
            expect(section.locator("h3")).to_contain_text(endpoint.provider_name)
            # The same words as `imagegate models` prints.
            expect(section.locator(".pricing li")).to_have_text([describe_price(line) for line in endpoint.pricing])
            expect(section).to_contain_text("streams" if endpoint.supports_streaming else "no streaming")
            expect(section).to_contain_text(", ".join(endpoint.allowed_passthrough_parameters))

    sandbox = page.locator('article[data-model-id="imagegate/sandbox"]')
    facts = dict(zip(sandbox.locator("dt").all_inner_texts(), sandbox.locator("dd").all_inner_texts(), strict=True))
    assert facts["Resolutions"] == "512, 768, 1K, 1.5K, 2K, 4K"
    assert facts["Output formats"] == "png, jpeg, webp"
    assert facts["Backgrounds"] == "auto, transparent, opaque"
    assert facts["Images per request"] == "1–10"
    assert facts["Reference images"] == "up to 16"
    assert facts["Seed"].startswith("supported")
    assert "1:1" in facts["Aspect ratios"] and "21:9" in facts["Aspect ratios"]
    tiers = page.locator('article[data-model-id="imagegate/sandbox-tiers"]')
    expect(tiers.locator("dd").nth(2)).to_have_text("exactly 1")  # resolutions, aspect ratios, n
    expect(tiers).to_contain_text("$0.02 per megapixel of output")
    expect(tiers).to_contain_text("$0.001 per request")
    expect(page.locator('article[data-model-id="imagegate/sandbox-tokens"]')).to_contain_text("$0.00004 per token of output")
    expect(sandbox).to_contain_text("$0.002 per reference image")


def test_filters_change_the_list_and_the_url(page: Page) -> None:
    page.goto(f"/?{SANDBOX_ONLY}")
    expect_shown(page, SANDBOX_MODELS)
    filters = page.get_by_role("search", name="Filter models")

    filters.get_by_label("Output modality").select_option("text")
    expect_shown(page, ["imagegate/sandbox-tiers"])
    expect(page).to_have_url(re.compile(r"\?output_modalities=text&provider=imagegate$"))
    expect(page.locator("#summary")).to_have_text(f"1 of {len(ALL_MODELS)} models matches")

    filters.get_by_role("button", name="Clear filters").click()
    expect_shown(page, ALL_MODELS)
    expect(page).to_have_url(re.compile(r"/$"))
    filters.get_by_label("Provider").select_option(label="Imagegate Sandbox")

    filters.get_by_label("Transparent background").check()
    expect_shown(page, ["imagegate/sandbox", "imagegate/sandbox-tokens"])
    expect(page).to_have_url(re.compile(r"\?provider=imagegate&cap=transparent$"))
    filters.get_by_label("Transparent background").uncheck()
    filters.get_by_label("Takes ≥ 4 references").check()
    expect_shown(page, ["imagegate/sandbox", "imagegate/sandbox-tokens", "imagegate/sandbox-tiers"])
    filters.get_by_label("Streams partial images").check()
    expect_shown(page, ["imagegate/sandbox", "imagegate/sandbox-tokens"])
    filters.get_by_label("Fixed seed").check()
    expect_shown(page, ["imagegate/sandbox"])
    expect(page).to_have_url(re.compile(r"\?provider=imagegate&cap=streams%2Crefs4%2Cseed$"))
    filters.get_by_role("button", name="Clear filters").click()
    filters.get_by_label("Provider").select_option(label="Imagegate Sandbox")

    filters.get_by_label("Output format").select_option("svg")
    expect_shown(page, ["imagegate/sandbox-vector"])
    filters.get_by_label("Output format").select_option("")
    filters.get_by_label("Several images per call (n > 1)").check()
    expect_shown(page, ["imagegate/sandbox", "imagegate/sandbox-tokens", "imagegate/sandbox-vector"])
    filters.get_by_label("Provider").select_option(label="Imagegate Sandbox")
    filters.get_by_label("Search").fill("vector")
    expect_shown(page, ["imagegate/sandbox-vector"])
    expect(page).to_have_url(re.compile(r"\?q=vector&provider=imagegate&cap=multi$"))

    page.reload()  # the URL restores the filters
    expect_shown(page, ["imagegate/sandbox-vector"])
    expect(filters.get_by_label("Search")).to_have_value("vector")
    expect(filters.get_by_label("Provider")).to_have_value("imagegate")
    expect(filters.get_by_label("Several images per call (n > 1)")).to_be_checked()

    filters.get_by_label("Search").fill("no such model anywhere")
    expect_shown(page, [])
    expect(page.locator("#summary")).to_contain_text("No model matches")


def test_a_shared_link_opens_with_its_filters(page: Page) -> None:
    page.goto(f"/?input_modalities=image&output_modalities=image&cap=refs4&{SANDBOX_ONLY}")
    expect_shown(page, ["imagegate/sandbox", "imagegate/sandbox-tokens", "imagegate/sandbox-tiers"])
    expect(page.get_by_label("Input modality")).to_have_value("image")
    expect(page.get_by_label("Takes ≥ 4 references")).to_be_checked()


def test_an_unconfigured_endpoint_says_what_to_set(page: Page) -> None:
    page.goto("/")
    card = page.locator('article[data-model-id="openai/gpt-image-2"]')
    expect(card.locator('.endpoint[data-provider="openai"] .notice')).to_have_text("not configured — set OPENAI_API_KEY")
    expect(card.locator('.endpoint[data-provider="azure"] .notice')).to_have_text(
        "not configured — set AZURE_OPENAI_API_KEY")
    sandbox = page.locator('article[data-model-id="imagegate/sandbox"]')
    expect(sandbox.locator(".endpoint .notice")).to_have_count(0)


def test_a_retired_endpoint_says_since_when_not_what_to_set(browser, make_server, console) -> None:
    # Started on a thread of its own: Playwright's event loop runs on this one.
    with ThreadPoolExecutor(1) as pool:
        later = pool.submit(make_server, clock=fixed_clock(datetime(2028, 12, 7, tzinfo=UTC))).result()
    context = browser.new_context(viewport=DESKTOP, base_url=later.base_url)
    try:
        page = context.new_page()
        page.on("pageerror", lambda error: console.record(f"page error: {error}"))
        page.goto("/")
        card = page.locator('article[data-model-id="openai/gpt-image-1.5"]')
        for slug in ("openai", "azure"):
            expect(card.locator(f'.endpoint[data-provider="{slug}"] .notice')).to_have_text(
                "retired since 2026-12-01 — its provider no longer serves it")
        current = page.locator('article[data-model-id="openai/gpt-image-2"]')
        expect(current.locator('.endpoint[data-provider="openai"] .notice')).to_have_text(
            "not configured — set OPENAI_API_KEY")
    finally:
        context.close()
    assert console.unexpected() == []


def test_screenshots_and_no_sideways_scrolling(page: Page) -> None:
    page.goto("/")
    expect_shown(page, ALL_MODELS)
    screenshot(page, "models")
    page.set_viewport_size(PHONE)
    assert no_horizontal_scroll(page)
    screenshot(page, "models")
