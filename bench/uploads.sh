#!/usr/bin/env bash
# S11 uploads (comet alone: the Node peer has no upload service). Two measures, RUNS times
# each on a fresh server, medians reported:
#
#  1. One big file (SIZE_MB, 1024 by default) uploaded with rooms.upload and downloaded
#     again, to the file system and to moto's S3 server (tests/s3/.venv): throughput each
#     way and the server's RSS growth over its idle RSS (sampled every 50 ms).
#  2. PHOTOS clients (100) each uploading a 1 MB photo at once with rooms.upload, while a
#     DDP listener (bench/upload_watch.py) waits for every message with its image_preview:
#     time until all are delivered, p50/p99 of the upload calls, CPU seconds per upload.
#
#   bench/uploads.sh
#   RUNS=5 SIZE_MB=256 bench/uploads.sh
#   BACKENDS=FileSystem bench/uploads.sh
#   SKIP_BUILD=1 bench/uploads.sh          # the release binary as it is
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
SIZE_MB=${SIZE_MB:-1024}
PHOTOS=${PHOTOS:-100}
BACKENDS=${BACKENDS:-"FileSystem AmazonS3"}
OUT=bench/out/uploads-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --bin comet >/dev/null
# The bench's own Python: websocket-client for the listener, Pillow for the photo.
PY=bench/.venv/bin/python
if ! "$PY" -c "import PIL, websocket" >/dev/null 2>&1; then
  python3 -m venv bench/.venv
  bench/.venv/bin/pip install --quiet --disable-pip-version-check "Pillow==11.*" websocket-client==1.9.2
fi
MOTO=tests/s3/.venv/bin/moto_server
PORT=3951
MOTO_PORT=3952
BIG="$OUT/big.bin"
head -c "$((SIZE_MB * 1024 * 1024))" /dev/urandom > "$BIG"
"$PY" bench/upload_watch.py --make-photo "$OUT/photo.jpg"

SERVER_PID=
MOTO_PID=
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
  [ -n "$MOTO_PID" ] && kill "$MOTO_PID" 2>/dev/null || true
  rm -f "$BIG"
}
trap cleanup EXIT

start_moto() {
  "$MOTO" -H 127.0.0.1 -p "$MOTO_PORT" >/dev/null 2>&1 &
  MOTO_PID=$!
  for _ in $(seq 100); do
    curl -s -X PUT "http://127.0.0.1:$MOTO_PORT/bench" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "moto did not start" >&2; exit 1
}

start_comet() { # $1 backend
  local data; data=$(mktemp -d)
  local env=(PORT=$PORT BIND_IP=127.0.0.1 COMET_DATA_DIR="$data" ADMIN_USERNAME=boss ADMIN_PASS=bench-pass-1
    ADMIN_EMAIL=b@example.com OVERWRITE_SETTING_API_Enable_Rate_Limiter=false
    OVERWRITE_SETTING_FileUpload_MaxFileSize=-1 OVERWRITE_SETTING_DDP_Rate_Limit_IP_Enabled=false
    OVERWRITE_SETTING_DDP_Rate_Limit_User_Enabled=false OVERWRITE_SETTING_DDP_Rate_Limit_Connection_Enabled=false
    OVERWRITE_SETTING_DDP_Rate_Limit_User_By_Method_Enabled=false
    OVERWRITE_SETTING_DDP_Rate_Limit_Connection_By_Method_Enabled=false
    OVERWRITE_SETTING_FileUpload_Storage_Type="$1")
  if [ "$1" = AmazonS3 ]; then
    env+=(OVERWRITE_SETTING_FileUpload_S3_Bucket=bench OVERWRITE_SETTING_FileUpload_S3_BucketURL="http://127.0.0.1:$MOTO_PORT"
      OVERWRITE_SETTING_FileUpload_S3_ForcePathStyle=true OVERWRITE_SETTING_FileUpload_S3_AWSAccessKeyId=k
      OVERWRITE_SETTING_FileUpload_S3_AWSSecretAccessKey=s OVERWRITE_SETTING_FileUpload_S3_Proxy_Uploads=true)
  fi
  env "${env[@]}" RUST_LOG=warn target/release/comet 2>"$OUT/comet.log" &
  SERVER_PID=$!
  for _ in $(seq 100); do
    curl -s "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "comet did not start" >&2; exit 1
}

stop_comet() { kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=; }

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$SERVER_PID/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }

