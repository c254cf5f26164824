// Logging in with real clients: @rocket.chat/sdk (password, wrong password, resume token),
// asteroid (login, logout, subscriptions re-run), a REST client whose token then resumes on
// the socket, and a page in headless Chromium that logs in over SockJS with Meteor's digest.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const http = require('node:http');
const crypto = require('node:crypto');
const WebSocket = require('ws');
const SimpleDDP = require('simpleddp');
const { startServer, waitFor } = require('../lib/server');

const ADMIN = { username: 'boss', password: 'compat-pass-1', email: 'boss@example.com' };
const { noChromium, launchChromium } = require('../lib/browser');

function configFile() {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'comet-accounts-')), 'comet.toml');
  fs.writeFileSync(file, [
    '[[publications]]',
    'name = "me.named"',
    'collection = "users"',
    'selector = { _id = "$userId" }',
    'fields = { username = 1 }',
  ].join('\n'));
  return file;
}

function start(env = {}) {
  return startServer({
    ADMIN_USERNAME: ADMIN.username,
    ADMIN_PASS: ADMIN.password,
    ADMIN_EMAIL: ADMIN.email,
    COMET_BCRYPT_COST: '4',
    COMET_CONFIG: configFile(),
    ...env,
  });
}

test('@rocket.chat/sdk: password login, a wrong password, and a resume token', async (t) => {
  const server = await start();
  t.after(() => server.stop());
  const sdk = require('@rocket.chat/sdk');
  require('@rocket.chat/sdk/dist/lib/log').silence();
  const { driver } = sdk;
  await driver.connect({ host: `127.0.0.1:${server.port}`, useSsl: false, timeout: 5000 });
  t.after(() => closeAsteroid(driver.asteroid));
  const userId = await driver.login({ username: ADMIN.username, password: ADMIN.password });
  assert.equal(typeof userId, 'string');
  assert.equal(await driver.asyncCall('echo', ['after login']), 'after login');
  const token = await tokenOf(driver.asteroid);
  assert.equal(typeof token, 'string', 'the SDK kept the token');

  const wrong = await connected(server);
  t.after(() => closeAsteroid(wrong));
  await assert.rejects(wrong.loginWithPassword(ADMIN.username, 'not-the-password'),
    (e) => e.error === 403 && e.reason === 'Incorrect password');

  // Another connection resumes with the token the SDK's login stored.
  const ddp = new SimpleDDP({ endpoint: server.ws, SocketConstructor: WebSocket, reconnectInterval: 200 });
  t.after(() => ddp.disconnect());
  await ddp.connect();
  const resumed = await ddp.call('login', { resume: token });
  assert.equal(resumed.id, userId);
  assert.equal(resumed.type, 'resume');
});

/** Closes an asteroid client for good (its DDP layer would otherwise reconnect). */
function closeAsteroid(client) {
  if (!client || !client.ddp) return;
  client.ddp._try_reconnect = () => {};
  if (client.ddp._socket) client.ddp._socket.close();
}

/** An asteroid client, connected (its automatic resume without a token is expected to fail). */
async function connected(server) {
  const Asteroid = require('asteroid');
  const client = new Asteroid(`127.0.0.1:${server.port}`, false);
  await new Promise((resolve) => client.on('connected', () => {
    client.resumeLoginPromise.catch(() => {});
    resolve();
  }));
  return client;
}

async function tokenOf(asteroid) {
  const key = `${asteroid._host}__${asteroid._instanceId}__login_token__`;
  return require('asteroid').utils.multiStorage.get(key);
}

test('asteroid: login and logout re-run its subscriptions', async (t) => {
  const server = await start();
  t.after(() => server.stop());
  const client = await connected(server);
  t.after(() => closeAsteroid(client));
  const sub = client.subscribe('me.named');
  await sub.ready;
  const users = client.getCollection('users');
  assert.equal(Object.keys(users._set._items).length, 0, 'anonymous: nothing');
  const id = await client.loginWithPassword(ADMIN.username, ADMIN.password);
  await waitFor(() => users._set._items[id], 5000, 'the user document after login');
  assert.equal(users._set._items[id].username, ADMIN.username);
  const services = users._set._items[id].services || {};
  assert.equal(services.password, undefined, 'no secrets published');
  assert.equal(services.resume, undefined, 'no secrets published');
  await client.logout();
  await waitFor(() => !users._set._items[id], 5000, 'the user document gone after logout');
});

