"""comet's plugin SDK for Python 3.8+: the standard library only.

A plugin is a process comet starts; it speaks JSON-RPC 2.0 over stdin/stdout, one message
per line (protocol-spec/plugins.md). This module does the wire: it answers comet's Hello
and HealthCheck, runs your hook handlers on a thread pool (so a handler may call back into
comet while others run), and gives each handler an `api` to call comet with.

    import comet_plugin as cp

    plugin = cp.Plugin()

    @plugin.hook("MessageWillBePosted")
    def check(params, api):
        if "secret" in params["message"].get("msg", ""):
            return cp.reject("No secrets here")
        return cp.allow()

    plugin.run()

Anything printed to stdout would break the wire: print() goes to stderr (comet's log)
once run() starts. The process exits when comet closes its stdin.
"""

import json
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

PROTOCOL = 1


def allow():
    """A will-hook answer: let the write through as it is."""
    return {"action": "allow"}


def reject(reason):
    """A will-hook answer: refuse the write; the client sees `reason`."""
    return {"action": "reject", "reason": reason}


def rewrite(**values):
    """A will-hook answer: write this instead (`message=...` or `file=...`)."""
    answer = {"action": "rewrite"}
    answer.update(values)
    return answer


class ApiError(Exception):
    """comet refused a call: `code` is JSON-RPC's, `error` Rocket.Chat's code when given."""

    def __init__(self, code, message, data=None):
        super().__init__(message)
        self.code = code
        self.error = (data or {}).get("error") if isinstance(data, dict) else None
        self.data = data


class Api:
    """Calls into comet. Each method waits for comet's answer (at most `timeout` s)."""

    def __init__(self, wire):
        self._wire = wire

    def call(self, method, timeout=30, **params):
        return self._wire.call(method, params, timeout)

    # Users
    def get_user(self, user_id):
        return self.call("users.get", userId=user_id)

    def get_user_by_username(self, username):
        return self.call("users.getByUsername", username=username)

    def create_bot(self, username, name=None):
        return self.call("users.createBot", username=username, name=name)["userId"]

    # Rooms
    def get_room(self, room_id=None, name=None):
        return self.call("rooms.get", roomId=room_id, name=name)

    def create_room(self, name, type="c", members=None, read_only=False):
        return self.call("rooms.create", name=name, type=type, members=members or [], readOnly=read_only)

    def join_room(self, room_id):
        return self.call("rooms.join", roomId=room_id)

    def add_members(self, room_id, usernames):
        return self.call("rooms.addMembers", roomId=room_id, usernames=usernames)

    def remove_member(self, room_id, username):
        return self.call("rooms.removeMember", roomId=room_id, username=username)

    # Messages
    def post(self, room_id, msg, tmid=None, as_user_id=None, **extra):
        return self.call("messages.create", roomId=room_id, msg=msg, tmid=tmid, asUserId=as_user_id, **extra)

    def update_message(self, message_id, msg, as_user_id=None):
        return self.call("messages.update", messageId=message_id, msg=msg, asUserId=as_user_id)

    def delete_message(self, message_id, as_user_id=None):
        return self.call("messages.delete", messageId=message_id, asUserId=as_user_id)

    def get_message(self, message_id):
        return self.call("messages.get", messageId=message_id)

    def ephemeral(self, user_id, room_id, msg):
        return self.call("messages.ephemeral", userId=user_id, roomId=room_id, msg=msg)

    # Settings and configuration
    def setting(self, setting_id):
        return self.call("settings.get", id=setting_id)

    def config(self):
        return self.call("config.get")

    # Key-value store (this plugin's keys only)
    def kv_get(self, key):
        return self.call("kv.get", key=key)

    def kv_set(self, key, value, expire_in_ms=None):
        return self.call("kv.set", key=key, value=value, expireInMs=expire_in_ms)

    def kv_compare_and_set(self, key, old, new, expire_in_ms=None):
        return self.call("kv.compareAndSet", key=key, old=old, new=new, expireInMs=expire_in_ms)["ok"]

    def kv_delete(self, key):
        return self.call("kv.delete", key=key)

    def kv_list(self, prefix="", offset=0, count=100):
        return self.call("kv.list", prefix=prefix, offset=offset, count=count)["keys"]

    # Events, jobs, log
    def publish(self, to, target_id, event, args=None):
        return self.call("streams.publish", to=to, id=target_id, event=event, args=args or [])

    def publish_cluster_event(self, event, data=None):
        return self.call("cluster.publish", event=event, data=data)

    def schedule_job(self, name, interval_ms):
        return self.call("jobs.schedule", name=name, intervalMs=interval_ms)

    def cancel_job(self, name):
        return self.call("jobs.cancel", name=name)

    def log(self, message, level="info"):
        self._wire.notify("log", {"level": level, "message": str(message)})


