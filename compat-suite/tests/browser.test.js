// sockjs-client loaded in a page in headless Chromium, talking DDP to comet.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const fs = require('node:fs');
const { startServer } = require('../lib/server');

const { noChromium, launchChromium } = require('../lib/browser');
const SOCKJS_JS = require.resolve('sockjs-client/dist/sockjs.min.js');

/** Serves the test page and sockjs-client from another origin than comet. */
function pageServer() {
  const page = `<!doctype html><html><body><script src="/sockjs.min.js"></script><script>
    window.runDdp = (url, transport) => new Promise((resolve, reject) => {
      const seen = [];
      const sock = new SockJS(url + '/sockjs', null, { transports: [transport] });
      const timer = setTimeout(() => reject(new Error('timeout; saw ' + JSON.stringify(seen))), 15000);
      sock.onopen = () => sock.send(JSON.stringify({ msg: 'connect', version: '1', support: ['1', 'pre2', 'pre1'] }));
      sock.onmessage = (e) => {
        const m = JSON.parse(e.data);
        seen.push(m);
        if (m.msg === 'connected') {
          sock.send(JSON.stringify({ msg: 'method', id: '1', method: 'echo', params: [{ $date: 42 }] }));
          sock.send(JSON.stringify({ msg: 'sub', id: 's1', name: 'test.docs' }));
          sock.send(JSON.stringify({ msg: 'sub', id: 's2', name: 'nope' }));
        }
        const done = seen.some((x) => x.msg === 'result') && seen.some((x) => x.msg === 'ready')
          && seen.some((x) => x.msg === 'nosub');
        if (done) { clearTimeout(timer); const t = sock.transport; sock.close(); resolve({ seen, transport: t }); }
      };
    });
  </script></body></html>`;
  const srv = http.createServer((req, res) => {
    if (req.url === '/sockjs.min.js') {
      res.writeHead(200, { 'content-type': 'application/javascript' });
      res.end(fs.readFileSync(SOCKJS_JS));
    } else {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(page);
    }
  });
  return new Promise((resolve) => srv.listen(0, '127.0.0.1', () => resolve(srv)));
}

test('browser: sockjs-client in headless Chromium', { skip: noChromium }, async (t) => {
  // The page comes from another origin: cross-origin reads are the operator's choice.
  const server = await startServer({ OVERWRITE_SETTING_API_Enable_CORS: 'true' });
  t.after(() => server.stop());
  const pages = await pageServer();
  t.after(() => pages.close());
  // launch() gives Chromium a fresh, empty user data directory of its own.
  const browser = await launchChromium(t);
  const page = await browser.newPage();
  await page.goto(`http://127.0.0.1:${pages.address().port}/`);
  for (const transport of ['websocket', 'xhr-streaming', 'xhr-polling']) {
    const { seen, transport: used } = await page.evaluate(([url, tr]) => window.runDdp(url, tr), [server.http, transport]);
    assert.equal(used, transport);
    const result = seen.find((m) => m.msg === 'result');
    assert.deepEqual(result.result, { $date: 42 }, transport);
    assert.equal(seen.filter((m) => m.msg === 'added').length, 2, transport);
    assert.equal(seen.find((m) => m.msg === 'nosub').error.error, 404, transport);
  }
});
