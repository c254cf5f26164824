// sockjs-client in Node over each transport Meteor's clients use.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const SockJS = require('sockjs-client');
const { startServer, waitFor } = require('../lib/server');

function ddpOverSockJs(url, transport) {
  const sock = new SockJS(`${url}/sockjs`, null, { transports: [transport] });
  const received = [];
  let closed = null;
  sock.onmessage = (e) => received.push(JSON.parse(e.data));
  sock.onclose = (e) => { closed = { code: e.code, reason: e.reason }; };
  const opened = new Promise((resolve, reject) => {
    sock.onopen = resolve;
    setTimeout(() => reject(new Error(`${transport} did not open`)), 10000);
  });
  return {
    sock,
    received,
    opened,
    get closed() { return closed; },
    send: (m) => sock.send(JSON.stringify(m)),
    find: (pred) => received.find(pred),
  };
}

for (const transport of ['websocket', 'xhr-streaming', 'xhr-polling']) {
  test(`sockjs-client (${transport}): handshake, ping, method, subscription`, async (t) => {
    const server = await startServer();
    const c = ddpOverSockJs(server.http, transport);
    t.after(async () => { c.sock.close(); await server.stop(); });
    await c.opened;
    assert.equal(c.sock.transport, transport);
    c.send({ msg: 'connect', version: '1', support: ['1', 'pre2', 'pre1'] });
    await waitFor(() => c.find((m) => m.msg === 'connected'), 5000, 'connected');

    c.send({ msg: 'ping', id: 'p' });
    await waitFor(() => c.find((m) => m.msg === 'pong' && m.id === 'p'), 5000, 'pong');

    c.send({ msg: 'method', id: '1', method: 'echo', params: [{ $date: 5 }] });
    await waitFor(() => c.find((m) => m.msg === 'result' && m.id === '1'), 5000, 'result');
    assert.deepEqual(c.find((m) => m.msg === 'result').result, { $date: 5 });

    c.send({ msg: 'method', id: '2', method: 'nope' });
    await waitFor(() => c.find((m) => m.msg === 'result' && m.id === '2'), 5000, 'error result');
    assert.equal(c.find((m) => m.id === '2' && m.msg === 'result').error.error, 404);

    c.send({ msg: 'sub', id: 's1', name: 'test.docs' });
    await waitFor(() => c.find((m) => m.msg === 'ready'), 5000, 'ready');
    assert.equal(c.received.filter((m) => m.msg === 'added').length, 2);

    c.send({ msg: 'sub', id: 's2', name: 'nope' });
    await waitFor(() => c.find((m) => m.msg === 'nosub' && m.id === 's2'), 5000, 'nosub');

    // Many messages at once arrive complete and in order.
    for (let i = 0; i < 50; i++) c.send({ msg: 'method', id: `m${i}`, method: 'echo', params: [i] });
    await waitFor(() => c.received.filter((m) => m.msg === 'result' && m.id.startsWith('m')).length === 50, 10000, '50 results');
    const order = c.received.filter((m) => m.msg === 'result' && m.id.startsWith('m')).map((m) => m.result);
    assert.deepEqual(order, [...Array(50).keys()]);
  });
}

test('sockjs-client: the server closing on shutdown reaches the client', async (t) => {
  const server = await startServer();
  const c = ddpOverSockJs(server.http, 'xhr-polling');
  t.after(() => c.sock.close());
  await c.opened;
  c.send({ msg: 'connect', version: '1', support: ['1'] });
  await waitFor(() => c.find((m) => m.msg === 'connected'), 5000, 'connected');
  await server.stop();
  await waitFor(() => c.closed !== null, 10000, 'close seen by the client');
});

test('sockjs: info, welcome and CORS', async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const info = await fetch(`${server.http}/sockjs/info?cb=x`, { headers: { Origin: 'http://example.test' } });
  assert.equal(info.status, 200);
  // No cross-origin reads unless the settings allow the origin (Rocket.Chat's API_Enable_CORS).
  assert.equal(info.headers.get('access-control-allow-origin'), null);
  const allowing = await startServer({
    OVERWRITE_SETTING_API_Enable_CORS: 'true',
    OVERWRITE_SETTING_API_CORS_Origin: 'http://example.test',
  });
  t.after(() => allowing.stop());
  const allowed = await fetch(`${allowing.http}/sockjs/info?cb=x`, { headers: { Origin: 'http://example.test' } });
  assert.equal(allowed.headers.get('access-control-allow-origin'), 'http://example.test');
  assert.equal(allowed.headers.get('access-control-allow-credentials'), 'true');
  const other = await fetch(`${allowing.http}/sockjs/info?cb=x`, { headers: { Origin: 'http://elsewhere.test' } });
  assert.equal(other.headers.get('access-control-allow-origin'), null);
  const body = await info.json();
  assert.equal(body.websocket, true);
  assert.equal(typeof body.entropy, 'number');
  const welcome = await fetch(`${server.http}/sockjs`);
  assert.equal(await welcome.text(), 'Welcome to SockJS!\n');
  const unknown = await fetch(`${server.http}/sockjs/1/nosuchsession/xhr_send`, { method: 'POST', body: '["x"]' });
  assert.equal(unknown.status, 404);
});

test('DISABLE_SOCKJS turns SockJS off and keeps /websocket', async (t) => {
  const server = await startServer({ DISABLE_SOCKJS: 'false' });
  t.after(() => server.stop());
  const info = await fetch(`${server.http}/sockjs/info`);
  assert.equal(info.status, 404);
  const plain = await fetch(`${server.http}/websocket`);
  assert.equal(plain.status, 400);
});
