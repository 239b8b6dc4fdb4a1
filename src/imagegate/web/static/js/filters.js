/** The models page's filters: their state in the URL query, and what each one matches. */

const enumHas = (endpoint, key, value) => {
  const descriptor = endpoint.supported_parameters[key];
  return descriptor?.type === "enum" && descriptor.values.includes(value);
};

const rangeMax = (endpoint, key) => {
  const descriptor = endpoint.supported_parameters[key];
  return descriptor?.type === "range" ? descriptor.max : 0;
};

/** Capability filters: an endpoint matches when it offers every checked one. */
export const CAPABILITIES = [
  { id: "transparent", label: "Transparent background", test: (e) => enumHas(e, "background", "transparent") },
  { id: "streams", label: "Streams partial images", test: (e) => e.supports_streaming },
  { id: "refs4", label: "Takes ≥ 4 references", test: (e) => rangeMax(e, "input_references") >= 4 },
  { id: "multi", label: "Several images per call (n > 1)", test: (e) => rangeMax(e, "n") > 1 },
  { id: "seed", label: "Fixed seed", test: (e) => "seed" in e.supported_parameters },
  { id: "compression", label: "Output compression", test: (e) => "output_compression" in e.supported_parameters },
];

/** Query keys of the single-valued filters, as the form's control names. */
export const FIELDS = ["q", "output_modalities", "input_modalities", "provider", "format"];

/** Filter state from a query string: {q, output_modalities, …, caps: [ids]}. */
export function readFilters(search) {
  const params = new URLSearchParams(search);
  const filters = Object.fromEntries(FIELDS.map((key) => [key, (params.get(key) ?? "").trim()]));
  const known = new Set(CAPABILITIES.map((c) => c.id));
  filters.caps = (params.get("cap") ?? "").split(",").filter((id) => known.has(id));
  return filters;
}

/** The query string for a filter state ("" when nothing is filtered), for history.replaceState. */
export function filtersQuery(filters) {
  const params = new URLSearchParams();
  for (const key of FIELDS) if (filters[key]) params.set(key, filters[key]);
  if (filters.caps.length) params.set("cap", filters.caps.join(","));
  const query = params.toString();
  return query ? `?${query}` : "";
}

/**
 * The GET /api/v1/models query that applies the modality and text filters, or null when none
 * is set (every model then passes).
 */
export function modelsApiParams(filters) {
  if (!filters.q && !filters.output_modalities && !filters.input_modalities) return null;
  const params = { output_modalities: filters.output_modalities || "all" };
  if (filters.input_modalities) params.input_modalities = filters.input_modalities;
  if (filters.q) params.q = filters.q;
  return params;
}

/** Whether one endpoint satisfies the provider, format and capability filters together. */
export function endpointMatches(endpoint, filters) {
  if (filters.provider && endpoint.provider_slug !== filters.provider) return false;
  if (filters.format && !enumHas(endpoint, "output_format", filters.format)) return false;
  return CAPABILITIES.every((cap) => !filters.caps.includes(cap.id) || cap.test(endpoint));
}