class _Wire:
    def __init__(self, out):
        self._out = out
        self._lock = threading.Lock()
        self._next = 0
        self._waiting = {}

    def send(self, message):
        line = json.dumps(message, separators=(",", ":"))
        with self._lock:
            self._out.write(line + "\n")
            self._out.flush()

    def notify(self, method, params):
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def call(self, method, params, timeout):
        with self._lock:
            self._next += 1
            call_id = "p%d" % self._next
            slot = {"event": threading.Event()}
            self._waiting[call_id] = slot
        params = {k: v for k, v in params.items() if v is not None}
        self.send({"jsonrpc": "2.0", "id": call_id, "method": method, "params": params})
        if not slot["event"].wait(timeout):
            with self._lock:
                self._waiting.pop(call_id, None)
            raise ApiError(-1, "comet did not answer %s within %s s" % (method, timeout))
        if "error" in slot:
            error = slot["error"]
            raise ApiError(error.get("code"), error.get("message"), error.get("data"))
        return slot.get("result")

    def answered(self, call_id, message):
        with self._lock:
            slot = self._waiting.pop(call_id, None)
        if slot is None:
            return
        if "error" in message:
            slot["error"] = message["error"] or {}
        else:
            slot["result"] = message.get("result")
        slot["event"].set()


class Plugin:
    """Your plugin: register handlers with @plugin.hook(name), then plugin.run()."""

    def __init__(self, workers=8):
        self._handlers = {}
        self._workers = workers
        self.id = os.environ.get("COMET_PLUGIN_ID", "")
        self.bot_user_id = None
        self.config = {}
        self.api = None

    def hook(self, name):
        def register(handler):
            self._handlers[name] = handler
            return handler

        return register

    def _answer(self, wire, call_id, method, params):
        try:
            if method == "Hello":
                self.bot_user_id = params.get("botUserId")
                self.config = params.get("config") or {}
                result = {"protocol": PROTOCOL}
            elif method == "HealthCheck":
                result = {"ok": True}
            elif method == "OnConfigurationChange" and method not in self._handlers:
                self.config = params.get("config") or {}
                result = None
            else:
                if method == "OnConfigurationChange":
                    self.config = params.get("config") or {}
                handler = self._handlers.get(method)
                if handler is None:
                    if call_id is not None:
                        wire.send({"jsonrpc": "2.0", "id": call_id,
                                   "error": {"code": -32601, "message": "no handler for " + method}})
                    return
                result = handler(params, self.api)
            if call_id is not None:
                wire.send({"jsonrpc": "2.0", "id": call_id, "result": result})
        except Exception as error:  # a handler's failure is an error answer, not a crash
            print("plugin: %s failed: %r" % (method, error), file=sys.stderr)
            if call_id is not None:
                wire.send({"jsonrpc": "2.0", "id": call_id,
                           "error": {"code": -32603, "message": str(error)[:500]}})

    def run(self):
        out = sys.stdout
        sys.stdout = sys.stderr  # print() must never reach the wire
        wire = _Wire(out)
        self.api = Api(wire)
        pool = ThreadPoolExecutor(max_workers=self._workers)
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            try:
                message = json.loads(line)
            except ValueError:
                print("plugin: unreadable line from comet", file=sys.stderr)
                continue
            method = message.get("method")
            if method is None:
                wire.answered(message.get("id"), message)
                continue
            pool.submit(self._answer, wire, message.get("id"), method, message.get("params") or {})
        # comet closed our input: it wants us gone.
        os._exit(0)
