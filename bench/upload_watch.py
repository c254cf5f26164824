"""S11's listener (bench/uploads.sh): a DDP client that signs in, listens to #general's
messages and, when `--expect` file messages have arrived with their `image_preview`, prints
when the last one did (`last_at`, seconds since the epoch) and how many had a preview.

`--make-photo PATH` instead writes a photo-like JPEG of about 1 MB (Pillow)."""

import argparse
import hashlib
import json
import sys
import time

import websocket


def make_photo(path):
    # Smooth noise over gradients compresses about as a photograph does: ~1 MB here.
    import os
    from PIL import Image
    w, h = 1800, 1350
    noise = Image.frombytes("L", (w // 4, h // 4), os.urandom((w // 4) * (h // 4))).resize((w, h), Image.BICUBIC)
    grad = Image.linear_gradient("L").resize((w, h))
    Image.merge("RGB", (noise, grad, Image.blend(noise, grad, 0.5))).save(path, "JPEG", quality=90)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--make-photo")
    ap.add_argument("--url")
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--expect", type=int, default=100)
    ap.add_argument("--within", type=float, default=300.0)
    a = ap.parse_args()
    if a.make_photo:
        make_photo(a.make_photo)
        return
    ws = websocket.create_connection(a.url, timeout=a.within)
    send = lambda m: ws.send(json.dumps(m))  # noqa: E731
    send({"msg": "connect", "version": "1", "support": ["1"]})
    digest = hashlib.sha256(a.password.encode()).hexdigest()
    send({"msg": "method", "id": "login", "method": "login",
          "params": [{"user": {"username": a.user}, "password": {"digest": digest, "algorithm": "sha-256"}}]})
    send({"msg": "sub", "id": "s", "name": "stream-room-messages", "params": ["GENERAL", False]})
    seen, previews, last_at = set(), 0, None
    deadline = time.time() + a.within
    while len(seen) < a.expect and time.time() < deadline:
        m = json.loads(ws.recv())
        if m.get("msg") == "ping":
            send({"msg": "pong"})
            continue
        if m.get("msg") != "changed" or m.get("collection") != "stream-room-messages":
            continue
        for message in m["fields"].get("args", []):
            if not isinstance(message, dict) or not message.get("file") or message["_id"] in seen:
                continue
            seen.add(message["_id"])
            if any(att.get("image_preview") for att in message.get("attachments", [])):
                previews += 1
            last_at = time.time()
    print("delivered", len(seen))
    print("with_preview", previews)
    print("last_at", last_at if last_at is not None else time.time())
    sys.exit(0 if len(seen) == a.expect else 1)


if __name__ == "__main__":
    main()
