// confab's web client: signs in over HTTP, then lives on one WebSocket.
// Everything it does goes through the public contract (docs/protocol.md).

import { AccountPanel, problem } from './account.js';
import * as api from './api.js';
import { Chat, explain } from './chat.js';
import { Connection } from './connection.js';
import { $, el, initial } from './dom.js';
import { Sidebar } from './sidebar.js';
import { State } from './state.js';
import { Tokens, refresh } from './tokens.js';

// Where versions before cookie mode kept the token; removed on sight.
const OLD_SESSION_KEY = 'confab.session';
// Why the user was signed out, for the login screen after the reload. No
// token is ever kept in storage: only this sentence.
const NOTICE_KEY = 'confab.notice';
const EXPIRED = 'Your session has expired. Log in again.';
const REVOKED = 'This device was logged out. Log in again.';
const RESTORE_RETRY_MS = 5000;
const TYPING_SHOWN_MS = 8000;
const AWAY_AFTER_HIDDEN_MS = 60000;
const SEARCH_DELAY_MS = 200;
const PHONE = window.matchMedia('(max-width: 720px)');

// The app has been started (by a restored session or by the form).
let started = false;

/** Starts over at the login screen, saying why. */
function signOut(notice) {
  // Set even when empty: the next page goes straight to the login screen
  // rather than trying to restore a session that has just ended.
  sessionStorage.setItem(NOTICE_KEY, notice || '');
  // A fresh page drops every socket, timer and message the old user had,
  // and the access token with them.
  location.reload();
}

// ------------------------------------------------------------ signing in

function showAuth(notice) {
  $('app').hidden = true;
  $('auth').hidden = false;
  setAuthMessage(notice);
  $('username').focus();
}

function bindAuthForm() {
  $('auth-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const creating = e.submitter && e.submitter.id === 'register-button';
    const username = $('username').value.trim();
    const password = $('password').value;
    setAuthMessage('');
    for (const b of document.querySelectorAll('#auth-form button')) b.disabled = true;
    try {
      const signed = creating
        ? await api.register(username, password)
        : await api.login(username, password);
      $('password').value = '';
      if (started) return;
      $('auth').hidden = true;
      startApp(signed);
    } catch (error) {
      setAuthMessage(authProblem(error, creating));
      $(error.code === 'conflict' ? 'username' : 'password').focus();
    } finally {
      for (const b of document.querySelectorAll('#auth-form button')) b.disabled = false;
    }
  });
}

function authProblem(error, creating) {
  if (error.code === 'conflict') return 'That name is taken. Choose another.';
  if (error.code === 'unauthorized') return 'Wrong username or password.';
  if (error.code === 'rate_limited') return 'Too many attempts. Wait a moment and try again.';
  if (error.code === 'bad_request' && creating) return error.message;
  return error.message || 'That did not work. Try again.';
}

function setAuthMessage(text) {
  const box = $('auth-message');
  box.textContent = text;
  box.hidden = text === '';
}

// ------------------------------------------------------------ the app

