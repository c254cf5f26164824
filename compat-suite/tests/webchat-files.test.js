// comet's web chat with files, in headless Chromium (Playwright) and Firefox (WebDriver
// BiDi): a file attached with the button and a picture dropped on the room go up; the
// picture shows inline (its blurred preview first), the other file is a download link that
// reads back as sent with the page's own credentials, and the page's strict policy is never
// broken. Screenshots go to target/screenshots/*-files.png.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const zlib = require('node:zlib');
const { startServer } = require('../lib/server');
const {
  noChromium, noFirefox, launchChromium, launchFirefox, recordPolicyViolations,
} = require('../lib/browser');

const SHOTS = path.join(__dirname, '..', '..', 'target', 'screenshots');
const ADMIN = { ADMIN_USERNAME: 'boss', ADMIN_PASS: 'boss-pass-1', ADMIN_EMAIL: 'boss@example.com' };
const NOTES = 'quarterly numbers\n'.repeat(200);

/** A 640×400 PNG of coloured bands (made here: no image files in the repository). */
function png() {
  const [w, h] = [640, 400];
  const raw = Buffer.alloc((w * 3 + 1) * h);
  for (let y = 0; y < h; y += 1) {
    for (let x = 0; x < w; x += 1) {
      const at = y * (w * 3 + 1) + 1 + x * 3;
      raw[at] = (x * 255) / w; raw[at + 1] = (y * 255) / h; raw[at + 2] = 160;
    }
  }
  const crcTable = [...Array(256)].map((_, n) => {
    let c = n;
    for (let k = 0; k < 8; k += 1) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf) => { let c = 0xffffffff; for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8); return (c ^ 0xffffffff) >>> 0; };
  const chunk = (type, data) => {
    const len = Buffer.alloc(4); len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type), data]);
    const sum = Buffer.alloc(4); sum.writeUInt32BE(crc(body));
    return Buffer.concat([len, body, sum]);
  };
  const ihdr = Buffer.alloc(13); ihdr.writeUInt32BE(w, 0); ihdr.writeUInt32BE(h, 4); ihdr[8] = 8; ihdr[9] = 2;
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}

/** Drops `file` on the room as a person dragging it from their desktop would. */
function dropFile(name, type, base64) {
  // Playwright hands one argument (an array), Puppeteer several.
  if (Array.isArray(name)) [name, type, base64] = name;
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], name, { type }));
  const room = document.getElementById('room');
  room.dispatchEvent(new DragEvent('dragover', { dataTransfer: data, bubbles: true, cancelable: true }));
  room.dispatchEvent(new DragEvent('drop', { dataTransfer: data, bubbles: true, cancelable: true }));
}

/** What the page shows of the room's files, once the picture has loaded. */
function shownFiles() {
  const img = document.querySelector('#messages img.attachment-image');
  const link = [...document.querySelectorAll('#messages a.download')].find((a) => a.textContent.includes('notes.txt'));
  if (!img || !img.complete || img.naturalWidth === 0 || !link) return null;
  return {
    width: img.naturalWidth,
    preview: img.style.backgroundImage.startsWith('url("data:image/jpeg;base64,'),
    src: img.getAttribute('src'),
    href: link.getAttribute('href'),
  };
}

/** Reads a file the page links to with the page's own credentials (its cookies). */
async function readBack(href) {
  const res = await fetch(href);
  return { status: res.status, type: res.headers.get('content-type'), text: await res.text() };
}

async function checkPage(page, evaluate, who) {
  const shown = await waitForValue(() => evaluate(shownFiles), `${who} sees the files`);
  assert.equal(shown.width, 480, 'the thumbnail stands for the picture');
  assert.ok(shown.preview, 'the blurred preview shows while it loads');
  assert.match(shown.src, /^\/file-upload\//);
  const back = await evaluate(readBack, shown.href);
  assert.equal(back.status, 200);
  assert.equal(back.text, NOTES);
}

async function waitForValue(get, what, within = 15000) {
  const until = Date.now() + within;
  for (;;) {
    const value = await get();
    if (value) return value;
    if (Date.now() > until) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test('web chat files in Chromium: attach with the button, drop a picture, see it inline, download the other',
  { skip: noChromium, timeout: 120000 },
  async (t) => {
    fs.mkdirSync(SHOTS, { recursive: true });
    const server = await startServer({ ...ADMIN, COMET_BCRYPT_COST: '4' });
    t.after(() => server.stop());
    const browser = await launchChromium(t);
    const open = async () => {
      const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
      const page = await context.newPage();
      const errors = [];
      page.on('pageerror', (e) => errors.push(String(e)));
      await page.addInitScript(recordPolicyViolations);
      await page.goto(`${server.http}/`);
      return { page, errors };
    };
    const boss = await open();
    await boss.page.locator('#signin-user').fill('boss');
    await boss.page.locator('#signin-pass').fill('boss-pass-1');
    await boss.page.getByRole('button', { name: 'Sign in' }).click();
    await boss.page.locator('#composer-input').waitFor();

    await boss.page.locator('#attach-input').setInputFiles({ name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from(NOTES) });
    await boss.page.evaluate(dropFile, ['chart.png', 'image/png', png().toString('base64')]);
    await checkPage(boss.page, (fn, arg) => boss.page.evaluate(fn, arg), 'the sender');
    await boss.page.screenshot({ path: path.join(SHOTS, 'chromium-files.png') });
    const violations = await boss.page.evaluate(() => window.__policyViolations || []);
    assert.deepEqual(violations, []);
    assert.deepEqual(boss.errors, []);
  });

test('web chat files in Firefox: the same by the button and by dropping',
  { skip: noFirefox, timeout: 150000 },
  async (t) => {
    fs.mkdirSync(SHOTS, { recursive: true });
    const server = await startServer({ ...ADMIN, COMET_BCRYPT_COST: '4' });
    t.after(() => server.stop());
    const browser = await launchFirefox(t);
    const context = await browser.createBrowserContext();
    const page = await context.newPage();
    await page.setViewport({ width: 1100, height: 720 });
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.evaluateOnNewDocument(recordPolicyViolations);
    await page.goto(`${server.http}/`);
    await page.type('#signin-user', 'boss');
    await page.type('#signin-pass', 'boss-pass-1');
    await page.keyboard.press('Enter');
    await page.waitForSelector('#composer-input', { visible: true });

    const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'comet-files-'));
    const notes = path.join(dir, 'notes.txt');
    fs.writeFileSync(notes, NOTES);
    const input = await page.$('#attach-input');
    await input.uploadFile(notes);
    await page.evaluate(dropFile, 'chart.png', 'image/png', png().toString('base64'));
    await checkPage(page, (fn, arg) => page.evaluate(fn, arg), 'the sender');
    await page.screenshot({ path: path.join(SHOTS, 'firefox-files.png') });
    assert.deepEqual(await page.evaluate(() => window.__policyViolations || []), []);
    assert.deepEqual(errors, []);
  });
