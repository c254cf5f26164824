// The operator's page: live figures from the comet.operator publication, plots of the last
// ten minutes, and the live connections with a way to close one. Administrators only.
'use strict';

(function () {
  const { Ddp } = window.CometDdp;
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = 'comet.loginToken';
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const ddp = new Ddp(`${scheme}//${location.host}/websocket`);
  let subscription = null;

  function view(which) {
    for (const id of ['signin', 'denied', 'admin']) $(id).hidden = id !== which;
  }

  ddp.on('status', (status) => {
    const banner = $('banner');
    if (status === 'offline') { banner.textContent = 'Offline: reconnecting…'; banner.hidden = false; }
    if (status === 'connected') banner.hidden = true;
  });

  const CARDS = [
    ['sessions', 'Sessions', 'sessions'],
    ['subscriptions', 'Subscriptions', 'subscriptions'],
    ['liveQueries', 'Live queries'],
    ['methodCallsPerSec', 'Method calls/s', 'methodCallsPerSec'],
    ['deliveriesPerSec', 'Deliveries/s', 'deliveriesPerSec'],
    ['bytesOutPerSec', 'Bytes out/s'],
    ['feedPosition', 'Change feed position'],
    ['feedLag', 'Change feed behind'],
    ['feedLagP99Ms', 'Feed lag p99 (ms)'],
    ['slowConsumersCut', 'Slow consumers cut'],
    ['rssBytes', 'Memory (RSS)', 'rssBytes'],
    ['cpuPercent', 'CPU %', 'cpuPercent'],
    ['openFds', 'Open files'],
  ];

  function format(key, v) {
    if (v === null || v === undefined) return '–';
    if (key === 'rssBytes' || key === 'bytesOutPerSec') {
      const units = ['B', 'KiB', 'MiB', 'GiB'];
      let i = 0;
      while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
      return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
    }
    return Number.isInteger(v) ? String(v) : v.toFixed(1);
  }

  function sparkline(points) {
    const svgNs = 'http://www.w3.org/2000/svg';
    const svg = document.createElementNS(svgNs, 'svg');
    svg.setAttribute('viewBox', '0 0 100 36');
    svg.setAttribute('preserveAspectRatio', 'none');
    svg.setAttribute('aria-hidden', 'true');
    if (points.length > 1) {
      const max = Math.max(...points, 1e-9);
      const line = document.createElementNS(svgNs, 'polyline');
      line.setAttribute('points', points.map((p, i) => `${(i / (points.length - 1)) * 100},${34 - (p / max) * 32}`).join(' '));
      svg.append(line);
    }
    return svg;
  }

  function render() {
    const figures = ddp.docs('comet_operator').get('figures');
    const history = ddp.docs('comet_operator').get('history');
    if (!figures) return;
    figures.feedLag = Math.max(0, (figures.feedPosition || 0) - (figures.feedProcessed || 0));
    $('store').textContent = `store: ${figures.store}`;
    $('updated').textContent = figures.at ? `updated ${new Date(figures.at).toLocaleTimeString()}` : '';
    const cards = $('cards');
    cards.textContent = '';
    const transports = figures.connections || {};
    const connections = document.createElement('div');
    connections.className = 'card';
    connections.innerHTML = '<div class="label">Connections by transport</div>';
    const total = Object.values(transports).reduce((a, b) => a + b, 0);
    const value = document.createElement('div');
    value.className = 'value';
    value.dataset.figure = 'connections';
    value.textContent = String(total);
    const detail = document.createElement('div');
    detail.className = 'label';
    detail.textContent = Object.entries(transports).filter(([, n]) => n > 0).map(([t, n]) => `${t}: ${n}`).join(', ') || 'none';
    connections.append(value, detail);
    cards.append(connections);
    const fields = (history && history.fields) || [];
    const points = (history && history.points) || [];
    for (const [key, label, plotted] of CARDS) {
      const card = document.createElement('div');
      card.className = 'card';
      const l = document.createElement('div');
      l.className = 'label';
      l.textContent = label;
      const v = document.createElement('div');
      v.className = 'value';
      v.dataset.figure = key;
      v.textContent = format(key, figures[key]);
      card.append(l, v);
      const at = fields.indexOf(plotted);
      if (plotted && at >= 0) card.append(sparkline(points.map((p) => Number(p[at + 1]) || 0)));
      cards.append(card);
    }
    const methods = $('methods');
    methods.textContent = '';
    for (const m of figures.methods || []) {
      const tr = document.createElement('tr');
      for (const [k, cls] of [['name', ''], ['perSec', 'num'], ['calls', 'num'], ['p50Ms', 'num'], ['p90Ms', 'num'], ['p99Ms', 'num']]) {
        const td = document.createElement('td');
        td.className = cls;
        td.textContent = k === 'name' ? m.name : format(k, m[k]);
        tr.append(td);
      }
      methods.append(tr);
    }
  }

  // A table row of text cells (those from `numericFrom` on right-aligned) and a last cell
  // holding `action`: a button, a text, or nothing.
  function tableRow(cells, numericFrom, action) {
    const tr = document.createElement('tr');
    cells.forEach((text, i) => {
      const td = document.createElement('td');
      td.className = i >= numericFrom ? 'num' : '';
      td.textContent = text;
      tr.append(td);
    });
    const td = document.createElement('td');
    if (action) td.append(action);
    tr.append(td);
    return tr;
  }

  function button(text, label, onClick) {
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = text;
    b.setAttribute('aria-label', label);
    b.addEventListener('click', onClick);
    return b;
  }

  function renderConnections() {
    const body = $('connections');
    body.textContent = '';
    const rows = [...ddp.docs('comet_operator_connections').values()]
      .sort((a, b) => (b.queuedBytes - a.queuedBytes) || (new Date(a.openedAt) - new Date(b.openedAt)));
    for (const c of rows) {
      const age = Math.round((Date.now() - new Date(c.openedAt).getTime()) / 1000);
      const cells = [c.username || c.userId || '(not signed in)', c.address || '', c.transport, `${age} s`, String(c.queuedBytes)];
      const action = c.self
        ? 'this page'
        : button('Close', `Close the connection of ${cells[0]} from ${cells[1]}`,
          () => ddp.call('comet.operator.closeConnection', c._id).catch(() => {}));
      body.append(tableRow(cells, 3, action));
    }
  }

  // Plugins: their state and why, from plugins.list (manage-apps), every two seconds.
  let pluginTimer = null;
  async function refreshPlugins() {
    let list;
    try {
      list = await ddp.call('plugins.list');
    } catch {
      $('plugins-section').hidden = true;
      return;
    }
    $('plugins-section').hidden = false;
    const body = $('plugins');
    body.textContent = '';
    for (const p of list) {
      const missed = p.counters.hooksMissed + p.counters.hooksFailed;
      const cells = [p.name === p.id ? p.id : `${p.name} (${p.id})`, p.version, p.state, p.reason || '', String(missed), String(p.counters.crashes)];
      const verb = p.enabled ? 'Disable' : 'Enable';
      const action = button(verb, `${verb} the plugin ${p.id}`,
        () => ddp.call(p.enabled ? 'plugins.disable' : 'plugins.enable', p.id).then(refreshPlugins, refreshPlugins));
      body.append(tableRow(cells, 4, action));
    }
  }
  // The deployment's instances (one when alone), from comet.instances, with the plugins.
  async function refreshInstances() {
    let list;
    try {
      list = await ddp.call('comet.instances');
    } catch {
      $('instances-section').hidden = true;
      return;
    }
    $('instances-section').hidden = false;
    const body = $('instances');
    body.textContent = '';
    list.sort((a, b) => String(a.extraInformation?.address).localeCompare(String(b.extraInformation?.address)));
    for (const i of list) {
      const extra = i.extraInformation || {};
      const cells = [extra.address || i._id, i.alive ? 'running' : 'gone',
        String(extra.connections ?? ''), String(extra.listenedKeys ?? '')];
      body.append(tableRow(cells, 2, i.local ? 'this one' : null));
    }
  }
  function watchPlugins() {
    clearInterval(pluginTimer);
    refreshPlugins();
    refreshInstances();
    pluginTimer = setInterval(() => { refreshPlugins(); refreshInstances(); }, 2000);
  }

  let pending = false;
  ddp.on('doc', (collection) => {
    if (collection !== 'comet_operator' && collection !== 'comet_operator_connections') return;
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; render(); renderConnections(); });
  });

  function watch() {
    if (subscription) subscription.stop();
    subscription = ddp.subscribe('comet.operator', [], {
      onReady: () => { view('admin'); render(); renderConnections(); watchPlugins(); },
      onStop: (err) => {
        if (err) {
          $('denied-text').textContent = `This page is for administrators only (${err.reason || err.error}).`;
          view('denied');
        }
      },
    });
  }

  async function afterLogin(result) {
    localStorage.setItem(TOKEN_KEY, result.token);
    watch();
  }

  function signedOut() {
    clearInterval(pluginTimer);
    if (subscription) subscription.stop();
    subscription = null;
    localStorage.removeItem(TOKEN_KEY);
    view('signin');
  }

  ddp.on('loggedOut', signedOut);

  ddp.bindSignInForm(afterLogin);

  for (const id of ['logout', 'denied-logout']) {
    $(id).addEventListener('click', async () => {
      try { await ddp.logout(); } catch { /* signed out locally all the same */ }
      signedOut();
    });
  }

  const token = localStorage.getItem(TOKEN_KEY);
  if (token) ddp.resume(token).then(afterLogin).catch(signedOut); else view('signin');
})();
