// This device's tokens. The access token is kept in memory only, so it
// goes with the tab; the refresh token never reaches a script at all (an
// HttpOnly cookie, see api.js), so an injected script cannot carry it off.
// The access token is renewed before it expires, and again when the
// machine wakes from sleep, when no timer ran while it was due.

import * as api from './api.js';

// Renew once this share of the token's lifetime has passed, and never
// sooner than this after the last renewal (however short the lifetime).
const RENEW_AT = 0.8;
const MIN_RENEW_MS = 1000;
// A 409 means another tab of this browser rotated the refresh token a
// moment ago; by now the cookie holds the newest one.
const CONFLICT_RETRY_MS = 1000;
// After a renewal that got no answer (server down, busy), try again this soon.
const RETRY_MS = 15000;
// The watchdog ticks this often. A tick this much later than due means the
// machine slept (a hidden tab's timers may be held back a minute, so less
// proves nothing).
const TICK_MS = 10000;
const SLEPT_MS = 130000;

/**
 * One refresh from the cookie, tried once more after a 409 (another tab
 * of this browser rotated it just then): `{user, token, expiresAt, ...}`,
 * or an ApiError (401: no live device session).
 */
export async function refresh() {
  try {
    return await api.refresh();
  } catch (e) {
    if (e.status !== 409) throw e;
    await new Promise((resolve) => setTimeout(resolve, CONFLICT_RETRY_MS));
    return api.refresh();
  }
}

/** The signed-in device's access token, renewed in time. */
export class Tokens {
  /**
   * `signed`: the answer of register, login or refresh. Hooks:
   * `renewed(token)` after each renewal, `ended()` once the device session
   * is over (a refresh answered 401): the caller signs out.
   */
  constructor(signed, hooks) {
    this.hooks = hooks;
    this.user = signed.user;
    this.device = signed.sessionId;
    this.renewing = null;
    this.timer = null;
    this.over = false;
    this.accept(signed);
    this.lastTick = Date.now();
    this.watchdog = setInterval(() => this.check(), TICK_MS);
    this.onVisible = () => {
      if (document.visibilityState === 'visible') this.check();
    };
    document.addEventListener('visibilitychange', this.onVisible);
  }

  /** The current access token. */
  get token() {
    return this.value;
  }

  /** Stops renewing (the device is signing out). */
  stop() {
    this.over = true;
    clearTimeout(this.timer);
    clearInterval(this.watchdog);
    document.removeEventListener('visibilitychange', this.onVisible);
  }

  /**
   * Renews the access token, one renewal at a time: resolves with the new
   * token, or null once the device session is over; rejects when the
   * server did not answer (it is tried again later).
   */
  renew() {
    if (!this.renewing) {
      this.renewing = this.refresh().finally(() => {
        this.renewing = null;
      });
    }
    return this.renewing;
  }

  /** Runs `fn(token)`, an HTTP call; after a 401, once more with a renewed token. */
  async authed(fn) {
    try {
      return await fn(this.value);
    } catch (e) {
      if (e.status !== 401) throw e;
      const token = await this.renew().catch(() => null);
      if (!token) throw e;
      return fn(token);
    }
  }

  accept(signed) {
    this.value = signed.token;
    this.schedule(Date.now() + Math.max(MIN_RENEW_MS, lifetimeMs(signed) * RENEW_AT));
  }

  schedule(at) {
    this.renewAt = at;
    clearTimeout(this.timer);
    // setTimeout cannot wait longer than about 24.8 days.
    const wait = Math.min(Math.max(0, at - Date.now()), 2 ** 31 - 1);
    this.timer = setTimeout(() => this.check(), wait);
  }

  check() {
    const now = Date.now();
    const slept = now - this.lastTick > TICK_MS + SLEPT_MS;
    this.lastTick = now;
    if (this.over) return;
    // After a sleep the token may have expired with no timer run, and the
    // session may have been ended meanwhile: the refresh finds out either way.
    if (slept || now >= this.renewAt) this.renew().catch(() => {});
  }

  async refresh() {
    if (this.over) return null;
    let signed;
    try {
      signed = await refresh();
    } catch (e) {
      if (e.status === 401) {
        this.end();
        return null;
      }
      this.schedule(Date.now() + RETRY_MS);
      throw e;
    }
    if (this.over) return null;
    // The cookie is the browser's, shared by its tabs: after a logout and a
    // login in another tab it may belong to another user or device, whose
    // token this tab must not use.
    if (signed.user.id !== this.user.id || (this.device && signed.sessionId !== this.device)) {
      this.end();
      return null;
    }
    this.accept(signed);
    this.hooks.renewed(signed.token);
    return signed.token;
  }

  end() {
    if (this.over) return;
    this.stop();
    this.hooks.ended();
  }
}

/**
 * How long a token has left to live, at least, from its `iat` and `exp`
 * claims (docs/protocol.md, "Tokens"): both by the server's clock, so the
 * answer holds however far off this machine's clock is. They are whole
 * seconds, so up to a second of it may be gone already. `expiresAt`
 * against the local clock otherwise.
 */
function lifetimeMs({ token, expiresAt }) {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(payload));
    if (claims.exp > claims.iat) return (claims.exp - claims.iat - 1) * 1000;
  } catch {
    // Not a JWT we can read: fall through.
  }
  return Math.max(0, Date.parse(expiresAt) - Date.now());
}
