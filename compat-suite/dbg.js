const { startServer, waitFor } = require('/work/main/compat-suite/lib/server');
const Asteroid = require('./node_modules/asteroid');
(async () => {
  const server = await startServer();
  const a = new Asteroid(`127.0.0.1:${server.port}`);
  a.ddp.on('connected', () => a.resumeLoginPromise.catch(() => {}));
  await new Promise(r => setTimeout(r, 500));
  const t = a.getCollection('tasks');
  const r = t.insert({ _id: 'x', text: 'a' });
  r.remote.then(v => console.log('ok', v), e => console.log('err', e));
  await new Promise(r => setTimeout(r, 500));
  console.log(Object.keys(a.ddp), typeof a.ddp.method);
  await server.stop();
})();
