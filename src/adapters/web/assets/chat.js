// The conversation view: history (older pages on scrolling up), live
// messages, typing, "seen", editing and deleting one's own messages, files
// in messages, and the composer, which keeps the text (and the files
// attached) until the server has it.

import { BlockButton } from './block.js';
import { RequestError } from './connection.js';
import { $, el, longTime, randomId, shortTime } from './dom.js';
import { FileLinks, attachmentsNode, bindViewer } from './files.js';
import { statusOf } from './sidebar.js';
import { Tray } from './tray.js';

const PAGE = 50;
const MAX_BODY_CHARS = 4000;
// The length is shown from here on, before the limit is hit.
const COUNT_FROM_CHARS = 3500;
// What shows that the person looked at the open conversation: a press, a
// key or the wheel in the conversation pane (see `show`).
const LOOKING = ['pointerdown', 'keydown', 'wheel'];
const TYPING_REPEAT_MS = 3000;
const TYPING_IDLE_MS = 4000;
// Near enough to the bottom to follow new messages down.
const FOLLOW_PX = 120;

/**
 * Words for a failed request, for the person who made it; `body` the text
 * of a message it sent, `withFiles` whether files went with it.
 */
export function explain(error, body, withFiles = false) {
  if (error.code === 'rate_limited') {
    return 'You are sending too fast. Wait a moment, then send again.';
  }
  if (error.code === 'disconnected') {
    return 'Not connected. Your message is kept; it will be sent when the connection is back.';
  }
  if (body !== undefined && [...body].length > MAX_BODY_CHARS) {
    return `Your message is too long: ${[...body].length} characters, at most ${MAX_BODY_CHARS}.`;
  }
  if (body !== undefined && body.trim() === '' && !withFiles) return 'A message cannot be empty.';
  if (withFiles && error.code === 'not_found') {
    return 'A file attached is no longer there (unused files are deleted after a while). Remove it and attach it again.';
  }
  if (error.code === 'forbidden') return 'You are not allowed to do that here.';
  return error.message || 'That did not work. Try again.';
}

/** The conversation pane. */
export class Chat {
  /**
   * `hooks`: `markRead(conversation)`; `sent(message, viaDirect)` after an
   * ack (`viaDirect`: sent with sendPrivateMessage, which may have created
   * the conversation); `updated(message)` after an edit or a delete;
   * `invite(conversation)`, `leave(conversation)`, `back()` for the buttons.
   * `tokens` (tokens.js) for uploads and file links.
   */
  constructor(state, conn, hooks, tokens) {
    this.state = state;
    this.conn = conn;
    this.hooks = hooks;
    this.links = new FileLinks(tokens);
    this.tray = new Tray(tokens, () => this.renderSend());
    // A send under way: the button waits for its answer.
    this.sending = false;
    this.target = null;
    this.rendered = new Map();
    this.pending = null;
    this.editing = null;
    this.drafts = new Map();
    this.typingSentAt = 0;
    this.typingIdle = null;
    this.scroller = $('scroller');
    this.list = $('messages');
    this.input = $('message-input');
    this.bindComposer();
    this.bindFiles();
    bindViewer();
    this.scroller.addEventListener('scroll', () => {
      if (this.scroller.scrollTop < 80) this.loadOlder();
    });
    $('load-older').addEventListener('click', () => this.loadOlder());
    $('cancel-edit').addEventListener('click', () => this.stopEditing());
    $('back').addEventListener('click', () => this.hooks.back());
    $('invite-button').addEventListener('click', () => this.hooks.invite(this.conversation()));
    $('leave-button').addEventListener('click', () => this.hooks.leave(this.conversation()));
    for (const type of LOOKING) {
      $('conversation').addEventListener(type, () => this.lookAt(), { capture: true, passive: true });
    }
    this.blockButton = new BlockButton(conn, (text) => this.setError(text));
  }

