/** One model on the models page: what it takes and makes, its endpoints and their prices. */

import { h } from "./dom.js";
import {
  describeDate,
  describeDescriptor,
  describeModalities,
  describePrice,
  orderedKeys,
  parameterLabel,
} from "./describe.js";

export function modelCard(model, endpoints) {
  const headingId = `model-${model.id.replace(/[^A-Za-z0-9_-]/g, "-")}`;
  const added = describeDate(model.created);
  return h(
    "article",
    { class: "model panel", "aria-labelledby": headingId, "data-model-id": model.id },
    h(
      "header",
      {},
      h(
        "div",
        {},
        h("h2", { id: headingId }, model.name),
        h(
          "p",
          { class: "meta" },
          h("code", {}, model.id),
          ` · by ${model.id.split("/")[0]}`,
          added && ` · added ${added}`,
        ),
      ),
      h("a", { class: "button primary", href: `/playground?${new URLSearchParams({ model: model.id })}` }, "Try in playground"),
    ),
    h("p", { class: "description" }, model.description),
    h(
      "p",
      { class: "modalities" },
      h("span", {}, "Input:"),
      describeModalities(model.architecture.input_modalities),
      h("span", {}, "Output:"),
      describeModalities(model.architecture.output_modalities),
    ),
    h(
      "section",
      { class: "endpoints", "aria-label": `Endpoints of ${model.name}` },
      endpoints.map((endpoint) => endpointSection(endpoint)),
    ),
  );
}

/**
 * An endpoint record; `configured: false` with `requires` names the settings that enable it,
 * and `retired` the day its provider stopped serving it.
 */
function endpointSection(endpoint) {
  const unconfigured = endpoint.configured === false || Boolean(endpoint.retired);
  const parameters = endpoint.supported_parameters;
  const passthrough = endpoint.allowed_passthrough_parameters;
  return h(
    "section",
    { class: `endpoint${unconfigured ? " unconfigured" : ""}`, "data-provider": endpoint.provider_slug },
    h(
      "header",
      {},
      h("h3", {}, endpoint.provider_name, " ", h("code", {}, endpoint.provider_slug)),
      h(
        "ul",
        { class: "chips", "aria-label": "Endpoint traits" },
        endpoint.supports_streaming ? h("li", { class: "ok" }, "streams") : h("li", {}, "no streaming"),
        endpoint.provider_tag ? h("li", {}, `routing tag: ${endpoint.provider_tag}`) : h("li", {}, "no provider routing"),
      ),
    ),
    unconfigured && h("p", { class: "notice warn" }, notConfigured(endpoint)),
    h(
      "dl",
      { class: "facts" },
      orderedKeys(parameters).map((key) => [
        h("dt", {}, parameterLabel(key)),
        h("dd", {}, describeDescriptor(key, parameters[key])),
      ]),
      h("dt", {}, "Passthrough options"),
      h(
        "dd",
        {},
        passthrough.length
          ? [passthrough.join(", "), " under ", h("code", {}, `provider.options["${endpoint.provider_slug}"]`)]
          : "none",
      ),
      h("dt", {}, "Pricing"),
      h(
        "dd",
        {},
        endpoint.pricing.length
          ? h("ul", { class: "pricing" }, endpoint.pricing.map((line) => h("li", {}, describePrice(line))))
          : "no price listed",
      ),
    ),
  );
}

function notConfigured(endpoint) {
  if (endpoint.retired) return `retired since ${endpoint.retired} — its provider no longer serves it`;
  const settings = endpoint.requires ?? [];
  return settings.length ? `not configured — set ${settings.join(", ")}` : "not configured";
}
