// Live data from configuration: one client (simpleddp) watches a sorted, limited publication
// while another (asteroid) inserts, updates and removes through Meteor's collection methods.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const WebSocket = require('ws');
const SimpleDDP = require('simpleddp');
const Asteroid = require('asteroid');
const MeteorRandom = require('meteor-standalone-random');
const { startServer, waitFor } = require('../lib/server');

const CONFIG = `
[[publications]]
name = "tasks.open"
collection = "tasks"
selector = { done = false, list = "$args.0" }
sort = { createdAt = -1 }
limit = 3
fields = { text = 1, done = 1, createdAt = 1, list = 1 }

[[collections]]
name = "tasks"
insert = {}
update = { list = "work" }
remove = { list = "work" }
`;

async function liveServer() {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'comet-live-')), 'comet.toml');
  fs.writeFileSync(file, CONFIG);
  return startServer({ COMET_CONFIG: file });
}

// asteroid 0.6 sends plain JSON (no EJSON of its own), so dates go out in EJSON's wire form.

/** An asteroid client; it tries to resume a login on connect and, having no token, rejects a
 * promise nobody awaits: that expected rejection is handled here. */
function asteroid(port) {
  const client = new Asteroid(`127.0.0.1:${port}`);
  const quiet = () => client.resumeLoginPromise && client.resumeLoginPromise.catch(() => {});
  client.ddp.on('connected', quiet);
  client.ddp.on('reconnected', quiet);
  return client;
}

/** asteroid 0.6's ddp.js reconnects forever and has no way to stop: switch that off, close. */
function closeAsteroid(client) {
  client.ddp._try_reconnect = () => {};
  if (client.ddp._socket) client.ddp._socket.close();
}

function visible(ddp) {
  return ddp.collection('tasks').fetch()
    .sort((a, b) => b.createdAt - a.createdAt)
    .map((t) => t.text);
}

test('live window: simpleddp watches while asteroid writes', async (t) => {
  const server = await liveServer();
  const watcher = new SimpleDDP({ endpoint: server.ws, SocketConstructor: WebSocket, reconnectInterval: 200 });
  const writer = asteroid(server.port);
  t.after(async () => { watcher.disconnect(); closeAsteroid(writer); await server.stop(); });
  await watcher.connect();
  const sub = watcher.subscribe('tasks.open', 'work');
  await sub.ready();
  assert.deepEqual(visible(watcher), []);

  const tasks = writer.getCollection('tasks');
  for (let i = 1; i <= 4; i++) {
    await tasks.insert({ _id: `t${i}`, text: `task ${i}`, done: false, list: 'work', createdAt: { $date: 1000 * i }, secret: 's' }).remote;
  }
  await tasks.insert({ _id: 'h1', text: 'home task', done: false, list: 'home', createdAt: { $date: 9000 } }).remote;
  await waitFor(() => visible(watcher).join() === 'task 4,task 3,task 2', 5000, 'the three newest work tasks');
  const doc = watcher.collection('tasks').fetch().find((d) => d.text === 'task 4');
  assert.equal(doc.secret, undefined, 'fields outside the projection are not published');
  assert.ok(doc.createdAt instanceof Date);

  // Marking the newest done takes it out of the window; the next one comes in.
  await tasks.update('t4', { done: true });
  await waitFor(() => visible(watcher).join() === 'task 3,task 2,task 1', 5000, 'done task leaves, older enters');

  // Removing one lets nothing new in (nothing older is left); the window shrinks.
  await tasks.remove('t2').remote;
  await waitFor(() => visible(watcher).join() === 'task 3,task 1', 5000, 'removed task leaves');

  // A denied write is refused with Meteor's 403 and changes nothing.
  await assert.rejects(tasks.remove('h1').remote, (e) => e.error === 403 && e.reason === 'Access denied');

  // A client asking for less gets less.
  const small = new SimpleDDP({ endpoint: server.ws, SocketConstructor: WebSocket });
  await small.connect();
  await small.subscribe('tasks.open', 'work', { limit: 1 }).ready();
  assert.deepEqual(visible(small), ['task 3']);
  small.disconnect();
});

test('inserted ids match the client simulation from randomSeed', async (t) => {
  const server = await liveServer();
  t.after(() => server.stop());
  const ws = new WebSocket(server.ws);
  const got = [];
  ws.on('message', (d) => got.push(JSON.parse(d.toString())));
  await new Promise((r) => ws.on('open', r));
  ws.send(JSON.stringify({ msg: 'connect', version: '1', support: ['1'] }));
  ws.send(JSON.stringify({ msg: 'sub', id: 's', name: 'tasks.open', params: ['work'] }));
  const seed = MeteorRandom.id(20);
  ws.send(JSON.stringify({ msg: 'method', id: '1', method: '/tasks/insert', randomSeed: seed,
    params: [{ text: 'seeded', done: false, list: 'work', createdAt: { $date: 1 } }] }));
  await waitFor(() => got.some((m) => m.msg === 'updated'), 5000, 'updated');
  const expected = MeteorRandom.createWithSeeds(seed, '/collection/tasks').id();
  const added = got.findIndex((m) => m.msg === 'added');
  const updated = got.findIndex((m) => m.msg === 'updated');
  assert.equal(got.find((m) => m.msg === 'result').result, expected);
  assert.equal(got[added].id, expected);
  assert.ok(added < updated, 'the added frame precedes updated (write fence)');
  ws.close();
});

test('a reconnecting client gets the current state again', async (t) => {
  const server = await liveServer();
  const writer = asteroid(server.port);
  t.after(async () => { closeAsteroid(writer); await server.stop(); });
  await writer.getCollection('tasks').insert({ _id: 'k', text: 'kept', done: false, list: 'work', createdAt: { $date: 5 } }).remote;
  const port = server.port;
  const watcher = new SimpleDDP({ endpoint: server.ws, SocketConstructor: WebSocket, reconnectInterval: 200 });
  t.after(() => watcher.disconnect());
  await watcher.connect();
  await watcher.subscribe('tasks.open', 'work').ready();
  assert.deepEqual(visible(watcher), ['kept']);
  let dropped = false;
  watcher.on('disconnected', () => { dropped = true; });
  // Kill the connection from the client side; simpleddp reconnects and resubscribes.
  watcher.ddpConnection.socket.rawSocket.terminate();
  await waitFor(() => dropped, 5000, 'disconnect seen');
  await waitFor(() => watcher.connected && visible(watcher).join() === 'kept', 10000, 'state after reconnect');
  assert.equal(port, server.port);
});