  /** The open conversation, when it exists on the server. */
  conversation() {
    return this.target && this.target.id ? this.state.conversations.get(this.target.id) : null;
  }

  /**
   * Opens a conversation the user is in. `lookedAt: false` when the user
   * did not ask for it (the one opened at login): it is not marked read
   * until they press, type or scroll in it, since being on screen in an
   * unattended tab is no proof that anyone read it.
   */
  async show(conversationId, { lookedAt = true } = {}) {
    this.leaveTarget();
    this.target = { id: conversationId, key: conversationId, lookedAt };
    this.state.openId = conversationId;
    this.state.openLookedAt = lookedAt;
    this.enter();
    const log = this.state.log(conversationId);
    if (!log.loaded && !log.loading) {
      // Messages arriving meanwhile are kept (see `loading`), so none
      // falls between this page and the live ones.
      log.loading = true;
      try {
        const page = await this.conn.request('getHistory', { conversationId, limit: PAGE });
        log.put(page.messages);
        log.hasOlder = page.hasMore;
        log.loaded = true;
      } catch {
        this.setError('The messages could not be loaded. They will be once the connection is back.');
      } finally {
        log.loading = false;
      }
      if (!this.isOpen(conversationId)) return;
    }
    this.renderMessages();
    this.scrollToBottom();
    this.hooks.markRead(this.conversation());
  }

  /** Opens a direct conversation that does not exist yet: the first send creates it. */
  showDraft(user) {
    this.leaveTarget();
    this.target = { to: user.id, user, key: `to:${user.id}` };
    this.state.openId = null;
    this.state.openLookedAt = true;
    this.enter();
    this.renderMessages();
  }

  /** Whether `conversationId` is the one on screen. */
  isOpen(conversationId) {
    return this.target !== null && this.target.id === conversationId;
  }

  /** Whether `conversationId` is on screen and the user has looked at it (see `show`). */
  isLookedAt(conversationId) {
    return this.isOpen(conversationId) && this.target.lookedAt !== false;
  }

  /** The user acted in the conversation pane: what is open has been looked at. */
  lookAt() {
    if (!this.target || this.target.lookedAt !== false) return;
    this.target.lookedAt = true;
    this.state.openLookedAt = true;
    this.hooks.markRead(this.conversation());
  }

  /** Closes the pane (after leaving a room, say). */
  close() {
    this.leaveTarget();
    this.target = null;
    this.state.openId = null;
    $('conversation').hidden = true;
    $('empty').hidden = false;
  }

  leaveTarget() {
    if (!this.target) return;
    this.stopTyping();
    this.stopEditing();
    this.drafts.set(this.target.key, this.input.value);
  }

  enter() {
    $('empty').hidden = true;
    $('conversation').hidden = false;
    this.rendered.clear();
    this.list.replaceChildren();
    this.setInput(this.drafts.get(this.target.key) || '');
    this.tray.show(this.target.key);
    this.renderSend();
    this.setError('');
    this.renderHeader();
    this.renderTyping();
    this.input.focus();
  }

  /** Redraws the title line: name, presence or membership, room buttons. */
  renderHeader() {
    if (!this.target) return;
    const c = this.conversation();
    const title = $('chat-title');
    const sub = $('chat-sub');
    const dot = $('chat-dot');
    let peer = null;
    if (c) {
      title.textContent = this.state.title(c);
      peer = this.state.peer(c);
      if (c.kind === 'room') {
        const count = `${c.memberCount} member${c.memberCount === 1 ? '' : 's'}`;
        sub.textContent = `${c.visibility === 'private' ? 'Private' : 'Public'} room · ${count}`;
      }
    } else {
      title.textContent = this.target.user.username;
      peer = this.target.user;
    }
    if (peer) {
      const status = statusOf(this.state, peer.id);
      sub.textContent = status;
      dot.className = `dot ${status}`;
      dot.hidden = false;
    } else {
      dot.hidden = true;
    }
    const isRoom = Boolean(c && c.kind === 'room');
    $('invite-button').hidden = !isRoom;
    $('leave-button').hidden = !isRoom;
    this.blockButton.show(peer && !isRoom && peer.id !== this.state.me.id ? peer : null);
    this.input.placeholder = `Message ${title.textContent}`;
  }

