'use strict';
// comet's plugin SDK for Node.js 18+: no dependencies.
//
// A plugin is a process comet starts; it speaks JSON-RPC 2.0 over stdin/stdout, one
// message per line (protocol-spec/plugins.md). This module does the wire: it answers
// comet's Hello and HealthCheck, runs your (sync or async) hook handlers, and gives each an
// `api` whose calls return promises.
//
//   const { Plugin, allow, reject, rewrite } = require('./comet-plugin');
//   const plugin = new Plugin();
//   plugin.hook('ServeHTTP', async (req, api) => ({ status: 200, body: 'hi' }));
//   plugin.run();
//
// console.log would break the wire: it goes to stderr (comet's log) once run() starts.
// The process exits when comet closes its stdin.

const readline = require('node:readline');

const PROTOCOL = 1;

const allow = () => ({ action: 'allow' });
const reject = (reason) => ({ action: 'reject', reason });
const rewrite = (values) => ({ action: 'rewrite', ...values });

class ApiError extends Error {
  constructor(code, message, data) {
    super(message);
    this.code = code;
    this.error = data && data.error;
    this.data = data;
  }
}

class Api {
  constructor(wire) {
    this.wire = wire;
  }
  call(method, params = {}, timeoutMs = 30000) {
    return this.wire.call(method, params, timeoutMs);
  }
  getUser(userId) { return this.call('users.get', { userId }); }
  getUserByUsername(username) { return this.call('users.getByUsername', { username }); }
  async createBot(username, name) { return (await this.call('users.createBot', { username, name })).userId; }
  getRoom(roomId, name) { return this.call('rooms.get', { roomId, name }); }
  createRoom(name, type = 'c', members = [], readOnly = false) { return this.call('rooms.create', { name, type, members, readOnly }); }
  joinRoom(roomId) { return this.call('rooms.join', { roomId }); }
  addMembers(roomId, usernames) { return this.call('rooms.addMembers', { roomId, usernames }); }
  removeMember(roomId, username) { return this.call('rooms.removeMember', { roomId, username }); }
  post(roomId, msg, extra = {}) { return this.call('messages.create', { roomId, msg, ...extra }); }
  updateMessage(messageId, msg, asUserId) { return this.call('messages.update', { messageId, msg, asUserId }); }
  deleteMessage(messageId, asUserId) { return this.call('messages.delete', { messageId, asUserId }); }
  getMessage(messageId) { return this.call('messages.get', { messageId }); }
  ephemeral(userId, roomId, msg) { return this.call('messages.ephemeral', { userId, roomId, msg }); }
  setting(id) { return this.call('settings.get', { id }); }
  config() { return this.call('config.get'); }
  kvGet(key) { return this.call('kv.get', { key }); }
  kvSet(key, value, expireInMs) { return this.call('kv.set', { key, value, expireInMs }); }
  async kvCompareAndSet(key, old, next, expireInMs) { return (await this.call('kv.compareAndSet', { key, old, new: next, expireInMs })).ok; }
  kvDelete(key) { return this.call('kv.delete', { key }); }
  async kvList(prefix = '', offset = 0, count = 100) { return (await this.call('kv.list', { prefix, offset, count })).keys; }
  publish(to, id, event, args = []) { return this.call('streams.publish', { to, id, event, args }); }
  publishClusterEvent(event, data) { return this.call('cluster.publish', { event, data }); }
  scheduleJob(name, intervalMs) { return this.call('jobs.schedule', { name, intervalMs }); }
  cancelJob(name) { return this.call('jobs.cancel', { name }); }
  log(message, level = 'info') { this.wire.send({ jsonrpc: '2.0', method: 'log', params: { level, message: String(message) } }); }
}

class Wire {
  constructor(out) {
    this.out = out;
    this.next = 0;
    this.waiting = new Map();
  }
  send(message) {
    this.out.write(JSON.stringify(message) + '\n');
  }
  call(method, params, timeoutMs) {
    const id = `n${++this.next}`;
    const clean = Object.fromEntries(Object.entries(params).filter(([, v]) => v !== undefined && v !== null));
    return new Promise((resolve, rejectCall) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        rejectCall(new ApiError(-1, `comet did not answer ${method} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.set(id, { resolve, reject: rejectCall, timer });
      this.send({ jsonrpc: '2.0', id, method, params: clean });
    });
  }
  answered(message) {
    const slot = this.waiting.get(message.id);
    if (!slot) return;
    this.waiting.delete(message.id);
    clearTimeout(slot.timer);
    if (message.error) {
      slot.reject(new ApiError(message.error.code, message.error.message, message.error.data));
    } else {
      slot.resolve(message.result);
    }
  }
}

class Plugin {
  constructor() {
    this.handlers = new Map();
    this.id = process.env.COMET_PLUGIN_ID || '';
    this.botUserId = null;
    this.config = {};
    this.api = null;
  }

  hook(name, handler) {
    this.handlers.set(name, handler);
    return this;
  }

  async answer(wire, id, method, params) {
    try {
      let result = null;
      if (method === 'Hello') {
        this.botUserId = params.botUserId;
        this.config = params.config || {};
        result = { protocol: PROTOCOL };
      } else if (method === 'HealthCheck') {
        result = { ok: true };
      } else {
        if (method === 'OnConfigurationChange') this.config = params.config || {};
        const handler = this.handlers.get(method);
        if (!handler) {
          if (method !== 'OnConfigurationChange' && id !== undefined && id !== null) {
            wire.send({ jsonrpc: '2.0', id, error: { code: -32601, message: `no handler for ${method}` } });
            return;
          }
        } else {
          result = await handler(params, this.api);
        }
      }
      if (id !== undefined && id !== null) {
        wire.send({ jsonrpc: '2.0', id, result: result === undefined ? null : result });
      }
    } catch (error) {
      console.error(`plugin: ${method} failed:`, error);
      if (id !== undefined && id !== null) {
        wire.send({ jsonrpc: '2.0', id, error: { code: -32603, message: String(error && error.message || error).slice(0, 500) } });
      }
    }
  }

  run() {
    const out = process.stdout;
    // Nothing but the wire may reach stdout.
    console.log = console.error;
    console.info = console.error;
    const wire = new Wire(out);
    this.api = new Api(wire);
    const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
    lines.on('line', (line) => {
      if (!line.trim()) return;
      let message;
      try {
        message = JSON.parse(line);
      } catch {
        console.error('plugin: unreadable line from comet');
        return;
      }
      if (message.method === undefined) {
        wire.answered(message);
        return;
      }
      this.answer(wire, message.id, message.method, message.params || {});
    });
    // comet closed our input: it wants us gone.
    lines.on('close', () => process.exit(0));
  }
}

module.exports = { Plugin, Api, ApiError, allow, reject, rewrite, PROTOCOL };
