// The Node peer: Meteor's ddp-server (mongodb-livedata-server) with the same handlers the
// benchmark calls on comet: `echo`, `bench.empty`, `bench.docs` (S1/S2), `bench.room` and
// `bench.send` (S3), `bench.set` and `bench.touch` (S4), `bench.watch` and `bench.events` (S7),
// `bench.seed` and `bench.initial` (S8), `createUser` and `login` (logins).
'use strict';
const http = require('node:http');
const { DDPServer } = require('mongodb-livedata-server');

const port = Number(process.env.PORT || 4000);
const httpServer = http.createServer((req, res) => { res.writeHead(404); res.end(); });
// HEARTBEAT_MS=0 turns heartbeats off (S9: the load generator holds thousands of sockets
// unread while it sets up rooms), as COMET_HEARTBEAT_INTERVAL_MS=0 does for comet.
const heartbeat = process.env.HEARTBEAT_MS === undefined ? {} : { heartbeatInterval: Number(process.env.HEARTBEAT_MS) };
const ddp = new DDPServer(heartbeat, httpServer);

ddp.methods({
  echo: async (value) => value,
});

ddp.publish({
  'bench.empty': async function () {
    this.ready();
  },
  // Fifty small documents, the same for every subscriber.
  'bench.docs': async function () {
    for (let i = 0; i < 50; i++) this.added('docs', `d${i}`, { n: i, text: 'hello world, this is a document' });
    this.ready();
  },
});

// Fan-out (S3): every `bench.room` subscriber gets each `bench.send` as a document.
const room = new Set();
let nextId = 0;
ddp.publish({
  'bench.room': async function () {
    room.add(this);
    this.onStop(() => room.delete(this));
    this.ready();
  },
});
ddp.methods({
  'bench.send': async (text, ts) => {
    const id = `m${nextId++}`;
    for (const sub of room) sub.added('messages', id, { text, ts });
  },
});

// Mergebox stress (S4): 20 sets of 200 documents, each overlapping the next by half.
const SETS = 20, SET_SIZE = 200, STRIDE = 100, DOCS = SETS * STRIDE;
const docs = Array.from({ length: DOCS }, (_, i) => ({
  f0: i, f1: i, f2: i, f3: i, f4: i, text: 'a document shared by overlapping publications',
}));
const sets = Array.from({ length: SETS }, () => new Set());
ddp.publish({
  'bench.set': async function (k) {
    k = (Number(k) || 0) % SETS;
    sets[k].add(this);
    this.onStop(() => sets[k].delete(this));
    for (let j = 0; j < SET_SIZE; j++) {
      const d = (k * STRIDE + j) % DOCS;
      this.added('bench', `d${d}`, { ...docs[d] });
    }
    this.ready();
  },
});
ddp.methods({
  'bench.touch': async (d, f, value) => {
    d = (Number(d) || 0) % DOCS;
    const field = `f${(Number(f) || 0) % 5}`;
    docs[d][field] = value;
    const last = Math.floor(d / STRIDE);
    for (const k of [(last + SETS - 1) % SETS, last]) {
      for (const sub of sets[k]) sub.changed('bench', `d${d}`, { [field]: value });
    }
  },
});

// Change-source cost (S7): each watcher is one room's live query; every event is checked
// against every watcher, as an oplog observer checks each entry against each query.
const watchers = new Set();
ddp.publish({
  'bench.watch': async function (rid) {
    const w = { sub: this, rid, ids: new Set() };
    watchers.add(w);
    this.onStop(() => watchers.delete(w));
    this.ready();
  },
});
ddp.methods({
  'bench.events': async (count, every, base) => {
    for (let i = 0; i < Math.min(count, 100000); i++) {
      const n = base + i;
      const matching = every > 0 && n % every === 0;
      const room = Math.floor(n / every) % 1000;
      const doc = matching ? { _id: `m${room}`, rid: `room${room}`, n } : { _id: `s${n % 1000}`, rid: 'nobody', n };
      for (const w of watchers) {
        const has = w.ids.has(doc._id);
        if (doc.rid === w.rid) {
          if (has) w.sub.changed('bench_src', doc._id, { n });
          else { w.ids.add(doc._id); w.sub.added('bench_src', doc._id, { rid: doc.rid, n }); }
        } else if (has) {
          w.ids.delete(doc._id);
          w.sub.removed('bench_src', doc._id);
        }
      }
    }
  },
});