  /** Draws new, changed and (after a page of history) older messages. */
  renderMessages() {
    const c = this.conversation();
    const messages = c ? this.state.log(c.id).sorted() : [];
    const log = c ? this.state.log(c.id) : null;
    $('load-older').hidden = !(log && log.hasOlder);
    $('no-messages').hidden = messages.length > 0;
    let previous = null;
    let cursor = this.list.firstElementChild;
    for (const m of messages) {
      const continued = Boolean(previous && previous.senderId === m.senderId && !previous.deleted && !m.deleted
        && Date.parse(m.createdAt) - Date.parse(previous.createdAt) < 5 * 60 * 1000);
      let entry = this.rendered.get(m.seq);
      if (!entry || entry.message !== m || entry.continued !== continued) {
        const node = this.messageNode(m, continued);
        if (entry) {
          const refocus = entry.node.contains(document.activeElement)
            ? document.activeElement.className : null;
          entry.node.replaceWith(node);
          if (cursor === entry.node) cursor = node;
          if (refocus) {
            const again = node.getElementsByClassName(refocus)[0];
            if (again) again.focus();
          }
        }
        entry = { node, message: m, continued };
        this.rendered.set(m.seq, entry);
      }
      if (entry.node !== cursor) this.list.insertBefore(entry.node, cursor);
      else cursor = cursor.nextElementSibling;
      previous = m;
    }
    this.renderSeen();
  }

  messageNode(m, continued) {
    const mine = m.senderId === this.state.me.id;
    const classes = ['message'];
    if (mine) classes.push('mine');
    if (m.deleted) classes.push('deleted');
    if (continued) classes.push('continued');
    const files = !m.deleted && m.attachments && m.attachments.length ? m.attachments : null;
    let body = null;
    if (m.deleted) body = el('p', { class: 'body', text: 'This message was deleted.' });
    else if (m.body !== '' || !files) body = el('p', { class: 'body', dir: 'auto', text: m.body });
    const actions = mine && !m.deleted
      ? el(
        'div',
        { class: 'actions' },
        el('button', {
          type: 'button',
          class: 'edit',
          'aria-label': 'Edit message',
          text: 'Edit',
          onclick: () => this.startEditing(m),
        }),
        el('button', {
          type: 'button',
          class: 'delete',
          'aria-label': 'Delete message',
          text: 'Delete',
          onclick: (e) => this.confirmDelete(e.currentTarget, m),
          onblur: (e) => resetDelete(e.currentTarget),
        }),
      )
      : null;
    return el(
      'li',
      { class: classes.join(' '), dataset: { seq: String(m.seq), messageId: m.id } },
      el(
        'div',
        { class: 'meta' },
        el('span', { class: 'sender', text: mine ? 'You' : m.sender }),
        el('time', { datetime: m.createdAt, title: longTime(m.createdAt), text: shortTime(m.createdAt) }),
        m.editedAt && !m.deleted ? el('span', { class: 'edited', title: longTime(m.editedAt), text: 'edited' }) : null,
      ),
      // The actions come first, so they sit beside one's own (right-hand) bubbles.
      el('div', { class: 'row' }, actions, el(
        'div',
        { class: files ? 'bubble with-files' : 'bubble' },
        body,
        files ? attachmentsNode(files, this.links) : null,
      )),
    );
  }

