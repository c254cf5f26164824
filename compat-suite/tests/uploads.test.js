// Files as Rocket.Chat's clients send and read them, through third-party HTTP code: Node's
// own fetch and FormData (undici, the same multipart a browser or React Native's FormData
// sends) for the uploads and downloads, @rocket.chat/sdk's REST half for the login and
// the JSON calls. One user uploads with `rooms.upload` and with `rooms.media` +
// `rooms.mediaConfirm`; a member downloads with `rc_uid`/`rc_token`, seeks with a Range;
// a stranger and an anonymous reader get 403 and 401, with or without the file's id.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { startServer } = require('../lib/server');

const ADMIN = { username: 'boss', password: 'compat-pass-1', email: 'boss@example.com' };

async function loginRest(base, user, password) {
  const resp = await fetch(`${base}/api/v1/login`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ user, password }),
  });
  const body = await resp.json();
  assert.equal(resp.status, 200, JSON.stringify(body));
  return { id: body.data.userId, token: body.data.authToken };
}

function authHeaders(auth) {
  return { 'X-User-Id': auth.id, 'X-Auth-Token': auth.token };
}

async function postForm(base, path, auth, parts) {
  const form = new FormData();
  for (const [name, value, filename] of parts) {
    if (filename) form.append(name, value, filename);
    else form.append(name, value);
  }
  const resp = await fetch(`${base}${path}`, { method: 'POST', headers: authHeaders(auth), body: form });
  return { status: resp.status, body: await resp.json() };
}

test('uploads through fetch and FormData: rooms.upload, rooms.media + mediaConfirm, reads by members only, ranges', async (t) => {
  const server = await startServer({
    ADMIN_USERNAME: ADMIN.username,
    ADMIN_PASS: ADMIN.password,
    ADMIN_EMAIL: ADMIN.email,
    COMET_BCRYPT_COST: '4',
    OVERWRITE_SETTING_API_Enable_Rate_Limiter: 'false',
  });
  t.after(() => server.stop());
  const base = server.http;
  const sdk = require('@rocket.chat/sdk');
  require('@rocket.chat/sdk/dist/lib/log').silence();
  const { api } = sdk;
  api.url = `${base}/api/v1/`;
  await api.login({ username: ADMIN.username, password: ADMIN.password });
  const boss = await loginRest(base, ADMIN.username, ADMIN.password);
  const created = await api.post('groups.create', { name: 'design' });
  assert.ok(created && created.success, JSON.stringify(created));
  const rid = created.group._id;

  // One step, as bots and older clients do.
  const notes = Buffer.from('meeting notes\n'.repeat(5000));
  const one = await postForm(base, `/api/v1/rooms.upload/${rid}`, boss, [
    ['file', new Blob([notes], { type: 'text/plain' }), 'notes.txt'],
    ['msg', 'the notes'],
    ['description', 'from Monday'],
  ]);
  assert.equal(one.status, 200, JSON.stringify(one.body));
  assert.equal(one.body.message.msg, 'the notes');
  assert.equal(one.body.message.file.name, 'notes.txt');
  assert.equal(one.body.message.attachments[0].description, 'from Monday');
  const notesUrl = one.body.message.attachments[0].title_link;

  // Two steps, as the mobile app does since 6.10.
  const audio = Buffer.concat([Buffer.from('ID3\x03\x00\x00\x00\x00\x00\x00'), Buffer.alloc(200000, 0x55)]);
  const media = await postForm(base, `/api/v1/rooms.media/${rid}`, boss, [
    ['file', new Blob([audio], { type: 'audio/mpeg' }), 'voice.mp3'],
  ]);
  assert.equal(media.status, 200, JSON.stringify(media.body));
  const fileId = media.body.file._id;
  const confirmed = await api.post(`rooms.mediaConfirm/${rid}/${fileId}`, { msg: 'listen', description: 'voice note' });
  assert.ok(confirmed && confirmed.success, JSON.stringify(confirmed));
  const attachment = confirmed.message.attachments[0];
  assert.equal(attachment.audio_type, 'audio/mpeg');
  assert.equal(attachment.audio_size, audio.length);
  const audioUrl = attachment.audio_url;

  // The app's files screen.
  const files = await api.get('groups.files', { roomId: rid, sort: { uploadedAt: -1 } });
  assert.deepEqual(files.files.map((f) => f.name).sort(), ['notes.txt', 'voice.mp3']);

  // A member reads them with the app's query credentials; a Range seeks.
  const withToken = (url, who) => `${base}${url}?rc_uid=${who.id}&rc_token=${who.token}`;
  const whole = await fetch(withToken(notesUrl, boss));
  assert.equal(whole.status, 200);
  assert.deepEqual(Buffer.from(await whole.arrayBuffer()), notes);
  const part = await fetch(withToken(audioUrl, boss), { headers: { Range: 'bytes=1000-1999' } });
  assert.equal(part.status, 206);
  assert.equal(part.headers.get('content-range'), `bytes 1000-1999/${audio.length}`);
  assert.deepEqual(Buffer.from(await part.arrayBuffer()), audio.subarray(1000, 2000));

  // A stranger and an anonymous reader get nothing, with or without a real id.
  const reg = await fetch(`${base}/api/v1/users.register`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ username: 'eve', email: 'eve@example.com', pass: 'eve-pass-123', name: 'Eve' }),
  });
  assert.equal(reg.status, 200);
  const eve = await loginRest(base, 'eve', 'eve-pass-123');
  for (const url of [notesUrl, audioUrl, '/file-upload/NoSuchFile1234567/x.txt']) {
    const stranger = await fetch(withToken(url, eve));
    assert.equal(stranger.status, 403, url);
    assert.ok(!(await stranger.text()).includes('meeting notes'));
    const anonymous = await fetch(`${base}${url}`);
    assert.equal(anonymous.status, 401, url);
  }
  const listed = await fetch(`${base}/api/v1/groups.files?roomId=${rid}`, { headers: authHeaders(eve) });
  assert.notEqual(listed.status, 200);
  const refused = await postForm(base, `/api/v1/rooms.upload/${rid}`, eve, [
    ['file', new Blob(['hi'], { type: 'text/plain' }), 'hi.txt'],
  ]);
  assert.equal(refused.status, 403, JSON.stringify(refused.body));
});