httpServer.listen(port, '127.0.0.1', () => {
  process.stderr.write(`peer listening on ${port}\n`);
});

// Large initial result sets (S8): the seeded documents, held once, published whole to each
// subscriber as a cursor's observer would.
const initial = [];
ddp.methods({
  'bench.seed': async (count, bytes) => {
    // Each body its own string, as documents read from a database are.
    const filler = 'x'.repeat(Math.max(Math.min(bytes, 1 << 20) - 8, 0));
    for (let i = initial.length; i < count; i++) {
      const body = (filler + String(i).padStart(8, '0')).split('').join('');
      initial.push({ _id: `d${String(i).padStart(7, '0')}`, n: i, body });
    }
    return initial.length;
  },
});
ddp.publish({
  'bench.initial': async function () {
    for (const { _id, ...fields } of initial) this.added('bench_initial', _id, fields);
    this.ready();
  },
});

// Logins: accounts-password's `createUser` and `login` as Meteor 3 runs them (native
// bcrypt of the SHA-256 digest on libuv's thread pool, a 43-character token kept as
// base64(sha256)), with users and tokens in memory: the peer pays no database round trip,
// comet stores each token in its store.
const bcrypt = require('bcrypt');
const crypto = require('node:crypto');
const BCRYPT_COST = Number(process.env.BCRYPT_COST || 10);
const users = new Map(); // username -> {id, bcrypt, tokens: Set}
const tokens = new Map(); // hashed token -> user id
const secret = () => crypto.randomBytes(32).toString('base64url').slice(0, 43);
const hashToken = (token) => crypto.createHash('sha256').update(token).digest('base64');
function issueToken(invocation, user) {
  const token = secret();
  const hashed = hashToken(token);
  user.tokens.add(hashed);
  tokens.set(hashed, user.id);
  invocation.setUserId(user.id);
  presenceOnLogin(invocation, user.id);
  return { id: user.id, token, tokenExpires: new Date(Date.now() + 90 * 864e5), type: 'password' };
}
ddp.methods({
  createUser: async function (options) {
    const { username, password } = options || {};
    if (typeof username !== 'string' || !password || typeof password.digest !== 'string') {
      throw new Error('Match failed');
    }
    if (users.has(username)) throw new Error('Username already exists.');
    const user = { name: username, id: `u${users.size}`, bcrypt: await bcrypt.hash(password.digest, BCRYPT_COST), tokens: new Set() };
    users.set(username, user);
    nameOf.set(user.id, username);
    return issueToken(this, user);
  },
  login: async function (request) {
    if (request && typeof request.resume === 'string') {
      const id = tokens.get(hashToken(request.resume));
      if (!id) throw new Error("You've been logged out by the server. Please log in again.");
      this.setUserId(id);
      presenceOnLogin(this, id);
      return { id, token: request.resume, tokenExpires: new Date(Date.now() + 90 * 864e5), type: 'resume' };
    }
    const user = request && request.user && users.get(request.user.username);
    if (!user) throw new Error('User not found');
    if (!(await bcrypt.compare(request.password.digest, user.bcrypt))) throw new Error('Incorrect password');
    return issueToken(this, user);
  },
});

