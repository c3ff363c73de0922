// The portal's only way to the server: the public rowhook API, with this tab's token as a Bearer header.

const TOKEN_KEY = "rowhook.portal.token";

// sessionStorage: the token lives as long as this tab, and no other tab or later visit sees it.
export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

// A magic link `/portal#token=...`: the fragment never reaches a server; it leaves the address bar
// (and the history entry) at once, so it is not bookmarked, shared or shown over a shoulder.
export function takeTokenFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const value = params.get("token");
  if (value) token.set(value.trim());
  if (params.has("token")) history.replaceState(null, "", location.pathname + location.search);
}

// An API refusal: `detail` is the problem's detail, `errors` its [{field, reason}] list.
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || `the API answered ${status}`);
    this.status = status;
    this.errors = Array.isArray(problem.errors) ? problem.errors : [];
  }
}

export async function api(method, path, body) {
  const headers = { authorization: `Bearer ${token.get()}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch {
    throw new ApiError(0, { detail: "the API cannot be reached; check the connection and retry" });
  }
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    throw new ApiError(response.status, data && typeof data === "object" ? data : {});
  }
  return data;
}

export const path = (template, ...ids) =>
  template.replace(/\{\}/g, () => encodeURIComponent(ids.shift()));

// How many deliveries of a subscription are in a status: "100+" past one page (no count in the API).
export async function countDeliveries(subscriptionId, statuses, limit = 100) {
  let total = 0;
  let more = false;
  for (const status of statuses) {
    const page = await api("GET", `${path("/subscriptions/{}/deliveries", subscriptionId)}?status=${status}&limit=${limit}`);
    total += page.items.length;
    more = more || page.next_cursor !== null;
  }
  return more ? `${total}+` : String(total);
}
