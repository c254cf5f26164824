// Presence with real clients: a raw WebSocket client watches a user on
// `stream-user-presence` while an @rocket.chat/sdk client logs in as that user, goes away,
// chooses busy with a status text and leaves; a quick reconnect does not show the user
// offline, the last socket closing does.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { startServer } = require('../lib/server');
const { RawDdp, password } = require('../lib/raw-ddp');

const GRACE_MS = 800;

/** The next presence frame about `uid`; returns `[username, status, statusText]`. */
async function status(watcher, uid, want, within = 5000) {
  const frame = await watcher.next((m) => m.collection === 'stream-user-presence' && m.id === uid
    && m.fields.args[0][1] === want, within, `status ${want} of ${uid}`);
  assert.equal(frame.msg, 'changed');
  assert.equal(frame.fields.uid, uid);
  assert.equal(frame.fields.eventName, uid);
  return frame.fields.args[0];
}

test('presence: a watcher sees an @rocket.chat/sdk user come online, go away, busy, and offline only when its last socket closes', async (t) => {
  const server = await startServer({ COMET_BCRYPT_COST: '4', COMET_PRESENCE_GRACE_MS: String(GRACE_MS) });
  t.after(() => server.stop());
  const maker = await RawDdp.open(server.ws);
  const carol = await maker.call('createUser', { username: 'carol', email: 'carol@example.com', password: password('pw-carol') });
  maker.close();
  const watcher = await RawDdp.open(server.ws);
  t.after(() => watcher.close());
  await watcher.call('createUser', { username: 'dave', email: 'dave@example.com', password: password('pw-dave') });
  const ready = await watcher.sub('stream-user-presence', '', { added: [carol.id] });
  assert.equal(ready.msg, 'ready');
  // Carol's account-making socket closed: she is offline once the grace is over.
  await status(watcher, carol.id, 0);

  const { driver } = require('@rocket.chat/sdk');
  require('@rocket.chat/sdk/dist/lib/log').silence();
  await driver.connect({ host: `127.0.0.1:${server.port}`, useSsl: false, timeout: 5000 });
  const closeSdk = () => {
    const ddp = driver.asteroid && driver.asteroid.ddp;
    if (!ddp) return;
    ddp._try_reconnect = () => {};
    if (ddp._socket) ddp._socket.close();
  };
  t.after(closeSdk);
  await driver.login({ username: 'carol', password: 'pw-carol' });
  assert.deepEqual(await status(watcher, carol.id, 1), ['carol', 1, '']);
  await driver.asyncCall('UserPresence:away', []);
  assert.deepEqual(await status(watcher, carol.id, 2), ['carol', 2, '']);
  await driver.asyncCall('setUserStatus', ['busy', 'on a call']);
  assert.deepEqual(await status(watcher, carol.id, 3), ['carol', 3, 'on a call']);

  // A second socket of carol's, then the SDK's closes: still busy, never offline.
  const second = await RawDdp.open(server.ws);
  await second.call('login', { user: { username: 'carol' }, password: password('pw-carol') });
  closeSdk();
  // A quick reconnect: the second socket closes and a third logs in at once.
  const token = (await second.call('getNewToken')).token;
  second.close();
  const third = await RawDdp.open(server.ws);
  await third.call('login', { resume: token });
  await new Promise((r) => setTimeout(r, GRACE_MS * 2));
  const flapped = watcher.frames.find((m) => m.collection === 'stream-user-presence' && m.id === carol.id
    && m.fields.args[0][1] === 0);
  assert.equal(flapped, undefined, 'carol flapped offline while reconnecting');
  // The last socket closes: offline after the grace.
  third.close();
  const offline = await status(watcher, carol.id, 0, GRACE_MS + 5000);
  assert.equal(offline[0], 'carol');

  // A stranger (no login) is refused the stream, and REST tells it nothing.
  const stranger = await RawDdp.open(server.ws);
  t.after(() => stranger.close());
  const nosub = await stranger.sub('stream-user-presence', '', { added: [carol.id] });
  assert.equal(nosub.msg, 'nosub');
  assert.equal(nosub.error.error, 'not-allowed');
  const res = await fetch(`${server.http}/api/v1/users.presence?ids[]=${carol.id}`);
  assert.equal(res.status, 401);
});
