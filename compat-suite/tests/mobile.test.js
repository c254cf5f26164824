// Rocket.Chat's mobile app's calls through @rocket.chat/sdk: its REST half (`api`, the
// calls `app/lib/services/restApi.ts` makes) and its realtime half (`driver`, with the
// trailing second-factor argument the app's SDK adds to every method). A user opens a
// room, sends, answers in a thread, stars, pins, searches, runs /topic and /me, and saves
// the room's notification preferences.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { startServer, waitFor } = require('../lib/server');

const ADMIN = { username: 'boss', password: 'compat-pass-1', email: 'boss@example.com' };

function closeAsteroid(client) {
  if (!client || !client.ddp) return;
  client.ddp._try_reconnect = () => {};
  if (client.ddp._socket) client.ddp._socket.close();
}

/** The SDK's REST calls swallow failures (they log and resolve undefined): fail loudly. */
async function rest(api, method, endpoint, data, auth = true) {
  const answer = await api[method](endpoint, data, auth);
  assert.ok(answer && answer.success !== false, `${endpoint}: ${JSON.stringify(answer)}`);
  return answer;
}

test('@rocket.chat/sdk as the mobile app: room, send, thread, star, pin, search, /topic, /me, notifications', async (t) => {
  const server = await startServer({
    ADMIN_USERNAME: ADMIN.username,
    ADMIN_PASS: ADMIN.password,
    ADMIN_EMAIL: ADMIN.email,
    COMET_BCRYPT_COST: '4',
    OVERWRITE_SETTING_API_Enable_Rate_Limiter: 'false',
  });
  t.after(() => server.stop());
  const sdk = require('@rocket.chat/sdk');
  require('@rocket.chat/sdk/dist/lib/log').silence();
  const { api, driver } = sdk;
  api.url = `${server.http}/api/v1/`;

  // The login screen's settings, then the login the app reads `data.me` from.
  const login = await rest(api, 'get', 'settings.public', { _id: 'Accounts_ShowFormLogin,Accounts_PasswordReset' }, false);
  assert.deepEqual(login.settings.map((s) => [s._id, s.value]).sort(),
    [['Accounts_PasswordReset', true], ['Accounts_ShowFormLogin', true]]);
  const logged = await api.login({ username: ADMIN.username, password: ADMIN.password });
  assert.equal(logged.data.me.username, ADMIN.username);
  assert.equal(typeof logged.data.me.settings.preferences, 'object');

  // The realtime half: login, the room, and the methods with the trailing slot.
  await driver.connect({ host: `127.0.0.1:${server.port}`, useSsl: false, timeout: 5000 });
  t.after(() => closeAsteroid(driver.asteroid));
  await driver.login({ username: ADMIN.username, password: ADMIN.password });
  const room = await driver.asyncCall('getRoomByTypeAndName', ['c', 'general', '']);
  const rid = room._id;
  assert.deepEqual(await driver.asyncCall('license:getModules', ['']), []);

  // Send, then answer in a thread; the thread list shows it.
  const sent = await rest(api, 'post', 'chat.sendMessage', { message: { rid, msg: 'lunch at (noon)?' } });
  const root = sent.message._id;
  await rest(api, 'post', 'chat.sendMessage', { message: { rid, msg: 'yes', tmid: root } });
  const threads = await rest(api, 'get', 'chat.getThreadsList', { rid });
  assert.equal(threads.threads[0]._id, root);
  assert.equal(threads.threads[0].tcount, 1);
  const next = await driver.asyncCall('loadNextMessages', [rid, { $date: 0 }, 50, '']);
  assert.ok(next.messages.some((m) => m._id === root));

  // Star and pin, and the lists of each.
  await rest(api, 'post', 'chat.starMessage', { messageId: root });
  await rest(api, 'post', 'chat.pinMessage', { messageId: root });
  assert.equal((await rest(api, 'get', 'chat.getStarredMessages', { roomId: rid })).messages[0]._id, root);
  assert.equal((await rest(api, 'get', 'chat.getPinnedMessages', { roomId: rid })).messages[0]._id, root);

  // Search: the text is literal.
  const found = await rest(api, 'get', 'chat.search', { roomId: rid, searchText: '(noon)?' });
  assert.deepEqual(found.messages.map((m) => m._id), [root]);

  // /topic and /me.
  await rest(api, 'post', 'commands.run', { command: 'topic', params: 'Lunch', roomId: rid });
  assert.equal((await rest(api, 'get', 'rooms.info', { roomId: rid })).room.topic, 'Lunch');
  await rest(api, 'post', 'commands.run', { command: 'me', params: 'is hungry', roomId: rid });
  await waitFor(async () => {
    const last = await api.get('channels.messages', { roomId: rid, count: 1 });
    return last && last.messages[0] && last.messages[0].msg === '_is hungry_';
  }, 5000, '/me message');

  // The room's notification preferences, seen on the subscription.
  await rest(api, 'post', 'rooms.saveNotification', {
    roomId: rid, notifications: { mobilePushNotifications: 'nothing', hideUnreadStatus: '1' },
  });
  const subs = await rest(api, 'get', 'subscriptions.get');
  const sub = subs.update.find((s) => s.rid === rid);
  assert.equal(sub.mobilePushNotifications, 'nothing');
  assert.equal(sub.hideUnreadStatus, true);
  await api.logout();
});
