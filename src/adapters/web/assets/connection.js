// The WebSocket half of the contract: one connection at a time, requests
// matched to their replies by id, and reconnection with backoff when the
// connection drops. What was missed while away is fetched by the caller
// (see `onOpen`), because only it knows what it has already shown.

const CLOSE_TOKEN_EXPIRED = 4001;
// The device session was ended (logged out here or elsewhere, the password
// changed on another device): a refresh would be refused too.
const CLOSE_SESSION_REVOKED = 4003;
// A request unanswered this long means the connection is dead even if the
// browser has not noticed (a laptop lid, a lost Wi-Fi, a proxy that stopped
// forwarding). So does a welcome that does not come this long after opening.
const REPLY_TIMEOUT_MS = 15000;
// The client's own ping, so that a dead connection is found while idle: every
// 25 s, and a reply within 15 s, at the server's default heartbeat of 30 s.
// A server with a shorter heartbeat (its welcome says) gets them sooner in
// proportion: 5/6 and 1/2 of it. A connection that dies silently is thus
// dropped at most 40 s later at the default.
const KEEPALIVE_MS = 25000;
const HEARTBEAT_DEFAULT_S = 30;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 15000;

/** A failed request: the contract's error code and message. */
export class RequestError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

/**
 * A self-healing connection to `/ws`.
 *
 * Callbacks: `onOpen(welcome, isReconnect)`, `onEvent(type, content)`,
 * `onState('connecting' | 'open' | 'reconnecting')`, `onRevoked()` when
 * the device was logged out (close code 4003; the connection stops),
 * `checkToken()` returning false when the token is not accepted (asked
 * when a connection fails, since a browser is not told why), and
 * `renewToken()` when it is not or has expired (close code 4001):
 * resolving with a new token, or with null when the device session is
 * over (the connection stops; the caller signs out), rejecting when the
 * server could not be asked.
 */
export class Connection {
  constructor(token, callbacks) {
    this.token = token;
    // The token the current socket was opened with.
    this.openedWith = null;
    this.callbacks = callbacks;
    this.socket = null;
    // The current socket has had its welcome: requests may go.
    this.welcomed = false;
    this.pending = new Map();
    this.nextId = 0;
    this.attempt = 0;
    this.everOpened = false;
    this.stopped = false;
    this.retryTimer = null;
    this.keepalive = null;
    // Ends the listening to the current socket's events.
    this.detach = null;
    this.welcomeTimer = null;
  }

  /** Opens the connection (and keeps it open until `stop`). */
  start() {
    this.callbacks.onState('connecting');
    this.open();
  }

