// Debian's Chromium, headless, for the tests that drive a real browser.
'use strict';
const fs = require('node:fs');
const { chromium } = require('playwright-core');

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

/** Why a browser test is skipped (no Chromium), or false when it can run. */
const noChromium = !fs.existsSync(CHROMIUM) && `no Chromium at ${CHROMIUM}; run scripts/install-test-deps.sh`;

/** Starts Chromium with a fresh profile of its own; closed when test `t` ends. */
async function launchChromium(t) {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run', '--disable-quic'],
  });
  t.after(() => browser.close());
  return browser;
}

module.exports = { CHROMIUM, noChromium, launchChromium };
