// The console's server: JSON requests and live streams of resources.
// Every failure becomes an ApiError carrying the server's status, message
// and per-field messages, for the page to show next to what it concerns.

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.message || `the console answered ${status}`);
    this.status = status;
    this.fields = body?.fields || {};
  }
}

let unauthorized = () => {};

/** What to do when the server says the login has lapsed (go to /login). */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

/**
 * A request to /api`path`; resolves to the JSON answer. Changes carry
 * X-Console: 1, which the server demands of them (its CSRF guard).
 */
export async function request(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET') headers['X-Console'] = '1';
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(`/api${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'same-origin',
  });
  let data = {};
  try {
    data = await response.json();
  } catch {
    data = { message: `${response.status} ${response.statusText}` };
  }
  if (!response.ok) {
    if (response.status === 401 && path !== '/login') unauthorized();
    throw new ApiError(response.status, data);
  }
  return data;
}

/** How long to wait before following a stream again after it broke. */
const RETRY_MS = 2000;

/**
 * Follows resources of `kind` (clusters, plans, migrations), filtered by
 * `params` ({name} or {plan}), through the server's event stream. Calls
 * `onChange(objects)` with every object whenever the set is complete or
 * changes, and `onProblem(error)` (an ApiError, or null once it works
 * again). Returns a function that stops following.
 *
 * Read with fetch rather than EventSource so that a refusal's status
 * (401, 403) is known and shown, not just "the stream failed".
 */
export function follow(kind, params, onChange, onProblem) {
  const stop = new AbortController();
  const query = new URLSearchParams(params).toString();
  const url = `/api/watch/${kind}${query ? `?${query}` : ''}`;
  let objects = new Map();
  let ready = false;
  const key = (o) => o?.metadata?.name;
  const changed = () => onChange([...objects.values()]);
  const handlers = {
    reset: () => {
      objects = new Map();
      ready = false;
    },
    apply: (o) => {
      objects.set(key(o), o);
      if (ready) changed();
    },
    delete: (o) => {
      objects.delete(key(o));
      if (ready) changed();
    },
    ready: () => {
      ready = true;
      onProblem(null);
      changed();
    },
    problem: (p) => {
      if (p.status === 401) unauthorized();
      onProblem(new ApiError(p.status || 502, p));
    },
  };
  const run = async () => {
    while (!stop.signal.aborted) {
      try {
        const response = await fetch(url, {
          headers: { Accept: 'text/event-stream' },
          credentials: 'same-origin',
          signal: stop.signal,
        });
        if (!response.ok) {
          let body = {};
          try {
            body = await response.json();
          } catch {
            body = { message: `${response.status} ${response.statusText}` };
          }
          if (response.status === 401) unauthorized();
          onProblem(new ApiError(response.status, body));
          if (response.status === 401 || response.status === 403 || response.status === 404) return;
        } else {
          await readEvents(response.body, handlers);
        }
      } catch (e) {
        if (stop.signal.aborted) return;
        onProblem(new ApiError(0, { message: `the console stopped answering: ${e.message}` }));
      }
      await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
    }
  };
  run();
  return () => stop.abort();
}

/** Reads server-sent events from `body` until it ends, dispatching each. */
async function readEvents(body, handlers) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, '\n');
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'event') event = text;
        else if (field === 'data') data.push(text);
      }
      const handler = handlers[event];
      if (handler && data.length) handler(JSON.parse(data.join('\n')));
    }
  }
}
