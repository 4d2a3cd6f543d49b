// A small tus 1.0 client (https://tus.io/protocols/resumable-upload) for
// /api/v1/uploads: one upload per file, sent in chunks with
// XMLHttpRequest, which alone reports the progress of what it sends. A
// dropped connection costs at most the chunk in flight: the upload asks
// the server how far it got (HEAD) and goes on from there.

const UPLOADS = '/api/v1/uploads';
const TUS_VERSION = '1.0.0';
const CHUNK_BYTES = 4 * 1024 * 1024;
// Waits between tries after a failure, growing to the last; a chunk that
// goes through starts over from the first.
const BACKOFF_MS = [1000, 2000, 4000, 8000, 15000, 30000];
// This many failures in a row, and the upload stops and says so (a Retry
// button starts it again from where it got).
const MAX_TRIES = 8;

/** A failed upload: what to show next to the file, and whether trying again may help. */
export class UploadError extends Error {
  constructor(message, { status = 0, code = '', retry = false } = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.retry = retry;
  }
}

/**
 * One file on its way to the server.
 *
 * `state`: 'uploading', 'done' (`fileId` is the file's id), 'failed'
 * (`error` says why) or 'cancelled'. `sent` of `size` bytes have gone.
 * `tokens` (tokens.js) gives the bearer token and renews it after a 401;
 * `changed(upload)` is called on every change of progress or state.
 */
export class Upload {
  constructor(file, tokens, changed) {
    this.file = file;
    this.name = file.name || 'file';
    this.size = file.size;
    this.tokens = tokens;
    this.changed = changed;
    this.state = 'uploading';
    this.sent = 0;
    this.fileId = null;
    this.error = null;
    // The upload's URL once created: where HEAD, PATCH and DELETE go.
    this.location = null;
    this.xhr = null;
    this.timer = null;
  }

  /** Starts (or, after a failure, resumes) sending. */
  start() {
    this.state = 'uploading';
    this.error = null;
    this.changed(this);
    this.run().catch((e) => {
      if (this.state !== 'uploading') return;
      this.state = 'failed';
      this.error = e instanceof UploadError ? e : new UploadError('The upload failed. Try again.', { retry: true });
      this.changed(this);
    });
  }

  /** Stops sending and tells the server to forget what it has. */
  cancel() {
    if (this.state === 'done' || this.state === 'cancelled') return;
    this.state = 'cancelled';
    clearTimeout(this.timer);
    if (this.xhr) this.xhr.abort();
    if (this.location) {
      this.request('DELETE', this.location, {}).catch(() => {});
    }
    this.changed(this);
  }

  async run() {
    if (this.size === 0) throw new UploadError('This file is empty.');
    let failures = 0;
    while (this.state === 'uploading') {
      try {
        if (!this.location) await this.create();
        else if (failures > 0) await this.askOffset();
        const done = await this.sendChunk();
        failures = 0;
        if (this.error) {
          this.error = null;
          this.changed(this);
        }
        if (done) return;
      } catch (e) {
        if (this.state !== 'uploading') return;
        if (!(e instanceof UploadError) || !e.retry) throw e;
        failures += 1;
        if (failures >= MAX_TRIES) throw e;
        // Shown beside the file while it waits to try again.
        this.error = e;
        this.changed(this);
        await this.pause(BACKOFF_MS[Math.min(failures, BACKOFF_MS.length) - 1]);
      }
    }
  }

  /** POST: a new upload of this file's length, named in its metadata. */
  async create() {
    const res = await this.request('POST', UPLOADS, {
      'Upload-Length': String(this.size),
      'Upload-Metadata': `filename ${base64(this.name)}`,
    });
    if (res.status !== 201) throw failure(res);
    const location = res.xhr.getResponseHeader('Location');
    if (!location) throw new UploadError('The server did not say where the upload goes.');
    this.location = new URL(location, window.location.href).href;
  }

  /** HEAD: how much of the file the server has, after a failed PATCH. */
  async askOffset() {
    const res = await this.request('HEAD', this.location, {});
    if (res.status === 404 || res.status === 410) {
      // Expired, or completed by the PATCH whose answer was lost: in
      // either case the only way on is to start again.
      this.location = null;
      this.progress(0);
      throw new UploadError('The upload was lost. Starting again…', { retry: true });
    }
    if (res.status !== 200) throw failure(res);
    this.progress(Number(res.xhr.getResponseHeader('Upload-Offset')) || 0);
  }