# Samples the server's RSS every 50 ms into $1 until the file $2 exists.
sample_rss() {
  while [ ! -e "$2" ]; do rss_kb >> "$1"; sleep 0.05; done
}

login() {
  curl -s "http://127.0.0.1:$PORT/api/v1/login" -H 'Content-Type: application/json' \
    -d '{"user":"boss","password":"bench-pass-1"}' |
    "$PY" -c 'import json,sys; d=json.load(sys.stdin)["data"]; print(d["userId"], d["authToken"])'
}

big_file() { # $1 backend, $2 run
  start_comet "$1"
  read -r UID_ TOKEN < <(login)
  local idle; idle=$(rss_kb)
  local done_flag="$OUT/done-$1-$2"; rm -f "$done_flag"
  sample_rss "$OUT/rss-$1-$2" "$done_flag" &
  local sampler=$!
  local up; up=$(curl -s -o "$OUT/up.json" -w '%{time_total}' -H "X-User-Id: $UID_" -H "X-Auth-Token: $TOKEN" \
    -F "file=@$BIG;type=application/octet-stream" "http://127.0.0.1:$PORT/api/v1/rooms.upload/GENERAL")
  local path; path=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["message"]["attachments"][0]["title_link"])' "$OUT/up.json")
  local down; down=$(curl -s -o /dev/null -w '%{time_total}' "http://127.0.0.1:$PORT$path?rc_uid=$UID_&rc_token=$TOKEN")
  touch "$done_flag"; wait "$sampler"
  local peak; peak=$(sort -n "$OUT/rss-$1-$2" | tail -1)
  echo "$1 $2 $SIZE_MB $up $down $idle $peak" | tee -a "$OUT/big.txt"
  stop_comet
}

photos() { # $1 run (file system)
  start_comet FileSystem
  read -r UID_ TOKEN < <(login)
  "$PY" bench/upload_watch.py --url "ws://127.0.0.1:$PORT/websocket" --user boss --password bench-pass-1 \
    --expect "$PHOTOS" > "$OUT/watch-$1.txt" &
  local watcher=$!
  sleep 1
  local before; before=$(cpu_ticks)
  local start; start=$(date +%s.%N)
  seq "$PHOTOS" | xargs -P "$PHOTOS" -I{} curl -s -o /dev/null -w '%{time_total}\n' \
    -H "X-User-Id: $UID_" -H "X-Auth-Token: $TOKEN" -F "file=@$OUT/photo.jpg;type=image/jpeg" \
    "http://127.0.0.1:$PORT/api/v1/rooms.upload/GENERAL" > "$OUT/calls-$1.txt"
  wait "$watcher"
  local after; after=$(cpu_ticks)
  local hz; hz=$(getconf CLK_TCK)
  "$PY" - "$OUT/calls-$1.txt" "$OUT/watch-$1.txt" "$start" "$before" "$after" "$hz" "$PHOTOS" <<'EOF' | tee -a "$OUT/photos.txt"
import sys
calls = sorted(float(x) for x in open(sys.argv[1]) if x.strip())
watch = dict(line.split() for line in open(sys.argv[2]) if line.strip())
start, before, after, hz, n = float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
p = lambda q: calls[min(len(calls) - 1, int(q * len(calls)))]
print("all_delivered_s=%.2f previews=%s p50_s=%.3f p99_s=%.3f cpu_ms_per_upload=%.1f" % (
    float(watch["last_at"]) - start, watch["with_preview"], p(0.5), p(0.99), (after - before) / hz * 1000 / n))
EOF
  stop_comet
}

[[ " $BACKENDS " == *" AmazonS3 "* ]] && start_moto
for run in $(seq "$RUNS"); do
  for backend in $BACKENDS; do big_file "$backend" "$run"; done
  photos "$run"
done
"$PY" - "$OUT/big.txt" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for backend in sorted({r[0] for r in rows}):
    mine = [r for r in rows if r[0] == backend]
    mb = float(mine[0][2])
    up = statistics.median(mb / float(r[3]) for r in mine)
    down = statistics.median(mb / float(r[4]) for r in mine)
    growth = statistics.median((int(r[6]) - int(r[5])) / 1024 for r in mine)
    print("%s: upload %.0f MB/s, download %.0f MB/s, RSS growth %.1f MB (median of %d)" % (backend, up, down, growth, len(mine)))
EOF
echo "photos:"; cat "$OUT/photos.txt"
