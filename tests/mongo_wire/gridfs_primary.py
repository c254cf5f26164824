"""A scripted primary that keeps GridFS's two collections, for the Rust storage contract
(`tests/it/file_storage.rs`): the MongoDB driver's GridFS code writes and reads through it on
the wire as it would against a server.

Like `harness.Primary`, this is a double of the wire: handshakes come from mockupdb, and
the few commands GridFS sends (find by `_id` or `files_id` sorted by `n`, insert, delete,
the index commands) are answered from lists of the documents inserted. It starts with one
file in the shape Rocket.Chat's Node driver writes (`rc-file`, 300,000 bytes in 255 KiB
chunks) so the contract checks that such a file is read as it is.

Prints `PORT <n>` when ready; serves until its standard input closes.
"""

import datetime
import sys
import threading

from bson import Binary, Int64, ObjectId
from mockupdb import MockupDB

FILES = "rocketchat_uploads.files"
CHUNKS = "rocketchat_uploads.chunks"
CHUNK = 255 * 1024
DEBUG = bool(__import__("os").environ.get("GRIDFS_PRIMARY_DEBUG"))
SEED_BYTES = bytes((i * 7 + 3) % 256 for i in range(300_000))


def seeded():
    files = [{
        "_id": "rc-file", "length": Int64(len(SEED_BYTES)), "chunkSize": CHUNK,
        "uploadDate": datetime.datetime(2024, 5, 1, tzinfo=datetime.timezone.utc),
        "filename": "photo.jpg", "metadata": None,
    }]
    chunks = [{"_id": ObjectId(), "files_id": "rc-file", "n": n, "data": Binary(SEED_BYTES[at:at + CHUNK])}
              for n, at in enumerate(range(0, len(SEED_BYTES), CHUNK))]
    return files, chunks


def matches(doc, selector):
    for key, want in (selector or {}).items():
        if isinstance(want, dict) and "$in" in want:
            if doc.get(key) not in want["$in"]:
                return False
        elif isinstance(want, dict) and "$eq" in want:
            if doc.get(key) != want["$eq"]:
                return False
        elif doc.get(key) != want:
            return False
    return True


def main():
    server = MockupDB(auto_ismaster=False, verbose=False)
    port = server.run()
    host = "localhost:%d" % port
    hello = {"ismaster": True, "isWritablePrimary": True, "setName": "rs0", "hosts": [host],
             "primary": host, "me": host, "minWireVersion": 0, "maxWireVersion": 21,
             "maxBsonObjectSize": 16 * 1024 * 1024, "maxMessageSizeBytes": 48_000_000,
             "maxWriteBatchSize": 100_000, "logicalSessionTimeoutMinutes": 30}
    for name in ("ismaster", "isMaster", "hello"):
        server.autoresponds(name, lambda r: r.ok(**hello))
    files, chunks = seeded()
    store = {FILES: files, CHUNKS: chunks}

    def serve():
        while True:
            try:
                request = server.receives(timeout=3600)
            except Exception:
                return
            name, doc = request.command_name, request.doc
            if DEBUG:
                print(name, dict(doc), file=sys.stderr, flush=True)
            coll = doc.get(name) if isinstance(doc.get(name), str) else ""
            if name == "find":
                found = [d for d in store.get(coll, []) if matches(d, doc.get("filter"))]
                if "n" in (doc.get("sort") or {}):
                    found.sort(key=lambda d: d["n"])
                if doc.get("limit"):
                    found = found[:abs(doc["limit"])]
                request.ok(cursor={"id": Int64(0), "ns": "meteor." + doc["find"], "firstBatch": found})
            elif name == "insert":
                store.setdefault(coll, []).extend(doc.get("documents", []))
                request.ok(n=len(doc.get("documents", [])))
            elif name == "delete":
                removed = 0
                for spec in doc.get("deletes", []):
                    before = len(store.get(coll, []))
                    store[coll] = [d for d in store.get(coll, []) if not matches(d, spec.get("q"))]
                    removed += before - len(store[coll])
                request.ok(n=removed)
            elif name == "listIndexes":
                request.ok(cursor={"id": Int64(0), "ns": "meteor." + doc["listIndexes"], "firstBatch": []})
            elif name in ("createIndexes", "endSessions", "killCursors", "ping"):
                request.ok()
            else:
                request.command_err(code=59, errmsg="not scripted: %s" % name)

    threading.Thread(target=serve, daemon=True).start()
    print("PORT %d" % port, flush=True)
    sys.stdin.read()
    server.stop()


if __name__ == "__main__":
    main()
