"""The playground in a real browser: a form built from descriptors, streamed and buffered
generations against the sandbox models, readable errors."""

from __future__ import annotations

import io
import json
import re

import pytest

pytest.importorskip("playwright.sync_api", reason="the web tests need playwright")

from PIL import Image  # noqa: E402
from playwright.sync_api import Page, expect  # noqa: E402

from tests.conftest import LiveServer  # noqa: E402
from tests.web.conftest import PHONE, Console, no_horizontal_scroll, screenshot  # noqa: E402

# Records every value each output's <figure> takes as data-stage ("partial", "final") and every
# status line shown, however briefly: observers run late, so values come from the records
# (a stage's old values, then its current one; a status's added text node).
WATCH = """() => {
  const gallery = document.getElementById("gallery");
  const status = document.getElementById("status");
  const oldStages = new Map();
  window.statuses = [];
  window.stages = () => [...gallery.querySelectorAll("figure")].map(
    (f) => [...(oldStages.get(f) ?? []).slice(1), f.dataset.stage]);
  new MutationObserver((records) => {
    for (const r of records) oldStages.set(r.target, [...(oldStages.get(r.target) ?? []), r.oldValue]);
  }).observe(gallery, { subtree: true, attributeFilter: ["data-stage"], attributeOldValue: true });
  new MutationObserver((records) => {
    for (const r of records) for (const node of r.addedNodes) window.statuses.push(node.textContent);
  }).observe(status, { childList: true });
}"""


def open_playground(page: Page, server: LiveServer, model: str = "imagegate/sandbox") -> None:
    page.goto(f"/playground?model={model}")
    expect(page.get_by_label("Model", exact=True)).to_have_value(model)
    expect(page.locator("#parameter-fields > *").first).to_be_visible()
    page.get_by_label("API key").fill(server.key)
    page.get_by_label("Prompt").fill("a red circle on a blue sky")


def request_body(page: Page) -> dict:
    return json.loads(page.locator("#request-preview").text_content())


