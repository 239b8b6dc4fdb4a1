/**
 * The reference-image picker: files read in the browser as data URLs, or URLs the gateway
 * fetches; never more than the endpoint's `input_references` maximum.
 */

import { h } from "./dom.js";

const readAsDataUrl = (file) =>
  new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });

export class ReferencePicker {
  /** `onChange` runs after every addition or removal. */
  constructor(fieldset, onChange) {
    this.fieldset = fieldset;
    this.onChange = onChange;
    this.items = []; // {url, name}
    this.min = 0;
    this.max = 0;
    this.legend = fieldset.querySelector("legend");
    this.fileInput = h("input", { id: "reference-files", type: "file", accept: "image/*", multiple: true, onchange: () => this.addFiles() });
    this.urlInput = h("input", { id: "reference-url", type: "url", placeholder: "https://example.com/photo.jpg", autocomplete: "off" });
    this.urlInput.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault(); // Enter adds the URL instead of submitting the form
        this.addUrl();
      }
    });
    this.urlButton = h("button", { type: "button", onclick: () => this.addUrl() }, "Add URL");
    this.list = h("ul", { class: "references-list", "aria-label": "Chosen reference images" });
    this.message = h("p", { class: "hint", "aria-live": "polite" });
    fieldset.append(
      h(
        "div",
        { class: "reference-adders" },
        h("div", { class: "field" }, h("label", { for: "reference-files" }, "Upload images"), this.fileInput),
        h(
          "div",
          { class: "url-row" },
          h("div", { class: "field" }, h("label", { for: "reference-url" }, "Image URL"), this.urlInput),
          this.urlButton,
        ),
      ),
      this.message,
      this.list,
    );
  }

  /** Limits from the endpoint's descriptor; a smaller maximum drops the surplus. */
  setLimits({ min = 0, max = 0 } = {}) {
    this.min = min;
    this.max = max;
    this.fieldset.hidden = max === 0;
    this.legend.textContent = `Reference images (${min > 0 ? `${min} to ${max}, required` : `up to ${max}`})`;
    if (this.items.length > max) {
      const dropped = this.items.length - max;
      this.items = this.items.slice(0, max);
      this.render(`${dropped} reference image${dropped > 1 ? "s were" : " was"} removed: this endpoint takes ${max}.`);
    } else {
      this.render();
    }
  }

  /** `input_references` items for the request body. */
  values() {
    return this.items.map(({ url }) => ({ type: "image_url", image_url: { url } }));
  }

  /** A message when fewer than the required references are chosen, else null. */
  missing() {
    if (this.items.length >= this.min) return null;
    return `This endpoint needs at least ${this.min} reference image${this.min > 1 ? "s" : ""}.`;
  }

  async addFiles() {
    const files = [...this.fileInput.files];
    this.fileInput.value = "";
    const room = this.max - this.items.length;
    const images = files.filter((file) => file.type.startsWith("image/"));
    const taken = images.slice(0, Math.max(0, room));
    const notes = [];
    if (images.length < files.length) notes.push(`${files.length - images.length} file(s) skipped: not images.`);
    if (taken.length < images.length) notes.push(`${images.length - taken.length} not added: at most ${this.max} references.`);
    try {
      for (const file of taken) this.items.push({ url: await readAsDataUrl(file), name: file.name });
    } catch (error) {
      notes.push(`A file could not be read: ${error.message}`);
    }
    this.render(notes.join(" "));
  }

  addUrl() {
    const url = this.urlInput.value.trim();
    if (!url) return;
    if (!/^https?:\/\//i.test(url) || !this.urlInput.checkValidity()) {
      this.render("Enter an http(s) URL.");
      return;
    }
    if (this.items.length >= this.max) {
      this.render(`At most ${this.max} references.`);
      return;
    }
    this.items.push({ url, name: url });
    this.urlInput.value = "";
    this.render();
  }

  remove(index) {
    this.items.splice(index, 1);
    this.render();
    this.fileInput.focus(); // the focused button is gone
  }

  render(note = "") {
    const full = this.items.length >= this.max;
    this.fileInput.disabled = full;
    this.urlInput.disabled = full;
    this.urlButton.disabled = full;
    const count = `${this.items.length} of ${this.max} chosen${full && this.max ? " (the most this endpoint takes)" : ""}.`;
    this.message.textContent = note ? `${note} ${count}` : count;
    this.list.replaceChildren(
      ...this.items.map((item, index) =>
        h(
          "li",
          {},
          // URLs are fetched by the gateway, not the page: only uploads are previewed.
          item.url.startsWith("data:") ? h("img", { src: item.url, alt: "" }) : h("span", { class: "thumb", "aria-hidden": "true" }),
          h("span", { class: "name" }, item.name),
          h(
            "button",
            { type: "button", class: "small", "aria-label": `Remove reference ${index + 1} (${item.name})`, onclick: () => this.remove(index) },
            "Remove",
          ),
        ),
      ),
    );
    this.onChange();
  }
}
