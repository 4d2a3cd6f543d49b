// The HTTP half of the contract (docs/protocol.md, section 1).

/** An error answer: its HTTP status and the contract's code and message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function call(method, path, options = {}) {
  return (await exchange(method, path, options)).data;
}

/** A request and its answer: `{data, res}`, the JSON and the response. */
async function exchange(method, path, { token, body, cookie = false } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  // Cookie mode: the refresh token travels only in an HttpOnly cookie that
  // no script here can read. The server requires the header to use the
  // cookie, which a form on another site cannot send.
  if (cookie) headers['X-Confab-Refresh'] = 'cookie';
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'same-origin',
    });
  } catch {
    throw new ApiError(0, 'unavailable', 'The server cannot be reached.');
  }
  const data = await res.json().catch(() => null);
  if (!res.ok) {
    const error = data && data.error ? data.error : {};
    throw new ApiError(res.status, error.code || 'internal', error.message || res.statusText);
  }
  return { data, res };
}

// Register, login and refresh answer `{user, token, expiresAt, sessionId,
// refreshExpiresAt}`, the refresh token set as a cookie (`refreshToken` is
// null). Without a `deviceName` the server names the device after the
// browser ("Chrome on Linux").

/** Creates an account and signs this device in. */
export function register(username, password) {
  return call('POST', '/api/v1/register', { body: { username, password }, cookie: true });
}

/** Signs this device in. */
export function login(username, password) {
  return call('POST', '/api/v1/login', { body: { username, password }, cookie: true });
}

/**
 * A fresh access token for this device, from the refresh cookie (which it
 * rotates): a 401 when there is no device session (never signed in, logged
 * out, ended elsewhere), a 409 when another tab has just rotated it.
 */
export function refresh() {
  return call('POST', '/api/v1/token/refresh', { cookie: true });
}

/** The user's live devices: `[{id, name, createdAt, lastUsedAt, lastAddress, current}]`, most recently used first. */
export async function sessions(token) {
  const data = await call('GET', '/api/v1/sessions', { token });
  return data.sessions;
}

/**
 * Logs out another device (its connections close with 4003); a 404 when it
 * is already gone. Not in cookie mode, which would clear this device's cookie.
 */
export function endSession(token, id) {
  return call('DELETE', `/api/v1/sessions/${encodeURIComponent(id)}`, { token });
}

// Cookie mode on the two logouts: the answer clears the refresh cookie.

/** Logs this device out and clears its refresh cookie. */
export function logout(token) {
  return call('POST', '/api/v1/logout', { token, cookie: true });
}

/** Logs out every device of the user, this one included. */
export function logoutAll(token) {
  return call('POST', '/api/v1/logout-all', { token, cookie: true });
}

/** Changes the password and logs out every other device: a 403 for a wrong current password, a 400 for a bad new one. */
export function changePassword(token, currentPassword, newPassword) {
  return call('POST', '/api/v1/password', { token, body: { currentPassword, newPassword } });
}

/** The token's user: `{user}`; a 401 when the token is no longer good. */
export function me(token) {
  return call('GET', '/api/v1/me', { token });
}

/**
 * Signed links to a file the user may read: `{file, url, thumbnailUrl,
 * expiresAt}` (`thumbnailUrl` null when there is none), with `lifetimeMs`,
 * how long they stay good by the server's own clock (its `Date` header),
 * so a machine whose clock is off does not keep them too long.
 */
export async function fileLink(token, id) {
  const path = `/api/v1/files/${encodeURIComponent(id)}?redirect=false`;
  const { data, res } = await exchange('GET', path, { token });
  const serverNow = Date.parse(res.headers.get('Date') || '') || Date.now();
  data.lifetimeMs = Math.max(0, Date.parse(data.expiresAt) - serverNow);
  return data;
}

/** Users whose name starts with `prefix`: `[{id, username, online}]`. */
export async function findUsers(token, prefix, limit = 10) {
  const query = new URLSearchParams({ prefix, limit: String(limit) });
  const data = await call('GET', `/api/v1/users?${query}`, { token });
  return data.users;
}