def png_bytes(color: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(out, "PNG")
    return out.getvalue()


def test_the_form_offers_what_the_endpoint_lists(page: Page, server: LiveServer) -> None:
    open_playground(page, server)
    params = page.locator("#parameters")
    expect(params.get_by_label("Resolution")).to_be_visible()
    expect(params.get_by_label("Resolution").locator("option")).to_have_text(
        ["default", "512", "768", "1K", "1.5K", "2K", "4K"]
    )
    expect(params.get_by_label("Background")).to_be_visible()
    expect(params.get_by_label("Images (n)")).to_have_attribute("max", "10")
    expect(params.get_by_label("Fixed seed")).not_to_be_checked()
    expect(page.locator("#references legend")).to_have_text("Reference images (up to 16)")
    expect(page.get_by_label("Stream partial images as they are drawn")).to_be_checked()

    params.get_by_label("Resolution").select_option("1K")
    params.get_by_label("Aspect ratio").select_option("2.35:1")
    params.get_by_label("Fixed seed").check()
    params.get_by_label("Seed", exact=True).fill("7")
    assert request_body(page) | {"prompt": ""} == {
        "model": "imagegate/sandbox", "prompt": "", "resolution": "1K", "aspect_ratio": "2.35:1",
        "seed": 7, "stream": True,
    }

    page.get_by_label("Model", exact=True).select_option("imagegate/sandbox-tiers")
    expect(page).to_have_url(re.compile(r"model=imagegate%2Fsandbox-tiers"))
    expect(params.get_by_label("Background")).to_have_count(0)
    expect(params.get_by_label("Output format")).to_have_count(0)
    expect(params.get_by_label("Images (n)")).to_have_attribute("max", "1")
    expect(params.get_by_label("Images (n)")).to_have_attribute("min", "1")
    expect(page.locator("#references legend")).to_have_text("Reference images (up to 14)")
    expect(page.get_by_label("Stream partial images as they are drawn")).to_be_hidden()
    # Carried over where still allowed: 1K yes, 2.35:1 is not in this table, seed is not listed.
    expect(params.get_by_label("Resolution")).to_have_value("1K")
    expect(params.get_by_label("Aspect ratio")).to_have_value("")
    assert request_body(page) | {"prompt": ""} == {"model": "imagegate/sandbox-tiers", "prompt": "", "resolution": "1K"}

    page.get_by_label("Model", exact=True).select_option("imagegate/sandbox-vector")
    expect(params.get_by_label("Output format").locator("option")).to_have_text(["default", "svg"])
    expect(params.get_by_label("Resolution")).to_have_count(0)
    expect(page.locator("#references legend")).to_have_text("Reference images (up to 1)")

    page.get_by_label("Model", exact=True).select_option("imagegate/sandbox-tokens")
    expect(params.get_by_label("Resolution")).to_have_count(0)
    expect(params.get_by_label("Background")).to_be_visible()
    expect(page.locator("#endpoint-facts")).to_contain_text("$0.00004 per token of output")


def test_a_stream_shows_previews_then_the_final_images(page: Page, server: LiveServer) -> None:
    open_playground(page, server)
    params = page.locator("#parameters")
    params.get_by_label("Resolution").select_option("512")
    params.get_by_label("Images (n)").fill("2")
    page.get_by_text("Provider routing and options").click()
    page.get_by_label("latency_ms").fill("600")
    assert request_body(page)["provider"] == {"options": {"imagegate": {"latency_ms": 600}}}
    page.evaluate(WATCH)

    page.get_by_role("button", name="Generate").click()
    expect(page.get_by_role("button", name="Cancel")).to_be_visible()
    expect(page.locator("#status")).to_have_text("Done: 2 images.")
    statuses = page.evaluate("window.statuses")
    assert statuses[:2] == ["Generating…", "Waiting for the first preview…"], statuses
    assert "Image 1: preview 1 received…" in statuses and "1 image received…" in statuses, statuses
    # Each output: its two previews, then the final image in the same place.
    assert page.evaluate("window.stages()") == [["partial", "partial", "final"]] * 2

    images = page.locator("#gallery figure img")
    expect(images).to_have_count(2)
    for i in range(2):
        expect(images.nth(i)).to_have_attribute("src", re.compile(r"^data:image/png;base64,iVBOR"))
        assert images.nth(i).evaluate("img => img.decode().then(() => [img.naturalWidth, img.naturalHeight])") == [512, 512]
    facts = page.locator("#applied")
    expect(facts).to_contain_text("Imagegate Sandbox")
    expect(facts).to_contain_text("512x512")
    expect(facts).to_contain_text(re.compile(r"Latency\s*\d+\.\d\d s \(first image after \d+\.\d\d s\)"))
    expect(facts).to_contain_text(re.compile(r"Cost\s*\$0\.02"))
    generation_id = facts.locator("dd").nth(1).inner_text()
    assert re.fullmatch(r"gen-img-\d+-\w{20}", generation_id)

    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download image 2").click()
    download = download_info.value
    assert download.suggested_filename == f"{generation_id}-2.png"
    assert open(download.path(), "rb").read().startswith(b"\x89PNG")
    expect(page.get_by_role("button", name="Cancel")).to_be_hidden()


def test_an_error_event_mid_stream_keeps_what_arrived_and_shows_the_message(page: Page, server: LiveServer) -> None:
    open_playground(page, server)
    page.locator("#parameters").get_by_label("Resolution").select_option("512")
    page.locator("#parameters").get_by_label("Images (n)").fill("2")
    page.get_by_text("Provider routing and options").click()
    page.get_by_label("fail", exact=True).fill("after_first_image")
    page.get_by_role("button", name="Generate").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Error upstream_error sandbox: injected upstream failure")
    expect(page.locator("#status")).to_have_text(re.compile(r"^(Failed\.|Stopped after 1 image\.)$"))
    expect(page.locator("#gallery figure")).to_have_count(1)  # the first image's previews (or itself)
    assert "Traceback" not in alert.inner_text()


def test_a_refused_request_shows_the_gateways_message(page: Page, server: LiveServer, console: Console) -> None:
    console.expect(r"status of 400")  # Chromium logs every failed fetch; these are provoked
    console.expect(r"status of 401")
    open_playground(page, server)
    params = page.locator("#parameters")
    params.get_by_label("Background").select_option("transparent")
    params.get_by_label("Output format").select_option("jpeg")
    page.get_by_role("button", name="Generate").click()
    alert = page.get_by_role("alert")
    expect(alert).to_have_text('Error 400 background "transparent" requires output_format png or webp, got "jpeg"')
    expect(page.locator("#status")).to_have_text("Failed.")
    expect(page.locator("#gallery figure")).to_have_count(0)

    params.get_by_label("Output format").select_option("png")
    page.get_by_label("API key").fill("sk-ig-v1-not-a-real-key")
    page.get_by_role("button", name="Generate").click()
    expect(alert).to_contain_text("Error 401")
    assert len(alert.inner_text()) > len("Error 401 ")


def test_references_by_upload_up_to_the_maximum_and_svg_output(page: Page, server: LiveServer) -> None:
    open_playground(page, server, "imagegate/sandbox-vector")
    refs = page.locator("#references")
    refs.get_by_label("Upload images").set_input_files([
        {"name": "red.png", "mimeType": "image/png", "buffer": png_bytes("red")},
        {"name": "green.png", "mimeType": "image/png", "buffer": png_bytes("green")},
    ])
    expect(refs.locator("li")).to_have_count(1)
    expect(refs).to_contain_text("1 not added: at most 1 references.")
    expect(refs.get_by_label("Upload images")).to_be_disabled()
    expect(refs.get_by_role("button", name="Add URL")).to_be_disabled()
    reference = request_body(page)["input_references"]
    assert len(reference) == 1 and reference[0]["image_url"]["url"].startswith("data:image/png;base64,")

    page.get_by_role("button", name="Generate").click()  # not a streaming model: buffered JSON
    expect(page.locator("#status")).to_have_text("Done: 1 image.")
    image = page.locator("#gallery img")
    expect(image).to_have_attribute("src", re.compile(r"^data:image/svg\+xml;base64,"))
    assert image.evaluate("img => img.decode().then(() => img.naturalWidth > 0)")
    expect(page.locator("#gallery figcaption")).to_contain_text("image/svg+xml")
    expect(page.locator("#applied")).to_contain_text(re.compile(r"Cost\s*\$0\.02"))

    refs.get_by_role("button", name=re.compile(r"Remove reference 1")).click()
    expect(refs.locator("li")).to_have_count(0)
    expect(refs.get_by_label("Upload images")).to_be_enabled()
    expect(refs.get_by_label("Upload images")).to_be_focused()
    refs.get_by_label("Image URL").fill("https://example.com/a.png")
    refs.get_by_label("Image URL").press("Enter")
    assert request_body(page)["input_references"] == [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]


def test_the_key_stays_in_this_browser(page: Page, server: LiveServer) -> None:
    open_playground(page, server)
    assert page.evaluate("localStorage.getItem('imagegate.apiKey')") == server.key
    assert server.key not in page.locator("#request-preview").text_content()
    page.reload()
    expect(page.get_by_label("API key")).to_have_value(server.key)
    page.get_by_role("button", name="Forget").click()
    assert page.evaluate("localStorage.getItem('imagegate.apiKey')") is None


def test_every_control_is_labelled_and_focus_is_visible(page: Page, server: LiveServer) -> None:
    for path, ready in (("/", "article.model"), ("/playground", "#parameter-fields select")):
        page.goto(path)
        expect(page.locator(ready).first).to_be_visible()
        unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea, button')]
            .filter((el) => !(el.labels?.length || el.getAttribute('aria-label') || el.textContent.trim()))
            .map((el) => el.outerHTML)""")
        assert unlabelled == [], path
        page.keyboard.press("Tab")
        expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
        page.keyboard.press("Tab")
        assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"


def test_screenshots_and_no_sideways_scrolling(page: Page, server: LiveServer) -> None:
    open_playground(page, server)
    page.locator("#parameters").get_by_label("Resolution").select_option("512")
    page.locator("#references").get_by_label("Upload images").set_input_files(
        {"name": "a-reference-with-a-rather-long-file-name.png", "mimeType": "image/png", "buffer": png_bytes("orange")}
    )
    page.get_by_text("Provider routing and options").click()
    page.get_by_text("Request body").click()  # long lines: they must scroll inside the box
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#status")).to_have_text("Done: 1 image.")
    screenshot(page, "playground")
    page.set_viewport_size(PHONE)
    assert no_horizontal_scroll(page)
    screenshot(page, "playground")


def test_a_slow_generation_can_be_cancelled(page: Page, server: LiveServer) -> None:
    open_playground(page, server)
    page.get_by_text("Provider routing and options").click()
    page.get_by_label("latency_ms").fill("5000")
    page.get_by_role("button", name="Generate").click()
    expect(page.get_by_role("button", name="Generate")).to_be_disabled()
    page.get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("alert")).to_have_text("Cancelled before the generation finished.")
    expect(page.get_by_role("button", name="Generate")).to_be_enabled()
