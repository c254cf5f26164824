"""comet against a scripted replica-set primary, in change-stream mode, with DDP clients.

Each scenario asserts the commands comet sends and what its clients see.
"""

import time

import pytest
import websocket
from harness import Comet, Primary

CONFIG = """
[[publications]]
name = "tasks.open"
collection = "tasks"
args = ["string"]
selector = { done = false, list = "$args.0" }
sort = { createdAt = -1 }
limit = 2

[[publications]]
name = "tasks.list"
collection = "tasks"
args = ["string"]
selector = { list = "$args.0" }

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
    try:
        # The services' own indexes come first (users by name, subscriptions by user and by
        # room); the configured publication's follows.
        # (Presence's and the teams' own indexes come among them.)
        made = [(i["createIndexes"], dict(i["indexes"][0]["key"])) for i in primary.indexes]
        services = [m for m in made if m[0] in ("users", "rocketchat_subscription")]
        assert services[:3] == [("users", {"username": 1}), ("rocketchat_subscription", {"u._id": 1}),
                                ("rocketchat_subscription", {"rid": 1})], made
        first_task = next(i for i, m in enumerate(made) if m[0] == "tasks")
        assert made.index(services[2]) < first_task, made
        tasks = [i for i in primary.indexes if i["createIndexes"] == "tasks"]
        assert tasks, made
        keys = tasks[0]["indexes"][0]["key"]
    except BaseException:
        comet.stop()
        raise
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


def subscribe_list(primary, comet, docs=()):
    """Subscribes to the unlimited `tasks.list` for "work", the read answered with `docs`,
    and waits until the change stream follows `tasks`; returns the client and that stream."""
    client = comet.client()
    client.send({"msg": "sub", "id": "l", "name": "tasks.list", "params": ["work"]})
    primary.reply_cursor(primary.expect("find"), list(docs), ns="meteor.tasks")
    client.recv_until(lambda m: m.get("msg") == "ready")
    return client, wait_for_stream_on(primary, "tasks")


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
        # The server (wire version 21) splits events over 16 MB; comet asks it to.
        assert "$changeStreamSplitLargeEvent" in stream["pipeline"][-1], stream["pipeline"]
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
        assert find.doc["maxTimeMS"] == 10000, "a read is bounded on the server"
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
        assert dict(insert.doc["writeConcern"]) == {"w": "majority"}
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



def test_history_lost_opens_the_new_stream_before_the_re_read(primary, tmp_path):
    comet, _ = start(primary, tmp_path)
    try:
        client, _, _ = subscribe(primary, comet)
        wait_for_stream_on(primary, "tasks")
        streams_before = len(primary.streams)
        # A write lands while the stream has lost its place: its event is gone for good.
        gap = {"_id": "gap", "text": "in the gap", "done": False, "list": "work", "createdAt": 9}
        primary.advance()
        primary.fail_getmores(286, "Resume of change stream was not possible", times=1)
        reread = primary.expect("find", timeout=5)
        with primary.lock:
            order = list(primary.order)
        # The new stream was open before the re-read asked anything: a write between the two
        # is in one or the other, never in neither.
        assert len(primary.streams) > streams_before
        last_stream = max(i for i, n in enumerate(order) if n == "stream")
        last_find = max(i for i, n in enumerate(order) if n == "find")
        assert last_stream < last_find, order
        new_stream = primary.streams[-1]["pipeline"][0]["$changeStream"]
        assert "resumeAfter" not in new_stream, "the lost position is not asked for again"
        primary.reply_cursor(reread, [gap], ns="meteor.tasks")
        frames = client.recv_until(lambda m: m.get("msg") == "added")
        assert frames[-1]["id"] == "gap"
    finally:
        comet.stop()


def test_after_an_invalidate_the_stream_starts_after_it(primary, tmp_path):
    comet, _ = start(primary, tmp_path)
    try:
        client, _, _ = subscribe(primary, comet)
        wait_for_stream_on(primary, "tasks")
        streams_before = len(primary.streams)
        at = primary.advance()
        primary.emit({"operationType": "invalidate", "clusterTime": at})
        reread = primary.expect("find", timeout=5)
        assert len(primary.streams) > streams_before
        new_stream = primary.streams[-1]["pipeline"][0]["$changeStream"]
        assert new_stream.get("startAfter") == {"_data": "82%08X%08X2B0229296E04" % (at.time, at.inc)}, new_stream
        primary.reply_cursor(reread, [], ns="meteor.tasks")
    finally:
        comet.stop()


def test_a_stream_that_fails_every_get_more_backs_off_and_restarts_past_the_event(primary, tmp_path):
    comet, _ = start(primary, tmp_path)
    try:
        # The client is kept: a subscription whose socket closed has nothing to re-read.
        client, _, _ = subscribe(primary, comet)
        wait_for_stream_on(primary, "tasks")
        before = len(primary.streams)
        primary.fail_getmores(10334, "BSONObjectTooLarge: event over 16 MB")
        time.sleep(3)
        opened = len(primary.streams) - before
        # 100, 200, 400, 800, 1600 ms: a handful of attempts, not thousands.
        assert 2 <= opened <= 8, opened
        # Not following: /health says so.
        import urllib.request
        try:
            urllib.request.urlopen("http://%s/health" % comet.addr, timeout=5)
            status = 200
        except urllib.error.HTTPError as err:
            status = err.code
        assert status == 503
        # Past the failing event the stream starts from now, and live queries re-read.
        with primary.lock:
            primary.getmore_error = None
        reread = primary.expect("find", timeout=15)
        primary.reply_cursor(reread, [], ns="meteor.tasks")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen("http://%s/health" % comet.addr, timeout=5)
                break
            except urllib.error.HTTPError:
                time.sleep(0.1)
        else:
            raise AssertionError("/health did not recover")
    finally:
        comet.stop()


def health(comet):
    import urllib.error
    import urllib.request
    try:
        return urllib.request.urlopen("http://%s/health" % comet.addr, timeout=5).status
    except urllib.error.HTTPError as err:
        return err.code


def test_without_the_server_methods_fail_fast_with_a_clear_error_and_health_says_so(primary, tmp_path):
    primary_url = primary.url() + "&serverSelectionTimeoutMS=1500&heartbeatFrequencyMS=500"
    comet, _ = start(primary, tmp_path, env={"MONGO_URL": primary_url})
    try:
        client, _, _ = subscribe(primary, comet)
        wait_for_stream_on(primary, "tasks")
        primary.close()
        sent = time.monotonic()
        client.send({"msg": "method", "id": "1", "method": "/tasks/insert",
                     "params": [{"_id": "x", "done": False, "list": "work", "createdAt": 1}]})
        result = client.recv_until(lambda m: m.get("msg") == "result", timeout=10)[-1]
        assert result["error"]["error"] == 503, result
        assert result["error"]["reason"] == "Database unavailable"
        assert time.monotonic() - sent < 5
        client.send({"msg": "sub", "id": "s2", "name": "tasks.open", "params": ["home"]})
        nosub = client.recv_until(lambda m: m.get("msg") in ("nosub", "ready"), timeout=10)[-1]
        assert nosub["msg"] == "nosub" and nosub["error"]["error"] == 503, nosub
        assert health(comet) == 503
        # The server comes back on the same address: comet follows again by itself.
        back = Primary(port=primary.port, clock=primary.clock)
        try:
            deadline = time.monotonic() + 20
            while health(comet) != 200:
                assert time.monotonic() < deadline, "no recovery"
                time.sleep(0.2)
            assert back.streams, "the change stream was opened on the returned server"
            client.send({"msg": "method", "id": "2", "method": "/tasks/insert",
                         "params": [{"_id": "y", "done": True, "list": "work", "createdAt": 2}]})
            insert = back.expect("insert")
            insert.ok(n=1, operationTime=back.advance())
            result = client.recv_until(lambda m: m.get("msg") == "result" and m["id"] == "2")[-1]
            assert result.get("result") == "y", result
        finally:
            back.close()
    finally:
        comet.stop()


def test_a_resumable_error_resumes_from_the_last_token_without_loss_or_duplicates(primary, tmp_path):
    comet, _ = start(primary, tmp_path)
    try:
        client, _ = subscribe_list(primary, comet)
        first = {"_id": "a", "list": "work"}
        primary.emit(insert_event(primary.advance(), first))
        assert client.recv_until(lambda m: m.get("msg") == "added")[-1]["id"] == "a"
        streams_before = len(primary.streams)
        with primary.lock:
            seen_up_to = primary.now
        # A network-class error on getMore: the driver resumes by itself.
        primary.fail_getmores(6, "host unreachable", times=1, labels=["ResumableChangeStreamError"])
        deadline = time.monotonic() + 5
        while len(primary.streams) == streams_before and time.monotonic() < deadline:
            time.sleep(0.02)
        resumed = primary.streams[-1]["pipeline"][0]["$changeStream"]
        token = resumed.get("resumeAfter") or resumed.get("startAfter")
        assert token is not None, resumed
        # From the last position seen, not from now and not from before `a`.
        assert token["_data"][2:18] >= "%08X%08X" % (seen_up_to.time, seen_up_to.inc), token
        second = {"_id": "b", "list": "work"}
        primary.emit(insert_event(primary.advance(), second))
        frames = client.recv_until(lambda m: m.get("msg") == "added")
        assert [f["id"] for f in frames if f.get("msg") == "added"] == ["b"], frames
        # And `a` does not come again.
        try:
            extra = client.recv(timeout=0.5)
        except websocket.WebSocketTimeoutException:
            extra = None
        assert extra is None or extra.get("msg") != "added", extra
    finally:
        comet.stop()


def test_a_re_read_that_fails_ends_its_subscriptions_with_an_error(primary, tmp_path):
    comet, _ = start(primary, tmp_path)
    try:
        client, _ = subscribe_list(primary, comet, [{"_id": "a", "list": "work"}])
        # An update whose document could not be looked up: the query must read again...
        primary.emit({"operationType": "update", "clusterTime": primary.advance(),
                      "ns": {"db": "meteor", "coll": "tasks"}, "documentKey": {"_id": "a"},
                      "updateDescription": {"updatedFields": {"x": 1}, "removedFields": []},
                      "fullDocument": None})
        # ...and the server fails it (and the driver's one retry of a read).
        for _ in range(2):
            primary.expect("find").command_err(code=91, errmsg="The server is in quiesce mode")
        nosub = client.recv_until(lambda m: m.get("msg") == "nosub")[-1]
        assert nosub["id"] == "l"
        assert nosub["error"]["error"] == 503 and nosub["error"]["reason"] == "Database unavailable"
    finally:
        comet.stop()


def test_a_saved_resume_token_is_not_replayed_into_fresh_reads(primary, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "mongo-meteor.resume.json").write_text('{"token": {"_data": "8200000001000000012B0229296E04"}}')
    comet, _ = start(primary, tmp_path)
    try:
        deadline = time.monotonic() + 5
        while not primary.streams and time.monotonic() < deadline:
            time.sleep(0.02)
        change_stream = primary.streams[0]["pipeline"][0]["$changeStream"]
        assert "resumeAfter" not in change_stream and "startAfter" not in change_stream, change_stream
    finally:
        comet.stop()


def test_a_rename_into_a_followed_collection_makes_its_queries_read_again(primary, tmp_path):
    comet, _ = start(primary, tmp_path)
    try:
        client, stream = subscribe_list(primary, comet, [{"_id": "old", "list": "work"}])
        clauses = stream["pipeline"][1]["$match"]["$or"]
        renames = [c["to.coll"]["$in"] for c in clauses if "to.coll" in c]
        assert renames and "tasks" in renames[0], clauses
        primary.emit({"operationType": "rename", "clusterTime": primary.advance(),
                      "ns": {"db": "meteor", "coll": "staging"}, "to": {"db": "meteor", "coll": "tasks"}})
        reread = primary.expect("find")
        assert reread.doc["find"] == "tasks"
        primary.reply_cursor(reread, [{"_id": "new", "list": "work"}], ns="meteor.tasks")
        seen = {}
        frames = client.recv_until(lambda m: seen.setdefault(m.get("msg"), m["id"]) and
                                   "added" in seen and "removed" in seen)
        assert seen["added"] == "new" and seen["removed"] == "old", frames
    finally:
        comet.stop()


def test_a_fence_waits_for_every_event_at_its_cluster_time(primary, tmp_path):
    comet, _ = start(primary, tmp_path)
    try:
        client, _ = subscribe_list(primary, comet)
        one = {"_id": "one", "list": "work"}
        client.send({"msg": "method", "id": "1", "method": "/tasks/insert", "params": [one]})
        insert = primary.expect("insert")
        # A write that is one of two at its cluster time (a transaction's, say).
        at = primary.clock.tick()
        insert.ok(n=1, operationTime=at)
        assert client.recv_until(lambda m: m.get("msg") == "result")[-1]["result"] == "one"
        primary.emit(insert_event(at, one), more_at_this_time=True)
        frames = client.recv_until(lambda m: m.get("msg") == "added")
        # Several empty batches go by, none past the write's time: no `updated` yet.
        try:
            early = client.recv(timeout=1.0)
        except websocket.WebSocketTimeoutException:
            early = None
        assert early is None, "updated before every change at its time was seen: %r" % (early,)
        two = {"_id": "two", "list": "work"}
        primary.emit(insert_event(at, two))
        frames = client.recv_until(lambda m: m.get("msg") == "updated")
        assert [f["id"] for f in frames if f.get("msg") == "added"] == ["two"], frames
    finally:
        comet.stop()


def test_a_split_event_is_joined_from_its_fragments(primary, tmp_path):
    comet, _ = start(primary, tmp_path)
    try:
        client, _ = subscribe_list(primary, comet)
        at = primary.advance()
        big = {"_id": "big", "list": "work", "body": "x" * 1000}
        primary.emit({"operationType": "insert", "clusterTime": at, "splitEvent": {"fragment": 1, "of": 2},
                      "ns": {"db": "meteor", "coll": "tasks"}, "documentKey": {"_id": "big"}},
                     more_at_this_time=True)
        primary.emit({"clusterTime": at, "splitEvent": {"fragment": 2, "of": 2}, "fullDocument": big})
        added = client.recv_until(lambda m: m.get("msg") == "added")[-1]
        assert added["id"] == "big" and added["fields"]["body"] == "x" * 1000, added
    finally:
        comet.stop()


def test_a_slow_first_read_holds_up_no_other_query(primary, tmp_path):
    comet, _ = start(primary, tmp_path)
    try:
        live, _ = subscribe_list(primary, comet)
        # A second subscription whose first read the server is slow to answer.
        slow = comet.client()
        slow.send({"msg": "sub", "id": "s", "name": "tasks.open", "params": ["home"]})
        pending = primary.expect("find")
        # Meanwhile a change for the live query reaches its client.
        primary.emit(insert_event(primary.advance(), {"_id": "n", "list": "work"}))
        added = live.recv_until(lambda m: m.get("msg") == "added", timeout=3)[-1]
        assert added["id"] == "n"
        # That event cannot concern the slow read (another list): alone it would let the
        # read stand. One that the slow query's selector matches lands too.
        primary.emit(insert_event(primary.advance(), {"_id": "h", "list": "home", "done": False,
                                                      "createdAt": 5}))
        # No client sees that event before the read returns: give the feed time to apply it.
        time.sleep(0.5)
        # The slow read went past an event that concerns it, so it is made again; then it
        # is ready.
        primary.reply_cursor(pending, [], ns="meteor.tasks")
        again = primary.expect("find")
        assert dict(again.doc["filter"]) == dict(pending.doc["filter"])
        primary.reply_cursor(again, [], ns="meteor.tasks")
        assert slow.recv_until(lambda m: m.get("msg") == "ready")[-1]["subs"] == ["s"]
    finally:
        comet.stop()


def test_int64_and_uuid_values_keep_their_bson_types_both_ways(primary, tmp_path):
    from bson import Binary, Int64

    comet, _ = start(primary, tmp_path)
    try:
        big = 2**53 + 1
        uuid = Binary(bytes(range(16)), 4)
        stored = {"_id": "t", "text": "x", "done": False, "list": "work", "createdAt": 1,
                  "big": Int64(big), "small": Int64(7), "key": uuid}
        client, _, frames = subscribe(primary, comet, [stored])
        fields = frames[0]["fields"]
        # Every digit reaches the client, as a plain object a Meteor client keeps as it is.
        assert fields["big"] == {"$numberLong": str(big)}, fields
        assert fields["small"] == 7
        assert fields["key"] == {"$binary": "AAECAwQFBgcICQoLDA0ODw=="}
        wait_for_stream_on(primary, "tasks")
        doc = {"_id": "u", "text": "y", "done": False, "list": "work", "createdAt": 2,
               "big": {"$numberLong": str(big + 1)}}
        client.send({"msg": "method", "id": "1", "method": "/tasks/insert", "params": [doc]})
        insert = primary.expect("insert")
        written = insert.doc["documents"][0]["big"]
        assert isinstance(written, Int64) and written == big + 1, repr(written)
        insert.ok(n=1, operationTime=primary.advance())
        result = client.recv_until(lambda m: m.get("msg") == "result")[-1]
        assert result["result"] == "u", result
    finally:
        comet.stop()


@pytest.mark.parametrize("version,wire,splits", [((6, 0, 9), 17, True), ((6, 0, 8), 17, False),
                                                 ((6, 3, 1), 19, False), ((8, 0, 4), 25, True)])
def test_large_events_are_split_where_the_server_release_supports_it(tmp_path, version, wire, splits):
    primary = Primary(version=version, wire_version=wire)
    comet = Comet(primary, tmp_path, config=CONFIG)
    try:
        deadline = time.monotonic() + 5
        while not primary.streams and time.monotonic() < deadline:
            time.sleep(0.02)
        pipeline = primary.streams[0]["pipeline"]
        asked = any("$changeStreamSplitLargeEvent" in stage for stage in pipeline)
        assert asked == splits, (version, pipeline)
    finally:
        comet.stop()
        primary.close()


def test_a_slow_re_read_holds_up_no_other_query(primary, tmp_path):
    comet, _ = start(primary, tmp_path)
    try:
        windowed, _, _ = subscribe(primary, comet)
        plain = comet.client()
        plain.send({"msg": "sub", "id": "h", "name": "tasks.list", "params": ["home"]})
        primary.reply_cursor(primary.expect("find"), [], ns="meteor.tasks")
        plain.recv_until(lambda m: m.get("msg") == "ready")
        wait_for_stream_on(primary, "tasks")
        work = {"_id": "w", "done": False, "list": "work", "createdAt": 5}
        primary.emit(insert_event(primary.advance(), work))
        # The window reads again; the server is slow to answer.
        pending = primary.expect("find")
        assert dict(pending.doc["filter"]) == {"done": False, "list": "work"}
        primary.emit(insert_event(primary.advance(), {"_id": "h1", "list": "home"}))
        added = plain.recv_until(lambda m: m.get("msg") == "added", timeout=3)[-1]
        assert added["id"] == "h1", "another query's change is not held up by the slow read"
        primary.reply_cursor(pending, [work], ns="meteor.tasks")
        added = windowed.recv_until(lambda m: m.get("msg") == "added")[-1]
        assert added["id"] == "w"
    finally:
        comet.stop()


def test_a_standalone_server_that_refuses_change_streams_is_reported_and_retried_with_backoff(primary, tmp_path):
    primary.stream_refusal = (40573, "The $changeStream stage is only supported on replica sets")
    comet = Comet(primary, tmp_path, config=CONFIG)
    try:
        time.sleep(2.0)
        assert health(comet) == 503, "not following: /health says so"
        tries = len(primary.streams)
        assert 2 <= tries <= 6, "retried with a growing wait, not in a loop: %d tries" % tries
        assert any("not a replica set" in line for line in comet.log), "the log names the cause"
        # Once the server accepts change streams (made a replica set), comet follows again.
        primary.stream_refusal = None
        deadline = time.monotonic() + 15
        while health(comet) != 200:
            assert time.monotonic() < deadline, "no recovery"
            time.sleep(0.2)
    finally:
        comet.stop()
