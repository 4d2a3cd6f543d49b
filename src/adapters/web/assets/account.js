// The account dialog: the devices signed in to the account, each of which
// can be logged out from here, logging out everywhere, and changing the
// password. A device is one login (this browser, a phone's app); it may
// have several connections open (tabs), and logging it out closes them all.

import * as api from './api.js';
import { $, el, longTime, shortTime } from './dom.js';

/** What a failed HTTP call means to the user. */
export function problem(error) {
  if (error.code === 'rate_limited') return 'Too many attempts. Wait a moment and try again.';
  return error.message || 'That did not work. Try again.';
}

/** The Account button and its dialog. */
export class AccountPanel {
  /**
   * `tokens` makes the HTTP calls; hooks `logOut()` and `logOutEverywhere()`
   * end with the login screen, or reject when the server did not do it.
   */
  constructor(tokens, hooks) {
    this.tokens = tokens;
    this.hooks = hooks;
    this.dialog = $('account');
    // Answers to an older load are dropped.
    this.loads = 0;
    $('account-button').addEventListener('click', () => this.open());
    $('account-close').addEventListener('click', () => this.dialog.close());
    $('logout-all').addEventListener('click', () => this.leave(() => this.hooks.logOutEverywhere()));
    $('password-form').addEventListener('submit', (e) => {
      e.preventDefault();
      this.changePassword();
    });
  }

  open() {
    $('current-password').value = '';
    $('new-password').value = '';
    this.say('');
    $('devices').replaceChildren();
    this.dialog.showModal();
    this.load();
  }

  /** Lists the devices afresh. */
  async load() {
    const load = ++this.loads;
    const status = $('devices-status');
    status.textContent = 'Loading…';
    try {
      const sessions = await this.tokens.authed((token) => api.sessions(token));
      if (load !== this.loads) return;
      $('devices').replaceChildren(...sessions.map((s) => this.row(s)));
      status.textContent = '';
    } catch (e) {
      if (load === this.loads) status.textContent = problem(e);
    }
  }

  row(device) {
    const where = device.lastAddress ? ` from ${device.lastAddress}` : '';
    const button = el('button', {
      type: 'button',
      class: 'small',
      text: 'Log out',
      'aria-label': device.current ? 'Log out this device' : `Log out ${device.name}`,
      onclick: () => (device.current ? this.leave(() => this.hooks.logOut()) : this.end(device, button)),
    });
    return el('li', { class: device.current ? 'device current' : 'device', dataset: { sessionId: device.id } },
      el('div', { class: 'device-main' },
        el('span', { class: 'device-title' },
          el('span', { class: 'device-name', text: device.name }),
          device.current ? el('span', { class: 'tag', text: 'This device' }) : null),
        el('span', {
          class: 'device-seen',
          title: `Signed in ${longTime(device.createdAt)}`,
          text: `Last active ${shortTime(device.lastUsedAt)}${where}`,
        })),
      button);
  }

  /** Logs another device out: its connections close at once. */
  async end(device, button) {
    button.disabled = true;
    try {
      await this.tokens.authed((token) => api.endSession(token, device.id));
    } catch (e) {
      // 404: it had ended already, which is what was asked.
      if (e.status !== 404) {
        $('devices-status').textContent = problem(e);
        button.disabled = false;
        return;
      }
    }
    this.load();
  }

  async leave(logOut) {
    $('devices-status').textContent = '';
    try {
      await logOut();
    } catch (e) {
      $('devices-status').textContent = problem(e);
    }
  }

  async changePassword() {
    const current = $('current-password');
    const next = $('new-password');
    const button = $('password-submit');
    this.say('');
    button.disabled = true;
    try {
      await this.tokens.authed((token) => api.changePassword(token, current.value, next.value));
      current.value = '';
      next.value = '';
      this.say('Password changed. Every other device was logged out.', true);
      this.load();
    } catch (e) {
      if (e.status === 403) {
        this.say('Your current password is wrong.');
        current.focus();
      } else if (e.status === 400) {
        this.say(`The new password cannot be used: ${e.message}`);
        next.focus();
      } else {
        this.say(problem(e));
      }
    } finally {
      button.disabled = false;
    }
  }

  /** Shows a problem (or, `done`, a success) under the password form. */
  say(text, done = false) {
    const box = $('password-message');
    box.textContent = text;
    box.className = done ? 'done' : 'form-error';
  }
}
