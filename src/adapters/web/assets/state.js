// What the client knows: conversations, the messages loaded so far, who is
// online, who is typing, what others have read. Messages are kept by
// (conversationId, seq), so whatever way one arrives (ack, event, history
// after a reconnect) it is shown once.

/** The loaded messages of one conversation. */
export class MessageLog {
  constructor() {
    this.bySeq = new Map();
    // Holds the newest messages (the newest page was fetched).
    this.loaded = false;
    // The newest page is being fetched.
    this.loading = false;
    this.hasOlder = false;
    this.loadingOlder = false;
  }

  /** Adds or replaces messages; returns those not seen before. */
  put(messages) {
    const added = [];
    for (const m of messages) {
      const known = this.bySeq.get(m.seq);
      if (!known) added.push(m);
      // An edit or a delete is newer than what we hold; a late copy of the
      // original is not.
      if (!known || newer(m, known)) this.bySeq.set(m.seq, m);
    }
    return added;
  }

  /** Messages oldest first. */
  sorted() {
    return [...this.bySeq.values()].sort((a, b) => a.seq - b.seq);
  }

  /** The lowest and highest seq held (0 when none). */
  get oldestSeq() {
    let low = 0;
    for (const seq of this.bySeq.keys()) if (low === 0 || seq < low) low = seq;
    return low;
  }

  get newestSeq() {
    let high = 0;
    for (const seq of this.bySeq.keys()) if (seq > high) high = seq;
    return high;
  }
}

function newer(incoming, known) {
  if (incoming.deleted !== known.deleted) return incoming.deleted;
  return (incoming.editedAt || '') > (known.editedAt || '');
}

/** Everything the client holds for one signed-in user. */
export class State {
  constructor(me) {
    this.me = me;
    this.conversations = new Map();
    this.logs = new Map();
    this.presence = new Map();
    // conversationId -> Map(userId -> timer) of people typing now.
    this.typing = new Map();
    // conversationId -> highest seq another member has read.
    this.seenByOthers = new Map();
    this.openId = null;
    // Whether the user has looked at the open conversation (Chat.show).
    this.openLookedAt = true;
  }

  /** The message log of a conversation (created empty on first use). */
  log(conversationId) {
    let log = this.logs.get(conversationId);
    if (!log) {
      log = new MessageLog();
      this.logs.set(conversationId, log);
    }
    return log;
  }

  /** Replaces the conversation list with the server's; returns ids that were dropped. */
  setConversations(list) {
    const dropped = new Set(this.conversations.keys());
    for (const c of list) {
      dropped.delete(c.id);
      this.putConversation(c);
    }
    for (const id of dropped) this.conversations.delete(id);
    return [...dropped];
  }

  /** Adds or updates one conversation from the server. */
  putConversation(c) {
    const known = this.conversations.get(c.id);
    const merged = { ...known, ...c };
    // Never let an older answer move counters backwards.
    if (known) {
      merged.lastSeq = Math.max(known.lastSeq, c.lastSeq);
      merged.lastReadSeq = Math.max(known.lastReadSeq, c.lastReadSeq);
      if (known.lastMessage && (!c.lastMessage || c.lastMessage.seq < known.lastMessage.seq)) {
        merged.lastMessage = known.lastMessage;
      }
    }
    this.conversations.set(c.id, merged);
    return merged;
  }

  /** Notes a message in its conversation's summary (last message, lastSeq). */
  noteMessage(m) {
    const c = this.conversations.get(m.conversationId);
    if (!c) return;
    if (m.seq >= c.lastSeq) {
      c.lastSeq = m.seq;
      c.lastMessage = m;
      c.activeAt = Date.now();
    } else if (c.lastMessage && c.lastMessage.seq === m.seq) {
      c.lastMessage = m;
    }
  }

  /** Unread messages of a conversation. */
  unread(c) {
    return Math.max(0, c.lastSeq - c.lastReadSeq);
  }

  /** The other member of a direct conversation (the user themself when alone). */
  peer(c) {
    if (c.kind !== 'direct') return null;
    return c.members.find((u) => u.id !== this.me.id) || c.members[0] || null;
  }

  /** The direct conversation with `userId`, if there is one. */
  directWith(userId) {
    for (const c of this.conversations.values()) {
      if (c.kind !== 'direct') continue;
      const peer = this.peer(c);
      if (peer && peer.id === userId) return c;
    }
    return null;
  }

  /** A conversation's title: the room name or the peer's name. */
  title(c) {
    if (c.kind === 'room') return c.name;
    const peer = this.peer(c);
    if (!peer) return 'Direct conversation';
    return peer.id === this.me.id ? `${peer.username} (you)` : peer.username;
  }

  /** Conversations, most recently active first. */
  ordered() {
    return [...this.conversations.values()].sort((a, b) => activity(b) - activity(a));
  }

  /** A member's name, when the conversation lists them. */
  nameOf(conversationId, userId) {
    const c = this.conversations.get(conversationId);
    const u = c && c.members.find((m) => m.id === userId);
    if (u) return u.username;
    const p = this.presence.get(userId);
    return p ? p.username : 'Someone';
  }
}

function activity(c) {
  if (c.activeAt) return c.activeAt;
  return c.lastMessage ? Date.parse(c.lastMessage.createdAt) : 0;
}