// Chat (S9): Rocket.Chat-shaped `createChannel` and `sendMessage` with the stream fan-out
// Rocket.Chat's DDPStreamer does (`stream-room-messages`, event = room id, one `changed`
// frame per listener beside the mergebox), rooms and messages held in memory.
const rooms = new Map(); // rid -> {name, members: Set(user id), msgs}
const listeners = new Map(); // rid -> Set(subscription)
const idOf = (username) => (users.get(username) || {}).id;
const randomId = () => crypto.randomBytes(12).toString('base64url').slice(0, 17);
ddp.methods({
  createChannel: async function (name, members) {
    if (!this.userId) throw new Error('error-invalid-user');
    const rid = randomId();
    const set = new Set([this.userId]);
    for (const m of members || []) { const id = idOf(m); if (id) set.add(id); }
    rooms.set(rid, { name, members: set, msgs: 0, messages: [] });
    return { rid, name, t: 'c', usersCount: set.size, inserted: true };
  },
  sendMessage: async function (message) {
    const room = message && rooms.get(message.rid);
    if (!this.userId) throw new Error('error-invalid-user');
    if (!room || !room.members.has(this.userId)) throw new Error('error-not-allowed');
    const now = new Date();
    const stored = {
      _id: message._id || randomId(), rid: message.rid, msg: String(message.msg || ''), ts: now,
      u: { _id: this.userId }, _updatedAt: now, mentions: [], channels: [], urls: [],
    };
    room.messages.push(stored);
    room.msgs += 1;
    room.lastMessage = stored;
    const subs = listeners.get(message.rid);
    if (subs) {
      const frame = { eventName: message.rid, args: [{ ...stored, ts: { $date: now.getTime() }, _updatedAt: { $date: now.getTime() } }] };
      for (const sub of subs) sub._session.send({ msg: 'changed', collection: 'stream-room-messages', id: 'id', fields: frame });
    }
    return stored;
  },
});
ddp.publish({
  'stream-room-messages': async function (rid) {
    const room = rooms.get(rid);
    if (!room || !room.members.has(this.userId)) throw new Error('not-allowed');
    if (!listeners.has(rid)) listeners.set(rid, new Set());
    listeners.get(rid).add(this);
    this.onStop(() => listeners.get(rid).delete(this));
    this.ready();
  },
});

// Presence (S10): Rocket.Chat's `stream-user-presence` (a connection's first subscription holds
// its watch list, `[username, status, statusText]` frames with the user's id as the frame id),
// a user online while any of its connections is and offline a grace period after the last
// closes (PRESENCE_GRACE_MS, 3,000 as comet's default). Statuses live in memory: the peer
// writes no record and no user document, comet writes both to its store.
const PRESENCE_GRACE_MS = Number(process.env.PRESENCE_GRACE_MS || 3000);
const nameOf = new Map(); // user id -> username
const connectionsOf = new Map(); // user id -> Set(connection id)
const statusOf = new Map(); // user id -> 0 offline, 1 online
const watchersOf = new Map(); // user id -> Set(subscription)
const watchLists = new Map(); // connection id -> {sub, watched: Set(user id)}
function setStatus(uid, status) {
  if ((statusOf.get(uid) || 0) === status) return;
  statusOf.set(uid, status);
  const subs = watchersOf.get(uid);
  if (!subs) return;
  const username = nameOf.get(uid);
  const frame = { msg: 'changed', collection: 'stream-user-presence', id: uid, fields: { uid, args: [[username, status, '']], eventName: uid } };
  for (const sub of subs) sub._session.send(frame);
}
function presenceOnLogin(invocation, uid) {
  const connection = invocation.connection;
  if (!connection) return;
  if (!connectionsOf.has(uid)) connectionsOf.set(uid, new Set());
  connectionsOf.get(uid).add(connection.id);
  setStatus(uid, 1);
  connection.onClose(() => {
    setTimeout(() => {
      const open = connectionsOf.get(uid);
      if (!open) return;
      open.delete(connection.id);
      if (open.size === 0) { connectionsOf.delete(uid); setStatus(uid, 0); }
    }, PRESENCE_GRACE_MS);
  });
}
ddp.publish({
  'stream-user-presence': async function (_event, options) {
    if (!this.userId) throw new Error('not-allowed');
    const { added = [], removed = [] } = options || {};
    const connectionId = this.connection && this.connection.id;
    let list = watchLists.get(connectionId);
    const main = !list;
    if (main) { list = { sub: this, watched: new Set() }; watchLists.set(connectionId, list); }
    for (const uid of added) {
      if (list.watched.has(uid)) continue;
      list.watched.add(uid);
      if (!watchersOf.has(uid)) watchersOf.set(uid, new Set());
      watchersOf.get(uid).add(list.sub);
    }
    for (const uid of removed) {
      if (!list.watched.delete(uid)) continue;
      const subs = watchersOf.get(uid);
      if (subs) { subs.delete(list.sub); if (!subs.size) watchersOf.delete(uid); }
    }
    if (!main) { this.stop(); return; }
    this.onStop(() => {
      watchLists.delete(connectionId);
      for (const uid of list.watched) {
        const subs = watchersOf.get(uid);
        if (subs) { subs.delete(list.sub); if (!subs.size) watchersOf.delete(uid); }
      }
    });
    this.ready();
  },
});
