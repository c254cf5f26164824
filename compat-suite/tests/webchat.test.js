// comet's own pages in headless Chromium: the web chat at / between two people, and the
// operator's page at /admin. Screenshots go to target/screenshots/ for a person to look at.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { startServer, waitFor } = require('../lib/server');
const { RawDdp, password } = require('../lib/raw-ddp');

const {
  noChromium, launchChromium, unlabelledControls, clippedControls,
} = require('../lib/browser');
const SHOTS = path.join(__dirname, '..', '..', 'target', 'screenshots');
const ADMIN = { ADMIN_USERNAME: 'boss', ADMIN_PASS: 'boss-pass-1', ADMIN_EMAIL: 'boss@example.com' };

/** A fresh browser context (its own storage) with a page that accepts confirmations. */
async function person(browser, url) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  const page = await context.newPage();
  page.on('dialog', (d) => d.accept());
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error' && /Content Security Policy/.test(m.text())) errors.push(m.text()); });
  await page.goto(url);
  return { page, errors };
}

async function signIn(page, user, pass) {
  const form = page.locator('#signin-form');
  await form.getByLabel('Username or email').fill(user);
  await form.getByLabel('Password').fill(pass);
  await form.getByRole('button', { name: 'Sign in' }).click();
}

async function signUp(page, name, username, pass) {
  await page.getByText('Create an account').click();
  await page.locator('#signup-name').fill(name);
  await page.locator('#signup-username').fill(username);
  await page.locator('#signup-email').fill(`${username}@example.com`);
  await page.locator('#signup-pass').fill(pass);
  await page.getByRole('button', { name: 'Sign up' }).click();
}

const roomButton = (page, name) => page.locator('#rooms button', { hasText: name });
const message = (page, text) => page.locator('#messages li', { hasText: text });

