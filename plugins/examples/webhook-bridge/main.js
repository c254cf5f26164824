'use strict';
// An example plugin: a webhook bridge. POST /plugins/webhook-bridge/incoming with a JSON
// body {"text": "...", "alias"?: "..."} (or plain text) posts it to the configured room as
// the plugin's bot. With a `token` configured, callers must send it as X-Webhook-Token.
// GET /plugins/webhook-bridge/whoami tells who comet says the caller is.

const path = require('node:path');
let sdk;
try {
  sdk = require('./comet-plugin');
} catch {
  sdk = require(path.join(__dirname, '..', '..', 'sdk', 'node', 'comet-plugin'));
}

const plugin = new sdk.Plugin();
const json = (status, value) => ({ status, headers: { 'content-type': 'application/json' }, body: JSON.stringify(value) });

async function targetRoom(api) {
  const name = plugin.config.room || 'general';
  const room = await api.getRoom(undefined, name);
  if (!room) throw new Error(`no room named ${name}`);
  return room;
}

plugin.hook('OnActivate', async (_params, api) => {
  try {
    const room = await targetRoom(api);
    await api.joinRoom(room._id).catch(() => null);
  } catch (error) {
    api.log(`webhook bridge: ${error.message}`, 'warn');
  }
  return null;
});

plugin.hook('ServeHTTP', async (req, api) => {
  if (req.method === 'GET' && req.path === '/whoami') {
    return json(200, {
      userId: req.userId || null,
      sawCredentials: Object.keys(req.headers).some((h) => ['x-auth-token', 'x-user-id', 'cookie', 'authorization'].includes(h)),
    });
  }
  if (req.path !== '/incoming') return json(404, { error: 'not found' });
  if (req.method !== 'POST') return json(405, { error: 'POST only' });
  const token = plugin.config.token || '';
  if (token && req.headers['x-webhook-token'] !== token) return json(401, { error: 'bad token' });
  let text = req.body || '';
  let alias;
  if ((req.headers['content-type'] || '').startsWith('application/json')) {
    try {
      const body = JSON.parse(text);
      text = body.text;
      alias = body.alias;
    } catch {
      return json(400, { error: 'the body is not JSON' });
    }
  }
  if (typeof text !== 'string' || !text.trim()) return json(400, { error: 'text is required' });
  const room = await targetRoom(api);
  try {
    const message = await api.post(room._id, text.slice(0, 5000), alias ? { alias } : {});
    return json(200, { ok: true, messageId: message._id });
  } catch (error) {
    return json(502, { error: error.error || error.message });
  }
});

plugin.run();
