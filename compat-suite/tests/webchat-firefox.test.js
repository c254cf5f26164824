// comet's own pages in headless Firefox (Debian's ESR, driven over WebDriver BiDi): one
// person works the chat by keyboard alone, a second one signs up and chats back; the operator's
// page shows its figures to the administrator and refuses the other. Screenshots go to
// target/screenshots/firefox-*.png.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { startServer, waitFor } = require('../lib/server');
const {
  noFirefox, launchFirefox, unlabelledControls, clippedControls, recordPolicyViolations,
} = require('../lib/browser');

const SHOTS = path.join(__dirname, '..', '..', 'target', 'screenshots');
const ADMIN = { ADMIN_USERNAME: 'boss', ADMIN_PASS: 'boss-pass-1', ADMIN_EMAIL: 'boss@example.com' };

/** A fresh browser context (its own storage) with a page that accepts confirmations. */
async function person(browser, url) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  await page.setViewport({ width: 1100, height: 720 });
  page.on('dialog', (d) => d.accept());
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.evaluateOnNewDocument(recordPolicyViolations);
  await page.goto(url);
  return { page, errors, context };
}

/** Waits until a shown element matching `selector` holds `text` (or every text of a list); resolves to it. */
async function find(page, selector, text = '', timeout = 10000) {
  const texts = [].concat(text);
  const handle = await page.waitForFunction(
    (s, ts) => [...document.querySelectorAll(s)]
      .find((e) => ts.every((t) => e.textContent.includes(t)) && e.getClientRects().length > 0),
    { timeout }, selector, texts);
  return handle.asElement();
}

/** Waits until no element matching `selector` holds `text`. */
async function gone(page, selector, text = '', timeout = 10000) {
  await page.waitForFunction(
    (s, t) => ![...document.querySelectorAll(s)].some((e) => e.textContent.includes(t) && e.getClientRects().length > 0),
    { timeout }, selector, text);
}

/**
 * Presses Tab (or Shift+Tab, `back`) until the focused element passes `isTarget(arg)`, as a
 * keyboard user would.
 */
async function tabTo(page, isTarget, arg, what, back = false) {
  for (let presses = 0; presses < 60; presses += 1) {
    if (back) await page.keyboard.down('Shift');
    await page.keyboard.press('Tab');
    if (back) await page.keyboard.up('Shift');
    if (await page.evaluate(isTarget, arg)) return;
  }
  throw new Error(`${back ? 'Shift+Tab' : 'Tab'} never reached ${what}`);
}

const focusedId = (page) => page.evaluate(() => document.activeElement && document.activeElement.id);
const focusedRoom = (name) => document.activeElement.matches('#rooms button') && document.activeElement.textContent.includes(name);

async function policyViolations(page) {
  return page.evaluate(() => window.__policyViolations || ['the recorder did not run']);
}