test('web chat: two people chat, see typing, unread, edits and deletes; reload and restart keep them in',
  { skip: noChromium, timeout: 180000 },
  async (t) => {
    fs.mkdirSync(SHOTS, { recursive: true });
    let server = await startServer({ ...ADMIN, COMET_BCRYPT_COST: '4' });
    t.after(() => server.stop());
    const url = server.http;
    const browser = await launchChromium(t);

    // The page itself: served by comet with a strict policy.
    const res = await fetch(`${url}/`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-security-policy'), /script-src 'self'/);

    const boss = await person(browser, `${url}/`);
    await signIn(boss.page, 'boss', 'boss-pass-1');
    await roomButton(boss.page, 'general').waitFor();
    assert.deepEqual(await boss.page.evaluate(unlabelledControls), []);
    assert.deepEqual(await boss.page.evaluate(clippedControls), []);

    // The second person signs up on the page.
    const ann = await person(browser, `${url}/`);
    await signUp(ann.page, 'Ann Example', 'ann', 'ann-pass-1');
    await roomButton(ann.page, 'general').waitFor();
    await roomButton(ann.page, 'general').click();
    await roomButton(boss.page, 'general').click();

    // Typing shows on the other side, then the message.
    await boss.page.getByLabel('Message', { exact: true }).pressSequentially('hello ann', { delay: 20 });
    await ann.page.locator('#typing', { hasText: 'boss is typing' }).waitFor();
    await boss.page.getByRole('button', { name: 'Send' }).click();
    await message(ann.page, 'hello ann').waitFor();
    await message(boss.page, 'hello ann').waitFor();
    await waitFor(async () => (await ann.page.locator('#typing').textContent()) === '', 8000, 'typing to end');

    // Ann opens a direct message with boss; a message in general is unread for her.
    await ann.page.getByLabel('Direct message to').fill('boss');
    await ann.page.locator('#create-dm').getByRole('button', { name: 'Open' }).click();
    await ann.page.locator('#room-title', { hasText: '@' }).waitFor();
    await boss.page.getByLabel('Message', { exact: true }).fill('are you there?');
    await boss.page.getByLabel('Message', { exact: true }).press('Enter');
    const unread = roomButton(ann.page, 'general').locator('.badge.unread');
    await unread.waitFor();
    // A channel counts mentions only (Rocket.Chat's default): the badge marks news.
    assert.equal(await unread.getAttribute('aria-label'), 'unread messages');
    await roomButton(ann.page, 'general').click();
    await message(ann.page, 'are you there?').waitFor();
    await unread.waitFor({ state: 'detached' });

    // Boss edits and deletes; both sides see it.
    const mine = message(boss.page, 'are you there?');
    await mine.getByRole('button', { name: 'Edit message' }).click();
    const editor = boss.page.getByRole('textbox', { name: 'Edit message' });
    await editor.fill('are you still there?');
    await editor.press('Enter');
    await message(ann.page, 'are you still there?').locator('text=(edited)').waitFor();
    await message(boss.page, 'hello ann').getByRole('button', { name: 'Delete message' }).click();
    await message(ann.page, 'hello ann').waitFor({ state: 'detached' });
    await message(boss.page, 'hello ann').waitFor({ state: 'detached' });

    // A reaction shows on both sides.
    await message(ann.page, 'are you still there?').getByRole('button', { name: 'React :+1:' }).click();
    await message(boss.page, 'are you still there?').locator('.reactions button', { hasText: '1' }).waitFor();
    await boss.page.screenshot({ path: path.join(SHOTS, 'chat.png') });
    // A phone's width: one column, nothing cut off.
    await boss.page.setViewportSize({ width: 390, height: 800 });
    assert.deepEqual(await boss.page.evaluate(clippedControls), []);
    await boss.page.screenshot({ path: path.join(SHOTS, 'chat-narrow.png') });
    await boss.page.setViewportSize({ width: 1100, height: 720 });

    // A reload keeps the session.
    await ann.page.reload();
    await roomButton(ann.page, 'general').waitFor();
    assert.equal(await ann.page.locator('#signin').isHidden(), true);

    // A restart: the page says it is reconnecting, then carries on.
    const { port, dataDir } = server;
    await server.stop();
    await boss.page.locator('#banner', { hasText: 'reconnecting' }).waitFor({ timeout: 5000 });
    server = await startServer({ ...ADMIN, COMET_BCRYPT_COST: '4', COMET_DATA_DIR: dataDir }, port);
    await boss.page.locator('#banner').waitFor({ state: 'hidden', timeout: 20000 });
    await ann.page.locator('#banner').waitFor({ state: 'hidden', timeout: 20000 });
    await boss.page.getByLabel('Message', { exact: true }).fill('back again');
    await boss.page.getByLabel('Message', { exact: true }).press('Enter');
    await message(ann.page, 'back again').waitFor({ timeout: 10000 });

    assert.deepEqual(boss.errors, []);
    assert.deepEqual(ann.errors, []);
  });

test('operator page: administrators only; its figures move under load; it closes a connection; it lists and disables plugins',
  { skip: noChromium, timeout: 120000 },
  async (t) => {
    fs.mkdirSync(SHOTS, { recursive: true });
    // One example plugin, with its SDK beside it.
    const plugins = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'comet-admin-plugins-'));
    const counter = path.join(plugins, 'counter');
    fs.cpSync(path.join(__dirname, '..', '..', 'plugins', 'examples', 'counter'), counter, { recursive: true });
    fs.copyFileSync(path.join(__dirname, '..', '..', 'plugins', 'sdk', 'python', 'comet_plugin.py'), path.join(counter, 'comet_plugin.py'));
    const server = await startServer({ ...ADMIN, COMET_BCRYPT_COST: '4', COMET_PLUGIN_DIR: plugins });
    t.after(async () => {
      await server.stop();
      fs.rmSync(plugins, { recursive: true, force: true });
    });
    const browser = await launchChromium(t);

    // A stranger and a plain user get no figures.
    const stranger = await RawDdp.open(server.ws);
    t.after(() => stranger.close());
    const refused = await stranger.sub('comet.operator');
    assert.equal(refused.msg, 'nosub');
    await assert.rejects(stranger.call('comet.operator.closeConnection', 'x'), /Not allowed/);
    await stranger.call('createUser', { username: 'joe', email: 'joe@example.com', password: password('joe-pass-1') });
    const joe = await person(browser, `${server.http}/admin`);
    await signIn(joe.page, 'joe', 'joe-pass-1');
    await joe.page.locator('#denied').waitFor();
    assert.equal(await joe.page.locator('#cards .card').count(), 0);
    assert.equal(await stranger.call('comet.operator.closeConnection', 'x').catch((e) => e.error), 'error-not-allowed');

    const admin = await person(browser, `${server.http}/admin`);
    await signIn(admin.page, 'boss', 'boss-pass-1');
    await admin.page.locator('[data-figure="sessions"]').waitFor();
    await waitFor(async () => Number(await admin.page.locator('[data-figure="sessions"]').textContent()) >= 3, 5000, 'sessions counted');
    // The plugin is listed with its state.
    const plugin = admin.page.locator('#plugins tr', { hasText: 'counter' });
    await plugin.locator('td', { hasText: /^running$/ }).waitFor({ timeout: 20000 });

    // A load: method calls and deliveries show up within a few samples.
    const loader = await RawDdp.open(server.ws);
    t.after(() => loader.close());
    const stop = Date.now() + 4000;
    const load = (async () => { while (Date.now() < stop) await loader.call('echo', 1); })();
    await waitFor(async () => Number(await admin.page.locator('[data-figure="methodCallsPerSec"]').textContent()) > 10,
      8000, 'method calls per second to move');
    await admin.page.locator('#methods td', { hasText: 'echo' }).waitFor();
    await load;
    assert.ok(Number(await admin.page.locator('[data-figure="deliveriesPerSec"]').textContent()) >= 0);
    assert.deepEqual(await admin.page.evaluate(unlabelledControls), []);
    assert.deepEqual(await admin.page.evaluate(clippedControls), []);
    await admin.page.screenshot({ path: path.join(SHOTS, 'admin.png'), fullPage: true });
    await admin.page.setViewportSize({ width: 390, height: 800 });
    assert.deepEqual(await admin.page.evaluate(clippedControls), []);
    await admin.page.screenshot({ path: path.join(SHOTS, 'admin-narrow.png'), fullPage: true });
    await admin.page.setViewportSize({ width: 1100, height: 720 });

    // Closing the loader's connection from the page.
    const rows = admin.page.locator('#connections tr');
    await waitFor(async () => (await rows.count()) >= 3, 6000, 'connections listed');
    const before = loader.ws.readyState;
    assert.equal(before, 1);
    const closed = new Promise((resolve) => loader.ws.once('close', resolve));
    // The loader is the one connection without a user besides the stranger's: close both.
    for (const button of await admin.page.locator('#connections tr', { hasText: '(not signed in)' }).getByRole('button', { name: /Close/ }).all()) {
      await button.click();
    }
    await closed;

    // Disabled from the page, it says so.
    await plugin.getByRole('button', { name: 'Disable the plugin counter' }).click();
    await plugin.locator('td', { hasText: /^disabled$/ }).waitFor({ timeout: 20000 });
    await plugin.getByRole('button', { name: 'Enable the plugin counter' }).waitFor();
    assert.deepEqual(admin.errors, []);
  });

