"""A plugin that misbehaves on purpose, for tests/plugins.rs: `python3 misbehave.py <mode>`.

  exit     exits at once, before any handshake
  sleep    MessageWillBePosted sleeps 5 s (past any deadline the tests give)
  crash    MessageWillBePosted kills the process mid-hook
  garbage  MessageWillBePosted writes a line that is not JSON-RPC to stdout
  hog      MessageWillBePosted allocates without bound
  pass     MessageWillBePosted lets every message through (the benchmark's plugin)
  probe    ServeHTTP GET /kv?key=K answers this plugin's value of K, asking with another
           plugin's id in the call too (comet must ignore it); OnDeactivate writes a file
"""

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
        theirs = api.call("kv.get", key=key, plugin="counter", pluginId="counter")
        return {"status": 200, "body": repr(theirs)}
    return {"status": 404}


@plugin.hook("OnDeactivate")
def bye(params, api):
    with open(os.path.join(HERE, "deactivated"), "w") as f:
        f.write("bye")
    return None


plugin.run()
