// ddp.js over /websocket: handshake, heartbeats answered by the client, methods, subscriptions.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const WebSocket = require('ws');
const DDP = require('ddp.js').default || require('ddp.js');
const { startServer, waitFor } = require('../lib/server');

function open(server, opts = {}) {
  const ddp = new DDP({ endpoint: server.ws, SocketConstructor: WebSocket, reconnectInterval: 200, ...opts });
  const seen = [];
  for (const ev of ['connected', 'disconnected', 'result', 'updated', 'ready', 'nosub', 'added', 'changed', 'removed', 'error']) {
    ddp.on(ev, (m) => seen.push({ ev, ...(m || {}) }));
  }
  return { ddp, seen };
}

test('ddp.js: connects, calls, subscribes', async (t) => {
  const server = await startServer();
  const { ddp, seen } = open(server);
  t.after(async () => { ddp.disconnect(); await server.stop(); });
  await waitFor(() => seen.some((m) => m.ev === 'connected'), 5000, 'connected');

  const id = ddp.method('echo', [{ n: 1 }]);
  await waitFor(() => seen.some((m) => m.ev === 'result' && m.id === id), 3000, 'result');
  await waitFor(() => seen.some((m) => m.ev === 'updated' && m.methods.includes(id)), 3000, 'updated');
  assert.deepEqual(seen.find((m) => m.ev === 'result' && m.id === id).result, { n: 1 });

  const bad = ddp.method('nope', []);
  await waitFor(() => seen.some((m) => m.ev === 'result' && m.id === bad), 3000, 'error result');
  assert.equal(seen.find((m) => m.ev === 'result' && m.id === bad).error.error, 404);

  const sub = ddp.sub('test.docs', []);
  await waitFor(() => seen.some((m) => m.ev === 'ready' && m.subs.includes(sub)), 3000, 'ready');
  assert.equal(seen.filter((m) => m.ev === 'added' && m.collection === 'tasks').length, 2);

  const unknown = ddp.sub('nope', []);
  await waitFor(() => seen.some((m) => m.ev === 'nosub' && m.id === unknown), 3000, 'nosub');
  assert.equal(seen.find((m) => m.ev === 'nosub' && m.id === unknown).error.error, 404);

  ddp.unsub(sub);
  await waitFor(() => seen.filter((m) => m.ev === 'removed').length === 2, 3000, 'removed');
  await waitFor(() => seen.some((m) => m.ev === 'nosub' && m.id === sub), 3000, 'nosub after unsub');
});

test('ddp.js: answers server pings, so a quiet connection stays open', async (t) => {
  const server = await startServer({ COMET_HEARTBEAT_INTERVAL_MS: '150', COMET_HEARTBEAT_TIMEOUT_MS: '150' });
  const { ddp, seen } = open(server, { autoReconnect: false });
  t.after(async () => { ddp.disconnect(); await server.stop(); });
  await waitFor(() => seen.some((m) => m.ev === 'connected'), 5000, 'connected');
  await new Promise((r) => setTimeout(r, 1500));
  assert.ok(!seen.some((m) => m.ev === 'disconnected'), 'still connected after ten heartbeat periods');
  const id = ddp.method('echo', ['alive']);
  await waitFor(() => seen.some((m) => m.ev === 'result' && m.id === id), 3000, 'result');
});

test('ddp.js: a client that never answers pings is dropped', async (t) => {
  const server = await startServer({ COMET_HEARTBEAT_INTERVAL_MS: '150', COMET_HEARTBEAT_TIMEOUT_MS: '150' });
  t.after(() => server.stop());
  // A raw socket that completes the handshake and then ignores everything.
  const ws = new WebSocket(server.ws);
  await new Promise((r) => ws.on('open', r));
  const frames = [];
  ws.on('message', (d) => frames.push(JSON.parse(d.toString())));
  ws.send(JSON.stringify({ msg: 'connect', version: '1', support: ['1'] }));
  const closed = new Promise((r) => ws.on('close', (code) => r(code)));
  const code = await closed;
  assert.equal(code, 1001);
  assert.ok(frames.some((f) => f.msg === 'ping'), 'server pinged first');
});

test('ddp.js: reconnects after a server restart', async (t) => {
  let server = await startServer();
  const port = server.port;
  const { ddp, seen } = open(server);
  t.after(async () => { ddp.disconnect(); await server.stop(); });
  await waitFor(() => seen.some((m) => m.ev === 'connected'), 5000, 'connected');
  await server.stop();
  await waitFor(() => seen.some((m) => m.ev === 'disconnected'), 5000, 'disconnected');
  server = await startServer({}, port);
  await waitFor(() => seen.filter((m) => m.ev === 'connected').length >= 2, 10000, 'reconnected');
  const id = ddp.method('echo', ['back']);
  await waitFor(() => seen.some((m) => m.ev === 'result' && m.id === id), 3000, 'result after reconnect');
});
