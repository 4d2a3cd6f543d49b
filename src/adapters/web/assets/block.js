// Blocking from a direct conversation's header: a Block / Unblock button
// that speaks `getBlocked`, `blockUser` and `unblockUser`. A blocked user
// can no longer write to the person who blocked them, nor see them online.

import { $ } from './dom.js';

/** The header's Block / Unblock button. */
export class BlockButton {
  /** `onError(text)` shows why a click did not work. */
  constructor(conn, onError) {
    this.conn = conn;
    this.onError = onError;
    this.button = $('block-button');
    // Ids of the users blocked; null until fetched.
    this.blocked = null;
    this.peer = null;
    this.button.addEventListener('click', () => this.toggle());
  }

  /** Shows the button for `peer` (a direct conversation's other user), or hides it. */
  show(peer) {
    this.peer = peer;
    this.button.hidden = !peer;
    if (!peer) return;
    if (this.blocked === null) {
      this.button.hidden = true;
      this.load();
      return;
    }
    const blocked = this.blocked.has(peer.id);
    this.button.textContent = blocked ? 'Unblock' : 'Block';
    this.button.setAttribute('aria-pressed', String(blocked));
    this.button.title = blocked
      ? `Let ${peer.username} write to you and see when you are online again`
      : `Stop ${peer.username} writing to you or seeing when you are online`;
  }

  /** Fetches the blocked list, once. */
  async load() {
    if (this.loading) return;
    this.loading = true;
    try {
      const { users } = await this.conn.request('getBlocked');
      this.blocked = new Set(users.map((u) => u.id));
    } catch {
      // Stays hidden; the next `show` asks again.
    } finally {
      this.loading = false;
    }
    if (this.blocked !== null) this.show(this.peer);
  }

  async toggle() {
    const peer = this.peer;
    if (!peer || this.blocked === null) return;
    const blocking = !this.blocked.has(peer.id);
    this.button.disabled = true;
    try {
      await this.conn.request(blocking ? 'blockUser' : 'unblockUser', { userId: peer.id });
      if (blocking) this.blocked.add(peer.id);
      else this.blocked.delete(peer.id);
    } catch (e) {
      this.onError(e.message || 'That did not work. Try again.');
    } finally {
      this.button.disabled = false;
    }
    if (this.peer === peer) this.show(peer);
  }
}