  /** Closes for good: no more reconnecting. */
  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.keepalive);
    clearTimeout(this.welcomeTimer);
    if (this.socket) this.socket.close(1000);
    this.failPending('disconnected', 'Not connected.');
  }

  /**
   * Takes a renewed token: kept for reconnecting, and handed to the open
   * connection with `reauth`, which extends its life. (A refused reauth
   * leaves the connection open until its current expiry, close code 4001,
   * after which it comes back with a renewed token.)
   */
  setToken(token) {
    this.token = token;
    if (this.isOpen) {
      this.openedWith = token;
      this.request('reauth', { token }).catch(() => {});
    }
  }

  /** Whether requests can be sent now. */
  get isOpen() {
    return this.socket !== null && this.socket.readyState === WebSocket.OPEN && this.welcomed;
  }

  /**
   * Sends a request; resolves with the ack's content, rejects with a
   * RequestError. Without a reply within `timeoutMs` the connection is
   * taken for dead.
   */
  request(type, content = {}, timeoutMs = REPLY_TIMEOUT_MS) {
    if (!this.isOpen) {
      return Promise.reject(new RequestError('disconnected', 'Not connected.'));
    }
    this.nextId += 1;
    const id = `c${this.nextId}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.pending.has(id)) this.drop('no reply');
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this.socket.send(JSON.stringify({ type, id, content }));
    });
  }

  open() {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const url = `${scheme}//${location.host}/ws?access_token=${encodeURIComponent(this.token)}`;
    this.openedWith = this.token;
    const socket = new WebSocket(url);
    this.socket = socket;
    this.welcomed = false;
    const listening = new AbortController();
    this.detach = () => listening.abort();
    const { signal } = listening;
    socket.addEventListener('message', (e) => this.onFrame(e.data), { signal });
    socket.addEventListener('close', (e) => this.onClose(socket, e.code), { signal });
    this.welcomeTimer = setTimeout(() => this.drop('no welcome'), REPLY_TIMEOUT_MS);
  }

  /**
   * Gives up on the current socket at once, as when it closed. A dead link
   * never completes the closing handshake, and the browser reports the
   * close only when that handshake ends or times out (a minute or more in
   * Chromium), so the socket is left to close on its own, unheard.
   */
  drop(reason) {
    const socket = this.socket;
    if (!socket) return;
    this.detach();
    socket.close(4000, reason);
    this.onClose(socket, 4000, { timedOut: true });
  }

  onFrame(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    if (frame.type === 'welcome') {
      const isReconnect = this.everOpened;
      this.welcomed = true;
      this.everOpened = true;
      this.attempt = 0;
      clearTimeout(this.welcomeTimer);
      const heartbeat = frame.content.heartbeatSeconds > 0 ? frame.content.heartbeatSeconds : HEARTBEAT_DEFAULT_S;
      const every = Math.min(KEEPALIVE_MS, (heartbeat * 1000 * 5) / 6);
      const within = Math.min(REPLY_TIMEOUT_MS, (heartbeat * 1000) / 2);
      clearInterval(this.keepalive);
      this.keepalive = setInterval(() => this.request('ping', {}, within).catch(() => {}), every);
      // Renewed while this socket was being opened: it lives by the old one.
      if (this.openedWith !== this.token) this.setToken(this.token);
      this.callbacks.onState('open');
      this.callbacks.onOpen(frame.content, isReconnect);
      return;
    }
    if (frame.type === 'ack' || frame.type === 'error') {
      const waiting = this.pending.get(frame.id);
      if (!waiting) return;
      this.pending.delete(frame.id);
      clearTimeout(waiting.timer);
      if (frame.type === 'ack') waiting.resolve(frame.content || {});
      else waiting.reject(new RequestError(frame.content.code, frame.content.message));
      return;
    }
    this.callbacks.onEvent(frame.type, frame.content || {});
  }

  async onClose(socket, code, { timedOut = false } = {}) {
    if (socket !== this.socket) return;
    const wasWelcomed = this.welcomed;
    this.socket = null;
    this.welcomed = false;
    this.detach();
    clearInterval(this.keepalive);
    clearTimeout(this.welcomeTimer);
    this.failPending('disconnected', 'The connection was lost.');
    if (this.stopped) return;
    if (code === CLOSE_SESSION_REVOKED) {
      this.stopped = true;
      this.callbacks.onRevoked();
      return;
    }
    this.callbacks.onState('reconnecting');
    // A refused handshake looks like any other failure from here; ask the
    // HTTP API whether the token is still good before trying again. (A
    // connection that timed out was not refused: the network is at fault.)
    const expired = code === CLOSE_TOKEN_EXPIRED;
    if (expired || (!wasWelcomed && !timedOut && !(await this.callbacks.checkToken()))) {
      if (this.stopped) return;
      let token;
      try {
        token = await this.callbacks.renewToken();
      } catch {
        // The server could not be asked: try again later, as for any
        // failure; a refused handshake then asks again.
        token = undefined;
      }
      if (this.stopped) return;
      if (token === null) {
        this.stopped = true;
        return;
      }
      if (token) this.token = token;
      // Only the token was at fault: back at once with the new one.
      if (token && expired) {
        this.open();
        return;
      }
    }
    if (this.stopped) return;
    if (wasWelcomed && timedOut) {
      // Only this client found its link dead, so there is no crowd to
      // spread out: try again at once.
      this.attempt += 1;
      this.open();
      return;
    }
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt);
    // Full jitter on the upper half, so a restarted server is not met by
    // every client in the same millisecond.
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.attempt += 1;
    this.retryTimer = setTimeout(() => this.open(), delay);
  }

  failPending(code, message) {
    for (const waiting of this.pending.values()) {
      clearTimeout(waiting.timer);
      waiting.reject(new RequestError(code, message));
    }
    this.pending.clear();
  }
}
