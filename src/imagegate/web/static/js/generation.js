/** One POST /api/v1/images from the browser, buffered JSON or SSE, reported to a ResultView. */

import { ApiError, errorFrom } from "./api.js";
import { eventData } from "./sse.js";

/**
 * Sends `body` with the key in the Authorization header (the only place it goes) and feeds
 * `view` as images arrive. Never rejects: every failure ends up in `view` as a sentence.
 */
export async function generate({ body, apiKey, signal, view }) {
  const started = performance.now();
  const elapsed = () => performance.now() - started;
  let headers = null;
  try {
    const response = await fetch("/api/v1/images", {
      method: "POST",
      headers: {
        Authorization: `Bearer ${apiKey}`,
        "Content-Type": "application/json",
        Accept: body.stream ? "text/event-stream" : "application/json",
      },
      body: JSON.stringify(body),
      signal,
    });
    headers = response.headers;
    if (!response.ok) throw await errorFrom(response);
    const streamed = (response.headers.get("Content-Type") ?? "").startsWith("text/event-stream");
    const outcome = streamed ? await readStream(response, view, elapsed) : await readJson(response, view);
    view.finish({ headers, totalMs: elapsed(), ...outcome });
  } catch (error) {
    if (error.name === "AbortError") {
      view.fail("Cancelled before the generation finished.");
    } else if (error instanceof ApiError) {
      view.fail(error.message, error.status);
    } else {
      // fetch() rejects with a TypeError when the gateway is unreachable; anything else is a
      // response this page could not read.
      view.fail(`The request failed: ${error.message}`);
    }
    view.finish({ headers, totalMs: elapsed() });
  }
}

async function readJson(response, view) {
  const result = await response.json();
  result.data.forEach((image, slot) => view.completed(slot, image.b64_json, image.media_type));
  view.status(`Done: ${countImages(result.data.length)}.`);
  return { usage: result.usage };
}

/**
 * SSE. `completed` events come in output order. Partials are numbered per output and may run
 * ahead of the `completed` of earlier outputs (the gateway holds each back until the next one,
 * as the last carries the usage), so a partial index that does not grow starts the next output.
 */
async function readStream(response, view, elapsed) {
  let completed = 0;
  let partialSlot = 0;
  let lastPartialIndex = null;
  let firstImageMs;
  let usage;
  let failure = null;
  view.status("Waiting for the first preview…");
  for await (const data of eventData(response.body)) {
    if (data === "[DONE]") break;
    const event = JSON.parse(data);
    firstImageMs ??= event.b64_json ? elapsed() : undefined;
    switch (event.type) {
      case "image_generation.partial_image": {
        const index = event.partial_image_index;
        if (lastPartialIndex !== null && index <= lastPartialIndex) partialSlot += 1;
        partialSlot = Math.max(partialSlot, completed);
        lastPartialIndex = index;
        view.partial(partialSlot, index, event.b64_json);
        view.status(`Image ${partialSlot + 1}: preview ${index + 1} received…`);
        break;
      }
      case "image_generation.completed":
        view.completed(completed, event.b64_json, event.media_type);
        completed += 1;
        usage = event.usage ?? usage;
        view.status(`${countImages(completed)} received…`);
        break;
      case "image_generation.text_chunk":
        view.text(event.text);
        break;
      case "error":
        failure = event.error ?? {};
        break;
      default:
        break; // event types added later are not this page's business
    }
  }
  if (failure) {
    view.fail(failure.message ?? "The generation failed.", failure.code);
    if (completed) view.status(`Stopped after ${countImages(completed)}.`);
  } else {
    view.status(`Done: ${countImages(completed)}.`);
  }
  return { firstImageMs, usage };
}

const countImages = (count) => `${count} image${count === 1 ? "" : "s"}`;
