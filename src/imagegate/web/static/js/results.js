/** The playground's result panel: images as they arrive, what was applied, time and cost. */

import { h } from "./dom.js";
import { plainNumber } from "./describe.js";

/** Response headers worth showing, in order. */
const APPLIED_HEADERS = [
  ["Provider", "X-Provider-Name"],
  ["Generation id", "X-Generation-Id"],
  ["Size", "X-Imagegate-Size"],
  ["Resolution", "X-Imagegate-Resolution"],
  ["Aspect ratio", "X-Imagegate-Aspect-Ratio"],
  ["Format", "X-Imagegate-Format"],
  ["Quality", "X-Imagegate-Quality"],
  ["Dropped", "X-Imagegate-Dropped"],
  ["Clamped", "X-Imagegate-Clamped"],
];

const EXTENSIONS = { "image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/svg+xml": "svg", "image/gif": "gif" };

/** The media type of base64 image bytes, from their first characters (partials carry none). */
function sniffMediaType(b64) {
  if (b64.startsWith("iVBOR")) return "image/png";
  if (b64.startsWith("/9j/")) return "image/jpeg";
  if (b64.startsWith("UklGR")) return "image/webp";
  if (b64.startsWith("R0lGOD")) return "image/gif";
  if (b64.startsWith("PD94") || b64.startsWith("PHN2Zy")) return "image/svg+xml";
  return "image/png";
}

const seconds = (ms) => `${(ms / 1000).toFixed(2)} s`;

export class ResultView {
  constructor({ status, error, gallery, textChunks, applied }) {
    Object.assign(this, { statusLine: status, errorBox: error, gallery, textChunks, applied });
    this.figures = [];
    this.generationId = "";
  }

  start(message) {
    this.figures = [];
    this.generationId = "";
    this.gallery.replaceChildren();
    this.gallery.setAttribute("aria-busy", "true");
    this.textChunks.textContent = "";
    this.textChunks.hidden = true;
    this.applied.hidden = true;
    this.errorBox.hidden = true;
    this.status(message);
  }

  status(message) {
    this.statusLine.textContent = message;
  }

  /** A preview of output `slot`; the final image replaces it. */
  partial(slot, partialIndex, b64) {
    const figure = this.figure(slot);
    if (figure.dataset.stage === "final") return;
    this.show(figure, b64, sniffMediaType(b64), `Image ${slot + 1}, preview ${partialIndex + 1}`);
    figure.dataset.stage = "partial";
    figure.dataset.partialIndex = String(partialIndex);
    figure.querySelector(".caption").textContent = `Image ${slot + 1} · preview ${partialIndex + 1}…`;
  }

  completed(slot, b64, mediaType) {
    const figure = this.figure(slot);
    const type = mediaType || sniffMediaType(b64);
    this.show(figure, b64, type, `Generated image ${slot + 1}`);
    figure.dataset.stage = "final";
    figure.querySelector(".caption").textContent = `Image ${slot + 1} · ${type}`;
    const button = figure.querySelector("button");
    button.disabled = false;
    button.onclick = () => this.download(b64, type, slot);
  }

  text(chunk) {
    this.textChunks.hidden = false;
    this.textChunks.textContent += chunk;
  }

  fail(message, status) {
    this.errorBox.replaceChildren(...(status ? [h("strong", {}, `Error ${status}`), " "] : []), message);
    this.errorBox.hidden = false;
    this.gallery.removeAttribute("aria-busy");
    this.status("Failed.");
  }

  /** Applied parameters (response headers), latency measured here, and the cost reported. */
  finish({ headers, totalMs, firstImageMs, usage }) {
    this.gallery.removeAttribute("aria-busy");
    this.generationId = headers?.get("X-Generation-Id") ?? "";
    const facts = [];
    for (const [label, name] of APPLIED_HEADERS) {
      const value = headers?.get(name);
      if (value !== null && value !== undefined) facts.push([label, value || "none"]);
    }
    if (totalMs !== undefined) {
      const first = firstImageMs !== undefined ? ` (first image after ${seconds(firstImageMs)})` : "";
      facts.push(["Latency", `${seconds(totalMs)}${first}`]);
    }
    if (usage) {
      facts.push(["Cost", typeof usage.cost === "number" ? `$${plainNumber(usage.cost)}` : "not reported"]);
      facts.push(["Tokens", `${usage.prompt_tokens} prompt, ${usage.completion_tokens} output`]);
    }
    this.applied.replaceChildren(...facts.flatMap(([label, value]) => [h("dt", {}, label), h("dd", {}, value)]));
    this.applied.hidden = facts.length === 0;
  }

  figure(slot) {
    if (!this.figures[slot]) {
      const figure = h(
        "figure",
        { "data-slot": slot },
        h("img", { alt: "" }),
        h(
          "figcaption",
          {},
          h("span", { class: "caption" }),
          h("button", { type: "button", class: "small", disabled: true, "aria-label": `Download image ${slot + 1}` }, "Download"),
        ),
      );
      this.figures[slot] = figure;
      this.gallery.append(figure);
    }
    return this.figures[slot];
  }

  show(figure, b64, mediaType, alt) {
    const img = figure.querySelector("img");
    img.alt = alt;
    img.src = `data:${mediaType};base64,${b64}`;
  }

  download(b64, mediaType, slot) {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const url = URL.createObjectURL(new Blob([bytes], { type: mediaType }));
    const name = `${this.generationId || "imagegate"}-${slot + 1}.${EXTENSIONS[mediaType] ?? "bin"}`;
    const link = h("a", { href: url, download: name, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  }
}
