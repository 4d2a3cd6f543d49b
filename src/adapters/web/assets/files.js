// Files in messages: images as thumbnails that open in a viewer, other
// files as a name, a size and a download. Their bytes are behind signed
// links (docs/files.md) that need no token, so an <img> can load them;
// the links are asked for with the token and kept until shortly before
// they expire.

import * as api from './api.js';
import { $, el } from './dom.js';
import { humanSize } from './uploads.js';

// A link is asked for again this long before it expires, or at half its
// life when that is shorter.
const RENEW_BEFORE_MS = 60000;
// The server's thumbnails: the longest side at most this, never upscaled.
const THUMB_PX = 320;

/** Signed links to files, asked for once and kept while good. */
export class FileLinks {
  constructor(tokens) {
    this.tokens = tokens;
    // file id -> { promise, until }
    this.cache = new Map();
  }

  /** `{url, thumbnailUrl, expiresAt}` for file `id`; rejects with an ApiError. */
  get(id) {
    const now = Date.now();
    const kept = this.cache.get(id);
    if (kept && kept.until > now) return kept.promise;
    const entry = { until: Infinity };
    entry.promise = this.tokens.authed((token) => api.fileLink(token, id)).then(
      (link) => {
        entry.until = Date.now() + link.lifetimeMs - Math.min(RENEW_BEFORE_MS, link.lifetimeMs / 2);
        return link;
      },
      (e) => {
        if (this.cache.get(id) === entry) this.cache.delete(id);
        throw e;
      },
    );
    this.cache.set(id, entry);
    return entry.promise;
  }

  /** Forgets the link of `id` (it stopped working early, say). */
  forget(id) {
    this.cache.delete(id);
  }
}

/** A message's attachments, for its bubble. */
export function attachmentsNode(attachments, links) {
  return el('div', { class: 'attachments' }, attachments.map((a) => (a.thumbnail
    ? imageNode(a, links)
    : fileNode(a, links))));
}

function imageNode(a, links) {
  const size = thumbSize(a);
  const img = el('img', {
    alt: a.name,
    width: size ? size.width : undefined,
    height: size ? size.height : undefined,
    decoding: 'async',
  });
  const button = el('button', {
    type: 'button',
    class: size ? 'thumb' : 'thumb unsized',
    title: `${a.name} (${humanSize(a.size)})`,
    dataset: { fileId: a.id },
    onclick: () => openViewer(a, links),
  }, img);
  let retried = false;
  const load = () => links.get(a.id).then((link) => {
    if (link.thumbnailUrl) img.src = link.thumbnailUrl;
  }).catch(() => button.classList.add('broken'));
  img.addEventListener('error', () => {
    // A link that stopped working before its time (the secret changed, a
    // clock jumped): one fresh one.
    if (retried) return;
    retried = true;
    links.forget(a.id);
    load();
  });
  load();
  return button;
}

/**
 * The thumbnail's size from the original's, so that its box is reserved
 * before it loads (nothing below it jumps); null when not known.
 */
function thumbSize(a) {
  if (!a.width || !a.height) return null;
  const scale = Math.min(1, THUMB_PX / Math.max(a.width, a.height));
  return {
    width: Math.max(1, Math.round(a.width * scale)),
    height: Math.max(1, Math.round(a.height * scale)),
  };
}

function fileNode(a, links) {
  const status = el('span', { class: 'file-status', role: 'status' });
  return el('a', {
    class: 'file',
    href: `/api/v1/files/${encodeURIComponent(a.id)}`,
    dataset: { fileId: a.id },
    onclick: async (e) => {
      // The plain href needs a token that a navigation cannot carry; the
      // signed link does not.
      e.preventDefault();
      status.textContent = '';
      try {
        const link = await links.get(a.id);
        download(link.url, a.name);
      } catch (error) {
        status.textContent = error.status === 404 ? 'This file is gone.' : (error.message || 'Try again.');
      }
    },
  },
  el('span', { class: 'file-icon', 'aria-hidden': 'true' }),
  el('span', { class: 'file-text' },
    el('span', { class: 'file-name', dir: 'auto', text: a.name }),
    el('span', { class: 'file-size', text: humanSize(a.size) })),
  status);
}

/**
 * Saves the file at `url` as `name`: a download, never a navigation away
 * from the app (a PDF would otherwise open in its place). A link on
 * another origin cannot be made a download; it opens in a new tab.
 */
function download(url, name) {
  const link = el('a', { href: url, download: name, target: '_blank', rel: 'noopener noreferrer' });
  document.body.append(link);
  link.click();
  link.remove();
}

// ------------------------------------------------------------ viewer

let viewing = null;

/** Shows the image `a` at full size over the app. */
async function openViewer(a, links) {
  const dialog = $('viewer');
  const img = $('viewer-image');
  const status = $('viewer-status');
  viewing = a.id;
  $('viewer-name').textContent = a.name;
  status.textContent = 'Loading…';
  img.removeAttribute('src');
  img.alt = a.name;
  if (a.width && a.height) {
    img.width = a.width;
    img.height = a.height;
  } else {
    img.removeAttribute('width');
    img.removeAttribute('height');
  }
  if (!dialog.open) dialog.showModal();
  try {
    const link = await links.get(a.id);
    if (viewing !== a.id) return;
    img.src = link.url;
    $('viewer-download').onclick = () => download(link.url, a.name);
  } catch (e) {
    if (viewing === a.id) status.textContent = e.status === 404 ? 'This file is gone.' : (e.message || 'It could not be loaded.');
  }
}

/** Wires the viewer's buttons (once, at start). */
export function bindViewer() {
  const dialog = $('viewer');
  const img = $('viewer-image');
  img.addEventListener('load', () => {
    $('viewer-status').textContent = '';
  });
  img.addEventListener('error', () => {
    if (img.getAttribute('src')) $('viewer-status').textContent = 'The image could not be loaded.';
  });
  $('viewer-close').addEventListener('click', () => dialog.close());
  // A click on the backdrop (the dialog itself, outside its content) closes it.
  dialog.addEventListener('click', (e) => {
    if (e.target === dialog) dialog.close();
  });
  dialog.addEventListener('close', () => {
    viewing = null;
    img.removeAttribute('src');
  });
}