test('web chat: the sign-up form follows the registration setting, and a secret link opens it',
  { skip: noChromium, timeout: 60000 },
  async (t) => {
    const server = await startServer({ ...ADMIN, COMET_BCRYPT_COST: '4' });
    t.after(() => server.stop());
    const browser = await launchChromium(t);
    const login = await (await fetch(`${server.http}/api/v1/login`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ user: 'boss', password: 'boss-pass-1' }),
    })).json();
    const setting = async (id, value) => {
      const res = await fetch(`${server.http}/api/v1/settings/${id}`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'X-User-Id': login.data.userId, 'X-Auth-Token': login.data.authToken },
        body: JSON.stringify({ value }),
      });
      assert.equal(res.status, 200);
    };

    await setting('Site_Name', 'Harbour');
    await setting('Accounts_RegistrationForm', 'Disabled');
    const closed = await person(browser, `${server.http}/`);
    await closed.page.locator('#site-name', { hasText: 'Harbour' }).waitFor();
    assert.equal(await closed.page.title(), 'Harbour');
    assert.equal(await closed.page.locator('#signup').isHidden(), true);

    await setting('Accounts_RegistrationForm', 'Secret URL');
    await setting('Accounts_RegistrationForm_SecretURL', 'open-sesame-42');
    const plain = await person(browser, `${server.http}/`);
    await plain.page.locator('#site-name', { hasText: 'Harbour' }).waitFor();
    assert.equal(await plain.page.locator('#signup').isHidden(), true, 'no link, no form');

    const wrongLink = await person(browser, `${server.http}/#register/open-sesame-41`);
    await wrongLink.page.locator('#signup-link-error').waitFor();
    assert.equal(await wrongLink.page.locator('#signup').isHidden(), true, 'a wrong link opens nothing');

    // A link that is not valid percent-encoding: the page still works and says the link is wrong.
    const garbled = await person(browser, `${server.http}/#register/%E0%A4%A`);
    await garbled.page.locator('#signup-link-error').waitFor();
    await garbled.page.locator('#signin-user').waitFor();
    assert.deepEqual(garbled.errors, []);

    const invited = await person(browser, `${server.http}/#register/open-sesame-42`);
    await signUp(invited.page, 'Cy Invited', 'cy', 'cy-pass-1');
    await roomButton(invited.page, 'general').waitFor();
    assert.deepEqual(invited.errors, []);
  });
