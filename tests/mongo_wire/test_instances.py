"""Two comets against one scripted primary, sharing events over a real nats-server: several
instances over one MongoDB deployment (protocol-spec/instances.md).

Each instance follows the database's change stream on its own, so a stored change reaches
every instance from the store and never over the bus. An insert made through one instance
reaches a subscriber on the other once, and the writer's own subscriber once.
"""

import os
import shutil
import socket
import subprocess
import time

import pytest
from harness import Comet, Primary
from test_change_stream import CONFIG, insert_event


@pytest.fixture
def nats():
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    assert os.path.exists(binary), "nats-server comes from scripts/install-test-deps.sh"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([binary, "-a", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "nats-server did not start"
            time.sleep(0.05)
    yield "nats://127.0.0.1:%d" % port
    proc.kill()
    proc.wait()


@pytest.fixture
def primary():
    p = Primary(fan_out=True)
    yield p
    p.close()


def streams_following(primary, collection):
    following = []
    for stream in list(primary.streams):
        try:
            if collection in stream["pipeline"][1]["$match"]["$or"][0]["ns.coll"]["$in"]:
                following.append(stream)
        except (KeyError, IndexError, TypeError):
            continue
    return following


def subscribe_list(primary, comet):
    """A client of `comet` subscribed to `tasks.list` for "work" (read empty), returned once
    that instance's change stream follows `tasks`."""
    before = len(streams_following(primary, "tasks"))
    client = comet.client()
    client.send({"msg": "sub", "id": "l", "name": "tasks.list", "params": ["work"]})
    primary.reply_cursor(primary.expect("find"), [], ns="meteor.tasks")
    client.recv_until(lambda m: m.get("msg") == "ready")
    deadline = time.monotonic() + 5
    while len(streams_following(primary, "tasks")) <= before:
        assert time.monotonic() < deadline, "the instance's stream never followed tasks"
        time.sleep(0.02)
    return client


def frames_for(client, seconds):
    """Every frame `client` receives within `seconds`."""
    seen = []
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return seen
        try:
            seen.append(client.recv(timeout=left))
        except Exception:  # the quiet period ended (a socket timeout)
            return seen


def start_instance(primary, tmp_path, name, transporter):
    folder = tmp_path / name
    folder.mkdir()
    return Comet(primary, folder, config=CONFIG, env={"TRANSPORTER": transporter})


def test_an_insert_through_one_instance_reaches_a_subscriber_on_the_other_once(primary, tmp_path, nats):
    a = start_instance(primary, tmp_path, "a", nats)
    try:
        b = start_instance(primary, tmp_path, "b", nats)
        try:
            on_a = subscribe_list(primary, a)
            on_b = subscribe_list(primary, b)
            assert len({id(s) for s in streams_following(primary, "tasks")}) >= 2, "one stream per instance"

            doc = {"_id": "t1", "text": "from a", "done": False, "list": "work", "createdAt": 1}
            on_a.send({"msg": "method", "id": "1", "method": "/tasks/insert", "params": [doc]})
            insert = primary.expect("insert")
            assert dict(insert.doc["documents"][0]) == doc
            at = primary.advance()
            insert.ok(n=1, operationTime=at)
            # The server's change event, as every open change stream sees it.
            primary.emit(insert_event(at, doc))

            added = {"msg": "added", "collection": "tasks", "id": "t1",
                     "fields": {"text": "from a", "done": False, "list": "work", "createdAt": 1}}
            seen_b = on_b.recv_until(lambda m: m.get("msg") == "added", timeout=5)
            assert seen_b[-1] == added
            seen_a = on_a.recv_until(lambda m: m.get("msg") == "updated", timeout=5)
            assert [m["result"] for m in seen_a if m.get("msg") == "result"] == ["t1"]

            # Once: nothing more comes on either instance, from the store or over the bus.
            seen_a += frames_for(on_a, 1.5)
            seen_b += frames_for(on_b, 0.5)
            for seen in (seen_a, seen_b):
                changes = [m for m in seen if m.get("msg") in ("added", "changed", "removed")]
                assert changes == [added], seen

            # And the other way: B's write reaches A's subscriber, once.
            doc2 = {"_id": "t2", "text": "from b", "done": False, "list": "work", "createdAt": 2}
            on_b.send({"msg": "method", "id": "2", "method": "/tasks/insert", "params": [doc2]})
            insert = primary.expect("insert")
            at = primary.advance()
            insert.ok(n=1, operationTime=at)
            primary.emit(insert_event(at, doc2))
            on_a.recv_until(lambda m: m.get("msg") == "added" and m["id"] == "t2", timeout=5)
            later = frames_for(on_a, 1.0)
            assert not [m for m in later if m.get("msg") == "added"], later
            for client in (on_a, on_b):
                client.close()
        finally:
            b.stop()
    finally:
        a.stop()
