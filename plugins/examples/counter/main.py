"""An example plugin: the slash command /count, with a counter per room kept in the
plugin's key-value store and raised with compare-and-set, so two calls at once never count
as one."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "..", "..", "sdk", "python")]
import comet_plugin as cp  # noqa: E402

plugin = cp.Plugin()


def raise_counter(api, key):
    while True:
        old = api.kv_get(key)
        new = (old or 0) + 1
        if api.kv_compare_and_set(key, old, new):
            return new


@plugin.hook("ExecuteCommand")
def count(params, api):
    key = "count/" + params["roomId"]
    if params.get("params", "").strip() == "reset":
        api.kv_delete(key)
        return {"ephemeral": "The counter of this room is back to 0."}
    n = raise_counter(api, key)
    api.post(params["roomId"], "/count was called %d time%s in this room" % (n, "" if n == 1 else "s"),
             tmid=params.get("tmid"))
    return {"ephemeral": "You made it %d." % n}


plugin.run()
