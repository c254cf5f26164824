"""A plugin that misbehaves on purpose, for tests/it/plugins.rs: `python3 misbehave.py <mode>`.

  exit     exits at once, before any handshake
  sleep    MessageWillBePosted sleeps 5 s (past any deadline the tests give)
  crash    MessageWillBePosted kills the process mid-hook
  garbage  MessageWillBePosted writes a line that is not JSON-RPC to stdout
  hog      MessageWillBePosted allocates without bound
  pass     MessageWillBePosted lets every message through (the benchmark's plugin)
  probe    ServeHTTP GET /kv?key=K answers this plugin's value of K, asking with another
           plugin's id in the call too (comet must ignore it); OnDeactivate writes a file
  audit    records what its has-been hooks hear in its keys (read with GET /kv?key=K),
           refuses the login of a user named "blocked", counts a job's runs, keeps the
           last cluster event it heard, and sends one on POST /cluster
"""

import json

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE]
mode = sys.argv[1] if len(sys.argv) > 1 else "pass"
if mode == "exit":
    sys.exit(3)

import comet_plugin as cp  # noqa: E402

plugin = cp.Plugin()
hoard = []


@plugin.hook("MessageWillBePosted")
def on_post(params, api):
    # Other plugins' bots joining at start write system messages: those pass untouched, so
    # what a test counts is what it sent.
    if params.get("origin") == "system":
        return cp.allow()
    if mode == "sleep":
        time.sleep(5)
    elif mode == "crash":
        os._exit(1)
    elif mode == "garbage":
        sys.__stdout__.write("this is not json-rpc\n")
        sys.__stdout__.flush()
        time.sleep(5)
    elif mode == "hog":
        while True:
            hoard.append(bytearray(8 << 20))
    return cp.allow()


@plugin.hook("ServeHTTP")
def serve(req, api):
    if req["path"] == "/kv":
        key = req["query"].split("key=", 1)[1]
        value = api.call("kv.get", key=key, plugin="counter", pluginId="counter")
        return {"status": 200, "headers": {"content-type": "application/json"}, "body": json.dumps(value)}
    if req["path"] == "/cluster" and req["method"] == "POST":
        api.publish_cluster_event("from-this-instance", {"n": 1})
        return {"status": 204}
    return {"status": 404}


@plugin.hook("OnPluginClusterEvent")
def cluster_event(params, api):
    api.kv_set("last-cluster", [params["event"], params["data"]])


@plugin.hook("OnActivate")
def activate(params, api):
    if mode == "audit":
        api.schedule_job("tick", 1000)
    return None


@plugin.hook("RunJob")
def run_job(params, api):
    while True:
        old = api.kv_get("ticks")
        if api.kv_compare_and_set("ticks", old, (old or 0) + 1):
            return None


@plugin.hook("MessageHasBeenPosted")
def posted(params, api):
    api.kv_set("last-posted", params["message"].get("msg"))


@plugin.hook("ReactionHasBeenAdded")
def reacted(params, api):
    api.kv_set("last-reaction", [params["reaction"], params["user"]["username"], "services" in params["user"]])


@plugin.hook("UserHasJoinedRoom")
def joined(params, api):
    api.kv_set("last-join", [params["user"]["username"], params["room"].get("name")])


@plugin.hook("UserWillLogIn")
def logging_in(params, api):
    if params["user"].get("username") == "blocked":
        return cp.reject("blocked users may not log in")
    return cp.allow()


@plugin.hook("OnDeactivate")
def bye(params, api):
    with open(os.path.join(HERE, "deactivated"), "w") as f:
        f.write("bye")
    return None


plugin.run()
