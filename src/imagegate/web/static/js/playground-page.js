/**
 * The playground: choose a model and endpoint, fill a form built from the endpoint's
 * descriptors, and generate with a key kept in this browser.
 */

import { listEndpoints, listImageModels } from "./api.js";
import { describePrice } from "./describe.js";
import { h, options } from "./dom.js";
import { generate } from "./generation.js";
import { parameterControls, readParameters, restoreParameters } from "./parameter-form.js";
import { ReferencePicker } from "./references.js";
import { ResultView } from "./results.js";

const KEY_STORAGE = "imagegate.apiKey";
const AUTOMATIC = ""; // endpoint select value: let the gateway route

const $ = (id) => document.getElementById(id);
const form = $("generate");
const keyInput = $("api-key");
const modelSelect = $("model");
const endpointSelect = $("endpoint");
const parameterFields = $("parameter-fields");
const passthrough = $("passthrough");
const streamToggle = $("stream-toggle");
const streamBox = $("stream");
const preview = $("request-preview");
const submit = $("submit");
const cancel = $("cancel");

const view = new ResultView({
  status: $("status"),
  error: $("error"),
  gallery: $("gallery"),
  textChunks: $("text-chunks"),
  applied: $("applied"),
});
const references = new ReferencePicker($("references"), () => showRequest());

let models = [];
const endpointsOf = new Map(); // model id → endpoint records
let model = null;
let endpoints = [];
let endpoint = null; // null: automatic routing among `endpoints`
let running = null; // AbortController of the generation in flight

async function start() {
  keyInput.value = storedKey();
  keyInput.addEventListener("input", () => storeKey(keyInput.value.trim()));
  $("forget-key").addEventListener("click", () => {
    keyInput.value = "";
    storeKey("");
    keyInput.focus();
  });
  try {
    models = await listImageModels();
  } catch (error) {
    view.fail(`Could not load the models: ${error.message}`, error.status);
    return;
  }
  if (!models.length) {
    view.fail("This gateway serves no image model.");
    return;
  }
  const params = new URLSearchParams(location.search);
  const wanted = models.some((m) => m.id === params.get("model")) ? params.get("model") : models[0].id;
  modelSelect.append(...options(models.map((m) => [m.id, `${m.name} (${m.id})`]), wanted));
  modelSelect.addEventListener("change", () => chooseModel(modelSelect.value));
  endpointSelect.addEventListener("change", () => chooseEndpoint(endpointSelect.value));
  form.addEventListener("input", () => showRequest());
  form.addEventListener("change", () => showRequest());
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run();
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });
  cancel.addEventListener("click", () => running?.abort());
  await chooseModel(wanted, params.get("endpoint") ?? AUTOMATIC);
}

function storedKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) ?? "";
  } catch {
    return ""; // storage disabled: the key lives in the field only
  }
}

function storeKey(key) {
  try {
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
  } catch {
    // storage disabled: nothing to keep
  }
}

async function chooseModel(id, wantedEndpoint = AUTOMATIC) {
  model = models.find((m) => m.id === id);
  if (!endpointsOf.has(id)) {
    try {
      endpointsOf.set(id, await listEndpoints(model));
    } catch (error) {
      view.fail(`Could not load the endpoints of ${id}: ${error.message}`, error.status);
      return;
    }
  }
  if (model.id !== id) return; // another model was chosen meanwhile
  endpoints = endpointsOf.get(id);
  const usable = endpoints.filter(serves);
  const choices = endpoints.map((e) => [
    e.provider_slug,
    e.retired ? `${e.provider_name} — retired since ${e.retired}` : e.configured === false ? `${e.provider_name} — not configured` : e.provider_name,
  ]);
  const automatic = usable.length > 1 ? [[AUTOMATIC, "Automatic (the gateway routes)"]] : [];
  const selected = usable.some((e) => e.provider_slug === wantedEndpoint)
    ? wantedEndpoint
    : automatic.length ? AUTOMATIC : usable[0]?.provider_slug;
  endpointSelect.replaceChildren(...options([...automatic, ...choices], selected));
  for (const option of endpointSelect.options) {
    option.disabled = endpoints.some((e) => e.provider_slug === option.value && !serves(e));
  }
  chooseEndpoint(selected ?? AUTOMATIC);
}

/** Whether this gateway serves the endpoint: its provider is configured and it is not retired. */
function serves(e) {
  return e.configured !== false && !e.retired;
}

function chooseEndpoint(slug) {
  endpoint = endpoints.find((e) => e.provider_slug === slug) ?? null;
  const usable = endpoints.filter(serves);
  if (!endpoint && usable.length === 1) endpoint = usable[0];
  const parameters = endpoint?.supported_parameters ?? model.supported_parameters;
  const streams = endpoint ? endpoint.supports_streaming : usable.some((e) => e.supports_streaming);

  const previous = readParameters(parameterFields);
  parameterFields.replaceChildren(...parameterControls(parameters));
  restoreParameters(parameterFields, previous);
  $("no-parameters").hidden = parameterFields.children.length > 0;
  const refs = parameters.input_references;
  references.setLimits(refs?.type === "range" ? { min: refs.min, max: refs.max } : { min: 0, max: 0 });
  streamToggle.hidden = !streams;
  showEndpointFacts(usable);
  showPassthrough(endpoint ? [endpoint] : usable);
  $("routing-tags").textContent = `This model's: ${endpoints.map((e) => e.provider_tag ?? e.provider_slug).join(", ")}.`;
  submit.disabled = usable.length === 0;

  const query = new URLSearchParams({ model: model.id });
  if (endpoint && usable.length > 1) query.set("endpoint", endpoint.provider_slug);
  history.replaceState(null, "", `${location.pathname}?${query}`);
  showRequest();
}

