// The files waiting to go with the next message, above the message box:
// each uploads as soon as it is added, with its progress, a cancel button
// and, when it fails, why. Each conversation has a tray of its own, kept
// (uploads and all) while another is open.

import { $, el } from './dom.js';
import { Upload, humanSize } from './uploads.js';

/** Files a message may carry (MAX_ATTACHMENTS on the server). */
export const MAX_FILES = 10;

/** The pending attachments of every conversation, the open one's drawn. */
export class Tray {
  /** `changed()` is called whenever what may be sent changes. */
  constructor(tokens, changed) {
    this.tokens = tokens;
    this.changed = changed;
    // conversation key -> [Upload]
    this.trays = new Map();
    this.key = null;
    this.list = $('attachments');
    this.rows = new Map();
    // The state each upload was last seen in: a change may enable Send.
    this.states = new WeakMap();
  }

  /** Shows the tray of the conversation `key`. */
  show(key) {
    this.key = key;
    this.render();
  }

  /** The uploads of the open conversation. */
  uploads(key = this.key) {
    return this.trays.get(key) || [];
  }

  /**
   * Queues `files` in the open conversation's tray and starts sending them.
   * Returns a sentence when some did not fit (at most MAX_FILES), or ''.
   */
  add(files) {
    if (this.key === null) return '';
    const uploads = this.uploads();
    const room = MAX_FILES - uploads.length;
    const taken = [...files].slice(0, Math.max(0, room));
    for (const file of taken) {
      const upload = new Upload(file, this.tokens, () => this.update(upload));
      uploads.push(upload);
      upload.start();
    }
    this.trays.set(this.key, uploads);
    this.render();
    this.changed();
    return taken.length < files.length ? `A message carries at most ${MAX_FILES} files.` : '';
  }

  /** Whether the open tray still has uploads under way. */
  busy(key = this.key) {
    return this.uploads(key).some((u) => u.state === 'uploading');
  }

  /** Whether the open tray has uploads that failed. */
  failed(key = this.key) {
    return this.uploads(key).some((u) => u.state === 'failed');
  }

  /** The ids of the uploaded files of tray `key`, in the order added. */
  ids(key = this.key) {
    return this.uploads(key).filter((u) => u.state === 'done').map((u) => u.fileId);
  }

  /** Empties tray `key` of the files in `ids` (they were sent). */
  sent(key, ids) {
    const left = this.uploads(key).filter((u) => !ids.includes(u.fileId));
    if (left.length) this.trays.set(key, left);
    else this.trays.delete(key);
    if (key === this.key) this.render();
    this.changed();
  }

  remove(upload) {
    upload.cancel();
    for (const [key, uploads] of this.trays) {
      const left = uploads.filter((u) => u !== upload);
      if (left.length) this.trays.set(key, left);
      else this.trays.delete(key);
    }
    this.render();
    this.changed();
  }

  /** Redraws one upload's row, if it is on screen. */
  update(upload) {
    const row = this.rows.get(upload);
    if (row) this.fill(row, upload);
    if (upload.state !== this.states.get(upload)) {
      this.states.set(upload, upload.state);
      this.changed();
    }
  }

  render() {
    this.rows.clear();
    const uploads = this.uploads();
    this.list.replaceChildren(...uploads.map((upload) => {
      const row = {
        node: el('li', { class: 'pending-file' }),
        progress: el('progress', { max: '1', value: '0' }),
        status: el('span', { class: 'pending-status', role: 'status' }),
        retry: el('button', { type: 'button', class: 'quiet small retry', text: 'Retry', onclick: () => upload.start() }),
        remove: el('button', { type: 'button', class: 'quiet small remove', onclick: () => this.remove(upload) }),
      };
      row.node.append(
        el('span', { class: 'pending-main' },
          el('span', { class: 'pending-name', dir: 'auto', title: upload.name, text: upload.name }),
          el('span', { class: 'pending-size', text: humanSize(upload.size) })),
        row.progress,
        row.status,
        row.retry,
        row.remove,
      );
      this.rows.set(upload, row);
      this.fill(row, upload);
      return row.node;
    }));
    this.list.hidden = uploads.length === 0;
  }

  fill(row, upload) {
    row.node.dataset.state = upload.state;
    row.progress.value = upload.size ? upload.sent / upload.size : 1;
    row.progress.hidden = upload.state !== 'uploading';
    row.progress.setAttribute('aria-label', `${upload.name}: ${Math.floor(row.progress.value * 100)}% uploaded`);
    let status = '';
    if (upload.state === 'failed') status = upload.error.message;
    else if (upload.state === 'done') status = 'Ready';
    else if (upload.error) status = upload.error.message;
    row.status.textContent = status;
    row.status.classList.toggle('form-error', upload.state === 'failed');
    // Only what may go through on a second try gets a Retry: a file too
    // large (or over the quota) stays so.
    row.retry.hidden = !(upload.state === 'failed' && upload.error.code !== 'too_large' && upload.size > 0);
    const verb = upload.state === 'uploading' ? 'Cancel' : 'Remove';
    row.remove.textContent = verb;
    row.remove.setAttribute('aria-label', `${verb} ${upload.name}`);
  }
}
