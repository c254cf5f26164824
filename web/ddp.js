// comet's own DDP client for its pages: one WebSocket to /websocket, method calls,
// subscriptions with a local copy of their documents, stream events, and reconnection with
// a resume login. Shared by the chat page and the operator's page.
'use strict';

(function () {
  const ID_CHARS = '23456789ABCDEFGHJKLMNPQRSTWXYZabcdefghijkmnopqrstuvwxyz';

  function randomId(n = 17) {
    const bytes = new Uint8Array(n);
    crypto.getRandomValues(bytes);
    let out = '';
    for (const b of bytes) out += ID_CHARS[b % ID_CHARS.length];
    return out;
  }

  // SHA-256 of a UTF-8 string, hex: Meteor's password digest. Written out rather than
  // taken from crypto.subtle, which pages served over plain http on a LAN address lack.
  const K = new Uint32Array([
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
  ]);

  function sha256Hex(text) {
    const data = new TextEncoder().encode(text);
    const bitLength = data.length * 8;
    const padded = new Uint8Array(((data.length + 9 + 63) >> 6) << 6);
    padded.set(data);
    padded[data.length] = 0x80;
    const view = new DataView(padded.buffer);
    view.setUint32(padded.length - 4, bitLength >>> 0);
    view.setUint32(padded.length - 8, Math.floor(bitLength / 0x100000000));
    const h = new Uint32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
    const w = new Uint32Array(64);
    const rotr = (x, n) => (x >>> n) | (x << (32 - n));
    for (let off = 0; off < padded.length; off += 64) {
      for (let i = 0; i < 16; i++) w[i] = view.getUint32(off + i * 4);
      for (let i = 16; i < 64; i++) {
        const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3);
        const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10);
        w[i] = (w[i - 16] + s0 + w[i - 7] + s1) >>> 0;
      }
      let [a, b, c, d, e, f, g, hh] = h;
      for (let i = 0; i < 64; i++) {
        const t1 = (hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i]) >>> 0;
        const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) >>> 0;
        hh = g; g = f; f = e; e = (d + t1) >>> 0; d = c; c = b; b = a; a = (t1 + t2) >>> 0;
      }
      h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
    }
    return Array.from(h, (x) => x.toString(16).padStart(8, '0')).join('');
  }

  // EJSON: dates in and out; everything else the pages send is plain JSON.
  function fromEjson(v) {
    if (Array.isArray(v)) return v.map(fromEjson);
    if (v && typeof v === 'object') {
      if (typeof v.$date === 'number' && Object.keys(v).length === 1) return new Date(v.$date);
      const out = {};
      for (const [k, x] of Object.entries(v)) out[k] = fromEjson(x);
      return out;
    }
    return v;
  }

  function toEjson(v) {
    if (v instanceof Date) return { $date: v.getTime() };
    if (Array.isArray(v)) return v.map(toEjson);
    if (v && typeof v === 'object') {
      const out = {};
      for (const [k, x] of Object.entries(v)) out[k] = toEjson(x);
      return out;
    }
    return v;
  }

  class DdpError extends Error {
    constructor(e) {
      super((e && (e.reason || e.message || e.error)) || 'error');
      this.error = e && e.error;
      this.reason = e && e.reason;
    }
  }

  /** A DDP connection that reconnects by itself. Status: connecting, connected, offline. */
  class Ddp {
    constructor(url) {
      this.url = url;
      this.status = 'connecting';
      this.calls = new Map();
      this.subs = new Map();
      this.collections = new Map();
      this.listeners = new Map();
      this.retries = 0;
      this.resumeToken = null;
      this.userId = null;
      this.open();
    }

    on(event, fn) {
      if (!this.listeners.has(event)) this.listeners.set(event, new Set());
      this.listeners.get(event).add(fn);
      return () => this.listeners.get(event).delete(fn);
    }

    emit(event, ...args) {
      for (const fn of this.listeners.get(event) || []) {
        try { fn(...args); } catch (err) { console.error(err); }
      }
    }

    setStatus(status) {
      if (this.status === status) return;
      this.status = status;
      this.emit('status', status);
    }

    open() {
      this.setStatus('connecting');
      const ws = new WebSocket(this.url);
      this.ws = ws;
      ws.onopen = () => ws.send(JSON.stringify({ msg: 'connect', version: '1', support: ['1', 'pre2', 'pre1'] }));
      ws.onmessage = (e) => {
        let m;
        try { m = JSON.parse(e.data); } catch { return; }
        this.receive(m);
      };
      ws.onclose = () => {
        if (this.ws !== ws) return;
        this.ws = null;
        this.setStatus('offline');
        for (const [, call] of this.calls) call.reject(new DdpError({ error: 'disconnected', reason: 'The connection was lost' }));
        this.calls.clear();
        const delay = Math.min(500 * 2 ** this.retries, 5000);
        this.retries += 1;
        setTimeout(() => this.open(), delay);
      };
    }

    async connected() {
      this.retries = 0;
      // A new session: documents are sent again from scratch.
      for (const docs of this.collections.values()) docs.clear();
      if (this.resumeToken) {
        try {
          await this.rawCall('login', [{ resume: this.resumeToken }]);
        } catch (err) {
          this.resumeToken = null;
          this.userId = null;
          this.emit('loggedOut', err);
        }
      }
      for (const sub of this.subs.values()) this.sendSub(sub);
      this.setStatus('connected');
      this.emit('reconnected');
    }

    receive(m) {
      switch (m.msg) {
        case 'connected': this.connected(); break;
        case 'ping': this.send({ msg: 'pong', id: m.id }); break;
        case 'result': {
          const call = this.calls.get(m.id);
          if (!call) break;
          this.calls.delete(m.id);
          if (m.error) call.reject(new DdpError(m.error)); else call.resolve(fromEjson(m.result));
          break;
        }
        case 'ready':
          for (const id of m.subs || []) {
            const sub = this.subs.get(id);
            if (sub) { sub.isReady = true; sub.onReady(); }
          }
          break;
        case 'nosub': {
          const sub = this.subs.get(m.id);
          if (sub) {
            this.subs.delete(m.id);
            sub.onStop(m.error ? new DdpError(m.error) : null);
          }
          break;
        }
        case 'added': case 'changed': case 'removed':
          this.applyDoc(m);
          break;
        default: break;
      }
    }

    applyDoc(m) {
      if (m.collection && m.collection.startsWith('stream-')) {
        if (m.msg === 'changed' && m.fields) {
          this.emit('stream', m.collection, m.fields.eventName, fromEjson(m.fields.args || []), m.id);
        }
        return;
      }
      if (!this.collections.has(m.collection)) this.collections.set(m.collection, new Map());
      const docs = this.collections.get(m.collection);
      if (m.msg === 'added') {
        docs.set(m.id, { _id: m.id, ...fromEjson(m.fields || {}) });
      } else if (m.msg === 'changed') {
        const doc = docs.get(m.id) || { _id: m.id };
        Object.assign(doc, fromEjson(m.fields || {}));
        for (const f of m.cleared || []) delete doc[f];
        docs.set(m.id, doc);
      } else {
        docs.delete(m.id);
      }
      this.emit('doc', m.collection, m.id, docs.get(m.id) || null);
    }

    send(m) {
      if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(m));
    }

    rawCall(method, params) {
      const id = randomId();
      return new Promise((resolve, reject) => {
        if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
          reject(new DdpError({ error: 'disconnected', reason: 'Not connected' }));
          return;
        }
        this.calls.set(id, { resolve, reject });
        this.send({ msg: 'method', id, method, params: toEjson(params) });
      });
    }

    /** Calls `method`, once connected. */
    async call(method, ...params) {
      if (this.status !== 'connected') await new Promise((resolve) => { const off = this.on('reconnected', () => { off(); resolve(); }); });
      return this.rawCall(method, params);
    }

    sendSub(sub) {
      sub.isReady = false;
      this.send({ msg: 'sub', id: sub.id, name: sub.name, params: toEjson(sub.params) });
    }

    /** Subscribes; `onReady` runs at each ready (again after a reconnect), `onStop` at nosub. */
    subscribe(name, params = [], { onReady = () => {}, onStop = () => {} } = {}) {
      const sub = { id: randomId(), name, params, onReady, onStop, isReady: false };
      this.subs.set(sub.id, sub);
      if (this.status === 'connected') this.sendSub(sub);
      return {
        id: sub.id,
        stop: () => {
          if (this.subs.delete(sub.id)) this.send({ msg: 'unsub', id: sub.id });
        },
      };
    }

    docs(collection) {
      return this.collections.get(collection) || new Map();
    }

    async loginWithPassword(user, password) {
      const selector = user.includes('@') ? { email: user } : { username: user };
      const result = await this.call('login', { user: selector, password: { digest: sha256Hex(password), algorithm: 'sha-256' } });
      this.resumeToken = result.token;
      this.userId = result.id;
      return result;
    }

    /** Wires the pages' sign-in form (#signin-form, #signin-user, #signin-pass,
     *  #signin-error) to a password login; `then` gets the login's result. */
    bindSignInForm(then) {
      const $ = (id) => document.getElementById(id);
      $('signin-form').addEventListener('submit', async (e) => {
        e.preventDefault();
        $('signin-error').textContent = '';
        try {
          const result = await this.loginWithPassword($('signin-user').value.trim(), $('signin-pass').value);
          $('signin-pass').value = '';
          await then(result);
        } catch (err) {
          $('signin-error').textContent = err.reason || err.message;
        }
      });
    }

    async resume(token) {
      const result = await this.call('login', { resume: token });
      this.resumeToken = result.token;
      this.userId = result.id;
      return result;
    }

    async logout() {
      try { await this.call('logout'); } finally {
        this.resumeToken = null;
        this.userId = null;
      }
    }
  }

  window.CometDdp = { Ddp, DdpError, randomId, sha256Hex };
})();