  /** Marks the newest of one's own messages that another member has read. */
  renderSeen() {
    for (const old of this.list.querySelectorAll('.seen')) old.remove();
    const c = this.conversation();
    if (!c) return;
    const seen = this.state.seenByOthers.get(c.id) || 0;
    let mark = null;
    for (const [seq, entry] of this.rendered) {
      if (seq <= seen && entry.message.senderId === this.state.me.id && (!mark || seq > mark.seq)) {
        mark = { seq, node: entry.node };
      }
    }
    if (mark) mark.node.append(el('div', { class: 'seen', text: 'Seen' }));
  }

  /** Shows who is typing in the open conversation. */
  renderTyping() {
    const line = $('typing');
    const who = this.target && this.target.id ? this.state.typing.get(this.target.id) : null;
    const names = who ? [...who.keys()].map((id) => this.state.nameOf(this.target.id, id)) : [];
    let text = '';
    if (names.length === 1) text = `${names[0]} is typing…`;
    else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
    else if (names.length > 2) text = 'Several people are typing…';
    line.textContent = text;
  }

  /** After messages arrived for `conversationId`: draw them, follow them down, mark them read. */
  messagesArrived(conversationId, fromMe) {
    if (!this.isOpen(conversationId)) return;
    const follow = fromMe || this.nearBottom();
    this.renderMessages();
    if (follow) this.scrollToBottom();
    this.hooks.markRead(this.conversation());
  }

