// Talks to hush's own read API, like any other client: POST /api/v2/query, the
// site's goals, its property keys and the list of readable sites. Every call sends the page's CSRF
// token (from <meta name="hush-csrf">, filled in by the server) and same-origin
// credentials, so a signed-in analyst's session counts as access.

const meta = document.querySelector('meta[name="hush-csrf"]');
const csrf = meta ? meta.content : '';

/** An answer that is not a 2xx, with the server's message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** A call to hush's read API (also for hush's own endpoints, panels-extra.js). */
export async function call(path, init = {}) {
  const headers = { 'X-Hush-CSRF': csrf, Accept: 'application/json', ...(init.headers || {}) };
  let resp;
  try {
    resp = await fetch(path, { ...init, headers, credentials: 'same-origin', cache: 'no-store' });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'hush cannot be reached (network error)');
  }
  let body = null;
  try {
    body = await resp.json();
  } catch {
    body = null;
  }
  if (!resp.ok) {
    const message = (body && body.error) || `${resp.status} ${resp.statusText}`;
    throw new ApiError(resp.status, message);
  }
  return body;
}

/** One Stats API v2 query; `signal` aborts it. */
export function query(body, signal) {
  return call('/api/v2/query', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
    signal,
  });
}

/** The site's configured goals. */
export function goals(site, signal) {
  return call(`/api/v2/sites/${encodeURIComponent(site)}/goals`, { signal });
}

/** The custom property keys of the site's events in `date_range` (hush's own endpoint). */
export function props(site, date_range, signal) {
  return call(`/api/hush/sites/${encodeURIComponent(site)}/props`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ date_range }),
    signal,
  });
}

/** The sites this reader may open. */
export function sites(signal) {
  return call('/api/hush/sites', { signal });
}
