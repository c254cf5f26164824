// simpleddp over /websocket: connect, methods, EJSON, errors, subscriptions, restarts.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const WebSocket = require('ws');
const SimpleDDP = require('simpleddp');
const { startServer, waitFor } = require('../lib/server');

function client(server, opts = {}) {
  return new SimpleDDP({ endpoint: server.ws, SocketConstructor: WebSocket, reconnectInterval: 200, ...opts });
}

test('simpleddp: methods, EJSON and errors', async (t) => {
  const server = await startServer();
  const ddp = client(server);
  t.after(async () => { ddp.disconnect(); await server.stop(); });
  await ddp.connect();
  assert.equal(await ddp.call('echo', 'hi'), 'hi');
  const when = new Date(1700000000123);
  const back = await ddp.call('echo', { when, bytes: new Uint8Array([0, 1, 2]) });
  assert.ok(back.when instanceof Date, 'dates come back as Date');
  assert.equal(back.when.getTime(), when.getTime());
  assert.deepEqual(Array.from(back.bytes), [0, 1, 2]);

  await assert.rejects(ddp.call('nope'), (e) => e.error === 404 && e.reason === "Method 'nope' not found");
  await assert.rejects(ddp.call('test.error'), (e) => e.error === 'e' && e.reason === 'r' && e.details.d === 1
    && e.errorType === 'Meteor.Error' && e.message === 'r [e]');
  await assert.rejects(ddp.call('test.throw'), (e) => e.error === 500 && e.reason === 'Internal server error'
    && !JSON.stringify(e).includes('secret'));
  await assert.rejects(ddp.call('test.check', 5), (e) => e.error === 400 && e.reason === 'Match failed');
});

test('simpleddp: subscriptions reach ready, unknown ones fail', async (t) => {
  const server = await startServer();
  const ddp = client(server);
  t.after(async () => { ddp.disconnect(); await server.stop(); });
  await ddp.connect();
  const sub = ddp.subscribe('test.docs');
  await sub.ready();
  const docs = ddp.collection('tasks').fetch().map((d) => d.title).sort();
  assert.deepEqual(docs, ['first', 'second']);

  // simpleddp's subscribe() leaves an internal promise unhandled when a sub fails, so the
  // unknown publication goes through its event API instead.
  const nosub = new Promise((resolve) => {
    const listener = ddp.on('nosub', (m) => { if (m.id === missingId) { listener.stop(); resolve(m); } });
  });
  const missingId = ddp.ddpConnection.sub('nope', []);
  const m = await nosub;
  assert.equal(m.error.error, 404);
  assert.equal(m.error.reason, "Subscription 'nope' not found");

  await sub.stop();
  await waitFor(() => ddp.collection('tasks').fetch().length === 0, 3000, 'documents removed on unsub');

  const loginConfig = ddp.subscribe('meteor.loginServiceConfiguration');
  await loginConfig.ready();
  const autoupdate = ddp.subscribe('meteor_autoupdate_clientVersions');
  await autoupdate.ready();
});

test('simpleddp: live changes pushed by a publication arrive', async (t) => {
  const server = await startServer();
  const ddp = client(server);
  t.after(async () => { ddp.disconnect(); await server.stop(); });
  await ddp.connect();
  const sub = ddp.subscribe('test.ticker', 30);
  await sub.ready();
  await waitFor(() => (ddp.collection('counter').fetch()[0] || {}).n >= 3, 5000, 'ticker changes');
});

test('simpleddp: reconnects and resubscribes after a server restart', async (t) => {
  let server = await startServer();
  const port = server.port;
  const ddp = client(server);
  t.after(async () => { ddp.disconnect(); await server.stop(); });
  await ddp.connect();
  const sub = ddp.subscribe('test.docs');
  await sub.ready();
  let disconnected = false;
  ddp.on('disconnected', () => { disconnected = true; });
  assert.equal(await server.stop(), 0, 'graceful shutdown exits 0');
  await waitFor(() => disconnected, 5000, 'client notices the restart');
  server = await startServer({}, port);
  await waitFor(() => ddp.connected, 10000, 'client reconnects');
  assert.equal(await ddp.call('echo', 'again'), 'again');
  await waitFor(() => ddp.collection('tasks').fetch().length === 2, 5000, 'subscription data after reconnect');
});