  nearBottom() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < FOLLOW_PX;
  }

  scrollToBottom() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  /** Loads the page of history before the oldest message shown. */
  async loadOlder() {
    const c = this.conversation();
    if (!c) return;
    const log = this.state.log(c.id);
    if (!log.loaded || !log.hasOlder || log.loadingOlder) return;
    log.loadingOlder = true;
    try {
      const page = await this.conn.request('getHistory', {
        conversationId: c.id,
        beforeSeq: log.oldestSeq,
        limit: PAGE,
      });
      log.put(page.messages);
      log.hasOlder = page.hasMore;
      if (this.isOpen(c.id)) {
        // Keep the messages in view where they were as older ones go above.
        const fromBottom = this.scroller.scrollHeight - this.scroller.scrollTop;
        this.renderMessages();
        this.scroller.scrollTop = this.scroller.scrollHeight - fromBottom;
      }
    } catch {
      // Scrolling up again (or the button) tries again.
    } finally {
      log.loadingOlder = false;
    }
  }

  bindComposer() {
    $('composer').addEventListener('submit', (e) => {
      e.preventDefault();
      this.submit();
    });
    this.input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        this.submit();
      } else if (e.key === 'Escape' && this.editing) {
        e.preventDefault();
        this.stopEditing();
      } else if (e.key === 'ArrowUp' && this.input.value === '' && !this.editing) {
        const last = this.lastOwnMessage();
        if (last) {
          e.preventDefault();
          this.startEditing(last);
        }
      }
    });
    this.input.addEventListener('input', () => {
      this.renderCount();
      this.setError('');
      if (!this.editing) this.noteTyping();
    });
  }

  lastOwnMessage() {
    let last = null;
    for (const entry of this.rendered.values()) {
      const m = entry.message;
      if (m.senderId === this.state.me.id && !m.deleted && (!last || m.seq > last.seq)) last = m;
    }
    return last;
  }

  /** Tells the others this user is typing, at most every few seconds, and when they stop. */
  noteTyping() {
    const c = this.conversation();
    if (!c || !this.conn.isOpen) return;
    const now = Date.now();
    if (now - this.typingSentAt > TYPING_REPEAT_MS) {
      this.typingSentAt = now;
      this.conn.request('typing', { conversationId: c.id, active: true }).catch(() => {});
    }
    clearTimeout(this.typingIdle);
    this.typingIdle = setTimeout(() => this.stopTyping(), TYPING_IDLE_MS);
  }

  stopTyping() {
    clearTimeout(this.typingIdle);
    if (!this.typingSentAt) return;
    const c = this.conversation();
    this.typingSentAt = 0;
    if (c && this.conn.isOpen) {
      this.conn.request('typing', { conversationId: c.id, active: false }).catch(() => {});
    }
  }

  submit() {
    if (!this.target) return;
    if (this.editing) {
      this.saveEdit();
      return;
    }
    const body = this.input.value;
    const key = this.target.key;
    const files = this.tray.uploads(key).length > 0;
    if (body.trim() === '' && !files) return;
    if (files && this.tray.busy(key)) {
      this.setError('Your files are still uploading. Send once they are done.');
      return;
    }
    if (files && this.tray.failed(key)) {
      this.setError('Some files could not be uploaded. Remove them (or try again) before sending.');
      return;
    }
    if (this.pending) {
      // One message in flight at a time, so none overtakes another. A
      // second Enter on the same text while it goes needs no answer.
      if (!this.conn.isOpen || this.pending.key !== this.target.key) {
        this.setError('Your previous message has not gone yet. Send this one once it has.');
      }
      return;
    }
    this.stopTyping();
    const request = this.target.id
      ? { type: 'sendMessage', content: { conversationId: this.target.id, body } }
      : { type: 'sendPrivateMessage', content: { to: this.target.to, body } };
    const attachments = this.tray.ids(key);
    if (attachments.length) request.content.attachments = attachments;
    // The same clientMsgId on every try: if the ack was lost with the
    // connection, trying again cannot store the message twice.
    request.content.clientMsgId = randomId();
    this.pending = { ...request, key, body, attachments };
    this.send();
  }

  async send() {
    const sending = this.pending;
    if (!sending) return;
    this.sending = true;
    this.renderSend();
    try {
      const ack = await this.conn.request(sending.type, sending.content);
      this.pending = null;
      if (sending.attachments.length) this.tray.sent(sending.key, sending.attachments);
      if (this.target && this.target.key === sending.key) {
        if (this.input.value === sending.body) this.setInput('');
        this.setError('');
      } else {
        this.drafts.delete(sending.key);
      }
      this.hooks.sent(ack.message, sending.type === 'sendPrivateMessage');
    } catch (e) {
      if (e instanceof RequestError && e.code === 'disconnected') {
        // Kept in `pending`, sent again by `retryPending` once reconnected.
        this.showErrorFor(sending.key, explain(e));
      } else {
        this.pending = null;
        this.showErrorFor(sending.key, explain(e, sending.body, sending.attachments.length > 0));
      }
    } finally {
      this.sending = false;
      this.renderSend();
    }
  }

  /**
   * Send waits for a send under way, and for the files being uploaded
   * (an edit sends no files, so it need not wait for them).
   */
  renderSend() {
    $('send-button').disabled = this.sending || (!this.editing && this.tray.busy());
  }

  /** The attach button, files dropped on the conversation, images pasted in the box. */
  bindFiles() {
    const input = $('file-input');
    $('attach-button').addEventListener('click', () => input.click());
    input.addEventListener('change', () => {
      this.attach(input.files);
      // The same file may be chosen again later.
      input.value = '';
    });
    const pane = $('conversation');
    // dragenter and dragleave come for every child crossed: counted.
    let over = 0;
    const carriesFiles = (e) => e.dataTransfer && [...e.dataTransfer.types].includes('Files');
    pane.addEventListener('dragenter', (e) => {
      if (!carriesFiles(e) || !this.target) return;
      e.preventDefault();
      over += 1;
      pane.classList.add('dropping');
    });
    pane.addEventListener('dragover', (e) => {
      if (!carriesFiles(e) || !this.target) return;
      e.preventDefault();
      e.dataTransfer.dropEffect = 'copy';
    });
    pane.addEventListener('dragleave', () => {
      over = Math.max(0, over - 1);
      if (over === 0) pane.classList.remove('dropping');
    });
    pane.addEventListener('drop', (e) => {
      over = 0;
      pane.classList.remove('dropping');
      if (!carriesFiles(e) || !this.target) return;
      e.preventDefault();
      this.attach(e.dataTransfer.files);
    });
    this.input.addEventListener('paste', (e) => {
      const files = e.clipboardData ? [...e.clipboardData.files] : [];
      if (files.length === 0) return;
      // An image copied from a page or a screenshot: the file is the
      // image, any text with it (its address, say) is not wanted.
      e.preventDefault();
      this.attach(files.map((f) => (f.name && f.name !== 'image.png' ? f : renamed(f))));
    });
  }

  /** Queues `files` to go with the next message in the open conversation. */
  attach(files) {
    if (!this.target || files.length === 0) return;
    this.setError(this.tray.add(files));
    this.input.focus();
  }

  /** Sends again what was being sent when the connection dropped. */
  retryPending() {
    if (this.pending) this.send();
  }

  showErrorFor(key, text) {
    if (this.target && this.target.key === key) {
      this.setError(text);
      this.input.focus();
    }
  }

  /** Puts `text` in the message box. */
  setInput(text) {
    this.input.value = text;
    this.renderCount();
  }

  /** Shows the length of the text near and over the limit, as the server counts it. */
  renderCount() {
    const count = $('char-count');
    // Only a long text can be near the limit; most are counted no further.
    const n = this.input.value.length < COUNT_FROM_CHARS ? 0 : [...this.input.value].length;
    count.hidden = n < COUNT_FROM_CHARS;
    count.classList.toggle('over', n > MAX_BODY_CHARS);
    count.textContent = count.hidden ? '' : `${n} / ${MAX_BODY_CHARS}`;
  }

  setError(text) {
    const box = $('send-error');
    box.textContent = text;
    box.hidden = text === '';
  }

  startEditing(m) {
    if (!this.editing) this.drafts.set(`edit:${this.target.key}`, this.input.value);
    this.editing = { conversationId: m.conversationId, messageId: m.id };
    $('editing').hidden = false;
    $('composer').classList.add('is-editing');
    this.renderSend();
    $('send-button').textContent = 'Save';
    this.setInput(m.body);
    this.setError('');
    this.input.focus();
  }

  stopEditing() {
    if (!this.editing) return;
    this.editing = null;
    $('editing').hidden = true;
    $('composer').classList.remove('is-editing');
    this.renderSend();
    $('send-button').textContent = 'Send';
    this.setInput(this.drafts.get(`edit:${this.target.key}`) || '');
    this.setError('');
  }

  async saveEdit() {
    const editing = this.editing;
    const body = this.input.value;
    try {
      const ack = await this.conn.request('editMessage', { ...editing, body });
      this.hooks.updated(ack.message);
      if (this.editing === editing) this.stopEditing();
    } catch (e) {
      this.setError(e.code === 'disconnected'
        ? 'Not connected. Save again once the connection is back.'
        : explain(e, body));
    }
  }

  confirmDelete(button, m) {
    // Deleting is for good, so it takes a second press of the same button.
    if (button.dataset.armed !== 'true') {
      button.dataset.armed = 'true';
      button.textContent = 'Delete for everyone?';
      button.classList.add('armed');
      return;
    }
    this.conn
      .request('deleteMessage', { conversationId: m.conversationId, messageId: m.id })
      .then((ack) => this.hooks.updated(ack.message))
      .catch((e) => this.setError(explain(e)));
  }
}

/** A pasted image under a name that says when it was pasted. */
function renamed(file) {
  const stamp = new Date().toISOString().slice(0, 19).replace('T', ' ').replace(/:/g, '.');
  const extension = (file.type.split('/')[1] || 'png').replace('jpeg', 'jpg');
  return new File([file], `Pasted image ${stamp}.${extension}`, { type: file.type });
}

function resetDelete(button) {
  button.dataset.armed = 'false';
  button.textContent = 'Delete';
  button.classList.remove('armed');
}