test('web chat in Firefox: by keyboard alone, with a second person; reload and restart keep them in',
  { skip: noFirefox, timeout: 180000 },
  async (t) => {
    fs.mkdirSync(SHOTS, { recursive: true });
    let server = await startServer({ ...ADMIN, COMET_BCRYPT_COST: '4' });
    t.after(() => server.stop());
    const url = server.http;
    // Two people, two browsers: each window has the keyboard focus of its own.
    const [bossBrowser, annBrowser] = await Promise.all([launchFirefox(t), launchFirefox(t)]);

    // Boss signs in without a mouse: the page puts the cursor in the first field.
    const boss = await person(bossBrowser, `${url}/`);
    await find(boss.page, '#signin h2', 'Sign in');
    await waitFor(async () => (await focusedId(boss.page)) === 'signin-user', 5000, 'focus on the username field');
    await boss.page.keyboard.type('boss');
    await boss.page.keyboard.press('Tab');
    assert.equal(await focusedId(boss.page), 'signin-pass');
    await boss.page.keyboard.type('boss-pass-1');
    await boss.page.keyboard.press('Enter');
    await find(boss.page, '#rooms button', 'general');
    assert.deepEqual(await boss.page.evaluate(unlabelledControls), []);
    assert.deepEqual(await boss.page.evaluate(clippedControls), []);

    // Ann signs up on the page.
    const ann = await person(annBrowser, `${url}/`);
    await (await find(ann.page, '#signup summary', 'Create an account')).click();
    await ann.page.type('#signup-name', 'Ann Example');
    await ann.page.type('#signup-username', 'ann');
    await ann.page.type('#signup-email', 'ann@example.com');
    await ann.page.type('#signup-pass', 'ann-pass-1');
    await (await find(ann.page, '#signup-form button', 'Sign up')).click();
    await (await find(ann.page, '#rooms button', 'general')).click();
    await find(ann.page, '#room-title', 'general');

    // Signing in opens general with the cursor in the message box; boss goes back to the
    // room list by Shift+Tab and opens general again with Enter.
    await find(boss.page, '#room-title', 'general');
    await waitFor(async () => (await focusedId(boss.page)) === 'composer-input', 5000, 'focus in the message box');
    await tabTo(boss.page, focusedRoom, 'general', 'the general room', true);
    await boss.page.keyboard.press('Enter');
    await find(boss.page, '#room-title', 'general');
    await waitFor(async () => (await focusedId(boss.page)) === 'composer-input', 5000, 'focus in the message box');
    await boss.page.keyboard.type('hello ann', { delay: 20 });
    await find(ann.page, '#typing', 'boss is typing');
    await boss.page.keyboard.press('Enter');
    await find(ann.page, '#messages li', 'hello ann');
    await find(boss.page, '#messages li', 'hello ann');
    await waitFor(async () => (await ann.page.$eval('#typing', (e) => e.textContent)) === '', 8000, 'typing to end');

    // Ann goes to a direct message with boss; what boss writes in general is news for her.
    await ann.page.type('#create-dm-user', 'boss');
    await ann.page.keyboard.press('Enter');
    await find(ann.page, '#room-title', '@');
    await boss.page.keyboard.type('are you there?');
    await boss.page.keyboard.press('Enter');
    await find(ann.page, '#rooms button .badge.unread');
    await (await find(ann.page, '#rooms button', 'general')).click();
    await find(ann.page, '#messages li', 'are you there?');
    await gone(ann.page, '#rooms button .badge.unread');

    // Boss edits by keyboard: Shift+Tab from the message box up to the message's Edit button,
    // Enter, retype, Enter.
    await tabTo(boss.page, () => document.activeElement.getAttribute('aria-label') === 'Edit message'
      && document.activeElement.closest('li').textContent.includes('are you there?'), null, 'the Edit button', true);
    await boss.page.keyboard.press('Enter');
    await waitFor(async () => boss.page.evaluate(() => document.activeElement.getAttribute('aria-label') === 'Edit message'
      && document.activeElement.tagName === 'INPUT'), 5000, 'focus in the editor');
    await boss.page.evaluate(() => document.activeElement.select());
    await boss.page.keyboard.type('are you still there?');
    // Ann reacts while the editor is open: the update does not throw boss's typing away.
    const asked = await find(ann.page, '#messages li', 'are you there?');
    await (await asked.$('button[aria-label="React :tada:"]')).click();
    await find(ann.page, '#messages li .reactions button', '1');
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.equal(await boss.page.evaluate(() => document.activeElement.value), 'are you still there?');
    await boss.page.keyboard.press('Enter');
    await find(ann.page, '#messages li', ['are you still there?', '(edited)']);
    await find(boss.page, '#messages li', ['are you still there?', '(edited)', '1']);

    // A delete (confirmed in a dialog) and a reaction show on both sides.
    const hello = await find(boss.page, '#messages li', 'hello ann');
    await (await hello.$('button[aria-label="Delete message"]')).click();
    await gone(ann.page, '#messages li', 'hello ann');
    await gone(boss.page, '#messages li', 'hello ann');
    const still = await find(ann.page, '#messages li', 'are you still there?');
    await (await still.$('button[aria-label="React :+1:"]')).click();
    await boss.page.waitForFunction(() => document.querySelectorAll('#messages li .reactions button').length === 2);
    await boss.page.screenshot({ path: path.join(SHOTS, 'firefox-chat.png') });

    // A reload keeps the session.
    await ann.page.reload();
    await find(ann.page, '#rooms button', 'general');
    assert.equal(await ann.page.$eval('#signin', (e) => e.hidden), true);

    // A restart: the page says it is reconnecting, then carries on.
    const { port, dataDir } = server;
    await server.stop();
    await find(boss.page, '#banner', 'reconnecting', 5000);
    server = await startServer({ ...ADMIN, COMET_BCRYPT_COST: '4', COMET_DATA_DIR: dataDir }, port);
    await boss.page.waitForFunction(() => document.getElementById('banner').hidden, { timeout: 20000 });
    await ann.page.waitForFunction(() => document.getElementById('banner').hidden, { timeout: 20000 });
    await boss.page.focus('#composer-input');
    await boss.page.keyboard.type('back again');
    await boss.page.keyboard.press('Enter');
    await find(ann.page, '#messages li', 'back again');

    // The operator's page: boss is already signed in there (same browser storage); Ann is refused.
    const bossAdmin = await boss.context.newPage();
    await bossAdmin.setViewport({ width: 1100, height: 900 });
    await bossAdmin.evaluateOnNewDocument(recordPolicyViolations);
    await bossAdmin.goto(`${server.http}/admin`);
    await bossAdmin.waitForFunction(() => Number(document.querySelector('[data-figure="sessions"]')?.textContent) >= 2,
      { timeout: 10000 });
    await find(bossAdmin, '#connections tr', 'ann');
    assert.deepEqual(await bossAdmin.evaluate(unlabelledControls), []);
    assert.deepEqual(await bossAdmin.evaluate(clippedControls), []);
    await bossAdmin.screenshot({ path: path.join(SHOTS, 'firefox-admin.png'), fullPage: true });
    await ann.page.goto(`${server.http}/admin`);
    await find(ann.page, '#denied', 'administrators only');
    assert.equal(await ann.page.$$eval('#cards .card', (cards) => cards.length), 0);

    assert.deepEqual(boss.errors, []);
    assert.deepEqual(ann.errors, []);
    assert.deepEqual(await policyViolations(boss.page), []);
    assert.deepEqual(await policyViolations(bossAdmin), []);
    assert.deepEqual(await policyViolations(ann.page), []);
  });