function showEndpointFacts(usable) {
  const facts = $("endpoint-facts");
  if (!usable.length) {
    facts.replaceChildren(h("p", { class: "notice warn" }, "No endpoint of this model is configured on this gateway, or every one is retired."));
    return;
  }
  if (!endpoint) {
    facts.replaceChildren(h("p", { class: "hint" }, `${usable.length} endpoints; parameters any of them takes are offered.`));
    return;
  }
  facts.replaceChildren(
    h("p", { class: "hint" }, [
      endpoint.supports_streaming ? "Streams partial images. " : "Does not stream. ",
      "Pricing: ",
      endpoint.pricing.map(describePrice).join("; ") || "none listed",
      ".",
    ]),
  );
}

/** One text input per passthrough key, grouped under the provider slug they are sent for. */
function showPassthrough(records) {
  const kept = new Map([...passthrough.querySelectorAll("input")].map((i) => [i.name, i.value]));
  passthrough.replaceChildren(
    ...records
      .filter((e) => e.allowed_passthrough_parameters.length)
      .map((e) =>
        h(
          "fieldset",
          { "data-provider": e.provider_slug },
          h("legend", {}, `Options for ${e.provider_slug}`),
          h("p", { class: "hint" }, "Sent as provider.options; a value that parses as JSON (1500, true, {…}) is sent as such."),
          h(
            "div",
            { class: "field-grid" },
            e.allowed_passthrough_parameters.map((key) => {
              const name = `${e.provider_slug}:${key}`;
              const id = `option-${e.provider_slug}-${key}`.replace(/[^\w-]/g, "-");
              return h(
                "div",
                { class: "field" },
                h("label", { for: id }, key),
                h("input", { id, name, value: kept.get(name) ?? "", autocomplete: "off", "data-option": key }),
              );
            }),
          ),
        ),
      ),
  );
}

function listField(name) {
  return form.elements[name].value.split(",").map((s) => s.trim()).filter(Boolean);
}

function optionValue(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** The `provider` object from the routing fields, or null when none is set. */
function providerPreferences() {
  const provider = {};
  for (const name of ["order", "only", "ignore"]) {
    const list = listField(name);
    if (list.length) provider[name] = list;
  }
  const usable = endpoints.filter(serves);
  // A chosen endpoint among several is pinned unless the user routes explicitly.
  if (endpoint && usable.length > 1 && !provider.only && !provider.order && endpoint.provider_tag) {
    provider.only = [endpoint.provider_tag];
  }
  const fallbacks = form.elements.allow_fallbacks.value;
  if (fallbacks) provider.allow_fallbacks = fallbacks === "true";
  if (form.elements.sort.value) provider.sort = form.elements.sort.value;
  const providerOptions = {};
  for (const group of passthrough.querySelectorAll("fieldset")) {
    for (const input of group.querySelectorAll("input")) {
      if (!input.value.trim()) continue;
      (providerOptions[group.dataset.provider] ??= {})[input.dataset.option] = optionValue(input.value.trim());
    }
  }
  if (Object.keys(providerOptions).length) provider.options = providerOptions;
  return Object.keys(provider).length ? provider : null;
}

function requestBody() {
  const body = { model: model.id, prompt: $("prompt").value, ...readParameters(parameterFields) };
  const refs = references.values();
  if (refs.length) body.input_references = refs;
  if (!streamToggle.hidden && streamBox.checked) body.stream = true;
  const provider = providerPreferences();
  if (provider) body.provider = provider;
  return body;
}

/** The body about to be sent, with uploaded images shortened. */
function showRequest() {
  if (!model) return;
  const shorten = (key, value) =>
    typeof value === "string" && value.startsWith("data:") && value.length > 64
      ? `${value.slice(0, 40)}… (${value.length} characters)`
      : value;
  preview.textContent = JSON.stringify(requestBody(), shorten, 2);
}

async function run() {
  const missing = references.missing();
  if (missing) {
    view.start("");
    view.fail(missing);
    return;
  }
  running = new AbortController();
  submit.disabled = true;
  cancel.hidden = false;
  view.start("Generating…");
  // One column (a phone): bring the result into view instead of leaving it below the form.
  const result = $("result");
  if (result.getBoundingClientRect().top > window.innerHeight) result.scrollIntoView({ block: "start" });
  try {
    await generate({ body: requestBody(), apiKey: keyInput.value.trim(), signal: running.signal, view });
  } finally {
    running = null;
    submit.disabled = false;
    cancel.hidden = true;
  }
}

start();
