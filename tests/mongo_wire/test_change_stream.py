"""comet against a scripted replica-set primary, in change-stream mode, with DDP clients.

Each scenario asserts the commands comet sends and what its clients see.
"""

import time

import pytest
from harness import Comet, Primary

CONFIG = """
[[publications]]
name = "tasks.open"
collection = "tasks"
args = ["string"]
selector = { done = false, list = "$args.0" }
sort = { createdAt = -1 }
limit = 2

[[collections]]
name = "tasks"
insert = {}
"""


@pytest.fixture
def primary():
    p = Primary()
    yield p
    p.close()


def start(primary, tmp_path, env=None):
    comet = Comet(primary, tmp_path, config=CONFIG, env=env)
    index = primary.indexes[0]
    assert index["createIndexes"] == "tasks"
    keys = index["indexes"][0]["key"]
    return comet, keys


def subscribe(primary, comet, docs=()):
    client = comet.client()
    client.send({"msg": "sub", "id": "s", "name": "tasks.open", "params": ["work"]})
    find = primary.expect("find")
    primary.reply_cursor(find, list(docs), ns="meteor.tasks")
    frames = client.recv_until(lambda m: m.get("msg") == "ready")
    return client, find, frames


def wait_for_stream_on(primary, collection, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for stream in primary.streams:
            match = stream["pipeline"][1]["$match"]["$or"][0]["ns.coll"]["$in"]
            if collection in match:
                return stream
        time.sleep(0.02)
    raise AssertionError("no change stream followed %s: %r" % (collection, primary.streams))


def insert_event(ts, doc):
    return {"operationType": "insert", "clusterTime": ts, "ns": {"db": "meteor", "coll": "tasks"},
            "documentKey": {"_id": doc["_id"]}, "fullDocument": doc}


def test_start_up_pings_creates_the_index_and_opens_one_change_stream(primary, tmp_path):
    comet, keys = start(primary, tmp_path)
    try:
        assert primary.pings >= 1, "comet checks the server before it listens"
        # The index serves the publication's query: its equalities, its sort, and the `_id`
        # tie-break every window query sorts by.
        assert list(keys) == ["done", "list", "createdAt", "_id"], keys
        assert keys["createdAt"] == -1
        deadline = time.monotonic() + 5
        while not primary.streams and time.monotonic() < deadline:
            time.sleep(0.02)
        stream = primary.streams[0]
        assert stream["aggregate"] == 1, "one stream for the database"
        assert stream["pipeline"][0]["$changeStream"]["fullDocument"] == "updateLookup"
    finally:
        comet.stop()


def test_a_subscription_reads_with_the_window_and_the_stream_follows_the_collection(primary, tmp_path):
    comet, _ = start(primary, tmp_path)
    try:
        doc = {"_id": "t1", "text": "one", "done": False, "list": "work", "createdAt": 1}
        client, find, frames = subscribe(primary, comet, [doc])
        assert find.doc["find"] == "tasks"
        assert dict(find.doc["filter"]) == {"done": False, "list": "work"}
        assert list(find.doc["sort"].items()) == [("createdAt", -1), ("_id", 1)]
        assert find.doc["limit"] == 2
        assert [f["msg"] for f in frames] == ["added", "ready"]
        assert frames[0]["id"] == "t1"
        reopened = wait_for_stream_on(primary, "tasks")
        # The new stream goes on from where the old one was: nothing between them is lost.
        change_stream = reopened["pipeline"][0]["$changeStream"]
        assert "resumeAfter" in change_stream or "startAfter" in change_stream, change_stream
    finally:
        comet.stop()


def test_an_insert_gets_its_result_its_added_and_then_updated(primary, tmp_path):
    comet, _ = start(primary, tmp_path)
    try:
        client, _, _ = subscribe(primary, comet)
        wait_for_stream_on(primary, "tasks")
        doc = {"_id": "t2", "text": "two", "done": False, "list": "work", "createdAt": 2}
        client.send({"msg": "method", "id": "1", "method": "/tasks/insert", "params": [doc]})
        insert = primary.expect("insert")
        assert insert.doc["insert"] == "tasks"
        assert dict(insert.doc["documents"][0]) == doc
        at = primary.advance()
        insert.ok(n=1, operationTime=at)
        primary.emit(insert_event(at, doc))
        # A window (limit 2) is read again when an insert may enter it.
        reread = primary.expect("find")
        assert dict(reread.doc["filter"]) == {"done": False, "list": "work"}
        primary.reply_cursor(reread, [doc], ns="meteor.tasks")
        frames = client.recv_until(lambda m: m.get("msg") == "updated")
        kinds = [f["msg"] for f in frames]
        assert "result" in kinds and kinds.index("added") < kinds.index("updated"), kinds
        assert [f for f in frames if f["msg"] == "result"][0]["result"] == "t2"
    finally:
        comet.stop()


def test_a_write_whose_change_never_comes_gets_its_result_at_once(primary, tmp_path):
    comet, _ = start(primary, tmp_path, env={"COMET_WRITE_FENCE_TIMEOUT_MS": "3000"})
    try:
        client, _, _ = subscribe(primary, comet)
        wait_for_stream_on(primary, "tasks")
        doc = {"_id": "t3", "done": True, "list": "work", "createdAt": 3}
        sent = time.monotonic()
        client.send({"msg": "method", "id": "1", "method": "/tasks/insert", "params": [doc]})
        insert = primary.expect("insert")
        insert.ok(n=1, operationTime=primary.advance())
        # No change event ever comes (the server filtered it, or lost it).
        result = client.recv()
        assert result == {"msg": "result", "id": "1", "result": "t3"}
        assert time.monotonic() - sent < 1.0, "result is not held by the fence"
        # A later method of the session does not wait behind the fence.
        client.send({"msg": "method", "id": "2", "method": "nope", "params": []})
        frames = client.recv_until(lambda m: m.get("msg") == "result" and m["id"] == "2", timeout=1.0)
        # The stream's next empty batch says it has seen past the write: updated follows,
        # well before the bound.
        frames += client.recv_until(lambda m: m.get("msg") == "updated" and "1" in m["methods"], timeout=2.5)
        assert time.monotonic() - sent < 2.9
        assert comet.metric("comet_write_fence_timeouts_total") == 0
    finally:
        comet.stop()


def test_a_fence_the_stream_never_passes_is_released_at_the_bound_and_counted(primary, tmp_path):
    comet, _ = start(primary, tmp_path, env={"COMET_WRITE_FENCE_TIMEOUT_MS": "1500"})
    try:
        client, _, _ = subscribe(primary, comet)
        wait_for_stream_on(primary, "tasks")
        doc = {"_id": "t4", "done": True, "list": "work", "createdAt": 4}
        client.send({"msg": "method", "id": "1", "method": "/tasks/insert", "params": [doc]})
        insert = primary.expect("insert")
        # An operation time past anything the stream will report.
        future = primary.clock.tick()
        future = type(future)(future.time + 3600, 1)
        insert.ok(n=1, operationTime=future)
        assert client.recv()["msg"] == "result"
        sent = time.monotonic()
        client.recv_until(lambda m: m.get("msg") == "updated", timeout=4)
        assert 1.0 < time.monotonic() - sent < 3.0
        assert comet.metric("comet_write_fence_timeouts_total") == 1
    finally:
        comet.stop()

