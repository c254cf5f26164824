"""An example plugin: masks some words and refuses messages with others.

Its settings (`masked_words`, `forbidden_words`) are comma-separated lists, changed by an
administrator with plugins.configure; comet sends them with Hello and OnConfigurationChange.
"""

import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "..", "..", "sdk", "python")]
import comet_plugin as cp  # noqa: E402

plugin = cp.Plugin()


def words(setting):
    return [w.strip().lower() for w in (plugin.config.get(setting) or "").split(",") if w.strip()]


def judge(message):
    text = message.get("msg") or ""
    lowered = text.lower()
    for word in words("forbidden_words"):
        if word in lowered:
            return cp.reject('Messages with "%s" are not allowed here' % word)
    masked = text
    for word in words("masked_words"):
        masked = re.sub(re.escape(word), "*" * len(word), masked, flags=re.IGNORECASE)
    if masked == text:
        return cp.allow()
    return cp.rewrite(message=dict(message, msg=masked))


@plugin.hook("MessageWillBePosted")
def on_post(params, api):
    if params.get("origin") == "system":
        return cp.allow()
    return judge(params["message"])


@plugin.hook("MessageWillBeUpdated")
def on_update(params, api):
    return judge(params["message"])


plugin.run()
