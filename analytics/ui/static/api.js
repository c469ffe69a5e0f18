// REST client: the token lives in sessionStorage and goes out only as a bearer header.
const KEY = "meshlens.token";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export const token = {
  get: () => sessionStorage.getItem(KEY),
  set: (value) => sessionStorage.setItem(KEY, value),
  clear: () => sessionStorage.removeItem(KEY),
};

function describe(body, status) {
  if (body && typeof body === "object") {
    if (body.message) return body.problems ? `${body.message}: ${body.problems.join("; ")}` : body.message;
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail)) return body.detail.map((d) => d.msg).join("; ");
  }
  return `HTTP ${status}`;
}

export async function api(path, { method = "GET", body, query } = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v === undefined || v === null || v === "") continue;
    for (const item of Array.isArray(v) ? v : [v]) url.searchParams.append(k, item);
  }
  const headers = { accept: "application/json" };
  const current = token.get();
  if (current) headers.authorization = `Bearer ${current}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), 20000);
  let resp;
  try {
    resp = await fetch(url, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      signal: controller.signal, credentials: "omit", cache: "no-store",
    });
  } catch (err) {
    throw new ApiError(0, err.name === "AbortError" ? "request timed out" : "network error");
  } finally {
    clearTimeout(timer);
  }
  const text = resp.status === 204 ? "" : await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!resp.ok) {
    if (resp.status === 401) window.dispatchEvent(new CustomEvent("meshlens:unauthorized"));
    throw new ApiError(resp.status, describe(data, resp.status));
  }
  return data;
}
