// The WebSocket half of the contract: one connection at a time, requests
// matched to their replies by id, and reconnection with backoff when the
// connection drops. What was missed while away is fetched by the caller
// (see `onOpen`), because only it knows what it has already shown.

const CLOSE_TOKEN_EXPIRED = 4001;
// A request unanswered this long means the connection is dead even if the
// browser has not noticed (a laptop lid, a lost Wi-Fi).
const REPLY_TIMEOUT_MS = 15000;
const KEEPALIVE_MS = 25000;
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
 * `onState('connecting' | 'open' | 'reconnecting')`, `onExpired()` when
 * the token is no longer accepted, `checkToken()` returning false when it
 * is not (asked when a connection fails, since a browser is not told why).
 */
export class Connection {
  constructor(token, callbacks) {
    this.token = token;
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
    if (this.socket) this.socket.close(1000);
    this.failPending('disconnected', 'Not connected.');
  }

  /** Whether requests can be sent now. */
  get isOpen() {
    return this.socket !== null && this.socket.readyState === WebSocket.OPEN && this.welcomed;
  }

  /** Sends a request; resolves with the ack's content, rejects with a RequestError. */
  request(type, content = {}) {
    if (!this.isOpen) {
      return Promise.reject(new RequestError('disconnected', 'Not connected.'));
    }
    this.nextId += 1;
    const id = `c${this.nextId}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        // No answer: assume the connection is gone and start over.
        if (this.pending.has(id) && this.socket) this.socket.close(4000, 'no reply');
      }, REPLY_TIMEOUT_MS);
      this.pending.set(id, { resolve, reject, timer });
      this.socket.send(JSON.stringify({ type, id, content }));
    });
  }

  open() {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const url = `${scheme}//${location.host}/ws?access_token=${encodeURIComponent(this.token)}`;
    const socket = new WebSocket(url);
    this.socket = socket;
    this.welcomed = false;
    socket.addEventListener('message', (e) => this.onFrame(e.data));
    socket.addEventListener('close', (e) => this.onClose(socket, e.code));
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
      clearInterval(this.keepalive);
      this.keepalive = setInterval(() => this.request('ping').catch(() => {}), KEEPALIVE_MS);
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

  async onClose(socket, code) {
    if (socket !== this.socket) return;
    const wasWelcomed = this.welcomed;
    this.socket = null;
    this.welcomed = false;
    clearInterval(this.keepalive);
    this.failPending('disconnected', 'The connection was lost.');
    if (this.stopped) return;
    if (code === CLOSE_TOKEN_EXPIRED) {
      this.stopped = true;
      this.callbacks.onExpired();
      return;
    }
    this.callbacks.onState('reconnecting');
    // A refused handshake looks like any other failure from here; ask the
    // HTTP API whether the token is still good before trying again.
    if (!wasWelcomed && !(await this.callbacks.checkToken())) {
      this.stopped = true;
      this.callbacks.onExpired();
      return;
    }
    if (this.stopped) return;
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