test('REST: login, method.call, and the same token resumes on the socket', async (t) => {
  const server = await start();
  t.after(() => server.stop());
  const login = await fetch(`${server.http}/api/v1/login`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ user: ADMIN.username, password: ADMIN.password }),
  });
  assert.equal(login.status, 200);
  const { status, data } = await login.json();
  assert.equal(status, 'success');
  assert.equal(data.me.username, ADMIN.username);
  const auth = { 'x-user-id': data.userId, 'x-auth-token': data.authToken, 'content-type': 'application/json' };
  const call = await fetch(`${server.http}/api/v1/method.call/echo`, {
    method: 'POST', headers: auth,
    body: JSON.stringify({ message: JSON.stringify({ msg: 'method', id: '1', method: 'echo', params: [{ $date: 7 }] }) }),
  });
  const answer = await call.json();
  assert.equal(answer.success, true);
  assert.deepEqual(JSON.parse(answer.message), { msg: 'result', id: '1', result: { $date: 7 } });
  const stranger = await fetch(`${server.http}/api/v1/me`);
  assert.equal(stranger.status, 401);

  const ddp = new SimpleDDP({ endpoint: server.ws, SocketConstructor: WebSocket, reconnectInterval: 200 });
  t.after(() => ddp.disconnect());
  await ddp.connect();
  const resumed = await ddp.call('login', { resume: data.authToken });
  assert.equal(resumed.id, data.userId);
  const bad = await fetch(`${server.http}/api/v1/login`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ user: ADMIN.username, password: 'wrong' }),
  });
  assert.equal(bad.status, 401);
  assert.equal((await bad.json()).error, 'Unauthorized');
});

test('browser: a page logs in over SockJS with the digest form', { skip: noChromium }, async (t) => {
  // The page comes from another origin: cross-origin reads are the operator's choice.
  const server = await start({ OVERWRITE_SETTING_API_Enable_CORS: 'true' });
  t.after(() => server.stop());
  const sockjs = fs.readFileSync(require.resolve('sockjs-client/dist/sockjs.min.js'));
  const page = `<!doctype html><html><body><script src="/sockjs.min.js"></script><script>
    window.login = async (url, username, password) => {
      const bytes = new TextEncoder().encode(password);
      const hash = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
      const digest = Array.from(hash).map((b) => b.toString(16).padStart(2, '0')).join('');
      return new Promise((resolve, reject) => {
        const seen = [];
        const sock = new SockJS(url + '/sockjs', null, { transports: ['xhr-streaming'] });
        setTimeout(() => reject(new Error('timeout ' + JSON.stringify(seen))), 15000);
        sock.onopen = () => sock.send(JSON.stringify({ msg: 'connect', version: '1', support: ['1'] }));
        sock.onmessage = (e) => {
          const m = JSON.parse(e.data);
          seen.push(m);
          if (m.msg === 'connected') {
            sock.send(JSON.stringify({ msg: 'method', id: '1', method: 'login',
              params: [{ user: { username }, password: { digest, algorithm: 'sha-256' } }] }));
          }
          if (m.msg === 'result') { sock.close(); resolve(seen); }
        };
      });
    };
  </script></body></html>`;
  const pages = http.createServer((req, res) => {
    if (req.url === '/sockjs.min.js') { res.writeHead(200, { 'content-type': 'application/javascript' }); res.end(sockjs); }
    else { res.writeHead(200, { 'content-type': 'text/html' }); res.end(page); }
  });
  await new Promise((resolve) => pages.listen(0, '127.0.0.1', resolve));
  t.after(() => pages.close());
  const browser = await launchChromium(t);
  const tab = await browser.newPage();
  await tab.goto(`http://127.0.0.1:${pages.address().port}/`);
  const seen = await tab.evaluate(([url, u, p]) => window.login(url, u, p), [server.http, ADMIN.username, ADMIN.password]);
  const result = seen.find((m) => m.msg === 'result');
  assert.equal(result.result.type, 'password', JSON.stringify(result));
  assert.equal(result.result.token.length, 43);
  const me = seen.find((m) => m.msg === 'added' && m.collection === 'users');
  assert.equal(me.fields.username, ADMIN.username);
});

test('@rocket.chat/sdk: reads public settings and sees a setting change live', async (t) => {
  const server = await start();
  t.after(() => server.stop());
  const { driver } = require('@rocket.chat/sdk');
  require('@rocket.chat/sdk/dist/lib/log').silence();
  await driver.connect({ host: `127.0.0.1:${server.port}`, useSsl: false, timeout: 5000 });
  t.after(() => closeAsteroid(driver.asteroid));
  await driver.login({ username: ADMIN.username, password: ADMIN.password });
  const settings = await driver.asyncCall('public-settings/get', []);
  assert.ok(settings.some((s) => s._id === 'Site_Name'), 'the public settings are read');
  assert.ok(!settings.some((s) => s._id === 'DDP_Rate_Limit_Login_Enabled'), 'private ones are not');

  // The SDK's own subscribe: `[eventName, true]`, events as changes of one document.
  await driver.subscribe('stream-notify-all', 'public-settings-changed');
  const events = driver.asteroid.getCollection('stream-notify-all');
  let doc = null;
  events.reactiveQuery({}).on('change', (id) => {
    const [changed] = events.reactiveQuery({ _id: id }).result;
    if (changed && Array.isArray(changed.args) && changed.args[1] && changed.args[1]._id === 'Site_Name') doc = changed;
  });
  await driver.asyncCall('saveSetting', ['Site_Name', 'Seen Live']);
  await waitFor(() => doc !== null, 5000, 'the setting change on stream-notify-all');
  assert.equal(doc.eventName, 'public-settings-changed');
  assert.deepEqual(doc.args, ['updated', { _id: 'Site_Name', value: 'Seen Live' }]);
});
