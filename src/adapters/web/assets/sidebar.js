// The sidebar: the conversation list with presence, unread badges and last
// messages, and the results of the search box.

import { $, clear, el, initial, shortTime } from './dom.js';

/** The status shown for a user: online, away or offline. */
export function statusOf(state, userId) {
  const p = state.presence.get(userId);
  return p ? p.status : 'offline';
}

function dot(status) {
  return el(
    'span',
    { class: `dot ${status}`, title: status },
    el('span', { class: 'visually-hidden', text: ` (${status})` }),
  );
}

function avatar(name, status, isRoom) {
  return el(
    'span',
    { class: `avatar${isRoom ? ' room' : ''}`, 'aria-hidden': isRoom ? 'true' : undefined },
    el('span', { 'aria-hidden': 'true', text: isRoom ? '#' : initial(name) }),
    status ? dot(status) : null,
  );
}

/**
 * The line under a conversation's title. The message takes its direction
 * from its own text (a right-to-left one is laid out so), apart from the
 * sender's name before it.
 */
function preview(state, c) {
  const m = c.lastMessage;
  if (!m) {
    const text = c.kind === 'room' ? `${c.memberCount} member${c.memberCount === 1 ? '' : 's'}` : 'No messages yet';
    return el('span', { class: 'conversation-last', text });
  }
  const who = m.senderId === state.me.id ? 'You' : m.sender;
  const text = m.deleted ? 'message deleted' : (m.body || filesSummary(m.attachments));
  if (c.kind === 'room' || m.senderId === state.me.id) {
    return el('span', { class: 'conversation-last' }, `${who}: `, el('bdi', { text }));
  }
  return el('span', { class: 'conversation-last', dir: 'auto', text });
}

/** What stands for a message of files alone: their name, or how many. */
function filesSummary(files) {
  if (!files || files.length === 0) return '';
  return files.length === 1 ? `📎 ${files[0].name}` : `📎 ${files.length} files`;
}

/** Draws the conversation list and the search results. */
export class Sidebar {
  /** `actions`: `open(id)`, `openDirect(user)`, `joinRoom(room)`. */
  constructor(state, actions) {
    this.state = state;
    this.actions = actions;
    this.list = $('conversations');
    // conversationId -> its list item.
    this.items = new Map();
  }

  /**
   * Redraws the conversation list. Each conversation keeps its button for
   * life, updated in place, so a click or the keyboard focus is never lost
   * to a redraw (they come with every message and presence change).
   */
  render() {
    const ordered = this.state.ordered();
    const keep = new Set(ordered.map((c) => c.id));
    for (const [id, item] of this.items) {
      if (!keep.has(id)) {
        item.remove();
        this.items.delete(id);
      }
    }
    let cursor = this.list.firstElementChild;
    for (const c of ordered) {
      let item = this.items.get(c.id);
      if (!item) {
        item = el('li', {}, el('button', {
          type: 'button',
          dataset: { conversationId: c.id },
          onclick: () => this.actions.open(c.id),
        }));
        this.items.set(c.id, item);
      }
      this.fill(item.firstElementChild, c);
      if (item !== cursor) this.list.insertBefore(item, cursor);
      else cursor = cursor.nextElementSibling;
    }
    $('no-conversations').hidden = ordered.length > 0;
    // The tab's title tells of unread messages while one looks elsewhere.
    const unread = ordered.reduce((sum, c) => sum + this.state.unread(c), 0);
    document.title = unread ? `(${unread}) confab` : 'confab';
  }

  fill(button, c) {
    const { state } = this;
    const title = state.title(c);
    const peer = state.peer(c);
    const open = c.id === state.openId;
    // The open conversation counts as read once the user has looked at it.
    const unread = open && state.openLookedAt ? 0 : state.unread(c);
    button.className = `conversation${open ? ' active' : ''}${unread ? ' has-unread' : ''}`;
    if (open) button.setAttribute('aria-current', 'true');
    else button.removeAttribute('aria-current');
    button.replaceChildren(
      avatar(title, peer ? statusOf(state, peer.id) : null, c.kind === 'room'),
      el(
        'span',
        { class: 'conversation-main' },
        el(
          'span',
          { class: 'conversation-title' },
          el('span', { class: 'title-text', text: title }),
          c.kind === 'room' && c.visibility === 'private'
            ? el('span', { class: 'tag', text: 'private' }) : null,
        ),
        preview(state, c),
      ),
      el(
        'span',
        { class: 'conversation-side' },
        el('time', { text: c.lastMessage ? shortTime(c.lastMessage.createdAt) : '' }),
        unread
          ? el('span', { class: 'badge', 'aria-label': `${unread} unread`, text: String(unread) })
          : null,
      ),
    );
  }

  /** Shows search results: people (to talk to) and rooms (to open or join). */
  showResults(people, rooms) {
    const peopleList = $('people-results');
    const roomList = $('room-results');
    clear(peopleList);
    clear(roomList);
    for (const u of people) {
      const status = statusOf(this.state, u.id) !== 'offline' ? statusOf(this.state, u.id)
        : (u.online ? 'online' : 'offline');
      const label = u.id === this.state.me.id ? `${u.username} (you)` : u.username;
      peopleList.append(el('li', {}, el(
        'button',
        { type: 'button', class: 'result', dataset: { userId: u.id }, onclick: () => this.actions.openDirect(u) },
        avatar(u.username, status, false),
        el('span', { class: 'result-name', text: label }),
        el('span', { class: 'result-action', text: 'Message' }),
      )));
    }
    for (const r of rooms) {
      const member = this.state.conversations.has(r.id);
      roomList.append(el('li', {}, el(
        'button',
        {
          type: 'button',
          class: 'result',
          dataset: { roomId: r.id },
          onclick: () => (member ? this.actions.open(r.id) : this.actions.joinRoom(r)),
        },
        avatar(r.name, null, true),
        el('span', { class: 'result-name', text: r.name }),
        el('span', { class: 'result-action', text: member ? 'Open' : 'Join' }),
      )));
    }
    $('people-none').hidden = people.length > 0;
    $('rooms-none').hidden = rooms.length > 0;
    $('search-results').hidden = false;
  }

  /** Hides the search results. */
  hideResults() {
    $('search-results').hidden = true;
  }
}
