// Real browsers, headless, for the tests that drive comet's pages: Debian's Chromium through
// playwright-core, and Debian's Firefox ESR through puppeteer-core over WebDriver BiDi
// (Playwright drives only its own patched Firefox, which cannot be fetched here).
'use strict';
const fs = require('node:fs');
const { chromium } = require('playwright-core');

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const FIREFOX = process.env.FIREFOX_PATH || '/usr/bin/firefox-esr';

/** Why a browser test is skipped (no Chromium), or false when it can run. */
const noChromium = !fs.existsSync(CHROMIUM) && `no Chromium at ${CHROMIUM}; run scripts/install-test-deps.sh`;
/** Why a Firefox test is skipped (no Firefox), or false when it can run. */
const noFirefox = !fs.existsSync(FIREFOX) && `no Firefox at ${FIREFOX}; run scripts/install-test-deps.sh`;

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

/** Starts Firefox with a fresh profile of its own; closed when test `t` ends. */
async function launchFirefox(t) {
  const puppeteer = require('puppeteer-core');
  const browser = await puppeteer.launch({
    browser: 'firefox',
    executablePath: FIREFOX,
    headless: true,
    // No update checks, telemetry or captive-portal probes: the machine has no network.
    extraPrefsFirefox: {
      'app.update.enabled': false,
      'network.captive-portal-service.enabled': false,
      'network.connectivity-service.enabled': false,
      'datareporting.policy.dataSubmissionEnabled': false,
      'toolkit.telemetry.enabled': false,
    },
  });
  t.after(() => browser.close());
  return browser;
}

/**
 * Runs in the page: every visible control a person can reach (input, select, textarea,
 * button, link) and the name a screen reader would read for it; returns those without one.
 */
function unlabelledControls() {
  const visible = (el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';
  const nameOf = (el) => {
    if (el.getAttribute('aria-label')) return el.getAttribute('aria-label');
    const by = el.getAttribute('aria-labelledby');
    if (by) return by.split(/\s+/).map((id) => document.getElementById(id)?.textContent || '').join(' ');
    if (el.labels && el.labels.length) return [...el.labels].map((l) => l.textContent).join(' ');
    if (el.matches('button, a, summary')) return el.textContent;
    return '';
  };
  return [...document.querySelectorAll('input, select, textarea, button, a[href], summary')]
    .filter(visible)
    .filter((el) => !nameOf(el).trim())
    .map((el) => el.outerHTML.slice(0, 120));
}

/**
 * Runs in the page: visible controls cut off by a box that clips its overflow (or by the
 * window's width), as a control squeezed out of a narrow sidebar would be, and a page wider
 * than the window.
 */
function clippedControls() {
  const visible = (el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';
  const clipped = [];
  const page = document.documentElement;
  if (page.scrollWidth > page.clientWidth + 1) clipped.push(`the page is ${page.scrollWidth}px wide in ${page.clientWidth}px`);
  for (const el of document.querySelectorAll('input, select, textarea, button, a[href], summary')) {
    if (!visible(el)) continue;
    const r = el.getBoundingClientRect();
    if (r.right > document.documentElement.clientWidth + 1) { clipped.push(el.outerHTML.slice(0, 120)); continue; }
    for (let box = el.parentElement; box && box !== document.body; box = box.parentElement) {
      if (getComputedStyle(box).overflowX === 'visible') continue;
      const b = box.getBoundingClientRect();
      if (r.left < b.left - 1 || r.right > b.right + 1) { clipped.push(el.outerHTML.slice(0, 120)); break; }
    }
  }
  return clipped;
}

/** Runs before any page script: records Content-Security-Policy violations in the page. */
function recordPolicyViolations() {
  window.__policyViolations = [];
  document.addEventListener('securitypolicyviolation', (e) => {
    window.__policyViolations.push(`${e.violatedDirective} ${e.blockedURI}`);
  });
}

module.exports = {
  CHROMIUM, FIREFOX, noChromium, noFirefox, launchChromium, launchFirefox, unlabelledControls, clippedControls,
  recordPolicyViolations,
};
