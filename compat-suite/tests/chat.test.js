// Chatting with real clients: an @rocket.chat/sdk bot that joins general, answers another
// client, posts to a room and by DM, reacts and skips its own messages; simpleddp clients
// through the scenarios users rely on (history, edits, deletes, unread counts, typing,
// joins and leaves, private groups, DMs, threads, mutes, read-only rooms, archiving); a
// page in headless Chromium chatting over SockJS; and a second comet process writing the
// same store, whose messages reach the first one's clients.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const WebSocket = require('ws');
const SimpleDDP = require('simpleddp');
const { startServer, waitFor } = require('../lib/server');

const ADMIN = { username: 'boss', password: 'compat-pass-1', email: 'boss@example.com' };
const { noChromium, launchChromium } = require('../lib/browser');

function start(env = {}) {
  return startServer({
    ADMIN_USERNAME: ADMIN.username,
    ADMIN_PASS: ADMIN.password,
    ADMIN_EMAIL: ADMIN.email,
    COMET_BCRYPT_COST: '4',
    ...env,
  });
}

/** A simpleddp client logged in as a new user `name` (or as `login` when given). */
async function person(server, name, login) {
  const ddp = new SimpleDDP({ endpoint: server.ws, SocketConstructor: WebSocket, reconnectInterval: 200 });
  await ddp.connect();
  let result;
  if (login) {
    result = await ddp.call('login', { user: { username: login.username }, password: login.password });
  } else {
    result = await ddp.call('createUser', { username: name, email: `${name}@example.com`, password: 'pw-' + name });
  }
  ddp.userId = result.id;
  ddp.events = [];
  ddp.on('changed', (m) => {
    if (m.collection && m.collection.startsWith('stream-')) ddp.events.push(m);
  });
  return ddp;
}

/** Waits for an event `eventName` on `collection` matching `test`; returns its args. */
async function heard(ddp, collection, eventName, test = () => true, within = 5000) {
  let found;
  await waitFor(() => {
    found = ddp.events.find((m) => m.collection === collection && m.fields.eventName === eventName
      && test(m.fields.args));
    return Boolean(found);
  }, within, `${eventName} on ${collection}`);
  ddp.events.splice(ddp.events.indexOf(found), 1);
  return found.fields.args;
}

async function listen(ddp, name, ...params) {
  const sub = ddp.subscribe(name, ...params);
  await sub.ready();
  return sub;
}

/** Subscribes where the server must refuse; resolves with the nosub's error. (simpleddp's own
 * subscribe() leaves a promise unhandled when a sub fails, so this goes through its events.) */
function refused(ddp, name, ...params) {
  return new Promise((resolve) => {
    let id;
    const listener = ddp.on('nosub', (m) => { if (m.id === id) { listener.stop(); resolve(m.error); } });
    id = ddp.ddpConnection.sub(name, params);
  });
}

/** sendMessage as a well-behaved client: waits out the per-user rate limit and retries. */
async function say(ddp, message) {
  for (;;) {
    try {
      return await ddp.call('sendMessage', message);
    } catch (e) {
      if (e.error !== 'too-many-requests') throw e;
      await new Promise((r) => setTimeout(r, (e.details && e.details.timeToReset) || 1000));
    }
  }
}

function never(ddp, collection, test, ms = 500) {
  return new Promise((resolve, reject) => setTimeout(() => {
    const bad = ddp.events.find((m) => m.collection === collection && test(m.fields));
    if (bad) reject(new Error(`unexpected ${JSON.stringify(bad)}`)); else resolve();
  }, ms));
}

function closeAsteroid(client) {
  if (!client || !client.ddp) return;
  client.ddp._try_reconnect = () => {};
  if (client.ddp._socket) client.ddp._socket.close();
}