function startApp(signed) {
  started = true;
  const state = new State(signed.user);
  let chat = null;
  let sidebar = null;
  // Set by bindInvite, called from the conversation header.
  let openInvite = () => {};
  // The user is logging this device out: the 4003 that closes this tab's
  // connection meanwhile is no news to them.
  let leaving = false;

  $('me-name').textContent = signed.user.username;
  $('me-avatar').textContent = initial(signed.user.username);
  $('app').hidden = false;

  const tokens = new Tokens(signed, {
    renewed: (token) => conn.setToken(token),
    ended: () => {
      conn.stop();
      if (!leaving) signOut(EXPIRED);
    },
  });

  $('logout').addEventListener('click', async () => {
    $('me-error').textContent = '';
    try {
      await logOut(false);
    } catch (e) {
      $('me-error').textContent = problem(e);
    }
  });

  const conn = new Connection(tokens.token, {
    onState(s) {
      const bar = $('connection-status');
      bar.hidden = s === 'open';
      bar.textContent = s === 'reconnecting' ? 'Connection lost. Reconnecting…' : 'Connecting…';
      document.body.classList.toggle('offline', s !== 'open');
    },
    onOpen: (welcome, isReconnect) => sync(welcome, isReconnect),
    onEvent: (type, content) => onEvent(type, content),
    onRevoked: () => {
      tokens.stop();
      if (!leaving) signOut(REVOKED);
    },
    async checkToken() {
      try {
        await api.me(tokens.token);
        return true;
      } catch (e) {
        return e.status !== 401;
      }
    },
    renewToken: () => tokens.renew(),
  });

  /**
   * Logs this device out (or every device): then the login screen. Throws
   * when the server did not do it, and the user stays signed in.
   */
  async function logOut(everywhere) {
    leaving = true;
    try {
      await tokens.authed((token) => (everywhere ? api.logoutAll(token) : api.logout(token)));
    } catch (e) {
      // A 401 even after renewing: this device was logged out already.
      if (e.status !== 401) {
        leaving = false;
        throw e;
      }
    }
    tokens.stop();
    conn.stop();
    signOut('');
  }

  new AccountPanel(tokens, {
    logOut: () => logOut(false),
    logOutEverywhere: () => logOut(true),
  });

  sidebar = new Sidebar(state, {
    open: (id) => openConversation(id),
    openDirect: (user) => openDirect(user),
    joinRoom: (room) => joinRoom(room),
  });
  chat = new Chat(state, conn, {
    markRead,
    sent: async (message, viaDirect) => {
      const log = state.log(message.conversationId);
      if (log.loaded || log.loading) log.put([message]);
      state.noteMessage(message);
      if (viaDirect && !chat.isOpen(message.conversationId)) {
        // The first message to someone: the conversation exists now (or
        // the other side had just started it), so open it in the draft's place.
        const to = chat.target && chat.target.to;
        if (!state.conversations.has(message.conversationId)) await refreshConversations().catch(() => {});
        const direct = to && state.directWith(to);
        if (direct && direct.id === message.conversationId && chat.target && chat.target.to === to) {
          openConversation(direct.id);
        }
        sidebar.render();
        return;
      }
      chat.messagesArrived(message.conversationId, true);
      sidebar.render();
    },
    updated: (message) => {
      state.log(message.conversationId).put([message]);
      state.noteMessage(message);
      chat.messagesArrived(message.conversationId, false);
      sidebar.render();
    },
    invite: (c) => openInvite(c),
    leave: (c) => leaveRoom(c),
    back: () => showList(),
  }, tokens);

  bindSearch();
  bindNewRoom();
  bindInvite();
  bindPresence();
  conn.start();

  // ---------------------------------------------------------- sync

  /** On every (re)connection: the conversation list, what was missed, presence. */
  async function sync(welcome, isReconnect, attempt = 0) {
    state.me = welcome.user;
    try {
      await refreshConversations();
      // Catch up every conversation already on screen once: from the last
      // seq held, until the server says there is no more. The others start
      // afresh when opened.
      for (const [conversationId, log] of state.logs) {
        if (!log.loaded || !state.conversations.has(conversationId)) {
          state.logs.delete(conversationId);
          continue;
        }
        let after = log.newestSeq;
        for (;;) {
          const page = await conn.request('getHistory', { conversationId, afterSeq: after, limit: 200 });
          log.put(page.messages);
          for (const m of page.messages) state.noteMessage(m);
          if (!page.hasMore || page.messages.length === 0) break;
          after = page.messages[page.messages.length - 1].seq;
        }
        chat.messagesArrived(conversationId, false);
      }
      // The open conversation may never have loaded (the connection was
      // down when it was opened).
      if (chat.target && chat.target.id && !state.logs.has(chat.target.id)) {
        chat.show(chat.target.id, { lookedAt: chat.target.lookedAt });
      }
      // Edits and deletes made meanwhile have no seq of their own; the
      // newest page of the open conversation brings the ones in view.
      const open = chat.conversation();
      if (isReconnect && open && state.log(open.id).loaded) {
        const page = await conn.request('getHistory', { conversationId: open.id, limit: 50 });
        state.log(open.id).put(page.messages);
        chat.messagesArrived(open.id, false);
      }
      chat.retryPending();
      sidebar.render();
      chat.renderHeader();
      if (!chat.target) pickInitial();
      document.body.dataset.ready = 'true';
    } catch (e) {
      // The connection dropped mid-way: the next welcome starts over.
      if (e.code !== 'disconnected' && attempt < 3) setTimeout(() => sync(welcome, isReconnect, attempt + 1), 1000);
    }
  }

  // One getConversations at a time: a burst of messages in a conversation
  // new to us asks for the list once (and once more if asked meanwhile).
  let refreshing = null;
  let refreshAgain = false;
  function refreshConversations() {
    if (refreshing) {
      refreshAgain = true;
      return refreshing;
    }
    refreshing = (async () => {
      try {
        do {
          refreshAgain = false;
          await fetchConversations();
        } while (refreshAgain);
      } finally {
        refreshing = null;
      }
    })();
    return refreshing;
  }

  async function fetchConversations() {
    // A long list comes in pages (docs/protocol.md); a conversation that
    // moved meanwhile may come twice, and the first, newer copy wins.
    const byId = new Map();
    let cursor = null;
    do {
      const page = await conn.request('getConversations', cursor ? { cursor } : {});
      for (const c of page.conversations) if (!byId.has(c.id)) byId.set(c.id, c);
      cursor = page.hasMore ? page.nextCursor : null;
    } while (cursor);
    const dropped = state.setConversations([...byId.values()]);
    for (const id of dropped) {
      state.logs.delete(id);
      if (chat.isOpen(id)) chat.close();
    }
    sidebar.render();
    // New peers were online or not before we shared a conversation, and
    // presence events only tell of changes from now on.
    await refreshPresence();
    sidebar.render();
    chat.renderHeader();
  }

  async function refreshPresence() {
    const ids = new Set();
    for (const c of state.conversations.values()) {
      const peer = state.peer(c);
      if (peer) ids.add(peer.id);
    }
    if (ids.size === 0) return;
    const { presence } = await conn.request('getPresence', { userIds: [...ids].slice(0, 1000) });
    for (const p of presence) state.presence.set(p.userId, p);
  }

  function pickInitial() {
    // On a wide screen, start where the user most likely left off; it is
    // marked read once they look at it (Chat.show).
    if (PHONE.matches) return;
    const first = state.ordered()[0];
    if (first) openConversation(first.id, { focus: false, lookedAt: false });
  }

  // ---------------------------------------------------------- events

  function onEvent(type, content) {
    if (type === 'message' || type === 'messageUpdated') {
      const m = content.message;
      if (!state.conversations.has(m.conversationId)) {
        // A conversation new to us (someone wrote first, or another device
        // joined a room): the list has the rest.
        refreshConversations().catch(() => {});
        return;
      }
      // Only a log that holds the newest messages may take new ones: any
      // other starts with the newest page when opened, and must not get a
      // gap between what it holds and that page.
      const log = state.log(m.conversationId);
      if (log.loaded || log.loading) log.put([m]);
      state.noteMessage(m);
      if (type === 'message') stopShowingTyping(m.conversationId, m.senderId);
      chat.messagesArrived(m.conversationId, false);
      sidebar.render();
    } else if (type === 'receipt') {
      const c = state.conversations.get(content.conversationId);
      if (!c) return;
      if (content.userId === state.me.id) {
        c.lastReadSeq = Math.max(c.lastReadSeq, content.seq);
        sidebar.render();
      } else {
        const seen = state.seenByOthers.get(c.id) || 0;
        state.seenByOthers.set(c.id, Math.max(seen, content.seq));
        if (chat.isOpen(c.id)) chat.renderSeen();
      }
    } else if (type === 'typing') {
      if (content.userId === state.me.id) return;
      if (content.active) showTyping(content.conversationId, content.userId);
      else stopShowingTyping(content.conversationId, content.userId);
    } else if (type === 'member') {
      onMember(content);
    } else if (type === 'presence') {
      const p = content.presence;
      state.presence.set(p.userId, p);
      sidebar.render();
      chat.renderHeader();
    }
  }

  function onMember({ conversationId, user, action }) {
    const c = state.conversations.get(conversationId);
    if (!c) {
      if (action !== 'left') refreshConversations().catch(() => {});
      return;
    }
    if (action === 'left') {
      if (user.id === state.me.id) {
        state.conversations.delete(conversationId);
        state.logs.delete(conversationId);
        if (chat.isOpen(conversationId)) chat.close();
      } else {
        c.members = c.members.filter((u) => u.id !== user.id);
        c.memberCount = Math.max(0, c.memberCount - 1);
      }
    } else if (!c.members.some((u) => u.id === user.id)) {
      if (c.members.length < 100) c.members.push(user);
      c.memberCount += 1;
    }
    sidebar.render();
    chat.renderHeader();
  }

  function showTyping(conversationId, userId) {
    let who = state.typing.get(conversationId);
    if (!who) {
      who = new Map();
      state.typing.set(conversationId, who);
    }
    clearTimeout(who.get(userId));
    // A typist whose "stopped" never comes (a closed tab) fades out anyway.
    who.set(userId, setTimeout(() => stopShowingTyping(conversationId, userId), TYPING_SHOWN_MS));
    chat.renderTyping();
  }

  function stopShowingTyping(conversationId, userId) {
    const who = state.typing.get(conversationId);
    if (!who || !who.has(userId)) return;
    clearTimeout(who.get(userId));
    who.delete(userId);
    chat.renderTyping();
  }

  // ---------------------------------------------------------- actions

  function markRead(c) {
    if (!c || !chat.isLookedAt(c.id) || document.visibilityState !== 'visible' || !conn.isOpen) return;
    if (c.lastSeq <= c.lastReadSeq) return;
    const seq = c.lastSeq;
    conn
      .request('markRead', { conversationId: c.id, seq })
      .then((ack) => {
        c.lastReadSeq = Math.max(c.lastReadSeq, ack.seq);
        sidebar.render();
      })
      .catch(() => {});
  }

  function openConversation(id, { focus = true, lookedAt = true } = {}) {
    if (!state.conversations.has(id)) return;
    closeSearch();
    chat.show(id, { lookedAt });
    showChat();
    sidebar.render();
    if (!focus && !PHONE.matches) $('message-input').blur();
  }

  function openDirect(user) {
    const existing = state.directWith(user.id);
    if (existing) {
      openConversation(existing.id);
      return;
    }
    closeSearch();
    chat.showDraft(user);
    showChat();
    sidebar.render();
  }

  async function joinRoom(room) {
    try {
      const { conversation } = await conn.request('joinRoom', { conversationId: room.id });
      state.putConversation({ ...conversation, activeAt: Date.now() });
      openConversation(conversation.id);
    } catch (e) {
      $('search-status').textContent = explain(e);
    }
  }

  async function leaveRoom(c) {
    if (!c) return;
    try {
      await conn.request('leaveRoom', { conversationId: c.id });
      state.conversations.delete(c.id);
      state.logs.delete(c.id);
      chat.close();
      showList();
      sidebar.render();
    } catch (e) {
      chat.setError(explain(e));
    }
  }

  // On a phone the list and the conversation take turns on the screen.
  function showChat() {
    $('app').classList.add('show-chat');
  }

  function showList() {
    $('app').classList.remove('show-chat');
    const current = state.openId && document.querySelector(`[data-conversation-id="${CSS.escape(state.openId)}"]`);
    (current || $('search')).focus();
  }

  // ---------------------------------------------------------- search

  function bindSearch() {
    const box = $('search');
    let timer = null;
    let asked = 0;
    box.addEventListener('input', () => {
      clearTimeout(timer);
      const prefix = box.value.trim();
      if (prefix === '') {
        closeSearch();
        return;
      }
      timer = setTimeout(async () => {
        const ask = ++asked;
        $('search-status').textContent = '';
        try {
          const [people, rooms] = await Promise.all([
            tokens.authed((token) => api.findUsers(token, prefix)),
            conn.request('listRooms', { prefix, limit: 10 }).then((r) => r.rooms),
          ]);
          if (ask === asked && box.value.trim() === prefix) sidebar.showResults(people, rooms);
        } catch (e) {
          // A 401 that a renewal did not cure has signed the user out.
          if (e.status !== 401) $('search-status').textContent = explain(e);
        }
      }, SEARCH_DELAY_MS);
    });
    box.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') closeSearch();
    });
  }

  function closeSearch() {
    $('search').value = '';
    $('search-status').textContent = '';
    sidebar.hideResults();
  }

  // ---------------------------------------------------------- rooms

  function bindNewRoom() {
    const dialog = $('new-room');
    $('new-room-button').addEventListener('click', () => {
      $('room-name').value = '';
      $('room-public').checked = true;
      $('new-room-error').textContent = '';
      dialog.showModal();
      $('room-name').focus();
    });
    $('new-room-cancel').addEventListener('click', () => dialog.close());
    $('new-room-form').addEventListener('submit', async (e) => {
      e.preventDefault();
      const name = $('room-name').value.trim();
      const visibility = $('room-private').checked ? 'private' : 'public';
      try {
        const { conversation } = await conn.request('createRoom', { name, visibility });
        state.putConversation({ ...conversation, activeAt: Date.now() });
        dialog.close();
        openConversation(conversation.id);
      } catch (error) {
        $('new-room-error').textContent = explain(error);
      }
    });
  }

  function bindInvite() {
    const dialog = $('invite');
    const box = $('invite-search');
    const results = $('invite-results');
    let room = null;
    let timer = null;
    openInvite = (c) => {
      if (!c) return;
      room = c;
      box.value = '';
      results.replaceChildren();
      $('invite-status').textContent = '';
      $('invite-room').textContent = c.name;
      dialog.showModal();
      box.focus();
    };
    $('invite-close').addEventListener('click', () => dialog.close());
    box.addEventListener('input', () => {
      clearTimeout(timer);
      const prefix = box.value.trim();
      if (!prefix) {
        results.replaceChildren();
        return;
      }
      timer = setTimeout(async () => {
        try {
          const users = await tokens.authed((token) => api.findUsers(token, prefix));
          if (box.value.trim() !== prefix) return;
          results.replaceChildren(...users.map((u) => {
            const member = room.members.some((m) => m.id === u.id);
            return el('li', {}, el('button', {
              type: 'button',
              class: 'result',
              dataset: { userId: u.id },
              disabled: member,
              onclick: () => invite(u),
            },
            el('span', { class: 'result-name', text: u.username }),
            el('span', { class: 'result-action', text: member ? 'Member' : 'Invite' })));
          }));
        } catch (e) {
          $('invite-status').textContent = explain(e);
        }
      }, SEARCH_DELAY_MS);
    });

    async function invite(user) {
      try {
        const { conversation } = await conn.request('inviteToRoom', { conversationId: room.id, userId: user.id });
        room = state.putConversation(conversation);
        $('invite-status').textContent = `${user.username} is now in ${conversation.name}.`;
        box.value = '';
        results.replaceChildren();
        box.focus();
        chat.renderHeader();
      } catch (e) {
        $('invite-status').textContent = explain(e);
      }
    }
  }

  // ---------------------------------------------------------- presence

  function bindPresence() {
    let awayTimer = null;
    let away = false;
    document.addEventListener('visibilitychange', () => {
      clearTimeout(awayTimer);
      if (document.visibilityState === 'hidden') {
        awayTimer = setTimeout(() => {
          away = true;
          conn.request('setStatus', { status: 'away' }).catch(() => {});
        }, AWAY_AFTER_HIDDEN_MS);
        return;
      }
      if (away) {
        away = false;
        conn.request('setStatus', { status: 'online' }).catch(() => {});
      }
      markRead(chat.conversation());
    });
  }

}

// ------------------------------------------------------------ start

function boot() {
  sessionStorage.removeItem(OLD_SESSION_KEY);
  bindAuthForm();
  const notice = sessionStorage.getItem(NOTICE_KEY);
  sessionStorage.removeItem(NOTICE_KEY);
  if (notice !== null) {
    showAuth(notice);
    return;
  }
  restore();
}

/**
 * Picks up this device's session from the refresh cookie: the app when
 * there is one, the login screen when there is none. While the server
 * does not answer, the login screen says so and the cookie is tried
 * again, until it answers or the user logs in.
 */
async function restore() {
  try {
    const signed = await refresh();
    if (started) return;
    $('auth').hidden = true;
    startApp(signed);
  } catch (e) {
    if (started) return;
    // Unreachable, busy or failing: ask again. Any other refusal (401, no
    // session) is an answer.
    const again = e.status === 0 || e.status === 429 || e.status >= 500;
    const message = again ? `${problem(e)} Trying again…` : '';
    // Shown once: a retry must not move the focus from what the user types.
    if ($('auth').hidden) showAuth(message);
    else setAuthMessage(message);
    if (again) setTimeout(restore, RESTORE_RETRY_MS);
  }
}

boot();
