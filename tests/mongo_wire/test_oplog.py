"""comet against a scripted replica-set primary in oplog mode (`MONGO_OPLOG_URL`)."""

import time

import pytest

from harness import Comet, Primary

CONFIG = """
[[publications]]
name = "tasks.list"
collection = "tasks"
args = ["string"]
selector = { list = "$args.0" }
"""


@pytest.fixture
def primary():
    p = Primary()
    yield p
    p.close()


def start(primary, tmp_path):
    oplog_url = "mongodb://%s/local?replicaSet=rs0" % primary.host
    comet = Comet(primary, tmp_path, config=CONFIG, env={"MONGO_OPLOG_URL": oplog_url})
    client = comet.client()
    client.send({"msg": "sub", "id": "l", "name": "tasks.list", "params": ["work"]})
    primary.reply_cursor(primary.expect("find"), [{"_id": "a", "list": "work", "n": 1, "tags": ["x", "y", "z"]}],
                         ns="meteor.tasks")
    client.recv_until(lambda m: m.get("msg") == "ready")
    deadline = time.monotonic() + 5
    while not primary.tails and time.monotonic() < deadline:
        time.sleep(0.02)
    assert primary.tails, "comet tails the oplog"
    return comet, client


def txn(entry):
    return dict(entry, lsid={"id": b"\x01" * 16}, txnNumber=1)


def test_oplog_mode_follows_diffs_index_builds_and_transactions(primary, tmp_path):
    comet, client = start(primary, tmp_path)
    try:
        tail = primary.tails[-1]
        assert tail["tailable"] and tail["awaitData"], tail
        # A `$v: 2` diff: nested and array changes, the array truncated.
        primary.append_oplog({"op": "u", "ns": "meteor.tasks", "o2": {"_id": "a"},
                              "o": {"$v": 2, "diff": {"u": {"n": 2}, "stags": {"a": True, "l": 2}}}})
        lookup = primary.expect("find")
        assert dict(lookup.doc["filter"]) == {"_id": "a"}
        primary.reply_cursor(lookup, [{"_id": "a", "list": "work", "n": 2, "tags": ["x", "y"]}],
                             ns="meteor.tasks")
        changed = client.recv_until(lambda m: m.get("msg") == "changed")[-1]
        assert changed["fields"] == {"n": 2, "tags": ["x", "y"]}, changed
        # An index build is no change to any document: no query reads again.
        primary.append_oplog({"op": "c", "ns": "meteor.$cmd", "o": {"startIndexBuild": "tasks", "indexes": []}})
        primary.append_oplog({"op": "c", "ns": "meteor.$cmd", "o": {"commitIndexBuild": "tasks", "indexes": []}})
        with pytest.raises(AssertionError):
            primary.expect("find", timeout=1.0)
        # A prepared transaction shows nothing until it commits.
        primary.append_oplog(txn({"op": "c", "ns": "admin.$cmd", "prepare": True,
                                  "o": {"applyOps": [{"op": "i", "ns": "meteor.tasks",
                                                      "o": {"_id": "b", "list": "work"}}],
                                        "prepare": True}}))
        try:
            early = client.recv(timeout=1.0)
        except Exception:
            early = None
        assert early is None, "nothing at prepare: %r" % (early,)
        primary.append_oplog(txn({"op": "c", "ns": "admin.$cmd", "o": {"commitTransaction": 1}}))
        added = client.recv_until(lambda m: m.get("msg") == "added")[-1]
        assert added["id"] == "b"
        # An aborted one never shows.
        primary.append_oplog(dict(txn({"op": "c", "ns": "admin.$cmd",
                                       "o": {"applyOps": [{"op": "i", "ns": "meteor.tasks",
                                                           "o": {"_id": "c", "list": "work"}}],
                                             "prepare": True}}), txnNumber=2))
        primary.append_oplog(dict(txn({"op": "c", "ns": "admin.$cmd", "o": {"abortTransaction": 1}}),
                                  txnNumber=2))
        try:
            late = client.recv(timeout=1.0)
        except Exception:
            late = None
        assert late is None, "an aborted transaction shows nothing: %r" % (late,)
    finally:
        comet.stop()
