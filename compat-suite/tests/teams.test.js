// Teams with real clients: an @rocket.chat/sdk client (its REST `api` and its DDP `driver`)
// creates a private team and a public channel in it; a raw DDP client who is a team member
// hears the channel, a raw client who is not sees nothing of it by any path; the team's
// deletion takes the channel with it.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { startServer } = require('../lib/server');
const { RawDdp, password } = require('../lib/raw-ddp');

/** A REST GET as a raw client: [status, body]. */
async function restGet(server, route, auth) {
  const res = await fetch(`${server.http}/api/v1/${route}`, {
    headers: auth ? { 'X-User-Id': auth.id, 'X-Auth-Token': auth.token } : {},
  });
  return [res.status, await res.json()];
}

async function refusedCall(client, method, ...params) {
  try {
    await client.call(method, ...params);
  } catch (e) {
    return e;
  }
  assert.fail(`${method} was not refused`);
}

test('teams: an @rocket.chat/sdk owner makes a private team and a channel; a member hears it, a stranger sees nothing; delete', async (t) => {
  const server = await startServer({ COMET_BCRYPT_COST: '4' });
  t.after(() => server.stop());
  const accounts = {};
  for (const name of ['tess', 'mo', 'eve']) {
    const client = await RawDdp.open(server.ws);
    const made = await client.call('createUser', { username: name, email: `${name}@example.com`, password: password(`pw-${name}`) });
    accounts[name] = { client, id: made.id, token: made.token };
    t.after(() => client.close());
  }
  const mo = accounts.mo.client;
  const eve = accounts.eve.client;

  // The owner: the SDK's REST half makes the team, its DDP half the channel.
  const { api, driver } = require('@rocket.chat/sdk');
  require('@rocket.chat/sdk/dist/lib/log').silence();
  api.url = `${server.http}/api/v1/`;
  await api.login({ username: 'tess', password: 'pw-tess' });
  const made = await api.post('teams.create', { name: 'skunkworks', type: 1, members: ['mo'] });
  assert.ok(made && made.success, JSON.stringify(made));
  const teamId = made.team._id;
  assert.equal(made.team.type, 1);
  const taken = await api.post('teams.create', { name: 'skunkworks', type: 0 });
  assert.equal(taken, undefined, 'a second team of the same name was made');

  await driver.connect({ host: `127.0.0.1:${server.port}`, useSsl: false, timeout: 5000 });
  t.after(() => {
    const ddp = driver.asteroid && driver.asteroid.ddp;
    if (!ddp) return;
    ddp._try_reconnect = () => {};
    if (ddp._socket) ddp._socket.close();
  });
  await driver.login({ username: 'tess', password: 'pw-tess' });
  const channel = await driver.asyncCall('createChannel', ['skunk-lab', [], false, {}, { teamId }]);
  assert.equal(channel.t, 'c');
  const rid = channel.rid;
  const rooms = await api.get('teams.listRooms', { teamId });
  assert.deepEqual(rooms.rooms.map((r) => r._id), [rid]);

  // The member (not in the channel) may listen to it and join it.
  const memberSub = await mo.sub('stream-room-messages', rid, false);
  assert.equal(memberSub.msg, 'ready');
  assert.equal(await mo.call('joinRoom', rid), true);
  const [status, info] = await restGet(server, `teams.info?teamId=${teamId}`, accounts.mo);
  assert.equal(status, 200, JSON.stringify(info));

  // The stranger: refused on the stream, by the methods and over REST.
  const nosub = await eve.sub('stream-room-messages', rid, false);
  assert.equal(nosub.msg, 'nosub');
  assert.equal(nosub.error.error, 'not-allowed');
  await refusedCall(eve, 'joinRoom', rid);
  await refusedCall(eve, 'getRoomIdByNameOrId', 'skunk-lab');
  const visible = await eve.call('rooms/get');
  assert.ok(!visible.some((r) => r._id === rid), 'rooms/get showed the channel to a stranger');
  for (const route of [`teams.info?teamId=${teamId}`, `teams.listRooms?teamId=${teamId}`, `channels.info?roomId=${rid}`]) {
    const [code, body] = await restGet(server, route, accounts.eve);
    assert.ok(code >= 400, `${route}: ${code} ${JSON.stringify(body)}`);
  }

  // A message reaches the member and never the stranger.
  await driver.sendToRoomId('only for the team', rid);
  const heard = await mo.next((m) => m.collection === 'stream-room-messages' && m.fields.args[0].msg === 'only for the team');
  assert.equal(heard.fields.eventName, rid);
  await new Promise((r) => setTimeout(r, 300));
  assert.ok(!eve.frames.some((m) => m.collection === 'stream-room-messages'), 'the stranger heard the channel');

  // Deleting the team takes the channel asked for with it.
  const deleted = await api.post('teams.delete', { teamId, roomsToRemove: [rid] });
  assert.ok(deleted && deleted.success, JSON.stringify(deleted));
  await refusedCall(mo, 'getRoomIdByNameOrId', rid);
  const [, gone] = await restGet(server, `teams.info?teamId=${teamId}`, accounts.mo);
  assert.equal(gone.success, false);
  const left = await api.get('teams.list', {});
  assert.deepEqual(left.teams, []);
});
