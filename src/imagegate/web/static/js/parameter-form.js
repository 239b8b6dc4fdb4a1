/**
 * The playground's parameter controls, built from an endpoint's capability descriptors:
 * enum → select, range → number input within min/max, boolean → checkbox. Only listed
 * parameters appear; an untouched control sends nothing, so the endpoint's default applies.
 */

import { h, options } from "./dom.js";
import { orderedKeys } from "./describe.js";

const LABELS = {
  resolution: "Resolution",
  aspect_ratio: "Aspect ratio",
  size: "Size",
  quality: "Quality",
  output_format: "Output format",
  background: "Background",
  output_compression: "Output compression",
  n: "Images (n)",
  seed: "Seed",
};

/** What a boolean descriptor's field holds: it switches on an input of this kind. */
const VALUE_OF_BOOLEAN = {
  seed: { kind: "integer", toggle: "Fixed seed", placeholder: "42" },
  size: { kind: "text", toggle: "Explicit size", placeholder: "1024x1024 or 2K" },
};

/** References have their own picker. */
const HANDLED_ELSEWHERE = new Set(["input_references"]);

const labelOf = (key) => LABELS[key] ?? key.replaceAll("_", " ").replace(/^./, (c) => c.toUpperCase());

export function parameterControls(parameters) {
  return orderedKeys(parameters)
    .filter((key) => !HANDLED_ELSEWHERE.has(key))
    .map((key) => control(key, parameters[key]))
    .filter(Boolean);
}

function control(key, descriptor) {
  const id = `param-${key}`;
  switch (descriptor.type) {
    case "enum":
      return field(
        id,
        labelOf(key),
        h("select", { id, "data-param": key, "data-kind": "text" }, options([["", "default"], ...descriptor.values])),
      );
    case "range":
      return field(
        id,
        labelOf(key),
        h("input", {
          id,
          type: "number",
          inputmode: "numeric",
          step: 1,
          min: descriptor.min,
          max: descriptor.max,
          placeholder: descriptor.min === descriptor.max ? String(descriptor.min) : `${descriptor.min}–${descriptor.max}`,
          "data-param": key,
          "data-kind": "integer",
        }),
      );
    case "boolean":
      return booleanControl(key, id);
    default:
      return null; // a descriptor type this page does not know: the parameter is left out
  }
}

const field = (id, label, control) => h("div", { class: "field" }, h("label", { for: id }, label), control);

function booleanControl(key, id) {
  const value = VALUE_OF_BOOLEAN[key];
  if (!value) {
    return h("label", { class: "inline" }, h("input", { id, type: "checkbox", "data-param": key, "data-kind": "boolean" }), labelOf(key));
  }
  const input = h("input", {
    id,
    type: value.kind === "integer" ? "number" : "text",
    step: value.kind === "integer" ? 1 : null,
    placeholder: value.placeholder,
    disabled: true,
    "data-param": key,
    "data-kind": value.kind,
    "aria-label": labelOf(key),
  });
  const toggle = h("input", {
    type: "checkbox",
    "data-toggle": key,
    onchange: () => {
      input.disabled = !toggle.checked;
      if (toggle.checked) input.focus();
    },
  });
  return h("div", { class: "toggle-input" }, h("label", { class: "inline" }, toggle, value.toggle), input);
}

/** Request fields from the controls that hold a value. */
export function readParameters(container) {
  const fields = {};
  for (const element of container.querySelectorAll("[data-param]")) {
    if (element.disabled) continue;
    const key = element.dataset.param;
    const kind = element.dataset.kind;
    if (kind === "boolean") {
      if (element.checked) fields[key] = true;
    } else if (element.value.trim() !== "") {
      fields[key] = kind === "integer" ? Number(element.value) : element.value.trim();
    }
  }
  return fields;
}

/** Carries values over to new controls (another model) where they are still allowed. */
export function restoreParameters(container, fields) {
  for (const [key, value] of Object.entries(fields)) {
    const element = container.querySelector(`[data-param="${CSS.escape(key)}"]`);
    if (!element) continue;
    const toggle = container.querySelector(`[data-toggle="${CSS.escape(key)}"]`);
    if (toggle) {
      toggle.checked = true;
      element.disabled = false;
    }
    if (element.dataset.kind === "boolean") element.checked = value === true;
    else element.value = String(value);
    const allowed = element.tagName === "SELECT" ? element.value === String(value) : element.checkValidity();
    if (!allowed) {
      element.value = "";
      if (toggle) {
        toggle.checked = false;
        element.disabled = true;
      }
    }
  }
}
