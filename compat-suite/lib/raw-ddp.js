// A DDP client speaking raw frames over `ws` (no library between the test and the wire),
// and Meteor's digest form of a password.
'use strict';
const crypto = require('node:crypto');
const WebSocket = require('ws');
const { waitFor } = require('./server');

/** A DDP client speaking raw frames over `ws`. */
class RawDdp {
  static async open(url) {
    const client = new RawDdp();
    client.frames = [];
    client.ws = new WebSocket(url);
    client.ws.on('message', (data) => {
      const m = JSON.parse(data.toString());
      if (m.msg === 'ping') client.ws.send(JSON.stringify({ msg: 'pong', id: m.id }));
      client.frames.push(m);
    });
    await new Promise((resolve, reject) => { client.ws.once('open', resolve); client.ws.once('error', reject); });
    client.ws.send(JSON.stringify({ msg: 'connect', version: '1', support: ['1'] }));
    await client.next((m) => m.msg === 'connected');
    client.nextId = 0;
    return client;
  }

  /** Waits for (and removes) the first frame matching `test`. */
  async next(test, within = 5000, what = 'frame') {
    let found;
    await waitFor(() => {
      const i = this.frames.findIndex(test);
      if (i < 0) return false;
      [found] = this.frames.splice(i, 1);
      return true;
    }, within, what);
    return found;
  }

  async call(method, ...params) {
    const id = String(++this.nextId);
    this.ws.send(JSON.stringify({ msg: 'method', id, method, params }));
    const reply = await this.next((m) => m.msg === 'result' && m.id === id, 5000, `result of ${method}`);
    if (reply.error) throw Object.assign(new Error(reply.error.reason || reply.error.error), reply.error);
    return reply.result;
  }

  async sub(name, ...params) {
    const id = `s${++this.nextId}`;
    this.ws.send(JSON.stringify({ msg: 'sub', id, name, params }));
    return this.next((m) => (m.msg === 'ready' && m.subs.includes(id)) || (m.msg === 'nosub' && m.id === id));
  }

  close() { this.ws.close(); }
}

const password = (text) => ({ digest: crypto.createHash('sha256').update(text).digest('hex'), algorithm: 'sha-256' });

module.exports = { RawDdp, password };