test('@rocket.chat/sdk: a bot joins general, answers, posts to a room and by DM, reacts, skips itself', async (t) => {
  const server = await start();
  t.after(() => server.stop());
  const alice = await person(server, 'alice');
  t.after(() => alice.disconnect());
  await listen(alice, 'stream-room-messages', '__my_messages__', false);

  const { driver } = require('@rocket.chat/sdk');
  require('@rocket.chat/sdk/dist/lib/log').silence();
  await driver.connect({ host: `127.0.0.1:${server.port}`, useSsl: false, timeout: 5000 });
  t.after(() => closeAsteroid(driver.asteroid));
  const botId = await driver.login({ username: ADMIN.username, password: ADMIN.password });
  await driver.joinRooms(['general']);
  await driver.subscribeToMessages();
  const answered = [];
  await driver.respondToMessages(async (err, message, meta) => {
    if (err) return;
    answered.push({ message, meta });
    await driver.sendToRoomId(`pong to ${message.u.username}`, message.rid);
    await driver.setReaction(':thumbsup:', message._id);
  }, { rooms: ['general'], dm: true });

  const generalId = await alice.call('getRoomIdByNameOrId', 'general');
  const mine = await say(alice, { rid: generalId, msg: 'ping bot' });
  const pong = await heard(alice, 'stream-room-messages', '__my_messages__',
    (args) => args[0].msg === 'pong to alice');
  assert.equal(pong[0].u._id, botId);
  assert.deepEqual(pong[1], { roomParticipant: true, roomType: 'c', roomName: 'general' });
  await heard(alice, 'stream-room-messages', '__my_messages__',
    (args) => args[0]._id === mine._id && args[0].reactions && args[0].reactions[':thumbsup:']);
  // The bot heard alice once, and never itself (its own pong came back on the stream).
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(answered.length, 1, JSON.stringify(answered.map((a) => a.message.msg)));
  assert.equal(answered[0].meta.roomType, 'c');

  await driver.sendToRoom('announcement for general', 'general');
  await heard(alice, 'stream-room-messages', '__my_messages__', (args) => args[0].msg === 'announcement for general');
  await driver.sendDirectToUser('hello alice, privately', 'alice');
  const dm = await heard(alice, 'stream-room-messages', '__my_messages__', (args) => args[0].msg === 'hello alice, privately');
  assert.equal(dm[1].roomType, 'd');
  assert.equal(dm[1].roomParticipant, true);
  // A DM to the bot is answered too (dm: true).
  await say(alice, { rid: dm[0].rid, msg: 'thanks, bot' });
  await heard(alice, 'stream-room-messages', '__my_messages__',
    (args) => args[0].rid === dm[0].rid && args[0].msg === 'pong to alice');
});

test('simpleddp: history, edits, deletes, unread counts, typing, joins and leaves', async (t) => {
  const server = await start();
  t.after(() => server.stop());
  const ann = await person(server, 'ann');
  const bob = await person(server, 'bob');
  t.after(() => { ann.disconnect(); bob.disconnect(); });
  const { rid } = await ann.call('createChannel', 'dev', []);
  await listen(ann, 'stream-room-messages', rid, false);
  assert.equal(await bob.call('joinRoom', rid), true);
  const joined = await heard(ann, 'stream-room-messages', rid, (a) => a[0].t === 'uj');
  assert.equal(joined[0].msg, 'bob');
  await listen(bob, 'stream-room-messages', rid, false);
  await listen(bob, 'stream-notify-room', `${rid}/deleteMessage`, false);
  await listen(bob, 'stream-notify-user', `${bob.userId}/subscriptions-changed`, false);

  // History pages back, newest first.
  for (let i = 0; i < 12; i++) {
    await say(ann, { rid, msg: `m${i}` });
    if (i % 5 === 4) await new Promise((r) => setTimeout(r, 1100));
  }
  const first = await bob.call('loadHistory', rid, null, 5, null);
  assert.deepEqual(first.messages.map((m) => m.msg), ['m11', 'm10', 'm9', 'm8', 'm7']);
  const next = await bob.call('loadHistory', rid, first.messages[4].ts, 5, null);
  assert.deepEqual(next.messages.map((m) => m.msg), ['m6', 'm5', 'm4', 'm3', 'm2']);

  // Unread counts (channels count mentions by default) and readMessages.
  await say(ann, { rid, msg: 'look @bob' });
  const counted = await heard(bob, 'stream-notify-user', `${bob.userId}/subscriptions-changed`,
    (a) => a[1].userMentions === 1);
  assert.equal(counted[1].unread, 1);
  await bob.call('readMessages', rid);
  await heard(bob, 'stream-notify-user', `${bob.userId}/subscriptions-changed`, (a) => a[1].unread === 0 && a[1].alert === false);

  // An edit and a delete reach the other member.
  const msg = await say(ann, { rid, msg: 'draft' });
  await ann.call('updateMessage', { _id: msg._id, rid, msg: 'final' });
  const edited = await heard(bob, 'stream-room-messages', rid, (a) => a[0]._id === msg._id && a[0].msg === 'final');
  assert.equal(edited[0].editedBy.username, 'ann');
  await ann.call('deleteMessage', { _id: msg._id });
  assert.deepEqual(await heard(bob, 'stream-notify-room', `${rid}/deleteMessage`), [{ _id: msg._id }]);
  const admin = await person(server, null, ADMIN);
  t.after(() => admin.disconnect());
  await admin.call('saveSetting', 'Message_ShowDeletedStatus', true);
  const gone = await say(ann, { rid, msg: 'soon a tombstone' });
  await ann.call('deleteMessage', { _id: gone._id });
  const tomb = await heard(bob, 'stream-room-messages', rid, (a) => a[0]._id === gone._id && a[0].t === 'rm');
  assert.equal(tomb[0].msg, '');

  // Typing reaches the other member, not the typist.
  await listen(ann, 'stream-notify-room', `${rid}/typing`, false);
  await listen(bob, 'stream-notify-room', `${rid}/typing`, false);
  await bob.call('stream-notify-room', `${rid}/typing`, 'bob', true);
  assert.deepEqual(await heard(ann, 'stream-notify-room', `${rid}/typing`), ['bob', true]);
  await never(bob, 'stream-notify-room', (f) => f.eventName === `${rid}/typing`);

  // Leaving writes `ul` and stops the room's messages for the one who left.
  await bob.call('leaveRoom', rid);
  await heard(ann, 'stream-room-messages', rid, (a) => a[0].t === 'ul' && a[0].msg === 'bob');
  bob.events.length = 0;
  await say(ann, { rid, msg: 'after bob left' });
  await never(bob, 'stream-room-messages', (f) => f.args && f.args[0].msg === 'after bob left');
});

