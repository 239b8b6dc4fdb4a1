/** The models page: every model from the discovery API, filtered by a form mirrored in the URL. */

import { listEndpoints, listImageModels, searchModelIds } from "./api.js";
import { debounce, h, options } from "./dom.js";
import { CAPABILITIES, FIELDS, endpointMatches, filtersQuery, modelsApiParams, readFilters } from "./filters.js";
import { modelCard } from "./model-card.js";

const form = document.getElementById("filters");
const list = document.getElementById("models");
const summary = document.getElementById("summary");

/** [{model, endpoints, card}] in catalog order. */
let entries = [];
/** Bumped per filter run, so a slow search answer never overwrites a newer one. */
let run = 0;

async function start() {
  try {
    const models = await listImageModels();
    const endpoints = await Promise.all(models.map((model) => listEndpoints(model)));
    entries = models.map((model, i) => ({ model, endpoints: endpoints[i], card: modelCard(model, endpoints[i]) }));
  } catch (error) {
    summary.replaceChildren(h("span", { class: "notice error", role: "alert" }, `Could not load the models: ${error.message}`));
    return;
  }
  list.replaceChildren(...entries.map((entry) => entry.card));
  const filters = readFilters(location.search);
  fillChoices(filters);
  showFilters(filters);
  form.addEventListener("submit", (event) => event.preventDefault());
  form.addEventListener("change", () => update());
  form.elements.q.addEventListener("input", debounce(() => update(), 250));
  // The reset event fires before the controls are cleared.
  form.addEventListener("reset", () => setTimeout(() => update(), 0));
  await apply(filters);
}

/** Options of the selects from what the catalog holds (plus a value the URL asks for). */
function fillChoices(filters) {
  const unique = (values) => [...new Set(values)].sort();
  const inputs = unique(entries.flatMap((e) => e.model.architecture.input_modalities));
  const outputs = unique(entries.flatMap((e) => e.model.architecture.output_modalities));
  const providers = new Map(entries.flatMap((e) => e.endpoints.map((p) => [p.provider_slug, p.provider_name])));
  const formats = unique(
    entries.flatMap((e) => e.endpoints.flatMap((p) => p.supported_parameters.output_format?.values ?? [])),
  );
  const choices = {
    output_modalities: outputs,
    input_modalities: inputs,
    provider: [...providers].sort((a, b) => a[1].localeCompare(b[1])),
    format: formats,
  };
  for (const [name, values] of Object.entries(choices)) {
    const wanted = filters[name];
    const known = values.some((v) => (Array.isArray(v) ? v[0] : v) === wanted);
    form.elements[name].append(...options(wanted && !known ? [...values, wanted] : values));
  }
  document.getElementById("capabilities").replaceChildren(
    ...CAPABILITIES.map((cap) =>
      h("label", { class: "inline" }, h("input", { type: "checkbox", name: "cap", value: cap.id }), cap.label),
    ),
  );
}

function showFilters(filters) {
  for (const key of FIELDS) form.elements[key].value = filters[key];
  for (const box of form.querySelectorAll('input[name="cap"]')) box.checked = filters.caps.includes(box.value);
}

function formFilters() {
  const filters = Object.fromEntries(FIELDS.map((key) => [key, form.elements[key].value.trim()]));
  filters.caps = [...form.querySelectorAll('input[name="cap"]:checked')].map((box) => box.value);
  return filters;
}

async function update() {
  const filters = formFilters();
  history.replaceState(null, "", `${location.pathname}${filtersQuery(filters)}`);
  await apply(filters);
}

async function apply(filters) {
  const current = ++run;
  list.setAttribute("aria-busy", "true");
  let ids = null;
  const params = modelsApiParams(filters);
  if (params) {
    try {
      ids = await searchModelIds(params);
    } catch (error) {
      if (current !== run) return;
      summary.textContent = `The search failed: ${error.message}`;
      list.removeAttribute("aria-busy");
      return;
    }
  }
  if (current !== run) return;
  let shown = 0;
  for (const { model, endpoints, card } of entries) {
    const visible = (!ids || ids.has(model.id)) && endpoints.some((endpoint) => endpointMatches(endpoint, filters));
    card.hidden = !visible;
    shown += visible;
  }
  const total = `${entries.length} model${entries.length === 1 ? "" : "s"}`;
  summary.textContent =
    shown === entries.length
      ? total
      : shown
        ? `${shown} of ${total} match${shown === 1 ? "es" : ""}`
        : `No model matches these filters (${total} in the catalog).`;
  list.removeAttribute("aria-busy");
}

start();
