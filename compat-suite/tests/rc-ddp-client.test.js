// Rocket.Chat's own DDP SDK, @rocket.chat/ddp-client (what its web client uses): digest
// login, REST through the SDK's client, streams as the SDK subscribes them, a stranger kept
// out of a private group, and the SDK's own reconnect (resume login, subscribe again) across
// a server restart.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { startServer, waitFor } = require('../lib/server');

// The SDK expects a browser's WebSocket; Node 20 has none of its own.
globalThis.WebSocket = require('ws');
const { DDPSDK } = require('@rocket.chat/ddp-client');

const ADMIN = { ADMIN_USERNAME: 'boss', ADMIN_PASS: 'boss-pass-1', ADMIN_EMAIL: 'boss@example.com' };
const digest = (password) => crypto.createHash('sha256').update(password).digest('hex');

/** An SDK connected to `server` (it appends /websocket itself), retrying for a while when cut off. */
async function sdkFor(t, server) {
  const sdk = await DDPSDK.createAndConnect(server.http, { retryCount: 100, retryTime: 200 });
  t.after(() => sdk.connection.close());
  return sdk;
}

/** Collects what `sdk.stream(name, key)` delivers; `seen(test)` waits for a match. */
function listen(sdk, name, key) {
  const got = [];
  const subscription = sdk.stream(name, key, (...args) => got.push(args));
  return {
    subscription,
    got,
    seen: async (match, what, within = 5000) => {
      await waitFor(() => got.some(match), within, what);
      return got.find(match);
    },
  };
}

test('@rocket.chat/ddp-client: login, REST, streams, a private group kept private, reconnect and resume',
  { timeout: 90000 },
  async (t) => {
    let server = await startServer({ ...ADMIN, COMET_BCRYPT_COST: '4' });
    t.after(() => server.stop());

    const boss = await sdkFor(t, server);
    // As the web client does: the SDK sends what it is given as the SHA-256 digest.
    await boss.account.loginWithPassword('boss', digest('boss-pass-1'));
    assert.ok(boss.account.uid);
    assert.equal(boss.account.user.username, 'boss');
    await assert.rejects(
      (await sdkFor(t, server)).account.loginWithPassword('boss', digest('wrong')),
      (e) => e.error === 403,
    );

    // Two people sign up over the SDK's REST client, then log in over DDP.
    for (const name of ['ann', 'eve']) {
      const res = await boss.rest.post('/v1/users.register',
        { username: name, email: `${name}@example.com`, pass: `${name}-pass-1`, name });
      assert.equal(res.success, true);
    }
    const ann = await sdkFor(t, server);
    await ann.account.loginWithPassword('ann', digest('ann-pass-1'));
    const eve = await sdkFor(t, server);
    await eve.account.loginWithPassword('eve', digest('eve-pass-1'));
    const me = await ann.rest.get('/v1/me');
    assert.equal(me.username, 'ann');

    // Ann hears of the group she is added to on her own user stream.
    const annSubs = listen(ann, 'notify-user', `${ann.account.uid}/subscriptions-changed`);
    await annSubs.subscription.ready();
    const made = await boss.call('createPrivateGroup', 'ops', ['ann']);
    const rid = made.rid;
    await annSubs.seen(([action, sub]) => action === 'inserted' && sub.rid === rid, 'ann hears of ops');

    // Messages and typing reach the member, never the stranger.
    const annMessages = listen(ann, 'room-messages', rid);
    await annMessages.subscription.ready();
    const eveMessages = listen(eve, 'room-messages', rid);
    await assert.rejects(eveMessages.subscription.ready());
    const annTyping = listen(ann, 'notify-room', `${rid}/user-activity`);
    await annTyping.subscription.ready();
    await boss.call('stream-notify-room', `${rid}/user-activity`, 'boss', ['user-typing'], {});
    await annTyping.seen(([user, activity]) => user === 'boss' && activity.includes('user-typing'), 'typing');
    await boss.call('sendMessage', { _id: crypto.randomUUID(), rid, msg: 'ops only' });
    await annMessages.seen(([m]) => m.msg === 'ops only', 'the message');
    // Rocket.Chat answers a stranger's loadHistory with false.
    assert.equal(await eve.call('loadHistory', rid, null, 10, null), false);
    assert.deepEqual(eveMessages.got, []);
    const eveRest = await eve.rest.get('/v1/groups.history', { roomId: rid }).catch((e) => e);
    assert.ok(!JSON.stringify(eveRest).includes('ops only'), 'nor over REST');

    // A restart: the SDK reconnects by itself, resumes its login and subscribes again.
    const annStates = [];
    ann.connection.on('connection', (state) => annStates.push(state));
    const { port, dataDir } = server;
    await server.stop();
    server = await startServer({ ...ADMIN, COMET_BCRYPT_COST: '4', COMET_DATA_DIR: dataDir }, port);
    await waitFor(() => ann.connection.status === 'connected' && boss.connection.status === 'connected',
      15000, 'both SDKs to reconnect');
    await waitFor(async () => {
      await boss.call('sendMessage', { _id: crypto.randomUUID(), rid, msg: 'after the restart' }).catch(() => {});
      return annMessages.got.some(([m]) => m.msg === 'after the restart');
    }, 10000, 'a message after the restart');
    assert.equal(ann.account.uid, me._id);
    assert.ok(annStates.includes('reconnecting') && annStates.at(-1) === 'connected', annStates.join());
  });