test('simpleddp: private groups, DMs, threads, mutes, read-only rooms and archiving', async (t) => {
  const server = await start();
  t.after(() => server.stop());
  const ann = await person(server, 'ann');
  const bob = await person(server, 'bob');
  const eve = await person(server, 'eve');
  t.after(() => { ann.disconnect(); bob.disconnect(); eve.disconnect(); });

  // A private group: members hear it, a stranger is refused every way in.
  const { rid } = await ann.call('createPrivateGroup', 'core', ['bob']);
  await listen(bob, 'stream-room-messages', rid, false);
  assert.equal((await refused(eve, 'stream-room-messages', rid, false)).error, 'not-allowed');
  await assert.rejects(eve.call('sendMessage', { rid, msg: 'hi' }), (e) => e.error === 'error-not-allowed');
  assert.equal(await eve.call('loadHistory', rid, null, 20, null), false);
  await assert.rejects(eve.call('getRoomIdByNameOrId', 'core'), (e) => e.error === 'error-not-allowed');

  // Threads count their replies.
  const question = await say(ann, { rid, msg: 'question?' });
  await say(bob, { rid, msg: 'answer', tmid: question._id });
  const parent = await heard(bob, 'stream-room-messages', rid, (a) => a[0]._id === question._id && a[0].tcount === 1);
  assert.deepEqual(parent[0].replies, [bob.userId]);
  const replies = await ann.call('getThreadMessages', { tmid: question._id });
  assert.deepEqual(replies.map((m) => m.msg), ['answer']);

  // A muted member cannot post until unmuted.
  await ann.call('muteUserInRoom', { rid, username: 'bob' });
  await heard(bob, 'stream-room-messages', rid, (a) => a[0].t === 'user-muted');
  await assert.rejects(bob.call('sendMessage', { rid, msg: 'muted?' }), (e) => e.error === 'error-user-muted');
  await ann.call('unmuteUserInRoom', { rid, username: 'bob' });
  await say(bob, { rid, msg: 'unmuted' });

  // Read-only: only those with post-readonly (the owner) post.
  await ann.call('saveRoomSettings', rid, 'readOnly', true);
  await assert.rejects(bob.call('sendMessage', { rid, msg: 'ro?' }), (e) => e.error === 'error-room-readonly');
  await say(ann, { rid, msg: 'owner still posts' });
  await ann.call('saveRoomSettings', rid, 'readOnly', false);

  // Archived: nobody posts.
  await ann.call('archiveRoom', rid);
  await assert.rejects(ann.call('sendMessage', { rid, msg: 'archived?' }), (e) => e.error === 'error-room-archived');
  await ann.call('unarchiveRoom', rid).catch(() => {});

  // A DM: created once, both members hear it, a third party does not.
  const dm = await ann.call('createDirectMessage', 'bob');
  const again = await bob.call('createDirectMessage', 'ann');
  assert.equal(dm.rid, again.rid);
  await listen(bob, 'stream-room-messages', dm.rid, false);
  assert.equal((await refused(eve, 'stream-room-messages', dm.rid, false)).error, 'not-allowed');
  await say(ann, { rid: dm.rid, msg: 'just us' });
  await heard(bob, 'stream-room-messages', dm.rid, (a) => a[0].msg === 'just us');
  await never(eve, 'stream-room-messages', () => true);
});

