// Starts the comet release binary for a test and stops it again.
'use strict';
const { spawn } = require('node:child_process');
const path = require('node:path');
const fs = require('node:fs');
const os = require('node:os');

const BIN = process.env.COMET_BIN || path.join(__dirname, '..', '..', 'target', 'release', 'comet');

/** Starts comet; resolves once it logs its listening address. */
function startServer(env = {}, port = 0) {
  if (!fs.existsSync(BIN)) {
    throw new Error(`comet binary not found at ${BIN}: build it with cargo build --release`);
  }
  const dataDir = env.COMET_DATA_DIR || fs.mkdtempSync(path.join(os.tmpdir(), 'comet-compat-'));
  const child = spawn(BIN, [], {
    env: {
      ...process.env,
      PORT: String(port),
      BIND_IP: '127.0.0.1',
      LOG_FORMAT: 'json',
      RUST_LOG: 'info',
      COMET_DATA_DIR: dataDir,
      COMET_TEST_HANDLERS: '1',
      ...env,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const log = [];
  return new Promise((resolve, reject) => {
    let buffered = '';
    const timer = setTimeout(() => reject(new Error(`comet did not start:\n${log.join('\n')}`)), 15000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`comet exited with ${code}:\n${log.join('\n')}`));
    });
    child.stderr.on('data', (chunk) => {
      buffered += chunk.toString();
      let nl;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        log.push(line);
        let entry;
        try { entry = JSON.parse(line); } catch { continue; }
        if (entry.fields && entry.fields.message === 'comet listening') {
          clearTimeout(timer);
          const port = Number(entry.fields.addr.split(':').pop());
          child.removeAllListeners('exit');
          resolve({
            port,
            dataDir,
            http: `http://127.0.0.1:${port}`,
            ws: `ws://127.0.0.1:${port}/websocket`,
            log,
            child,
            stop: () => stopProcess(child),
          });
        }
      }
    });
  });
}

/** SIGTERM, then wait for a clean exit; resolves with the exit code. */
function stopProcess(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve(child.exitCode);
    const killer = setTimeout(() => child.kill('SIGKILL'), 10000);
    child.once('exit', (code, signal) => {
      clearTimeout(killer);
      resolve(code === null ? signal : code);
    });
    child.kill('SIGTERM');
  });
}

/** Resolves when `predicate()` holds, polling; rejects after `ms`. */
async function waitFor(predicate, ms = 5000, what = 'condition') {
  const start = Date.now();
  while (Date.now() - start < ms) {
    if (await predicate()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`timed out waiting for ${what}`);
}

module.exports = { startServer, waitFor };
