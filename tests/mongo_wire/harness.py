"""A scripted replica-set primary on MongoDB's wire protocol, comet started against it, and a
raw DDP client: the parts every scenario uses.

This is a double of the wire, not of the database (MongoDB's own `mockupdb` library answers
the driver's handshake; each scenario scripts the rest). What comet sends is asserted
command by command; what a real server would compute (query results, change events) is
what the scenario says it is.
"""

import itertools
import json
import os
import queue
import subprocess
import threading
import time

import websocket
from bson import Int64, Timestamp
from mockupdb import MockupDB

COMET_BIN = os.environ.get("COMET_BIN", os.path.join(os.path.dirname(__file__), "../../target/release/comet"))
CURSOR_ID = Int64(7_000_000_001)
OPLOG_CURSOR_ID = Int64(7_000_000_002)
START_TIME = 1_700_000_000


class Clock:
    """Cluster times, each later than the last."""

    def __init__(self):
        self._inc = itertools.count(1)

    def tick(self):
        return Timestamp(START_TIME, next(self._inc))


def token_for(ts):
    """A resume token whose `_data` carries `ts` the way a server's does."""
    return {"_data": "82%08X%08X2B0229296E04" % (ts.time, ts.inc)}


class Primary:
    """A scripted primary of replica set `rs0`.

    Handshakes and session bookkeeping are answered automatically. The change stream is
    served from `emit()`: a `getMore` on it gets the events emitted since, or waits up to its
    `maxTimeMS` and gets an empty batch with a post-batch token at the current cluster time.
    `ping` and `createIndexes` are answered and recorded, `killCursors` and `endSessions`
    answered. Every other request waits in `expect()` for the scenario
    to answer.

    With `fan_out`, each change stream is a cursor of its own that gets every event emitted
    while it is open, as a real server serves several processes' streams: several comets can
    follow one primary. Without it, every stream shares one queue (one comet).
    """

    def __init__(self, port=None, clock=None, version=(7, 0, 2), wire_version=21, fan_out=False):
        self.clock = clock or Clock()
        self.fan_out = fan_out
        self.cursors = {}  # with fan_out: each open change stream's events not yet served
        self._cursor_ids = itertools.count(int(CURSOR_ID) + 1000)
        self.version = version
        self.server = MockupDB(port=port, auto_ismaster=False, verbose=False)
        self.port = self.server.run()
        self.host = "localhost:%d" % self.port
        self.now = self.clock.tick()
        hello = lambda: {  # noqa: E731
            "ismaster": True, "isWritablePrimary": True, "setName": "rs0", "hosts": [self.host],
            "primary": self.host, "me": self.host, "minWireVersion": 0, "maxWireVersion": wire_version,
            "maxBsonObjectSize": 16 * 1024 * 1024, "maxMessageSizeBytes": 48_000_000,
            "maxWriteBatchSize": 100_000, "logicalSessionTimeoutMinutes": 30, "ok": 1,
            "operationTime": self.now,
        }
        for name in ("ismaster", "isMaster", "hello"):
            self.server.autoresponds(name, lambda r: r.ok(**{k: v for k, v in hello().items() if k != "ok"}))
        self.events = []  # change events not yet served
        self.oplog = []  # oplog entries not yet served to the tailing cursor
        self.tails = []  # every tailable find on the oplog
        self.held = []  # getMore requests waiting for events
        self.streams = []  # every aggregate that opened a change stream, in order
        self.pings = 0
        self.order = []  # names of the requests that opened streams or went to expect()
        self.getmore_error = None  # (code, message, times left or None for always)
        self.stream_refusal = None  # (code, message): change-stream aggregates answered so
        self.indexes = []  # every createIndexes, answered ok
        self.unanswered = []  # (command, collection) of what waits for the test script
        self.others = queue.Queue()
        self.lock = threading.Lock()
        self.stopped = False
        self.dispatcher = threading.Thread(target=self._dispatch, daemon=True)
        self.dispatcher.start()
        self.waker = threading.Thread(target=self._wake_held, daemon=True)
        self.waker.start()

    def url(self, database="meteor"):
        return "mongodb://%s/%s?replicaSet=rs0" % (self.host, database)

    def advance(self):
        """Moves the cluster time on and returns it (a write's operation time)."""
        with self.lock:
            self.now = self.clock.tick()
            return self.now

    # The change stream.

    def emit(self, event, more_at_this_time=False):
        """Queues a change event (its `_id` and `clusterTime` are filled in). With
        `more_at_this_time`, post-batch tokens stay before its time, as a server's do while
        events of one transaction are still to come."""
        with self.lock:
            ts = event.get("clusterTime") or self.clock.tick()
            if not more_at_this_time:
                self.now = max(self.now, ts, key=lambda t: (t.time, t.inc))
            event = dict(event, clusterTime=ts, _id=token_for(ts))
            if self.fan_out:
                for pending in self.cursors.values():
                    pending.append(event)
            else:
                self.events.append(event)
        self._serve_held()

    def fail_getmores(self, code, message, times=None, labels=()):
        """Answers the next `times` change-stream getMores (every one, if None) with a
        server error; getMores already waiting get it too."""
        with self.lock:
            self.getmore_error = (code, message, times, list(labels))
            held, self.held = self.held, []
        for request, _ in held:
            self._fail_getmore(request)

    def _fail_getmore(self, request):
        with self.lock:
            if self.getmore_error is None:
                return False
            code, message, times, labels = self.getmore_error
            if times is not None:
                self.getmore_error = (code, message, times - 1, labels) if times > 1 else None
        if labels:
            request.command_err(code=code, errmsg=message, errorLabels=labels)
        else:
            request.command_err(code=code, errmsg=message)
        return True

    def append_oplog(self, entry):
        """Appends an oplog entry (its `ts` filled in when missing) for the tailing cursor."""
        with self.lock:
            ts = entry.get("ts") or self.clock.tick()
            self.now = max(self.now, ts, key=lambda t: (t.time, t.inc))
            self.oplog.append(dict(entry, ts=ts))
        self._serve_held()

    def _oplog_reply(self, request, first):
        with self.lock:
            batch, self.oplog = self.oplog, []
        key = "firstBatch" if first else "nextBatch"
        request.ok(cursor={"id": OPLOG_CURSOR_ID, "ns": "local.oplog.rs", key: batch},
                   operationTime=self.now)

    def _pending(self, cursor):
        """The events a change-stream cursor has still to get (the caller holds the lock)."""
        return self.cursors[cursor] if cursor in self.cursors else self.events

    def _batch_reply(self, request, first, cursor=CURSOR_ID):
        with self.lock:
            batch = self._pending(cursor)
            if cursor in self.cursors:
                self.cursors[cursor] = []
            else:
                self.events = []
            post = token_for(self.now)
        key = "firstBatch" if first else "nextBatch"
        request.ok(cursor={"id": cursor, "ns": "meteor.$cmd.aggregate", key: batch,
                           "postBatchResumeToken": post}, operationTime=self.now)

    def _reply_held(self, request):
        if request.doc.get("getMore") == OPLOG_CURSOR_ID:
            self._oplog_reply(request, first=False)
        else:
            self._batch_reply(request, first=False, cursor=request.doc.get("getMore"))

    def _reply_held_quietly(self, request):
        try:
            self._reply_held(request)
        except OSError:  # the client closed its connection while its getMore waited
            pass

    def _serve_held(self):
        with self.lock:
            ready = [h for h in self.held
                     if (self.oplog if h[0].doc.get("getMore") == OPLOG_CURSOR_ID
                         else self._pending(h[0].doc.get("getMore")))]
            self.held = [h for h in self.held if h not in ready]
        for request, _deadline in ready:
            self._reply_held_quietly(request)

    def _wake_held(self):
        while not self.stopped:
            time.sleep(0.02)
            now = time.monotonic()
            with self.lock:
                due = [h for h in self.held if h[1] <= now]
                self.held = [h for h in self.held if h[1] > now]
            for request, _ in due:
                self._reply_held_quietly(request)

    def _dispatch(self):
        while not self.stopped:
            try:
                request = self.server.receives(timeout=0.2)
            except AssertionError:
                continue
            except Exception:  # the server was stopped
                return
            if request is None:
                continue
            name = request.command_name
            doc = request.doc
            if name == "aggregate" and any("$changeStream" in stage for stage in doc.get("pipeline", [])):
                with self.lock:
                    self.streams.append(doc)
                    self.order.append("stream")
                    refusal = self.stream_refusal
                if refusal:
                    request.command_err(code=refusal[0], errmsg=refusal[1])
                elif self.fan_out:
                    cursor = Int64(next(self._cursor_ids))
                    with self.lock:
                        self.cursors[cursor] = []
                    self._batch_reply(request, first=True, cursor=cursor)
                else:
                    self._batch_reply(request, first=True)
            elif name == "ping":
                with self.lock:
                    self.pings += 1
                request.ok(operationTime=self.now)
            elif name == "find" and doc.get("find") == "users" and not doc.get("filter"):
                # Accounts' first-start check: a store with users is left as it is.
                self.reply_cursor(request, [{"_id": "admin", "username": "admin"}], ns="meteor.users")
            elif name == "find" and (doc.get("find") in ("rocketchat_settings", "rocketchat_permissions")
                                     or (doc.get("find") == "rocketchat_subscription" and not doc.get("filter"))):
                # Settings and permissions read at start: none yet, so comet writes defaults;
                # the rooms' members read at start: none yet.
                self.reply_cursor(request, [], ns="meteor." + doc["find"])
            elif name == "insert" and doc.get("insert") in ("rocketchat_settings", "rocketchat_permissions",
                                                             "rocketchat_roles"):
                request.ok(n=len(doc.get("documents", [])), operationTime=self.now)
            elif name == "find" and doc.get("find") == "users" and "status" in (doc.get("filter") or {}):
                # Presence's start: no user is shown online yet.
                self.reply_cursor(request, [], ns="meteor.users")
            elif (doc.get(name) in ("instances", "usersSessions", "comet_leases")
                  and name in ("find", "insert", "update", "delete")):
                # Presence's own bookkeeping (this process's heartbeat, the sweep of gone
                # processes' connections): no other process, no connection records. A lease
                # is free (no record), so its insert takes it.
                if name == "find":
                    self.reply_cursor(request, [], ns="meteor." + doc[name])
                elif name == "insert":
                    request.ok(n=len(doc.get("documents", [])), operationTime=self.now)
                else:
                    request.ok(n=0, nModified=0, operationTime=self.now)
            elif name in ("buildInfo", "buildinfo"):
                request.ok(version=".".join(map(str, self.version)),
                           versionArray=list(self.version) + [0], operationTime=self.now)
            elif name in ("killCursors", "endSessions"):
                with self.lock:
                    for cursor in doc.get("cursors", []) if name == "killCursors" else []:
                        self.cursors.pop(cursor, None)
                request.ok(cursorsKilled=doc.get("cursors", [])) if name == "killCursors" else request.ok()
            elif name == "createIndexes":
                with self.lock:
                    self.indexes.append(doc)
                request.ok(operationTime=self.now)
            elif (name == "getMore" and (doc.get("getMore") == CURSOR_ID or doc.get("getMore") in self.cursors)
                  and self._fail_getmore(request)):
                pass
            elif name == "find" and doc.get("find") == "oplog.rs" and doc.get("tailable"):
                with self.lock:
                    self.tails.append(doc)
                self._oplog_reply(request, first=True)
            elif name == "find" and doc.get("find") == "oplog.rs":
                # The oldest or newest entry: a no-op at the current time.
                self.reply_cursor(request, [{"ts": self.now, "op": "n", "ns": "", "o": {}}],
                                  ns="local.oplog.rs")
            elif name == "getMore" and (doc.get("getMore") in (CURSOR_ID, OPLOG_CURSOR_ID)
                                        or doc.get("getMore") in self.cursors):
                wait = doc.get("maxTimeMS", 1000) / 1000.0
                with self.lock:
                    self.held.append((request, time.monotonic() + wait))
                self._serve_held()
            else:
                with self.lock:
                    self.order.append(name)
                    self.unanswered.append((name, doc.get(name)))
                self.others.put(request)

    def expect(self, name, timeout=10.0, skip=()):
        """The next request named `name`; requests named in `skip` are answered `ok` on the
        way, anything else is a failure."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no %s within %.1f s" % (name, timeout))
            try:
                request = self.others.get(timeout=left)
            except queue.Empty:
                continue
            if request.command_name == name:
                return request
            if request.command_name in skip:
                request.ok(operationTime=self.now)
                continue
            raise AssertionError("expected %s, got %s %r" % (name, request.command_name, dict(request.doc)))

    def reply_cursor(self, request, docs, ns="meteor.x"):
        request.ok(cursor={"id": Int64(0), "ns": ns, "firstBatch": docs}, operationTime=self.now)

    def close(self):
        self.stopped = True
        self.server.stop()


class Comet:
    """The comet binary against a primary, its log read for the address it listens on."""

    def __init__(self, primary, tmp_path, config=None, env=None):
        self.primary = primary
        data = tmp_path / "data"
        data.mkdir(exist_ok=True)
        self.env = dict(os.environ, MONGO_URL=primary.url(), PORT="0", BIND_IP="127.0.0.1",
                        COMET_DATA_DIR=str(data), LOG_FORMAT="json", RUST_LOG="info,comet=debug")
        if config:
            path = tmp_path / "comet.toml"
            path.write_text(config)
            self.env["COMET_CONFIG"] = str(path)
        self.env.update(env or {})
        self.proc = subprocess.Popen([COMET_BIN], env=self.env, stderr=subprocess.PIPE, text=True)
        self.log = []
        self.lines = queue.Queue()
        threading.Thread(target=self._read_log, daemon=True).start()
        self.addr = None
        deadline = time.monotonic() + 20
        while self.addr is None:
            left = deadline - time.monotonic()
            assert left > 0, ("comet did not start; unanswered commands: %r\n" % (primary.unanswered,)
                              + "\n".join(self.log))
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if "comet listening" in line:
                self.addr = json.loads(line)["fields"]["addr"]

    def _read_log(self):
        for line in self.proc.stderr:
            self.log.append(line.rstrip())
            self.lines.put(line)

    def client(self):
        return Ddp("ws://%s/websocket" % self.addr)

    def metric(self, prefix):
        import urllib.request
        text = urllib.request.urlopen("http://%s/metrics" % self.addr, timeout=5).read().decode()
        for line in text.splitlines():
            if line.startswith(prefix):
                return float(line[len(prefix):].strip())
        raise AssertionError("metric %s missing" % prefix)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Ddp:
    """A raw DDP client: frames in, frames out, pings answered."""

    def __init__(self, url):
        self.ws = websocket.create_connection(url, timeout=10)
        self.send({"msg": "connect", "version": "1", "support": ["1"]})
        assert self.recv()["msg"] == "connected"

    def send(self, msg):
        self.ws.send(json.dumps(msg))

    def recv(self, timeout=10.0):
        self.ws.settimeout(timeout)
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("msg") == "ping":
                self.send({"msg": "pong"})
                continue
            return msg

    def recv_until(self, predicate, timeout=10.0):
        """Frames up to and including the first that satisfies `predicate`."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("not seen within %.1f s; got %r" % (timeout, seen))
            msg = self.recv(timeout=left)
            seen.append(msg)
            if predicate(msg):
                return seen

    def close(self):
        self.ws.close()