  /** PATCH: the next chunk. True once the file is complete. */
  async sendChunk() {
    const offset = this.sent;
    const chunk = this.file.slice(offset, Math.min(this.size, offset + CHUNK_BYTES));
    const res = await this.request('PATCH', this.location, {
      'Content-Type': 'application/offset+octet-stream',
      'Upload-Offset': String(offset),
    }, chunk, (loaded) => this.progress(offset + loaded));
    if (res.status === 409) {
      // Not where the server is: it says where, so go on from there.
      const at = res.xhr.getResponseHeader('Upload-Offset');
      if (at === null) throw new UploadError('The upload went out of step.', { retry: true });
      this.progress(Number(at));
      return false;
    }
    if (res.status === 404) {
      this.location = null;
      this.progress(0);
      throw new UploadError('The upload was lost. Starting again…', { retry: true });
    }
    if (res.status !== 204) throw failure(res);
    this.progress(Number(res.xhr.getResponseHeader('Upload-Offset')) || offset + chunk.size);
    const fileId = res.xhr.getResponseHeader('X-Confab-File-Id');
    if (!fileId) return false;
    this.fileId = fileId;
    this.state = 'done';
    this.progress(this.size);
    return true;
  }

  progress(sent) {
    this.sent = Math.min(sent, this.size);
    this.changed(this);
  }

  pause(ms) {
    return new Promise((resolve) => {
      this.timer = setTimeout(resolve, ms);
    });
  }

  /**
   * One tus request with the bearer token, once more with a renewed token
   * after a 401. Resolves with `{status, xhr}`; a network failure rejects
   * with a retryable UploadError, an abort (cancel) with a plain one.
   */
  async request(method, url, headers, body, onProgress) {
    let res = await this.send(method, url, headers, body, onProgress, this.tokens.token);
    if (res.status === 401) {
      const token = await this.tokens.renew().catch(() => null);
      if (!token) throw new UploadError('You are signed out.', { status: 401 });
      res = await this.send(method, url, headers, body, onProgress, token);
    }
    return res;
  }

  send(method, url, headers, body, onProgress, token) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      this.xhr = xhr;
      xhr.open(method, url);
      xhr.setRequestHeader('Tus-Resumable', TUS_VERSION);
      if (token) xhr.setRequestHeader('Authorization', `Bearer ${token}`);
      for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
      if (onProgress) xhr.upload.onprogress = (e) => onProgress(e.loaded);
      xhr.onload = () => {
        this.xhr = null;
        // A gateway between here and the server that is down or busy is
        // a dropped connection too.
        if (xhr.status === 502 || xhr.status === 503 || xhr.status === 504) {
          reject(new UploadError('The server is not answering. Trying again…', { status: xhr.status, retry: true }));
        } else {
          resolve({ status: xhr.status, xhr });
        }
      };
      xhr.onerror = () => {
        this.xhr = null;
        reject(new UploadError('The connection was lost. Trying again…', { retry: true }));
      };
      xhr.onabort = () => {
        this.xhr = null;
        reject(new UploadError('Cancelled.'));
      };
      xhr.send(body === undefined ? null : body);
    });
  }
}

/** The error an unexpected answer means, in the server's words when it gave any. */
function failure({ status, xhr }) {
  let error = {};
  try {
    error = JSON.parse(xhr.responseText).error || {};
  } catch {
    // No JSON body (a HEAD, a proxy's page): the status alone.
  }
  if (status === 413) {
    return new UploadError(sentence(error.message) || 'This file is too large.', { status, code: 'too_large' });
  }
  if (status === 429) {
    return new UploadError('Too many uploads at once. Wait a moment, then try again.', {
      status,
      code: 'rate_limited',
      retry: false,
    });
  }
  return new UploadError(sentence(error.message) || `The upload failed (${status || 'no answer'}).`, {
    status,
    code: error.code || '',
  });
}

/** The server's message as a sentence: "the file is…" becomes "The file is…". */
function sentence(text) {
  if (!text) return '';
  return text.charAt(0).toUpperCase() + text.slice(1) + (/[.!?]$/.test(text) ? '' : '.');
}

/** `text` as UTF-8, in base64 (tus metadata values). */
function base64(text) {
  const bytes = new TextEncoder().encode(text);
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

/** A size for people: "512 B", "1.4 MB". */
export function humanSize(bytes) {
  if (bytes < 1000) return `${bytes} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let n = bytes;
  let unit = -1;
  do {
    n /= 1000;
    unit += 1;
  } while (n >= 999.5 && unit < units.length - 1);
  return `${n < 10 ? n.toFixed(1) : Math.round(n)} ${units[unit]}`;
}
