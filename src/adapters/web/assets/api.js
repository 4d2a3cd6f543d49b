// The HTTP half of the contract (docs/protocol.md, section 1).

/** An error answer: its HTTP status and the contract's code and message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function call(method, path, { token, body } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch {
    throw new ApiError(0, 'unavailable', 'The server cannot be reached.');
  }
  const data = await res.json().catch(() => null);
  if (!res.ok) {
    const error = data && data.error ? data.error : {};
    throw new ApiError(res.status, error.code || 'internal', error.message || res.statusText);
  }
  return data;
}

/** Creates an account: `{user, token, expiresAt}`. */
export function register(username, password) {
  return call('POST', '/api/v1/register', { body: { username, password } });
}

/** Logs in: `{user, token, expiresAt}`. */
export function login(username, password) {
  return call('POST', '/api/v1/login', { body: { username, password } });
}

/** The token's user: `{user}`; a 401 when the token is no longer good. */
export function me(token) {
  return call('GET', '/api/v1/me', { token });
}

/** Users whose name starts with `prefix`: `[{id, username, online}]`. */
export async function findUsers(token, prefix, limit = 10) {
  const query = new URLSearchParams({ prefix, limit: String(limit) });
  const data = await call('GET', `/api/v1/users?${query}`, { token });
  return data.users;
}
