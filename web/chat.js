// comet's web chat: sign in, rooms with live unread badges, a room's messages live, send,
// edit, delete, reactions, typing, presence, files (attach or drop; pictures inline).
// Talks to comet only through DDP and REST.
'use strict';

(function () {
  const { Ddp, randomId } = window.CometDdp;
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = 'comet.loginToken';
  const STATUS_NAMES = ['offline', 'online', 'away', 'busy'];
  const REACTIONS = [':+1:', ':tada:', ':eyes:'];
  const EMOJI = { ':+1:': '👍', ':tada:': '🎉', ':eyes:': '👀' };

  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const ddp = new Ddp(`${scheme}//${location.host}/websocket`);
  const state = {
    me: null, // {id, username}
    rooms: new Map(), // rid -> room
    subs: new Map(), // rid -> subscription
    current: null, // rid
    messages: new Map(), // _id -> message, of the current room
    oldest: null,
    roomSubs: [],
    typing: new Map(), // username -> timer
    statuses: new Map(), // uid -> status
    watched: new Set(),
    presenceSub: null,
    typingSentAt: 0,
    typingStop: null,
    readTimer: null,
    registrationSecret: null, // from a #register/<secret> link
  };

  // ---- connection status banner
  let offlineTimer = null;
  ddp.on('status', (status) => {
    const banner = $('banner');
    if (status === 'connected') {
      clearTimeout(offlineTimer);
      offlineTimer = null;
      if (!banner.hidden) {
        banner.textContent = 'Connected again.';
        setTimeout(() => { if (ddp.status === 'connected') banner.hidden = true; }, 1500);
      }
    } else if (status === 'offline' && !offlineTimer) {
      offlineTimer = setTimeout(() => {
        banner.textContent = 'Offline: reconnecting…';
        banner.hidden = false;
      }, 300);
    }
  });
  ddp.on('reconnected', () => {
    if (state.me) refreshRooms().then(() => { if (state.current) reloadMessages(); });
  });
  ddp.on('loggedOut', () => signedOut());

  /** A part of the address after `#`, decoded; as typed when it is not valid percent-encoding. */
  function decodeHash(text) {
    try { return decodeURIComponent(text); } catch { return text; }
  }

  // ---- REST, with the session's credentials
  async function rest(path) {
    const res = await fetch(`/api/v1/${path}`, {
      headers: { 'X-User-Id': ddp.userId || '', 'X-Auth-Token': ddp.resumeToken || '' },
    });
    return res.json();
  }

  // ---- sign in, sign up, sign out
  function show(signedIn) {
    $('signin').hidden = signedIn;
    $('app').hidden = !signedIn;
  }

  // Files are read by address (an <img>, a link): the session's credentials go with them
  // as Rocket.Chat's cookies, for this site only.
  function setFileCookies(id, token) {
    const secure = location.protocol === 'https:' ? '; Secure' : '';
    for (const [k, v] of [['rc_uid', id], ['rc_token', token]]) {
      document.cookie = `${k}=${encodeURIComponent(v)}; path=/; SameSite=Strict${secure}`;
    }
  }

  function clearFileCookies() {
    for (const k of ['rc_uid', 'rc_token']) document.cookie = `${k}=; path=/; max-age=0; SameSite=Strict`;
  }

  async function afterLogin(result) {
    localStorage.setItem(TOKEN_KEY, result.token);
    setFileCookies(result.id, result.token);
    const me = await rest('me');
    state.me = { id: result.id, username: me.username || '' };
    $('me-name').textContent = state.me.username;
    show(true);
    ddp.subscribe('stream-notify-user', [`${result.id}/subscriptions-changed`, false]);
    ddp.subscribe('stream-notify-user', [`${result.id}/rooms-changed`, false]);
    watchPresence([result.id]);
    await refreshRooms();
    const wanted = state.registrationSecret ? '' : decodeHash(location.hash.slice(1));
    const first = [...state.subs.values()].find((s) => s.rid === wanted || s.name === wanted)
      || [...state.subs.values()].find((s) => s.rid === 'GENERAL') || state.subs.values().next().value;
    if (first) openRoom(first.rid);
  }

  function signedOut() {
    localStorage.removeItem(TOKEN_KEY);
    clearFileCookies();
    state.me = null;
    state.current = null;
    show(false);
    $('signin-user').focus();
  }

  ddp.bindSignInForm(afterLogin);

  $('signup-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    $('signup-error').textContent = '';
    try {
      // As Rocket.Chat's web client: the REST registration, then a login.
      const res = await fetch('/api/v1/users.register', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({
          name: $('signup-name').value.trim(),
          username: $('signup-username').value.trim(),
          email: $('signup-email').value.trim(),
          pass: $('signup-pass').value,
          ...(state.registrationSecret ? { secretURL: state.registrationSecret } : {}),
        }),
      });
      const body = await res.json();
      if (!body.success) throw new Error(body.error || 'Sign-up failed');
      const result = await ddp.loginWithPassword($('signup-username').value.trim(), $('signup-pass').value);
      await afterLogin(result);
    } catch (err) {
      $('signup-error').textContent = err.reason || err.message;
    }
  });

  $('logout').addEventListener('click', async () => {
    try { await ddp.logout(); } catch { /* signed out locally all the same */ }
    signedOut();
  });

  $('me-status').addEventListener('change', () => {
    ddp.call('UserPresence:setDefaultStatus', $('me-status').value).catch(sideError);
  });

  function sideError(err) {
    $('side-error').textContent = err ? (err.reason || err.message) : '';
  }

  // ---- rooms
  async function refreshRooms() {
    const [rooms, subs] = await Promise.all([ddp.call('rooms/get'), ddp.call('subscriptions/get')]);
    state.rooms = new Map((Array.isArray(rooms) ? rooms : rooms.update || []).map((r) => [r._id, r]));
    state.subs = new Map((Array.isArray(subs) ? subs : subs.update || []).map((s) => [s.rid, s]));
    renderRooms();
    const partners = [...state.subs.values()].filter((s) => s.t === 'd')
      .flatMap((s) => (state.rooms.get(s.rid) || {}).uids || []);
    watchPresence(partners);
  }

  function roomLabel(rid) {
    const sub = state.subs.get(rid);
    const room = state.rooms.get(rid) || {};
    const t = (sub && sub.t) || room.t;
    const name = (sub && (sub.fname || sub.name)) || room.fname || room.name || rid;
    const icon = room.teamMain ? '◆' : t === 'p' ? '🔒' : t === 'd' ? '@' : '#';
    return { icon, name, t };
  }

  // Re-rendering replaces elements; these keep a keyboard user's place when it does.
  function focusedWithin(container) {
    const active = document.activeElement;
    return active && active !== container && container.contains(active) ? active : null;
  }

  function replaceKeepingFocus(old, fresh) {
    const had = focusedWithin(old);
    const oldButtons = had ? [...old.querySelectorAll('button')] : [];
    old.replaceWith(fresh);
    if (!had) return;
    const freshButtons = [...fresh.querySelectorAll('button')];
    const label = had.getAttribute('aria-label');
    const same = freshButtons.find((b) => label && b.getAttribute('aria-label') === label)
      || freshButtons[oldButtons.indexOf(had)] || freshButtons[0];
    if (same) same.focus();
  }

  function renderRooms() {
    const list = $('rooms');
    const had = focusedWithin(list);
    const focusedRid = had && had.dataset.rid;
    list.textContent = '';
    const subs = [...state.subs.values()].filter((s) => s.open !== false)
      .sort((a, b) => roomLabel(a.rid).name.localeCompare(roomLabel(b.rid).name));
    for (const sub of subs) {
      const { icon, name, t } = roomLabel(sub.rid);
      const li = document.createElement('li');
      const button = document.createElement('button');
      button.type = 'button';
      button.dataset.rid = sub.rid;
      button.setAttribute('aria-current', String(sub.rid === state.current));
      const glyph = document.createElement('span');
      glyph.setAttribute('aria-hidden', 'true');
      glyph.textContent = icon;
      button.append(glyph);
      if (t === 'd') {
        const partner = ((state.rooms.get(sub.rid) || {}).uids || []).find((u) => u !== (state.me && state.me.id));
        if (partner) button.append(dot(partner));
      }
      const label = document.createElement('span');
      label.className = 'name';
      label.textContent = name;
      button.append(label);
      if (sub.userMentions > 0) button.append(badge(`@${sub.userMentions}`, `${sub.userMentions} mentions`, 'badge mention'));
      // Channels count only mentions by default (Rocket.Chat's Unread_Count): `alert` alone
      // says something new arrived.
      if (sub.unread > 0) button.append(badge(String(sub.unread), `${sub.unread} unread`, 'badge unread'));
      else if (sub.alert && sub.rid !== state.current) button.append(badge('•', 'unread messages', 'badge unread'));
      button.addEventListener('click', () => openRoom(sub.rid));
      li.append(button);
      list.append(li);
      if (sub.rid === focusedRid) button.focus();
    }
  }

  function badge(text, label, cls) {
    const b = document.createElement('span');
    b.className = cls;
    b.textContent = text;
    b.setAttribute('aria-label', label);
    return b;
  }

  function dot(uid) {
    const d = document.createElement('span');
    const status = state.statuses.get(uid) || 'offline';
    d.className = `dot ${status}`;
    d.dataset.uid = uid;
    d.title = status;
    d.setAttribute('role', 'img');
    d.setAttribute('aria-label', status);
    return d;
  }

  ddp.on('stream', (collection, eventName, args, id) => {
    if (collection === 'stream-notify-user' && state.me) {
      const [action, doc] = args;
      if (!doc) return;
      if (eventName.endsWith('/subscriptions-changed')) {
        if (action === 'removed') state.subs.delete(doc.rid); else state.subs.set(doc.rid, { ...(state.subs.get(doc.rid) || {}), ...doc });
        renderRooms();
        if (action === 'removed' && doc.rid === state.current) renderRoomHeader();
      } else if (eventName.endsWith('/rooms-changed')) {
        if (action === 'removed') state.rooms.delete(doc._id); else state.rooms.set(doc._id, { ...(state.rooms.get(doc._id) || {}), ...doc });
        renderRooms();
        if (doc._id === state.current) renderRoomHeader();
      }
    } else if (collection === 'stream-room-messages' && eventName === state.current) {
      for (const m of args) putMessage(m);
      markRead();
    } else if (collection === 'stream-notify-room' && state.current && eventName === `${state.current}/deleteMessage`) {
      for (const m of args) removeMessage(m._id);
    } else if (collection === 'stream-notify-room' && state.current && eventName === `${state.current}/user-activity`) {
      const [username, activities] = args;
      if (!state.me || username === state.me.username) return;
      clearTimeout(state.typing.get(username));
      if (Array.isArray(activities) && activities.includes('user-typing')) {
        state.typing.set(username, setTimeout(() => { state.typing.delete(username); renderTyping(); }, 6000));
      } else {
        state.typing.delete(username);
      }
      renderTyping();
    } else if (collection === 'stream-user-presence' && id) {
      const [[, status]] = args;
      setStatus(id, STATUS_NAMES[status] || 'offline');
    }
  });

  // ---- presence
  async function watchPresence(uids) {
    const fresh = uids.filter((u) => u && !state.watched.has(u));
    if (!fresh.length) return;
    for (const u of fresh) state.watched.add(u);
    // The first subscription is the connection's watch list; later ones edit it.
    ddp.subscribe('stream-user-presence', ['', { added: fresh }]);
    try {
      const { users } = await rest(`users.presence?ids=${fresh.map(encodeURIComponent).join(',')}`);
      for (const u of users || []) setStatus(u._id, u.status || 'offline');
    } catch { /* the stream still tells changes */ }
  }

  function setStatus(uid, status) {
    state.statuses.set(uid, status);
    for (const d of document.querySelectorAll(`.dot[data-uid="${CSS.escape(uid)}"]`)) {
      d.className = `dot ${status}`;
      d.title = status;
      d.setAttribute('aria-label', status);
    }
    if (state.me && uid === state.me.id) {
      $('me-dot').className = `dot ${status}`;
    }
  }

  // ---- a room
  function renderRoomHeader() {
    const rid = state.current;
    if (!rid) return;
    const { icon, name } = roomLabel(rid);
    $('room-title').textContent = `${icon} ${name}`;
    const member = state.subs.has(rid);
    $('join').hidden = member;
    $('composer').hidden = !member;
  }

  async function openRoom(rid) {
    for (const sub of state.roomSubs) sub.stop();
    state.current = rid;
    state.typing.clear();
    renderTyping();
    location.hash = encodeURIComponent(rid);
    renderRoomHeader();
    renderRooms();
    state.roomSubs = [
      ddp.subscribe('stream-room-messages', [rid, false]),
      ddp.subscribe('stream-notify-room', [`${rid}/deleteMessage`, false]),
      ddp.subscribe('stream-notify-room', [`${rid}/user-activity`, false]),
    ];
    await reloadMessages();
    if (state.subs.has(rid)) $('composer-input').focus();
  }

  async function reloadMessages() {
    const rid = state.current;
    state.messages.clear();
    state.oldest = null;
    $('messages').textContent = '';
    await loadOlder();
    if (rid === state.current) markRead();
  }

  async function loadOlder() {
    const rid = state.current;
    let result;
    try {
      result = await ddp.call('loadHistory', rid, state.oldest, 50, null);
    } catch (err) {
      sideError(err);
      return;
    }
    if (rid !== state.current || !result) return;
    const messages = result.messages || [];
    for (const m of messages) putMessage(m, true);
    $('load-older').hidden = messages.length < 50;
  }

  $('load-older').addEventListener('click', loadOlder);

  function markRead() {
    const rid = state.current;
    const sub = state.subs.get(rid);
    if (!sub || document.hidden) return;
    clearTimeout(state.readTimer);
    state.readTimer = setTimeout(() => {
      if (state.current === rid) ddp.call('readMessages', rid).catch(() => {});
    }, 300);
  }

  document.addEventListener('visibilitychange', () => { if (!document.hidden) markRead(); });

  function putMessage(m, older = false) {
    if (m.rid && m.rid !== state.current) return;
    if (m._hidden) { removeMessage(m._id); return; }
    state.messages.set(m._id, m);
    const ts = new Date(m.ts);
    if (!state.oldest || ts < state.oldest) state.oldest = ts;
    const existing = document.getElementById(`m-${m._id}`);
    const item = renderMessage(m);
    const list = $('messages');
    if (existing) {
      // An open editor stays until it is saved or dismissed; Escape shows the latest then.
      if (existing.dataset.editing) return;
      replaceKeepingFocus(existing, item);
      return;
    }
    // In time order.
    const after = [...list.children].find((li) => Number(li.dataset.ts) > ts.getTime());
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    list.insertBefore(item, after || null);
    if (!older && atBottom) list.scrollTop = list.scrollHeight;
    if (!older && !after) list.scrollTop = list.scrollHeight;
    if (m.u && m.u._id) watchPresence([m.u._id]);
  }

  function removeMessage(id) {
    state.messages.delete(id);
    const li = document.getElementById(`m-${id}`);
    if (li) li.remove();
  }

  const SYSTEM_TEXT = { uj: 'joined the room', ul: 'left the room', au: 'added someone', ru: 'removed someone', r: 'renamed the room' };

  function renderMessage(m) {
    const li = document.createElement('li');
    li.id = `m-${m._id}`;
    li.className = m.t ? 'message system' : 'message';
    li.dataset.ts = String(new Date(m.ts).getTime());
    const meta = document.createElement('div');
    meta.className = 'meta';
    if (m.u && m.u._id) meta.append(dot(m.u._id));
    const author = document.createElement('span');
    author.className = 'author';
    author.textContent = (m.u && m.u.username) || '';
    const time = document.createElement('time');
    time.dateTime = new Date(m.ts).toISOString();
    time.textContent = new Date(m.ts).toLocaleTimeString();
    meta.append(author, time);
    if (m.editedAt) {
      const edited = document.createElement('span');
      edited.textContent = '(edited)';
      meta.append(edited);
    }
    const text = document.createElement('div');
    text.className = 'text';
    text.textContent = m.t ? (SYSTEM_TEXT[m.t] || m.msg || m.t) : m.msg;
    li.append(meta, text);
    if (!m.t && Array.isArray(m.attachments)) {
      for (const a of m.attachments) {
        const shown = renderAttachment(a);
        if (shown) li.append(shown);
      }
    }
    if (m.tcount > 0) {
      const thread = document.createElement('div');
      thread.className = 'thread';
      thread.textContent = m.tcount === 1 ? '1 reply' : `${m.tcount} replies`;
      li.append(thread);
    }
    if (!m.t) {
      const reactions = document.createElement('div');
      reactions.className = 'reactions';
      for (const [emoji, r] of Object.entries(m.reactions || {})) {
        const mine = state.me && (r.usernames || []).includes(state.me.username);
        const b = document.createElement('button');
        b.type = 'button';
        b.setAttribute('aria-pressed', String(Boolean(mine)));
        b.setAttribute('aria-label', `${emoji} ${(r.usernames || []).length}: ${(r.usernames || []).join(', ')}`);
        b.textContent = `${EMOJI[emoji] || emoji} ${(r.usernames || []).length}`;
        b.addEventListener('click', () => ddp.call('setReaction', emoji, m._id).catch(sideError));
        reactions.append(b);
      }
      li.append(reactions);
      li.append(actions(m));
    }
    return li;
  }

  /** An uploaded file's address, only when it is one of this server's files. */
  function fileAddress(url) {
    return typeof url === 'string' && url.startsWith('/file-upload/') ? url : null;
  }

  function sizeText(bytes) {
    if (!(bytes >= 0)) return '';
    if (bytes < 1024) return `${bytes} B`;
    if (bytes < 1024 * 1024) return `${Math.round(bytes / 1024)} KB`;
    return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
  }

  /** A file of a message: a picture inline (its blurred preview first), audio and video
   * with controls, and for every file a link that downloads it. */
  function renderAttachment(a) {
    const link = fileAddress(a && a.title_link);
    if (!link) return null;
    const box = document.createElement('div');
    box.className = 'attachment';
    const image = fileAddress(a.image_url);
    if (image) {
      const img = document.createElement('img');
      img.className = 'attachment-image';
      img.alt = a.title || 'picture';
      const dims = a.image_dimensions || {};
      if (dims.width > 0 && dims.height > 0) {
        img.width = Math.min(dims.width, 480);
        img.height = Math.round((img.width * dims.height) / dims.width);
      }
      if (typeof a.image_preview === 'string' && /^[A-Za-z0-9+/=]+$/.test(a.image_preview)) {
        img.style.backgroundImage = `url("data:image/jpeg;base64,${a.image_preview}")`;
      }
      img.src = image;
      const open = document.createElement('a');
      open.href = link;
      open.target = '_blank';
      open.rel = 'noopener';
      open.append(img);
      box.append(open);
    } else if (fileAddress(a.audio_url) || fileAddress(a.video_url)) {
      const media = document.createElement(a.audio_url ? 'audio' : 'video');
      media.controls = true;
      media.preload = 'metadata';
      media.src = fileAddress(a.audio_url) || fileAddress(a.video_url);
      media.setAttribute('aria-label', a.title || 'media');
      box.append(media);
    }
    const download = document.createElement('a');
    download.className = 'download';
    download.href = `${link}?download`;
    download.download = a.title || '';
    download.textContent = `${a.title || 'file'} ${sizeText(a.size ?? a.image_size ?? a.audio_size ?? a.video_size)}`.trim();
    box.append(download);
    if (a.description) {
      const about = document.createElement('div');
      about.className = 'description';
      about.textContent = a.description;
      box.append(about);
    }
    return box;
  }

  function actions(m) {
    const box = document.createElement('div');
    box.className = 'actions';
    const button = (label, text, run) => {
      const b = document.createElement('button');
      b.type = 'button';
      b.textContent = text;
      b.setAttribute('aria-label', label);
      b.addEventListener('click', run);
      box.append(b);
    };
    for (const emoji of REACTIONS) {
      button(`React ${emoji}`, EMOJI[emoji], () => ddp.call('setReaction', emoji, m._id).catch(sideError));
    }
    if (state.me && m.u && m.u._id === state.me.id) {
      button('Edit message', 'Edit', () => editMessage(m));
      button('Delete message', 'Delete', () => {
        if (confirm('Delete this message?')) ddp.call('deleteMessage', { _id: m._id }).catch(sideError);
      });
    }
    return box;
  }

  function editMessage(m) {
    const li = document.getElementById(`m-${m._id}`);
    if (!li) return;
    if (li.dataset.editing) { li.querySelector('input').focus(); return; }
    const form = document.createElement('form');
    form.className = 'composer';
    const input = document.createElement('input');
    input.value = m.msg;
    input.setAttribute('aria-label', 'Edit message');
    const save = document.createElement('button');
    save.type = 'submit';
    save.textContent = 'Save';
    form.append(input, save);
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      delete li.dataset.editing;
      ddp.call('updateMessage', { _id: m._id, rid: m.rid, msg: input.value }).catch(sideError);
    });
    input.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') {
        delete li.dataset.editing;
        replaceKeepingFocus(li, renderMessage(state.messages.get(m._id) || m));
      }
    });
    li.dataset.editing = '1';
    li.querySelector('.text').replaceWith(form);
    input.focus();
  }

  function renderTyping() {
    const names = [...state.typing.keys()];
    $('typing').textContent = names.length === 0 ? ''
      : names.length === 1 ? `${names[0]} is typing…` : `${names.join(', ')} are typing…`;
  }

  // ---- composing
  function sendActivity(typing) {
    if (!state.current || !state.me) return;
    ddp.call('stream-notify-room', `${state.current}/user-activity`, state.me.username, typing ? ['user-typing'] : [], {}).catch(() => {});
  }

  $('composer-input').addEventListener('input', () => {
    const now = Date.now();
    if (now - state.typingSentAt > 2000) {
      state.typingSentAt = now;
      sendActivity(true);
    }
    clearTimeout(state.typingStop);
    state.typingStop = setTimeout(() => { state.typingSentAt = 0; sendActivity(false); }, 3000);
  });

  $('composer').addEventListener('submit', async (e) => {
    e.preventDefault();
    const input = $('composer-input');
    const msg = input.value;
    if (!msg.trim() || !state.current) return;
    input.value = '';
    clearTimeout(state.typingStop);
    state.typingSentAt = 0;
    sendActivity(false);
    try {
      await ddp.call('sendMessage', { _id: randomId(), rid: state.current, msg });
    } catch (err) {
      input.value = msg;
      sideError(err);
    }
  });

  // ---- files: the Attach button, or dropped on the room
  async function uploadFile(file) {
    if (!state.current || !file) return;
    const form = new FormData();
    form.append('file', file, file.name);
    $('upload-status').textContent = `Sending ${file.name}…`;
    sideError(null);
    try {
      const res = await fetch(`/api/v1/rooms.upload/${encodeURIComponent(state.current)}`, {
        method: 'POST',
        headers: { 'X-User-Id': ddp.userId || '', 'X-Auth-Token': ddp.resumeToken || '' },
        body: form,
      });
      const body = await res.json().catch(() => ({}));
      if (!res.ok || body.success === false) throw new Error(body.error || `The file was not sent (${res.status})`);
    } catch (err) {
      sideError(err);
    } finally {
      $('upload-status').textContent = '';
    }
  }

  $('attach').addEventListener('click', () => $('attach-input').click());
  $('attach-input').addEventListener('change', async () => {
    const files = [...$('attach-input').files];
    $('attach-input').value = '';
    for (const file of files) await uploadFile(file);
  });
  const dropZone = $('room');
  dropZone.addEventListener('dragover', (e) => {
    if (!state.current || !e.dataTransfer || ![...e.dataTransfer.types].includes('Files')) return;
    e.preventDefault();
    dropZone.classList.add('dropping');
  });
  dropZone.addEventListener('dragleave', () => dropZone.classList.remove('dropping'));
  dropZone.addEventListener('drop', async (e) => {
    if (!e.dataTransfer || e.dataTransfer.files.length === 0) return;
    e.preventDefault();
    dropZone.classList.remove('dropping');
    for (const file of [...e.dataTransfer.files]) await uploadFile(file);
  });

  // ---- making and finding rooms
  $('create-channel').addEventListener('submit', async (e) => {
    e.preventDefault();
    sideError(null);
    try {
      const result = await ddp.call('createChannel', $('create-channel-name').value.trim(), [], false);
      $('create-channel-name').value = '';
      await refreshRooms();
      openRoom(result.rid);
    } catch (err) { sideError(err); }
  });

  $('create-dm').addEventListener('submit', async (e) => {
    e.preventDefault();
    sideError(null);
    try {
      const result = await ddp.call('createDirectMessage', $('create-dm-user').value.trim());
      $('create-dm-user').value = '';
      await refreshRooms();
      openRoom(result.rid);
    } catch (err) { sideError(err); }
  });

  $('browse').addEventListener('click', async () => {
    const list = $('directory');
    if (!list.hidden) { list.hidden = true; return; }
    sideError(null);
    const result = await rest('channels.list?count=100');
    list.textContent = '';
    for (const room of result.channels || []) {
      const li = document.createElement('li');
      const b = document.createElement('button');
      b.type = 'button';
      b.textContent = `# ${room.fname || room.name}`;
      b.addEventListener('click', () => { state.rooms.set(room._id, room); openRoom(room._id); });
      li.append(b);
      list.append(li);
    }
    list.hidden = false;
  });

  $('join').addEventListener('click', async () => {
    try {
      await ddp.call('joinRoom', state.current);
      await refreshRooms();
      renderRoomHeader();
      reloadMessages();
    } catch (err) { sideError(err); }
  });

  // ---- what the server's public settings say: its name, and who may sign up
  // (`Accounts_RegistrationForm`: Public, Disabled, or Secret URL with a link #register/<secret>).
  const registerLink = /^#register\/(.+)$/.exec(location.hash);
  state.registrationSecret = registerLink ? decodeHash(registerLink[1]) : null;
  fetch('/api/v1/settings.public?_id=Site_Name,Accounts_RegistrationForm').then((res) => res.json()).then((body) => {
    const value = (id) => ((body.settings || []).find((s) => s._id === id) || {}).value;
    const siteName = value('Site_Name');
    if (typeof siteName === 'string' && siteName) {
      document.title = siteName;
      $('site-name').textContent = siteName;
    }
    const form = value('Accounts_RegistrationForm');
    $('signup').hidden = form === 'Disabled' || form === 'Secret URL';
    if (form === 'Secret URL' && state.registrationSecret) {
      // As Rocket.Chat's client: the link is checked before the form shows.
      ddp.call('checkRegistrationSecretURL', state.registrationSecret).then((valid) => {
        $('signup').hidden = !valid;
        $('signup-link-error').hidden = valid;
      }).catch(() => { $('signup-link-error').hidden = false; });
    }
  }).catch(() => { /* the defaults stand: the server refuses what it must */ });

  // ---- start: resume the stored login, or ask for one
  const token = localStorage.getItem(TOKEN_KEY);
  if (token) {
    ddp.resume(token).then(afterLogin).catch(() => signedOut());
  } else {
    signedOut();
  }
})();