test('browser: a page chats over SockJS', { skip: noChromium }, async (t) => {
  // The page comes from another origin: cross-origin reads are the operator's choice.
  const server = await start({ OVERWRITE_SETTING_API_Enable_CORS: 'true' });
  t.after(() => server.stop());
  const ann = await person(server, 'ann');
  t.after(() => ann.disconnect());
  const sockjs = fs.readFileSync(require.resolve('sockjs-client/dist/sockjs.min.js'));
  const page = `<!doctype html><html><body><script src="/sockjs.min.js"></script><script>
    window.chat = (url, username, password) => new Promise((resolve, reject) => {
      const seen = [];
      let n = 0;
      const sock = new SockJS(url + '/sockjs', null, { transports: ['xhr-streaming'] });
      const send = (m) => sock.send(JSON.stringify(m));
      const call = (method, ...params) => send({ msg: 'method', id: String(++n), method, params });
      setTimeout(() => reject(new Error('timeout ' + JSON.stringify(seen))), 15000);
      sock.onopen = () => send({ msg: 'connect', version: '1', support: ['1'] });
      sock.onmessage = (e) => {
        const m = JSON.parse(e.data);
        seen.push(m);
        if (m.msg === 'connected') call('login', { user: { username }, password });
        if (m.msg === 'result' && m.id === '1') {
          send({ msg: 'sub', id: 's1', name: 'stream-room-messages', params: ['GENERAL', false] });
        }
        if (m.msg === 'ready') { window.ready = true; call('sendMessage', { rid: 'GENERAL', msg: 'from the browser' }); }
        if (m.msg === 'changed' && m.collection === 'stream-room-messages'
            && m.fields.args[0].msg === 'from node') { sock.close(); resolve(seen); }
      };
    });
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
  await listen(ann, 'stream-room-messages', 'GENERAL', false);
  const seenPromise = tab.evaluate(([url, u, p]) => window.chat(url, u, p), [server.http, ADMIN.username, ADMIN.password]);
  const fromBrowser = await heard(ann, 'stream-room-messages', 'GENERAL', (a) => a[0].msg === 'from the browser');
  assert.equal(fromBrowser[0].u.username, ADMIN.username);
  await say(ann, { rid: 'GENERAL', msg: 'from node' });
  const seen = await seenPromise;
  // Only the room stream's frames: the page also hears its own user's document change (presence).
  const own = seen.find((m) => m.msg === 'changed' && m.collection === 'stream-room-messages'
    && m.fields.args[0].msg === 'from the browser');
  assert.ok(own, 'the page hears its own message too');
});

test('a second comet process writing the same store reaches the first one\'s clients', async (t) => {
  const first = await start();
  t.after(() => first.stop());
  const second = await start({ COMET_DATA_DIR: first.dataDir });
  t.after(() => second.stop());
  const ann = await person(first, 'ann');
  t.after(() => ann.disconnect());
  const { rid } = await ann.call('createChannel', 'shared', []);
  await listen(ann, 'stream-room-messages', rid, false);
  const elsewhere = await person(second, null, { username: 'ann', password: 'pw-ann' });
  t.after(() => elsewhere.disconnect());
  await say(elsewhere, { rid, msg: 'written by the other process' });
  const args = await heard(ann, 'stream-room-messages', rid, (a) => a[0].msg === 'written by the other process');
  assert.equal(args[0].u.username, 'ann');
});
