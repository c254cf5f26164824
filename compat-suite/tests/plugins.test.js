// Server plugins seen by real clients: the repository's example plugins run as comet's
// subprocesses; @rocket.chat/sdk's driver (the DDP client Rocket.Chat bots use) sees a
// message the filter plugin rewrote, never one it rejected (its sender is told why over
// REST), and sees the /count plugin's answer; a plain HTTP client (Node's fetch) posts to the webhook bridge plugin.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { startServer, waitFor } = require('../lib/server');

const ADMIN = { username: 'boss', password: 'compat-pass-1', email: 'boss@example.com' };
const PLUGINS = path.join(__dirname, '..', '..', 'plugins');

/** A plugin folder holding the examples, each with the SDKs beside it. */
function pluginDir() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'comet-compat-plugins-'));
  for (const name of ['message-filter', 'webhook-bridge', 'counter']) {
    const target = path.join(dir, name);
    fs.cpSync(path.join(PLUGINS, 'examples', name), target, { recursive: true });
    fs.copyFileSync(path.join(PLUGINS, 'sdk', 'python', 'comet_plugin.py'), path.join(target, 'comet_plugin.py'));
    fs.copyFileSync(path.join(PLUGINS, 'sdk', 'node', 'comet-plugin.js'), path.join(target, 'comet-plugin.js'));
  }
  return dir;
}

async function runningPlugins(base, auth) {
  const resp = await fetch(`${base}/api/v1/plugins.list`, { headers: { 'X-User-Id': auth.id, 'X-Auth-Token': auth.token } });
  const body = await resp.json();
  assert.equal(resp.status, 200, JSON.stringify(body));
  return body.plugins.filter((p) => p.state === 'running').map((p) => p.id).sort();
}

test('plugins: a Rocket.Chat client sees rewritten messages and a slash command answer; fetch posts to a webhook', async (t) => {
  const dir = pluginDir();
  const server = await startServer({
    ADMIN_USERNAME: ADMIN.username,
    ADMIN_PASS: ADMIN.password,
    ADMIN_EMAIL: ADMIN.email,
    COMET_BCRYPT_COST: '4',
    COMET_PLUGIN_DIR: dir,
  });
  t.after(async () => {
    await server.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const base = server.http;
  const login = await (await fetch(`${base}/api/v1/login`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ user: ADMIN.username, password: ADMIN.password }),
  })).json();
  const auth = { id: login.data.userId, token: login.data.authToken };
  let running = [];
  await waitFor(async () => {
    running = await runningPlugins(base, auth);
    return running.length === 3;
  }, 30000, 'the example plugins running');
  assert.deepEqual(running, ['counter', 'message-filter', 'webhook-bridge']);

  const { driver } = require('@rocket.chat/sdk');
  require('@rocket.chat/sdk/dist/lib/log').silence();
  await driver.connect({ host: `127.0.0.1:${server.port}`, useSsl: false, timeout: 5000 });
  t.after(() => {
    const ddp = driver.asteroid && driver.asteroid.ddp;
    if (ddp) {
      ddp._try_reconnect = () => {};
      if (ddp._socket) ddp._socket.close();
    }
  });
  await driver.login({ username: ADMIN.username, password: ADMIN.password });
  await driver.joinRooms(['general']);
  await driver.subscribeToMessages();
  const seen = [];
  await driver.reactToMessages((err, message) => {
    if (!err) seen.push(message);
  });
  const heard = (what, match) => waitFor(() => seen.find(match), 10000, what).then(() => seen.find(match));

  // The filter rewrites: every client, this one included, reads the masked text.
  await driver.sendToRoom('what the heck', 'general');
  const masked = await heard('the masked message', (m) => m.msg === 'what the ****');
  assert.equal(masked.u.username, ADMIN.username);
  // It rejects: the sender (here over REST) is told why, and nothing is posted.
  const refused = await fetch(`${base}/api/v1/chat.postMessage`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-User-Id': auth.id, 'X-Auth-Token': auth.token },
    body: JSON.stringify({ channel: '#general', text: 'a forbidden thing' }),
  });
  const refusal = await refused.json();
  assert.equal(refused.status, 400, JSON.stringify(refusal));
  assert.equal(refusal.errorType, 'error-app-prevented');
  assert.match(refusal.error, /forbidden/);

  // A plain HTTP client posts through the webhook bridge.
  const posted = await fetch(`${base}/plugins/webhook-bridge/incoming`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ text: 'deploy finished' }),
  });
  assert.equal(posted.status, 200, await posted.text());
  const bridged = await heard('the webhook message', (m) => m.msg === 'deploy finished');
  assert.equal(bridged.u.username, 'webhook-bridge.bot');

  // The slash command answers in the room.
  const rid = await driver.getRoomId('general');
  await driver.callMethod('slashCommand', { cmd: 'count', params: '', msg: { rid } });
  const counted = await heard('the /count answer', (m) => /^\/count was called 1 time/.test(m.msg || ''));
  assert.equal(counted.u.username, 'counter.bot');
  assert.ok(!seen.some((m) => /forbidden/.test(m.msg || '')), 'a rejected message reached a client');
});
