/** The gateway's HTTP API as the pages use it: same origin, JSON, OpenRouter's error envelope. */

export class ApiError extends Error {
  constructor(status, message, metadata = null) {
    super(message);
    this.status = status;
    this.metadata = metadata;
  }
}

/** The readable error of a failed response: the envelope's error.message, else the status line. */
export async function errorFrom(response) {
  let message = `HTTP ${response.status} ${response.statusText}`.trim();
  let metadata = null;
  try {
    const body = await response.json();
    if (typeof body?.error?.message === "string" && body.error.message) {
      message = body.error.message;
      metadata = body.error.metadata ?? null;
    }
  } catch {
    // Not JSON (a proxy's page, say): the status line is all there is to show.
  }
  return new ApiError(response.status, message, metadata);
}

async function getJson(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  if (!response.ok) throw await errorFrom(response);
  return response.json();
}

// The pages also show endpoints whose provider is not configured (marked `configured: false`),
// so an operator sees what setting would enable them; the API lists them only on request.
const ALL = "include_unconfigured=true";

/** GET /api/v1/images/models: every image model with its parameter superset. */
export async function listImageModels() {
  return (await getJson(`/api/v1/images/models?${ALL}`)).data;
}

/** A model's endpoint records, from the URL its list item names. */
export async function listEndpoints(model) {
  return (await getJson(`${model.endpoints}?${ALL}`)).endpoints;
}

/** Ids of the models GET /api/v1/models returns for these query parameters. */
export async function searchModelIds(params) {
  const body = await getJson(`/api/v1/models?${new URLSearchParams(params)}&${ALL}`);
  return new Set(body.data.map((model) => model.id));
}
