"""The pages' pure modules, run in the browser: SSE framing and price wording."""

from __future__ import annotations

from decimal import Decimal

import pytest

pytest.importorskip("playwright.sync_api", reason="the web tests need playwright")

from playwright.sync_api import Page  # noqa: E402

from imagegate.catalog import BILLABLES, UNITS, PricingLine  # noqa: E402
from imagegate.cli import describe_price  # noqa: E402

READ_EVENTS = """async (chunks) => {
  const { eventData } = await import("/static/js/sse.js");
  const encoder = new TextEncoder();
  const body = new ReadableStream({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(encoder.encode(chunk));
      controller.close();
    },
  });
  const events = [];
  for await (const data of eventData(body)) events.push(data);
  return events;
}"""


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([': \n\ndata: {"a":1}\n\n: \n\ndata: [DONE]\n\n'], ['{"a":1}', "[DONE]"]),
        ([":", " \n", "\nda", 'ta: {"a"', ":1}\n", "\n", "data: [DONE]\n\n"], ['{"a":1}', "[DONE]"]),
        ([': \r\n\r\ndata: {"a":1}\r', "\n\r\ndata: [DONE]\r\n\r\n"], ['{"a":1}', "[DONE]"]),
        (['data: {"a":1}\rdata: x\r\r', "data:[DONE]\n\n"], ['{"a":1}\nx', "[DONE]"]),
    ],
)
def test_sse_events_whatever_the_chunking_and_line_ends(page: Page, chunks: list[str], expected: list[str]) -> None:
    page.goto("/")
    assert page.evaluate(READ_EVENTS, chunks) == expected


def test_prices_are_worded_as_the_command_line_words_them(page: Page) -> None:
    lines = [
        PricingLine(billable, unit, Decimal(cost), variant)
        for billable in BILLABLES
        for unit in UNITS
        for cost, variant in (("0.03", None), ("0.0000005", "2k"), ("12", None))
    ]
    lines += [  # a first megapixel priced apart, megapixels of 1,000,000 pixels
        PricingLine("output_image", "megapixel", Decimal("0.015"), first_unit_usd=Decimal("0.03"),
                    pixels_per_megapixel=1_000_000),
        PricingLine("input_image", "megapixel", Decimal("0.001"), "1k", pixels_per_megapixel=1_000_000),
        PricingLine("output_image", "megapixel", Decimal("0.05"), first_unit_usd=Decimal("0.05")),
    ]
    page.goto("/")
    worded = page.evaluate(
        """async (lines) => {
          const { describePrice } = await import("/static/js/describe.js");
          return lines.map(describePrice);
        }""",
        [line.to_wire() for line in lines],
    )
    assert worded == [describe_price(line) for line in lines]
